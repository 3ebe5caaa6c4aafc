"""
Migration options: every ``virsh migrate`` option vmigrate accepts, validated, and turned into
libvirt's flags and typed parameters for ``migrateToURI3``.

Plain functions: no Salt dunders, no libvirt import (the caller passes its ``libvirt`` module),
so unit tests run without a hypervisor. Options come from pillar ``vmigrate:options`` (defaults)
overlaid by the call's ``options`` mapping (``salt-run state.orch migrate pillar='{vm: vdisk,
dest: host2, options: {auto_converge: true}}'``); an unknown name or a bad value raises
``SaltInvocationError`` naming it before anything is touched.

``TABLE`` maps each ``virsh migrate`` flag to its vmigrate name: the docs' options page
renders this one.
"""

import math
import re
import xml.etree.ElementTree as ET

from salt.exceptions import SaltInvocationError

COMPRESSION_METHODS = ("xbzrle", "mt", "zlib", "zstd")
TIMEOUT_ACTIONS = ("abort", "pause", "postcopy")
COPY_STORAGE = ("all", "inc")
_URI_RE = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]{0,252})(:\d{1,5})?")
_ADDR_RE = re.compile(r"\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
_DISK_RE = re.compile(r"[a-z]{2,4}[a-z0-9]{0,8}")

# virsh migrate flag -> how vmigrate spells it. "always" rows are not options: vmigrate sets them.
TABLE = (
    ("--live", "mode: live (default)"),
    ("--offline", "mode: offline (a shut-off domain's definition)"),
    ("(static migration)", "mode: cold (shutdown, move, start) / mode: save (save, restore)"),
    ("(cold: shutdown wait)", "options shutdown_timeout (s, default 120), force_off: true"),
    ("--p2p", "always: the source libvirtd connects to the destination's"),
    ("--direct", "not offered: hypervisor-native transport, Xen only"),
    ("--tunnelled", "transport: ssh (the memory stream rides the ssh-protected connection)"),
    ("--persistent", "always: the domain is defined on the destination"),
    ("--undefinesource", "always: and undefined on the source (defined on one host)"),
    ("--suspend", "option suspend: true (the guest arrives paused)"),
    ("--copy-storage-all / --copy-storage-inc", "option copy_storage: all / inc (disks on "
     "local storage; refused for a disk on shared storage, and over transport ssh)"),
    ("--copy-storage-synchronous-writes", "option copy_storage_synchronous_writes: true"),
    ("--migrate-disks", "option migrate_disks: [vda, ...] (the disks to copy)"),
    ("--migrate-disks-detect-zeroes", "option migrate_disks_detect_zeroes: [vda, ...]"),
    ("--rdma-pin-all", "not offered: the RDMA transport is not supported"),
    ("--postcopy-resume", "not offered: libvirt 11.3.0's destination daemon crashes on it "
                          "in the lab (docs, 'When the network breaks in post-copy')"),
    ("--change-protection", "option change_protection: true (implied by p2p)"),
    ("--unsafe", "unsafe: true, only with pillar vmigrate:allow_unsafe: true"),
    ("--verbose", "always: progress events and lines (salt-run vmigrate.watch)"),
    ("--abort-on-error", "always for live migrations"),
    ("--auto-converge", "option auto_converge: true"),
    ("--auto-converge-initial / --auto-converge-increment",
     "options auto_converge_initial / auto_converge_increment (1-99 %)"),
    ("--postcopy", "option postcopy: true (opt-in: read its risk in docs, 'When the network "
                   "breaks in post-copy'; not with suspend, transport ssh or "
                   "parallel_connections)"),
    ("--postcopy-after-precopy", "option postcopy_after_precopy: true"),
    ("--postcopy-bandwidth", "option postcopy_bandwidth (MiB/s)"),
    ("--timeout", "timeout (seconds), then option timeout_action"),
    ("--timeout-suspend", "option timeout_action: pause"),
    ("--timeout-postcopy", "option timeout_action: postcopy (needs postcopy: true)"),
    ("--bandwidth", "bandwidth (MiB/s)"),
    ("migrate-setmaxdowntime", "option max_downtime (ms), raised in downtime_steps"),
    ("(convergence forecast)", "option policy: auto (default; with a bandwidth cap and no "
                               "step given: max_downtime 500 ms in 10 steps, auto_converge "
                               "when the forecast says downtime alone cannot) / manual"),
    ("--compressed", "option compressed: true"),
    ("--comp-methods", "option compression_methods: [xbzrle] alone, or [zlib] or [zstd] with "
                       "parallel_connections (mt: refused, QEMU 9.1 removed it)"),
    ("--comp-mt-level / --comp-mt-threads / --comp-mt-dthreads",
     "options compression_mt_level / compression_mt_threads / compression_mt_dthreads"),
    ("--comp-xbzrle-cache", "option compression_xbzrle_cache (MiB, a power of two)"),
    ("--comp-zlib-level / --comp-zstd-level", "options compression_zlib_level / _zstd_level"),
    ("--parallel / --parallel-connections", "option parallel_connections (1-255)"),
    ("--zerocopy", "option zerocopy: true (needs parallel_connections; not with TLS or "
                   "compression)"),
    ("--tls", "transport: tls (QEMU's own TLS memory stream)"),
    ("--tls-destination", "option tls_destination (the name in the destination's certificate)"),
    ("--available-switchover-bandwidth", "option switchover_bandwidth (MiB/s)"),
    ("--xml", "option xml (the domain XML for the destination, same UUID; name unchanged "
              "or dname's)"),
    ("--persistent-xml", "option persistent_xml (the same rules)"),
    ("--dname", "option dname (the domain's name on the destination; live, offline, cold: "
                "not save, whose restore libvirt allows only under the saved name)"),
    ("--migrateuri", "pillar vmigrate:hypervisors:<id>:migration_address, or option migrate_uri"),
    ("--listen-address", "option listen_address"),
    ("--disks-port / --disks-uri", "options disks_port / disks_uri (tcp://: where the "
                                   "destination takes the disks' copy)"),
    ("--graphicsuri", "option graphics_uri"),
)


def _bool(value, name):
    if not isinstance(value, bool):
        raise SaltInvocationError(f"option {name} {value!r}: true or false")
    return value


def _int(value, name, low, high, unit=""):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SaltInvocationError(f"option {name} {value!r}: a whole number {low}-{high}{unit}")
    return value


def _seconds(value, name):
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not 0 < value <= 86400):
        raise SaltInvocationError(f"option {name} {value!r}: seconds, > 0")
    return float(value)


def _methods(value, name):
    if (not isinstance(value, list) or not value
            or any(m not in COMPRESSION_METHODS for m in value) or len(set(value)) != len(value)):
        raise SaltInvocationError(
            f"option {name} {value!r}: a list of {', '.join(COMPRESSION_METHODS)}")
    return value


def _one_of(choices):
    def check(value, name):
        if value not in choices:
            raise SaltInvocationError(f"option {name} {value!r}: one of {', '.join(choices)}")
        return value
    return check


def _uri(value, name):
    if not isinstance(value, str) or not _URI_RE.fullmatch(value):
        raise SaltInvocationError(f"option {name} {value!r}: tcp://<address>[:port]")
    return value


def _addr(value, name):
    if not isinstance(value, str) or not _ADDR_RE.fullmatch(value):
        raise SaltInvocationError(f"option {name} {value!r}: a host name or address")
    return value


def _disks(value, name):
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or any(not isinstance(d, str) or not _DISK_RE.fullmatch(d) for d in value)):
        raise SaltInvocationError(
            f"option {name} {value!r}: a list of disk targets as the domain names them "
            "(vda, sdb: virsh domblklist)")
    return value


def _domain_xml(value, name):
    if not isinstance(value, str) or len(value) > 1 << 20:
        raise SaltInvocationError(f"option {name}: a domain XML document (a string)")
    try:
        root = ET.fromstring(value)
    except ET.ParseError as err:
        raise SaltInvocationError(f"option {name} is not well-formed XML: {err}") from err
    if root.tag != "domain":
        raise SaltInvocationError(f"option {name}: the root element must be <domain>")
    return value


# name -> validator. Kept flat, as virsh's flags are.
SCHEMA = {
    "suspend": _bool,
    "change_protection": _bool,
    "auto_converge": _bool,
    # QEMU's cpu-throttle-initial/-increment: 1-99 (migration/options.c); libvirt passes
    # any number through.
    "auto_converge_initial": lambda v, n: _int(v, n, 1, 99, " %"),
    "auto_converge_increment": lambda v, n: _int(v, n, 1, 99, " %"),
    "postcopy": _bool,
    "postcopy_after_precopy": _bool,
    "postcopy_bandwidth": lambda v, n: _int(v, n, 1, 1 << 20, " MiB/s"),
    "timeout_action": _one_of(TIMEOUT_ACTIONS),
    # auto (default): a capped live migration that names no convergence step gets them from
    # the forecast (vmigrate_forecast.py); manual: only the steps given.
    "policy": _one_of(("auto", "manual")),
    "max_downtime": lambda v, n: _int(v, n, 1, 600000, " ms"),
    "downtime_steps": lambda v, n: _int(v, n, 1, 100),
    "downtime_step_delay": _seconds,
    "compressed": _bool,
    "compression_methods": _methods,
    "compression_mt_level": lambda v, n: _int(v, n, 0, 9),
    "compression_mt_threads": lambda v, n: _int(v, n, 1, 255),
    "compression_mt_dthreads": lambda v, n: _int(v, n, 1, 255),
    "compression_xbzrle_cache": lambda v, n: _power_of_two(v, n),
    "compression_zlib_level": lambda v, n: _int(v, n, 0, 9),
    "compression_zstd_level": lambda v, n: _int(v, n, 0, 20),
    # QEMU's multifd-channels: 1-255; libvirt accepts 1 (one multifd channel).
    "parallel_connections": lambda v, n: _int(v, n, 1, 255),
    "zerocopy": _bool,
    "xml": _domain_xml,
    "persistent_xml": _domain_xml,
    # The name rule is vmigrate_validate.vm_name's: the callers apply it (a plain file here).
    "dname": lambda v, n: _str(v, n),
    "migrate_uri": _uri,
    "listen_address": _addr,
    "graphics_uri": lambda v, n: _graphics_uri(v, n),
    "tls_destination": lambda v, n: _addr(v, n),
    "switchover_bandwidth": lambda v, n: _int(v, n, 1, 1 << 20, " MiB/s"),
    "copy_storage": _one_of(COPY_STORAGE),
    "copy_storage_synchronous_writes": _bool,
    "migrate_disks": _disks,
    "migrate_disks_detect_zeroes": _disks,
    "disks_port": lambda v, n: _int(v, n, 1, 65535),
    # tcp only: a unix socket does not reach another host, and libvirt would relabel the
    # source's path and unlink the destination's.
    "disks_uri": _uri,
    "shutdown_timeout": _seconds,
    "force_off": _bool,
}
# Which options each mode takes: the memory-stream options only live; the definition's XML with
# the modes that move a definition (cold moves it offline between shutdown and start).
COLD_ONLY = {"shutdown_timeout", "force_off"}
# Copying disks is asked per migration, never a pillar default: a default would try to copy
# every guest's disks, including those on the shared storage.
STORAGE = {"copy_storage", "copy_storage_synchronous_writes", "migrate_disks",
           "migrate_disks_detect_zeroes", "disks_port", "disks_uri"}
# A new name is one guest's, never a default (every guest would take it).
PER_MIGRATION = STORAGE | {"dname"}
DEFINITION = {"xml", "persistent_xml", "dname"}
ALLOWED = {
    "live": set(SCHEMA) - COLD_ONLY,
    "offline": DEFINITION,
    "cold": DEFINITION | COLD_ONLY,
    "save": set(),
}


_GRAPHICS_RE = re.compile(r"(spice|vnc)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]{0,252})"
                          r"(:\d{1,5})?(\?(tlsPort=\d{1,5}|tlsSubject=[^&\s]{1,1024})"
                          r"(&(tlsPort=\d{1,5}|tlsSubject=[^&\s]{1,1024}))?)?")


def _graphics_uri(value, name):
    # libvirt (qemu_migration.c qemuMigrationSrcGraphicsRelocate) reads the scheme, host, port
    # and the tlsPort / tlsSubject query keys; it relocates SPICE clients only (vnc is parsed and
    # ignored), and refuses what it cannot parse.
    if not isinstance(value, str) or not _GRAPHICS_RE.fullmatch(value):
        raise SaltInvocationError(
            f"option {name} {value!r}: spice://<address>[:port][?tlsPort=N][&tlsSubject=...] "
            "(or vnc://..., which libvirt accepts and ignores)")
    return value


def _power_of_two(value, name):
    # QEMU's xbzrle-cache-size: "a power of two no less than the target page size" (bytes);
    # given here in MiB, so a power of two MiB.
    _int(value, name, 1, 1 << 20, " MiB")
    if value & (value - 1):
        raise SaltInvocationError(f"option {name} {value!r}: QEMU takes a power of two (MiB: "
                                  "1, 2, 4, 8, ...), no less than the page size")
    return value


def _str(value, name):
    if not isinstance(value, str) or not value or len(value) > 4096 or "\n" in value:
        raise SaltInvocationError(f"option {name} {value!r}: a one-line string")
    return value


def merge(defaults, options, mode=None):
    """Pillar ``vmigrate:options`` overlaid by a call's ``options``, both validated. With
    ``mode``, a pillar default that does not apply to that mode is left out (a default
    ``timeout_action`` must not refuse an offline move); the call's options are kept as given
    for :func:`check` to judge."""
    out = {}
    for where, given in (("pillar vmigrate:options", defaults), ("options", options)):
        if given is None:
            continue
        if not isinstance(given, dict):
            raise SaltInvocationError(f"{where} must be a mapping of option: value, got "
                                      f"{type(given).__name__}")
        for name, value in given.items():
            if name not in SCHEMA:
                raise SaltInvocationError(
                    f"{where}: unknown option {name!r} (known: {', '.join(sorted(SCHEMA))}; "
                    "docs, 'Every virsh migrate option')")
            value = SCHEMA[name](value, name)
            if given is defaults and name in PER_MIGRATION:
                raise SaltInvocationError(
                    f"{where}: option {name} is given per migration, not as a default "
                    "(docs, 'Every virsh migrate option')")
            if given is defaults and mode is not None and name not in ALLOWED[mode]:
                continue
            out[name] = value
    return out


def check(options, mode, name=None, uuid=None, stream=None):
    """Rules between options. ``mode`` the migration mode; ``name``/``uuid`` the domain's, for
    the XML options; ``stream`` the data stream the transport chose. Returns ``options``."""
    if mode == "save" and "dname" in options:
        # libvirt restores a saved image only under the name inside it: its ABI stability
        # check compares names (domain_conf.c, "Target domain name ... does not match
        # source"), and a running domain cannot be renamed afterwards.
        raise SaltInvocationError(
            "option dname does not apply to mode=save: libvirt restores a saved image only "
            "under the name it was saved with and renames only a shut-off domain; use "
            "mode=cold (or live) to rename on the way")
    extra = sorted(set(options) - ALLOWED[mode])
    if extra:
        modes = [m for m in ALLOWED if set(extra) <= ALLOWED[m]]
        raise SaltInvocationError(
            f"options {', '.join(extra)} do not apply to mode={mode}"
            + (f" (only to mode {' or '.join(modes)})" if modes else ""))
    if options.get("timeout_action") == "postcopy" and not options.get("postcopy"):
        raise SaltInvocationError("option timeout_action: postcopy needs postcopy: true "
                                  "(opt-in: read its risk in docs, 'When the network breaks "
                                  "in post-copy')")
    for needs, what in (("postcopy_after_precopy", "postcopy"), ("postcopy_bandwidth", "postcopy"),
                        ("zerocopy", "parallel_connections")):
        if options.get(needs) and not options.get(what):
            raise SaltInvocationError(f"option {needs} needs {what}")
    for key in ("auto_converge_initial", "auto_converge_increment"):
        if key in options and not options.get("auto_converge"):
            raise SaltInvocationError(f"option {key} needs auto_converge: true")
    comp = [k for k in options if k.startswith("compression_")]
    if comp and not options.get("compressed"):
        raise SaltInvocationError(f"options {', '.join(sorted(comp))} need compressed: true")
    methods = options.get("compression_methods", ["xbzrle"])
    _parallel_rules(options, methods, stream)
    for key in comp:
        method = key.split("_")[1]
        if method in COMPRESSION_METHODS and method not in methods:
            raise SaltInvocationError(f"option {key} needs {method} in compression_methods")
    storage = sorted(k for k in STORAGE - {"copy_storage"} if k in options)
    if storage and not options.get("copy_storage"):
        raise SaltInvocationError(f"options {', '.join(storage)} need copy_storage: all or inc")
    if "disks_port" in options and "disks_uri" in options:
        raise SaltInvocationError("options disks_port and disks_uri: one or the other (the "
                                  "URI has its own port)")
    chosen = options.get("migrate_disks")
    extra = sorted(set(options.get("migrate_disks_detect_zeroes", [])) - set(chosen or []))
    if chosen and extra:
        raise SaltInvocationError(f"option migrate_disks_detect_zeroes names {', '.join(extra)}"
                                  ", which migrate_disks does not")
    if options.get("copy_storage") and stream == "tunnelled":
        raise SaltInvocationError(
            "option copy_storage: libvirt cannot copy disks through a tunnelled stream "
            "(transport ssh); use transport tls for this migration's hosts "
            "(docs, 'Guests on local storage: copy_storage')")
    if "downtime_steps" in options and "max_downtime" not in options:
        raise SaltInvocationError("option downtime_steps needs max_downtime (the last step, ms)")
    if options.get("tls_destination") and stream not in (None, "tls"):
        raise SaltInvocationError("option tls_destination needs transport tls")
    if stream == "tunnelled" and (options.get("parallel_connections")
                                  or options.get("migrate_uri")):
        raise SaltInvocationError(
            "transport ssh tunnels the memory stream: no migrate_uri or parallel_connections")
    dname = options.get("dname")
    for key in ("xml", "persistent_xml"):
        if key in options:
            root = ET.fromstring(options[key])
            names = [n for n in (name, dname) if n is not None]
            if names and root.findtext("name") not in names:
                raise SaltInvocationError(
                    f"option {key}: <name> must be {' or '.join(map(repr, names))} (a new name "
                    "is option dname)")
            if uuid is not None and (root.findtext("uuid") or "").lower() != uuid.lower():
                raise SaltInvocationError(f"option {key}: <uuid> must stay {uuid}")
    return options


def _parallel_rules(options, methods, stream):
    """The rules libvirt 11.3 (qemu_migration_params.c, qemu_migration.c) and QEMU 10.0
    (migration/options.c) apply to compression, parallel (multifd), post-copy and zero-copy,
    refused here first with the reason."""
    parallel = bool(options.get("parallel_connections"))
    compressed = bool(options.get("compressed"))
    if compressed and "mt" in methods:
        raise SaltInvocationError(
            "compression method mt: QEMU removed its multithread compression in 9.1 (libvirt "
            "then answers \"Migration option 'compress' is not supported by QEMU binary\"); "
            "use zlib or zstd with parallel_connections, or xbzrle")
    if compressed and parallel:
        if "compression_methods" not in options:
            raise SaltInvocationError(
                "options compressed and parallel_connections need compression_methods: [zlib] "
                "or [zstd] (libvirt: \"No compression algorithm selected for parallel "
                "migration\")")
        bad = [m for m in methods if m in ("xbzrle", "mt")]
        if bad:
            raise SaltInvocationError(
                f"compression method {bad[0]} does not work with parallel_connections (libvirt: "
                "\"isn't supported with parallel migration\"; QEMU: multifd is not compatible "
                "with xbzrle)")
        if len(methods) > 1:
            raise SaltInvocationError(
                "compression_methods: one of zlib or zstd with parallel_connections (libvirt: "
                "\"Only one compression method could be specified with parallel "
                "compression\")")
    if compressed and not parallel:
        bad = [m for m in methods if m in ("zlib", "zstd")]
        if bad:
            raise SaltInvocationError(
                f"compression method {bad[0]} needs parallel_connections (libvirt: \"is only "
                "supported with parallel migration\")")
    if options.get("postcopy"):
        if options.get("suspend"):
            raise SaltInvocationError(
                "option postcopy with suspend: libvirt runs post-copy only for a live guest "
                "(\"post-copy migration is not supported with non-live or paused "
                "migration\")")
        if stream == "tunnelled":
            raise SaltInvocationError(
                "option postcopy with transport ssh: libvirt does not run post-copy through a "
                "tunnelled stream (\"post-copy is not supported with tunnelled migration\"); "
                "use transport tls for this migration's hosts")
        if parallel:
            raise SaltInvocationError(
                "option postcopy with parallel_connections: QEMU 10 refuses it (\"Postcopy is "
                "not yet compatible with multifd\")")
    if options.get("zerocopy") and (stream == "tls" or compressed):
        raise SaltInvocationError(
            "option zerocopy works only without TLS and without compression (QEMU: \"Zero copy "
            "only available for non-compressed non-TLS multifd migration\")")
    if options.get("listen_address") and stream == "tunnelled":
        raise SaltInvocationError(
            "option listen_address with transport ssh: libvirt refuses it for a tunnelled "
            "migration (\"listen address is not supported by tunnelled migration\")")


def job_deadline(mode, timeout, abort_deadline, options, shutdown_timeout=120):
    """The most seconds a source minion's ``vmigrate.migrate`` job runs, from the timeout, the
    abort deadline and the options it applies (pillar defaults merged): the master waits
    exactly this (plus its return margin). Read from the minion's own bounds:

    - live: the timeout, then the abort retried for one abort deadline and libvirt's end of
      the job for another; ``timeout_action`` pause or postcopy first grant the rest of the
      copy one more;
    - offline: the timeout and one abort deadline;
    - cold: the guest's ``shutdown_timeout``, then offline's;
    - save: the save within the timeout and its abort, the restore within what is left (at
      least one abort deadline), then at most two readings of the destination after lost
      contact (one abort deadline each)."""
    grace = float(abort_deadline)
    if mode == "live":
        graces = 3 if options.get("timeout_action") in ("pause", "postcopy") else 2
        return float(timeout) + graces * grace
    if mode == "offline":
        return float(timeout) + grace
    if mode == "cold":
        return float(options.get("shutdown_timeout", shutdown_timeout)) + float(timeout) + grace
    return float(timeout) + 4 * grace


def downtime_at(options, elapsed):
    """The max downtime (ms) the policy allows ``elapsed`` seconds into the job, or None: with
    ``downtime_steps`` N it rises from max/N in N equal steps, one every
    ``downtime_step_delay`` seconds (default 2), to ``max_downtime``."""
    top = options.get("max_downtime")
    if top is None:
        return None
    steps = options.get("downtime_steps", 1)
    delay = options.get("downtime_step_delay", 2.0)
    step = min(steps, 1 + int(elapsed // delay))
    return max(1, top * step // steps)


def to_libvirt(libvirt, options, mode, stream):
    """(flags, params) these options add to a migration's."""
    flags, params = 0, {}
    if options.get("change_protection"):
        flags |= libvirt.VIR_MIGRATE_CHANGE_PROTECTION
    if "xml" in options:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = options["xml"]
    if "persistent_xml" in options:
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = options["persistent_xml"]
    if "dname" in options:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_NAME] = options["dname"]
    if mode != "live":
        return flags, params
    for key, flag in (("suspend", "PAUSED"), ("auto_converge", "AUTO_CONVERGE"),
                      ("postcopy", "POSTCOPY"), ("compressed", "COMPRESSED"),
                      ("zerocopy", "ZEROCOPY")):
        if options.get(key):
            flags |= getattr(libvirt, f"VIR_MIGRATE_{flag}")
    if options.get("parallel_connections"):
        flags |= libvirt.VIR_MIGRATE_PARALLEL
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = options["parallel_connections"]
    for key, param in (("auto_converge_initial", "AUTO_CONVERGE_INITIAL"),
                       ("auto_converge_increment", "AUTO_CONVERGE_INCREMENT"),
                       ("postcopy_bandwidth", "BANDWIDTH_POSTCOPY"),
                       ("compression_mt_level", "COMPRESSION_MT_LEVEL"),
                       ("compression_mt_threads", "COMPRESSION_MT_THREADS"),
                       ("compression_mt_dthreads", "COMPRESSION_MT_DTHREADS"),
                       ("compression_zlib_level", "COMPRESSION_ZLIB_LEVEL"),
                       ("compression_zstd_level", "COMPRESSION_ZSTD_LEVEL"),
                       ("migrate_uri", "URI"), ("listen_address", "LISTEN_ADDRESS"),
                       ("graphics_uri", "GRAPHICS_URI"),
                       ("tls_destination", "TLS_DESTINATION"),
                       ("switchover_bandwidth", "BANDWIDTH_AVAIL_SWITCHOVER")):
        if key in options:
            params[getattr(libvirt, f"VIR_MIGRATE_PARAM_{param}")] = options[key]
    if "compression_xbzrle_cache" in options:
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] = (
            options["compression_xbzrle_cache"] << 20)
    if options.get("copy_storage"):
        flags |= (libvirt.VIR_MIGRATE_NON_SHARED_DISK if options["copy_storage"] == "all"
                  else libvirt.VIR_MIGRATE_NON_SHARED_INC)
        if options.get("copy_storage_synchronous_writes"):
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES
    for key, param in (("migrate_disks", "MIGRATE_DISKS"),
                       ("migrate_disks_detect_zeroes", "MIGRATE_DISKS_DETECT_ZEROES")):
        if key in options:
            params[getattr(libvirt, f"VIR_MIGRATE_PARAM_{param}")] = list(options[key])
    for key, param in (("disks_port", "DISKS_PORT"), ("disks_uri", "DISKS_URI")):
        if key in options:
            params[getattr(libvirt, f"VIR_MIGRATE_PARAM_{param}")] = options[key]
    if options.get("compressed"):
        # Always the method list: libvirt tunes xbzrle's cache (and each method's level) only
        # when its method is listed, and fills in its xbzrle default only after that check.
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = list(
            options.get("compression_methods", ["xbzrle"]))
    return flags, params
