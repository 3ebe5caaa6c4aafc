"""
vmigrate's NFS exports and client mounts as typed data: each path, client, option and mount
option checked against an allowlist, then rendered. A value that could end an exports line or
an fstab field (a newline, ``#``, a quote, a space) is an error naming the pillar entry and the
rule, never part of the output.

- exports: :func:`validate_exports` (safe defaults filled in, the unsafe flags and the ``*``
  client only with their switch), :func:`render_file` (our own file, or our marked block in
  ``/etc/exports`` with every other line kept), :func:`strip_block`, :func:`unmounted_notes`;
- mounts: :func:`validate_mount` (the NFS client's options as the kernel applies them: each
  setting once, ``hard`` unless ``soft`` is allowed).

Bad data raises ``SaltInvocationError``; a damaged marker block ``CommandExecutionError``. The
execution module ``vmigrate_nfs`` reads pillar and the host and writes. No Salt dunders:
callers import this as plain Python (``vmigrate_imports.py``).
"""

import ipaddress
import os
import re

from salt.exceptions import CommandExecutionError, SaltInvocationError

DEFAULT_EXPORTS_FILE = "/etc/exports.d/vmigrate.exports"
BEGIN_MARK = "# BEGIN vmigrate: managed by salt (vmigrate_nfs.exports), do not edit"
END_MARK = "# END vmigrate"

# exports(5) flags, grouped with their opposites. The first of each group present in
# DEFAULT_FLAGS is the default; the unsafe ones need allow_unsafe.
FLAG_GROUPS = (
    ("rw", "ro"),
    ("sync", "async"),
    ("root_squash", "no_root_squash"),
    ("no_all_squash", "all_squash"),
    ("no_subtree_check", "subtree_check"),
    ("secure", "insecure"),
    ("wdelay", "no_wdelay"),
    ("hide", "nohide"),
    ("secure_locks", "insecure_locks"),
    ("crossmnt", "nocrossmnt"),
    ("no_acl", "acl"),
    ("security_label",),
)
DEFAULT_FLAGS = ("rw", "sync", "root_squash", "no_subtree_check", "secure")
FLAG_OPPOSITE = {
    flag: tuple(f for f in group if f != flag) for group in FLAG_GROUPS for flag in group
}
UNSAFE_FLAGS = {
    "no_root_squash": "root on every client is root on the export (the hand recipe's hole)",
    "insecure": "clients may connect from unprivileged ports",
    "async": "the server acknowledges writes before they reach disk: a crash loses VM data",
}
ANY_CLIENT = "any_client"
UNSAFE_SWITCHES = (*UNSAFE_FLAGS, ANY_CLIENT)
SEC_FLAVORS = ("sys", "krb5", "krb5i", "krb5p")
MAX_ID = 4294967295

_PATH_RE = re.compile(r"^/[A-Za-z0-9._+@:=/-]*$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_NETGROUP_RE = re.compile(r"^@[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                      r"[0-9a-fA-F]{12}$")
# Mount options: a word, optionally =value; nothing that could split or escape an fstab field.
# Besides the kernel's and mount(8)'s words: _netdev and systemd's x-systemd.* (mount(8),
# systemd.mount(5): read by userspace, never passed to the NFS client).
_MOUNT_OPT_RE = re.compile(r"^(?:_netdev|x-systemd\.[a-z][a-z0-9-]*(?:=[A-Za-z0-9_.:/+@-]{1,128})?"
                           r"|[a-z][a-z0-9_]*(?:=[A-Za-z0-9_.:/+@-]{1,128})?)$")
_DEVICE_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\]):/[A-Za-z0-9._+@:=/-]*$")
MOUNT_FSTYPES = ("nfs", "nfs4", "none")
UNSAFE_MOUNT_OPTS = {
    "soft": "a soft mount returns I/O errors to QEMU on a server hiccup: guests see disk errors",
    "nolock": "no NFS locking: two hosts can open one image",
}
# The kernel's NFS client (fs/nfs/fs_context.c) applies options in order, the last one winning:
# "hard,softerr" ends soft. So these are one setting each, given at most once, and the unsafe
# values need the switch of the option they amount to. QEMU's image locks are POSIX (OFD)
# locks: local_lock=posix or all keeps them on one host exactly like nolock.
MOUNT_SETTINGS = {
    "hard": "recovery", "soft": "recovery", "softerr": "recovery",
    "lock": "locking", "nolock": "locking", "local_lock": "locking",
    "vers": "version", "nfsvers": "version",
}
MOUNT_SWITCH = {"soft": "soft", "softerr": "soft", "nolock": "nolock",
                "local_lock=all": "nolock", "local_lock=posix": "nolock"}
MOUNT_VALUES = {
    # NFSv2 has no client in current kernels' defaults and no locking of its own.
    "vers": ("3", "4", "4.0", "4.1", "4.2"),
    "nfsvers": ("3", "4", "4.0", "4.1", "4.2"),
    # udp: NFS over UDP can corrupt data on fast links (IP ID wrap-around) and has no NFSv4.
    "proto": ("tcp", "tcp6", "rdma", "rdma6"),
    "local_lock": ("none", "all", "flock", "posix"),
}
# Numbers: timeo in tenths of a second, retrans retries (nfs(5)); bounds a site would use.
MOUNT_NUMBERS = {"timeo": (1, 6000), "retrans": (0, 100)}


def _reject(where, rule):
    raise SaltInvocationError(f"{where}: {rule}")


# ---- exports -------------------------------------------------------------------------------
def check_path(path, where):
    """An absolute, normalised path of plain characters (no whitespace, quotes, #, \\, ..)."""
    if not isinstance(path, str):
        _reject(where, f"path must be a string, got {type(path).__name__}")
    if not path.startswith("/"):
        _reject(where, f"path {path!r} must be absolute")
    if not _PATH_RE.fullmatch(path):
        _reject(where, f"path {path!r} may only contain letters, digits and . _ + @ : = / -")
    parts = path.split("/")[1:]
    if path != "/" and (path.endswith("/") or "" in parts):
        _reject(where, f"path {path!r} must be normalised (no empty components, no trailing /)")
    if any(p in (".", "..") for p in parts):
        _reject(where, f"path {path!r} must not contain . or .. components")
    return path


def check_client_host(host, where, allow):
    """A client: IP, CIDR, FQDN/host name, @netgroup; ``*`` only with allow ``any_client``."""
    if not isinstance(host, str) or not host:
        _reject(where, f"client host must be a non-empty string, got {host!r}")
    if host == "*":
        if ANY_CLIENT not in allow:
            _reject(where, "client '*' exports to every host on every network: list the "
                           "hypervisors' subnet, or set allow_unsafe: [any_client]")
        return host
    if _NETGROUP_RE.fullmatch(host):
        return host
    try:
        if "/" in host:
            return str(ipaddress.ip_network(host, strict=False))
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if "/" not in host and not host.replace(".", "").isdigit() and _HOSTNAME_RE.fullmatch(host):
        return host.lower()
    _reject(where, f"client host {host!r} is not an IP address, CIDR network, host name or "
                   "@netgroup (wildcards other than a lone '*' are not accepted)")
    return None  # not reached


def _check_id(value, where, key):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        _reject(where, f"{key} must be an integer from 0 to {MAX_ID}, got {value!r}")
    return str(value)


def _check_fsid(value, where):
    if value == "root" or (isinstance(value, int) and not isinstance(value, bool)
                           and 0 <= value <= MAX_ID):
        return str(value)
    if isinstance(value, str) and _UUID_RE.fullmatch(value):
        return value.lower()
    _reject(where, f"fsid must be an integer, 'root' or a UUID, got {value!r}")
    return None  # not reached


def _check_sec(value, where):
    flavors = value if isinstance(value, list) else [value]
    if not flavors or any(f not in SEC_FLAVORS for f in flavors) or len(set(flavors)) != len(
            flavors):
        _reject(where, f"sec must be one or a list of {', '.join(SEC_FLAVORS)}, got {value!r}")
    return ":".join(flavors)


XPRTSEC = ("none", "tls", "mtls")


def _check_xprtsec(value, where):
    modes = value if isinstance(value, list) else [value]
    if not modes or any(m not in XPRTSEC for m in modes) or len(set(modes)) != len(modes):
        _reject(where, f"xprtsec must be one or a list of {', '.join(XPRTSEC)}, got {value!r}")
    return ":".join(modes)


VALUE_OPTIONS = {
    "anonuid": lambda v, w: _check_id(v, w, "anonuid"),
    "anongid": lambda v, w: _check_id(v, w, "anongid"),
    "fsid": _check_fsid,
    "sec": _check_sec,
    "xprtsec": _check_xprtsec,
}
# Keywords only some nfs-utils releases parse (exportfs stops at an unknown keyword and drops
# that entry and every later one): xprtsec= since nfs-utils 2.6.3. Offered where the server's
# own exportfs knows it (see exportfs_knows).
NEWER_KEYWORDS = {"xprtsec": "nfs-utils 2.6.3"}


def _check_mountpoint(value, where):
    """exports(5) ``mountpoint``/``mp``: export only while the path (or the given one) is a
    mount point, so a server whose image filesystem failed to mount serves nothing rather than
    the empty directory beneath it. True (default), a path, or False (opt out)."""
    if value is True:
        return "mp"
    if value is False:
        return None
    return f"mp={check_path(value, where + ' mountpoint')}"


def check_options(options, where, allow, known=()):
    """Typed export options -> (canonical option list, warnings). Defaults filled in (``mp``
    among them). ``known``: the newer keywords the server's exportfs parses."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        _reject(where, f"options must be a mapping like {{rw: true, anonuid: 64055}}, "
                       f"got {type(options).__name__}")
    flags, values, warnings = [], [], []
    mountpoint = "mp"
    if "mp" in options and "mountpoint" in options:
        _reject(where, "mountpoint and mp are one option: give one")
    for key, value in options.items():
        if key in ("mountpoint", "mp"):
            mountpoint = _check_mountpoint(value, where)
        elif key in NEWER_KEYWORDS and key not in known:
            _reject(where, f"{key} needs {NEWER_KEYWORDS[key]} or later on the NFS server: its "
                           f"exportfs does not know {key}= and would drop this export and every "
                           "later one")
        elif key in FLAG_OPPOSITE:
            if value is not True:
                opposite = " or ".join(FLAG_OPPOSITE[key]) or "nothing"
                _reject(where, f"flag {key!r} takes true (to turn it off, set {opposite}), "
                               f"got {value!r}")
            if key in UNSAFE_FLAGS:
                if key not in allow:
                    _reject(where, f"{key} is unsafe ({UNSAFE_FLAGS[key]}): set "
                                   f"allow_unsafe: [{key}] to permit it")
                warnings.append(f"{where}: {key}: {UNSAFE_FLAGS[key]}")
            flags.append(key)
        elif key in VALUE_OPTIONS:
            values.append(f"{key}={VALUE_OPTIONS[key](value, where)}")
        else:
            _reject(where, f"unknown option {key!r} (allowed: "
                           f"{', '.join(sorted([*FLAG_OPPOSITE, *VALUE_OPTIONS, 'mountpoint']))})")
    for flag in flags:
        clash = [f for f in FLAG_OPPOSITE[flag] if f in flags]
        if clash:
            _reject(where, f"options {flag} and {clash[0]} contradict each other")
    for default in DEFAULT_FLAGS:
        if default not in flags and not any(f in flags for f in FLAG_OPPOSITE[default]):
            flags.append(default)
    order = {f: i for i, f in enumerate(f for g in FLAG_GROUPS for f in g)}
    flags.sort(key=order.__getitem__)
    return flags + ([mountpoint] if mountpoint else []) + sorted(values), warnings


def validate_exports(exports, allow_unsafe=(), known=()):
    """
    Check typed exports and return them canonical: a list of dicts ``path``, ``clients``
    (each ``host`` and ``options``, the list of rendered options), plus ``warnings``.

    Raises SaltInvocationError naming the entry and the rule it breaks.
    """
    allow = _check_allow(allow_unsafe, UNSAFE_SWITCHES, "vmigrate:nfs:server:allow_unsafe")
    if not isinstance(exports, list):
        _reject("vmigrate:nfs:server:exports", "must be a list of {path, clients}")
    result, warnings, seen = [], [], set()
    for i, export in enumerate(exports):
        where = f"vmigrate:nfs:server:exports[{i}]"
        if not isinstance(export, dict):
            _reject(where, "each export must be a mapping with path and clients")
        unknown = set(export) - {"path", "clients", "user", "group", "mode"}
        if unknown:
            _reject(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                           "(allowed: path, clients, user, group, mode)")
        path = check_path(export.get("path"), where)
        where = f"{where} ({path})"
        if path in seen:
            _reject(where, "path is exported twice: merge the clients into one entry")
        seen.add(path)
        owner = check_owner(export, where)
        clients = export.get("clients")
        if not isinstance(clients, list) or not clients:
            _reject(where, "clients must be a non-empty list of {host, options}")
        canon, hosts = [], set()
        for j, client in enumerate(clients):
            cwhere = f"{where} clients[{j}]"
            if not isinstance(client, dict) or set(client) - {"host", "options"}:
                _reject(cwhere, "each client must be a mapping with host and options")
            host = check_client_host(client.get("host"), cwhere, allow)
            if host in hosts:
                _reject(cwhere, f"client {host} is listed twice for this path")
            hosts.add(host)
            if host == "*":
                warnings.append(f"{cwhere}: client '*': exported to every host")
            opts, warns = check_options(client.get("options"), cwhere, allow, known)
            warnings.extend(warns)
            canon.append({"host": host, "options": opts})
        result.append({"path": path, "clients": canon, **owner})
    return {"exports": result, "warnings": warnings}


def check_owner(entry, where):
    """Optional ``user``/``group`` (name or id) and ``mode`` (octal string) of a directory."""
    out = {}
    for key in ("user", "group"):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
            out[key] = value
        elif isinstance(value, str) and re.fullmatch(r"^[a-z_][a-z0-9_-]{0,31}$", value):
            out[key] = value
        else:
            _reject(where, f"{key} must be a user/group name or numeric id, got {value!r}")
    mode = entry.get("mode")
    if mode is not None:
        if not isinstance(mode, str) or not re.fullmatch(r"^0?[0-7]{3}$", mode):
            _reject(where, f"mode must be an octal string like '0770', got {mode!r}")
        out["mode"] = mode.rjust(4, "0")
    return out


def _check_allow(allow, known, where):
    if allow is None:
        return set()
    if not isinstance(allow, (list, tuple)) or any(a not in known for a in allow):
        _reject(where, f"must be a list of: {', '.join(known)}; got {allow!r}")
    return set(allow)


def render_lines(exports):
    """Export lines for canonical exports (from validate_exports)."""
    return [
        export["path"] + " " + " ".join(
            f"{c['host']}({','.join(c['options'])})" for c in export["clients"])
        for export in exports
    ]


def render_file(exports, current, exports_file):
    """
    The exports file's new content. Our own file (``/etc/exports.d/*.exports``) holds only our
    lines; in ``/etc/exports`` our lines live between markers and every other line is kept.
    """
    ours = [BEGIN_MARK, *render_lines(exports), END_MARK]
    if exports_file != "/etc/exports":
        return "\n".join(ours) + "\n"
    lines = (current or "").splitlines()
    block = marker_block(lines, exports_file)
    new = lines + ours if block is None else lines[:block[0]] + ours + lines[block[1] + 1:]
    return "\n".join(new) + "\n"


def marker_block(lines, exports_file):
    """(first, last) line index of vmigrate's marked block, or None when there is none. A
    damaged block -- a marker missing, repeated, or END before BEGIN -- is an error that names
    the fix: guessing its extent could delete or keep someone else's exports."""
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN_MARK]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARK]
    if not begins and not ends:
        return None
    if len(begins) == 1 and len(ends) == 1 and begins[0] < ends[0]:
        return begins[0], ends[0]
    raise CommandExecutionError(
        f"{exports_file}: vmigrate's marked block is damaged ({len(begins)} BEGIN and "
        f"{len(ends)} END marker line(s){', END first' if begins and ends and ends[0] < begins[0] else ''}"
        f"): nothing was changed. Edit the file so that it holds exactly one '{BEGIN_MARK}' line "
        f"followed by one '{END_MARK}' line (or neither), then apply again"
    )


def strip_block(text, exports_file):
    """``text`` (of ``exports_file``, /etc/exports) without vmigrate's marked block, or False
    when it has none. A damaged block raises (see :func:`marker_block`)."""
    lines = text.splitlines()
    block = marker_block(lines, exports_file)
    if block is None:
        return False
    return "\n".join(lines[:block[0]] + lines[block[1] + 1:]) + "\n"


def check_exports_file(path):
    """The file must be /etc/exports or /etc/exports.d/<name>.exports (exportfs reads those)."""
    if path == "/etc/exports":
        return path
    check_path(path, "vmigrate:nfs:server:exports_file")
    if not re.fullmatch(r"^/etc/exports\.d/[A-Za-z0-9_.-]+\.exports$", path):
        _reject("vmigrate:nfs:server:exports_file",
                f"{path!r}: use /etc/exports or /etc/exports.d/<name>.exports")
    return path


def unmounted_notes(exports):
    """A note for each canonical export with ``mp`` (the default) whose path (or ``mp=`` path)
    is not a mount point now: the NFS server does not serve it until it is."""
    notes = []
    for export in exports:
        for client in export["clients"]:
            marks = [o for o in client["options"] if o == "mp" or o.startswith("mp=")]
            point = marks[0][3:] if marks and marks[0] != "mp" else export["path"]
            if marks and not os.path.ismount(point):
                notes.append(
                    f"{export['path']}: {point} is not a mount point now; with mp (the default) "
                    "the NFS server exports it only once its filesystem is mounted there")
                break
    return notes


# ---- mounts --------------------------------------------------------------------------------
def validate_mount(mount, allow_unsafe=(), index=0):
    """
    Check one typed client mount and return the arguments for ``mount.mounted``: ``name``,
    ``device``, ``fstype``, ``opts`` (``hard`` added to NFS mounts unless ``soft`` is allowed),
    ``persist``; plus ``warnings``.
    """
    where = f"vmigrate:nfs:client:mounts[{index}]"
    allow = _check_allow(allow_unsafe, tuple(UNSAFE_MOUNT_OPTS),
                         "vmigrate:nfs:client:allow_unsafe")
    if not isinstance(mount, dict):
        _reject(where, "each mount must be a mapping with name, device, fstype, opts")
    unknown = set(mount) - {"name", "device", "fstype", "opts"}
    if unknown:
        _reject(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                       "(allowed: name, device, fstype, opts)")
    name = check_path(mount.get("name"), where)
    where = f"{where} ({name})"
    fstype = mount.get("fstype", "nfs")
    if fstype not in MOUNT_FSTYPES:
        _reject(where, f"fstype {fstype!r}: must be one of {', '.join(MOUNT_FSTYPES)}")
    opts = mount.get("opts", [])
    if not isinstance(opts, list) or any(not isinstance(o, str) or not _MOUNT_OPT_RE.fullmatch(o)
                                         for o in opts):
        _reject(where, f"opts must be a list of plain options like hard or vers=4.2, "
                       f"got {opts!r}")
    device = mount.get("device")
    warnings = []
    if fstype == "none":
        # A bind mount (the lab's stand-in for NFS, where the kernel has no NFS client).
        check_path(device, f"{where} device")
        if opts != ["bind"]:
            _reject(where, "fstype none is only for bind mounts: opts must be [bind]")
    else:
        if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
            _reject(where, f"device {device!r} must be server:/absolute/path")
        check_path("/" + device.split(":/", 1)[1], f"{where} device")
        warnings = _check_nfs_opts(opts, where, allow)
        if not any(MOUNT_SETTINGS.get(o) == "recovery" for o in opts):
            opts = ["hard", *opts]
    if len(set(opts)) != len(opts):
        _reject(where, f"opts lists an option twice: {opts!r}")
    args = {"name": name, "device": device, "fstype": fstype, "opts": opts, "persist": True,
            "warnings": warnings}
    if fstype == "none":
        # Keep fstab as written: by default mount.mounted copies the live superblock options
        # of a bind mount into fstab and then reports a change on every run.
        args["bind_mount_copy_active_opts"] = False
    return args


def _check_nfs_opts(opts, where, allow):
    """The NFS client's options, as the kernel applies them: each setting once, known values,
    the unsafe ones only with their switch (then warned). Returns the warnings."""
    warnings, seen = [], {}
    for opt in opts:
        key, _, value = opt.partition("=")
        setting = MOUNT_SETTINGS.get(key, key)
        if setting in seen and not key.startswith(("x-systemd.", "_")):
            _reject(where, f"{seen[setting]} and {opt}: one setting given twice (the kernel "
                           "applies the last one): give it once")
        seen[setting] = opt
        if key in MOUNT_VALUES and value not in MOUNT_VALUES[key]:
            _reject(where, f"{opt}: {key} must be one of {', '.join(MOUNT_VALUES[key])}")
        if key in MOUNT_NUMBERS:
            low, high = MOUNT_NUMBERS[key]
            if not value.isdigit() or not low <= int(value) <= high:
                _reject(where, f"{opt}: {key} must be a whole number {low}-{high}")
        switch = MOUNT_SWITCH.get(opt, MOUNT_SWITCH.get(key) if key != "local_lock" else None)
        if switch:
            if switch not in allow:
                _reject(where, f"{opt} is unsafe ({UNSAFE_MOUNT_OPTS[switch]}): set "
                               f"vmigrate:nfs:client:allow_unsafe: [{switch}] to permit it")
            warnings.append(f"{where}: {opt}: {UNSAFE_MOUNT_OPTS[switch]}")
    return warnings
