"""
Will libvirt treat a domain's disks as shared storage? The facts a hypervisor can see, and the
verdict, following libvirt's own rules (libvirt 11.3: ``qemuMigrationSrcIsSafe`` in
src/qemu/qemu_migration.c, ``virFileIsSharedFS`` in src/util/virfile.c):

- empty and read-only disks, and network disks, are safe; so are block disks (libvirt assumes
  a block device is a LUN both hosts see, and checks nothing);
- a volume disk (``type='volume'``) is judged as what its pool makes it: a file in a dir or
  netfs pool (then by the file's rules: an NFS pool's volume is on NFS), a block device, or a
  network volume (``virStorageSourceGetActualType``);
- a file disk is safe when ``statfs()`` on its path (or, if that fails, on the nearest
  ancestor it can stat) reports a shared filesystem type -- NFS, GFS2, OCFS2, AFS, SMB/CIFS,
  Ceph, GPFS, ACFS, BeeGFS, or the FUSE mounts glusterfs and quobyte -- or when its resolved path
  lies under an entry of qemu.conf ``shared_filesystems``;
- everything else is refused with ``VIR_ERR_MIGRATE_UNSAFE`` ("Migration without shared storage
  is unsafe"), unless the caller sets ``VIR_MIGRATE_UNSAFE``, which vmigrate never does on its own.

``shared_filesystems`` is read once, when the daemon starts: each entry goes through realpath(),
and an entry that does not exist at that moment becomes NULL, which ends the list there -- that
entry and every entry after it are ignored until the daemon restarts. A shared directory that is
mounted (or created) after libvirtd started therefore does not count.

Fact gathering reads this host's files (``/proc/self/mountinfo``, qemu.conf, the daemon's
pidfile) and takes paths as arguments; the verdict (:func:`assess`) is a pure function of facts.
What the domain's XML says about its disks, and which filesystem types count as shared, is
``vmigrate_disks``; the check of disks option ``copy_storage`` copies is ``vmigrate_copy``.
No Salt dunders: callers import this as plain Python (``vmigrate_imports.py``).
"""

import ctypes
import ctypes.util
import json
import os
import re
import runpy
import time

(disks_,) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_disks")

QEMU_CONF = "/etc/libvirt/qemu.conf"
DAEMON_PIDFILES = ("/run/virtqemud.pid", "/run/libvirtd.pid")
FIX_SHARED = (
    "mount the NFS export at the same path on both hosts (state.apply vmigrate.nfs.client); "
    "a shared filesystem libvirt cannot recognise by its type must be listed in "
    "/etc/libvirt/qemu.conf shared_filesystems on both hosts, and libvirtd restarted once that "
    "path exists (libvirtd ignores a listed path that did not exist when it started, and every "
    "entry after it); never migrate with unsafe=True"
)
FIX_BLOCK = ("make sure the destination sees the same device (the same LUN) at this path; a "
             "local disk there would be a different disk")
FIX_VOLUME = ("start the disk's storage pool on this host (virsh pool-start), or check the "
              "volume's name")
FIX_CACHE = (
    "set the disk's cache mode to 'none' (or 'writeback') in the domain definition and restart "
    "the guest; libvirt allows 'unsafe' here only because QEMU drops the destination's page "
    "cache, which does not bring back writes the source never flushed"
)
FIX_RESTART = (
    "restart libvirtd on this host now that the path exists (systemctl restart libvirtd, or "
    "virtqemud); on boot, order it after the mount (e.g. RequiresMountsFor=<path> in a drop-in); "
    "never migrate with unsafe=True"
)


# ---- facts ---------------------------------------------------------------------------------
def _unescape(field):
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text):
    """``/proc/<pid>/mountinfo`` as a list of (mount point, fstype, source)."""
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 2:
            mounts.append((_unescape(fields[4]), tail[0], _unescape(tail[1])))
    return mounts


def _under(path, prefix):
    return path == prefix or prefix == "/" or path.startswith(prefix.rstrip("/") + "/")


def mount_of(path, mounts):
    """The mount (mount point, fstype, source) holding ``path``: the longest matching prefix,
    the last mounted where several share it (the one on top)."""
    best = None
    for mount in mounts:
        if _under(path, mount[0]) and (best is None or len(mount[0]) >= len(best[0])):
            best = mount
    return best


_LIBC = None


def statfs_type(path):
    """statfs(2) ``f_type`` of ``path``, walking up to the nearest ancestor statfs can read,
    as libvirt does. None if nothing can be read."""
    global _LIBC  # pylint: disable=global-statement
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    probe = path
    while True:
        if _LIBC.statfs(os.fsencode(probe), buf) == 0:
            return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
        if probe in ("/", ""):
            return None
        probe = os.path.dirname(probe)


def shared_filesystems(conf_text):
    """The ``shared_filesystems`` list of a qemu.conf text, as written ([] when absent)."""
    lines = [ln for ln in conf_text.splitlines() if not ln.lstrip().startswith("#")]
    match = re.search(r"^\s*shared_filesystems\s*=\s*\[(.*?)\]", "\n".join(lines),
                      re.MULTILINE | re.DOTALL)
    # libvirt's virConf takes a string in double or in single quotes.
    return ([d or q for d, q in re.findall(r'"([^"]*)"|\'([^\']*)\'', match[1])]
            if match else [])


def effective_overrides(entries, realpath=os.path.realpath, exists=os.path.exists):
    """What a daemon starting now would keep of ``entries``: each resolved, stopping at the
    first that does not exist (libvirt's realpath() NULL ends the list). Returns
    (kept, dropped)."""
    kept = []
    for i, entry in enumerate(entries):
        if not exists(entry):
            return kept, list(entries[i:])
        kept.append(realpath(entry))
    return kept, []


def daemon_facts(pidfiles=DAEMON_PIDFILES, conf=QEMU_CONF):
    """The QEMU driver's daemon on this host: ``daemon`` (libvirtd or virtqemud), ``pid``,
    ``started`` (epoch seconds), and qemu.conf's ``conf_mtime``; None for what cannot be read."""
    facts = {"daemon": None, "pid": None, "started": None, "conf": conf, "conf_mtime": None}
    try:
        facts["conf_mtime"] = os.stat(conf).st_mtime
    except OSError:
        pass
    for pidfile in pidfiles:
        try:
            with open(pidfile, encoding="ascii") as fh:
                pid = int(fh.read().strip())
            started = process_started(pid)
        except (OSError, ValueError, IndexError):
            continue
        facts.update(daemon=os.path.basename(pidfile)[:-4], pid=pid, started=started)
        break
    return facts


def process_started(pid):
    """When process ``pid`` started, in epoch seconds, to about 10 ms: its start in clock ticks
    since boot (/proc/<pid>/stat) against the uptime (/proc/uptime) -- not /proc/stat's
    ``btime``, whole seconds that would put the start up to 1 s early."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as fh:
        uptime = float(fh.read().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def disk_facts(disks, conf_text, mountinfo_text, statfs=statfs_type,
               realpath=os.path.realpath, exists=os.path.exists):
    """Per writable file disk: the resolved path, the mount holding it (point, fstype,
    source), the statfs type libvirt reads, and the ``shared_filesystems`` entry covering it."""
    mounts = parse_mountinfo(mountinfo_text)
    entries = shared_filesystems(conf_text)
    kept, dropped = effective_overrides(entries, realpath, exists)
    facts = []
    for disk in disks:
        item = dict(disk)
        if disk["type"] == "file" and disk["path"] and not disk["readonly"]:
            resolved = realpath(disk["path"])
            mount = mount_of(resolved, mounts)
            magic = statfs(resolved)
            item.update(
                resolved=resolved,
                mountpoint=mount[0] if mount else None,
                fstype=mount[1] if mount else None,
                fssource=mount[2] if mount else None,
                magic=magic,
                override=next((e for e in kept if _under(resolved, e)), None),
                override_listed=next((e for e in entries if _under(resolved, realpath(e))),
                                     None),
            )
        facts.append(item)
    return {"disks": facts, "shared_filesystems": entries, "dropped": dropped}


def gather(xml_text, conf=QEMU_CONF, mountinfo="/proc/self/mountinfo", volumes=None):
    """All storage facts for one domain on this host (reads the files named); ``volumes`` as
    :func:`domain_disks` takes them."""
    try:
        with open(conf, encoding="utf-8", errors="replace") as fh:
            conf_text = fh.read()
    except OSError:
        conf_text = ""
    with open(mountinfo, encoding="utf-8", errors="replace") as fh:
        mountinfo_text = fh.read()
    facts = disk_facts(disks_.domain_disks(xml_text, volumes), conf_text, mountinfo_text)
    facts["daemon"] = daemon_facts(conf=conf)
    return facts


PROBE_PREFIX = ".vmigrate-probe-"
PROBE_FILE = "sentinel"


def disk_dirs(facts):
    """The distinct directories holding this domain's writable file disks (resolved)."""
    return sorted({os.path.dirname(d["resolved"]) for d in facts["disks"] if d.get("resolved")})


def _write_sentinel(directory, token):
    probe = os.path.join(directory, PROBE_PREFIX + token)
    os.mkdir(probe, 0o755)
    try:
        os.chmod(probe, 0o755)  # whatever the umask: the other host must be able to look
        path = os.path.join(probe, PROBE_FILE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, token.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        info = os.stat(path)
    except BaseException:
        _remove_sentinel(probe)  # what this call made, and only that
        raise
    return {"probe": probe, "owner": info.st_uid, "group": info.st_gid}


def _remove_sentinel(probe):
    try:
        os.unlink(os.path.join(probe, PROBE_FILE))
    except FileNotFoundError:
        pass
    try:
        os.rmdir(probe)
    except FileNotFoundError:
        pass


def _as_owner(directory, step, *args):
    """Run ``step(*args)`` in a forked child with the user and group of ``directory``'s owner,
    for storage where root has no rights of its own (NFS root_squash with an image directory
    only libvirt-qemu may write). The child makes system calls only, then leaves with
    ``os._exit``; its result comes back as JSON through a pipe."""
    info = os.stat(directory)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        code = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(info.st_gid)
            os.setuid(info.st_uid)
            os.write(wfd, json.dumps({"ok": step(*args)}).encode())
            code = 0
        except BaseException as err:  # pylint: disable=broad-except
            os.write(wfd, json.dumps({"error": f"{type(err).__name__}: {err}"}).encode())
        finally:
            os._exit(code)  # pylint: disable=protected-access
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.close(rfd)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks) or b'{"error": "no answer"}')
    if "error" in out:
        raise PermissionError(f"as {directory}'s owner {info.st_uid}:{info.st_gid}: "
                              f"{out['error']}")
    return out["ok"]


def probe_write(directory, token):
    """Write a sentinel the other host must see: ``<directory>/.vmigrate-probe-<token>/sentinel``
    holding ``token``, flushed to the storage. Returns the probe directory and the owner the
    storage gave the file: root writes it, and an owner other than 0 means root is squashed
    there (NFS root_squash: the export's anonymous uid). Where root may not write at all
    (squashed root in a directory only its owner may write), the directory's owner writes it,
    and ``root_denied`` says root is squashed."""
    try:
        return _write_sentinel(directory, token)
    except PermissionError:
        return dict(_as_owner(directory, _write_sentinel, directory, token), root_denied=True)


def probe_remove(probe, root_denied=False):
    """Remove what :func:`probe_write` made, and nothing else (as whoever made it)."""
    if root_denied:
        _as_owner(os.path.dirname(probe), _remove_sentinel, probe)
    else:
        _remove_sentinel(probe)


def image_owners(facts, stat=os.stat):
    """Owner, group and mode of each writable file disk's image, by target."""
    owners = {}
    for disk in facts["disks"]:
        if disk.get("resolved"):
            try:
                info = stat(disk["resolved"])
            except OSError as err:
                owners[disk["target"]] = {"path": disk["resolved"], "error": err.strerror}
                continue
            owners[disk["target"]] = {"path": disk["resolved"], "uid": info.st_uid,
                                      "gid": info.st_gid, "mode": info.st_mode & 0o7777}
    return owners


# ---- verdict -------------------------------------------------------------------------------
# A start time read from /proc is one clock tick (10 ms) coarse; anything within this of it
# counts as before the start.
START_SLACK = 0.1


def _after_start(epoch, daemon):
    started = daemon.get("started")
    return bool(epoch and started and epoch > started + START_SLACK)


def _stamp(epoch):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "?"


def _cache_check(disk, label):
    """libvirt refuses a cache mode other than none/directsync only when QEMU cannot drop the
    destination's page cache; every QEMU libvirt 11 supports can. 'unsafe' is refused here
    all the same: it skips the flush at switchover."""
    cache = disk.get("cache") or "default"
    name = f"disk_cache:{disk.get('target')}"
    if cache == "unsafe" and not disk.get("shareable"):
        return {"name": name, "ok": False, "fix": FIX_CACHE,
                "detail": f"{label}: cache='unsafe' ignores flushes, including the one at "
                          "switchover: the destination can read data the source never wrote "
                          "back to the shared storage"}
    if cache in ("none", "directsync"):
        why = "QEMU bypasses the host page cache"
    else:
        why = ("the source flushes at switchover and QEMU on the destination drops its page "
               "cache before reading (drop-cache)")
    return {"name": name, "ok": True, "fix": None, "detail": f"{label}: cache={cache!r}: {why}"}


def assess(facts, host):
    """Checks for live migration from ``host``: one per disk (``name``, ``ok``, ``detail``,
    ``fix``), ``ok`` False where libvirt will refuse. A disk that depends on
    ``shared_filesystems`` passes with a note: whether the running daemon took the entry in
    cannot be read from outside it, and libvirt itself has the last word."""
    checks, caches = [], []
    daemon = facts.get("daemon") or {}
    for disk in facts["disks"]:
        name = f"shared_storage:{disk.get('target') or disk.get('path')}"
        label = f"disk {disk.get('target')} ({disk.get('path')})"
        if disk.get("empty", not disk.get("path")):
            checks.append({"name": name, "ok": True, "detail": f"{label}: empty", "fix": None})
            continue
        if disk["readonly"]:
            checks.append({"name": name, "ok": True, "fix": None,
                           "detail": f"{label}: read-only, safe on any storage"})
            continue
        if disk.get("volume"):
            label += f", volume {disk['volume']}"
        if disk["type"] == "network":
            checks.append({"name": name, "ok": True, "fix": None,
                           "detail": f"{label}: network disk, reached by both hosts"})
            continue
        if disk["type"] == "block":
            caches.append(_cache_check(disk, label))
            checks.append({"name": name, "ok": True, "fix": FIX_BLOCK,
                           "detail": f"{label}: a block device, which libvirt treats as "
                                     "shared (a LUN both hosts see at this path): it checks "
                                     "nothing more, and neither can vmigrate"})
            continue
        if disk["type"] == "volume":
            checks.append({"name": name, "ok": False, "fix": FIX_VOLUME,
                           "detail": f"{label}: its storage pool or volume could not be read "
                                     "on this host"})
            continue
        if disk["type"] != "file":
            checks.append({"name": name, "ok": False, "fix": FIX_SHARED,
                           "detail": f"{label}: a {disk['type']} disk is not shared storage "
                                     "to libvirt"})
            continue
        caches.append(_cache_check(disk, label))
        where = disks_.location(disk)
        if disks_.shared_by_type(disk):
            checks.append({"name": name, "ok": True, "fix": None,
                           "detail": f"{label}: on {where}, shared storage by type"})
            continue
        entry = disk.get("override_listed")
        if entry:
            note = (f"{label}: on {where}, not shared by type; covered by qemu.conf "
                    f"shared_filesystems entry {entry!r}, which counts only if that path "
                    f"existed when {daemon.get('daemon') or 'libvirtd'} started "
                    f"({_stamp(daemon.get('started'))})")
            stale = _after_start(daemon.get("conf_mtime"), daemon)
            if stale:
                checks.append({"name": name, "ok": False, "fix": FIX_RESTART,
                               "detail": note + f"; {daemon['conf']} changed after the daemon "
                                                f"started ({_stamp(daemon['conf_mtime'])})"})
            elif disk.get("override") is None:
                checks.append({"name": name, "ok": False, "fix": FIX_SHARED,
                               "detail": note + "; an earlier entry does not exist "
                                                f"({', '.join(facts['dropped'])}), which ends "
                                                "libvirt's list before this one"})
            else:
                checks.append({"name": name, "ok": True, "fix": FIX_RESTART, "detail": note})
            continue
        checks.append({"name": name, "ok": False, "fix": FIX_SHARED,
                       "detail": f"{label}: on {where}, which libvirt does not treat as "
                                 "shared storage, and no qemu.conf shared_filesystems entry "
                                 "covers it"})
    return checks + caches


def explain_unsafe(facts, host):
    """The text added to libvirt's VIR_ERR_MIGRATE_UNSAFE refusal: every writable disk not
    shared by type, what libvirt saw, and the fix."""
    lines = []
    daemon = facts.get("daemon") or {}
    for check, disk in zip(assess(facts, host), facts["disks"]):
        if disk.get("type") != "file" or disk.get("readonly") or not disk.get("path"):
            continue
        if disk.get("magic") in disks_.SHARED_MAGIC:
            continue
        lines.append(check["detail"])
    text = "; ".join(lines) or "no disk of this domain is on storage libvirt treats as shared"
    started = daemon.get("started")
    listed = any(d.get("override_listed") for d in facts["disks"])
    fix = FIX_RESTART if listed else FIX_SHARED
    if listed and started:
        conf_mtime = daemon.get("conf_mtime")
        why = (f"{daemon.get('conf')} changed after it started ({_stamp(conf_mtime)})"
               if _after_start(conf_mtime, daemon) else
               "an earlier entry does not exist" if facts.get("dropped") else
               "the path did not exist yet when it started")
        text += (f"; {daemon.get('daemon') or 'libvirtd'} on {host} (pid {daemon.get('pid')}, "
                 f"started {_stamp(started)}) did not take that entry in: {why}")
    return f"{text}. Fix: {fix}"
