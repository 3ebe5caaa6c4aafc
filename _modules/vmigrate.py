"""
Move libvirt/KVM domains between hypervisors: the minion side of vmigrate.

Runs on a hypervisor minion and talks to its libvirtd through libvirt-python (never ``virsh``).
The master side (``_runners/vmigrate.py``, ``_states/vmigrate.py``, ``salt/migrate.sls``) decides
where a domain lives and calls :py:func:`migrate` on the source minion.

Configuration is read from pillar ``vmigrate`` only (see ``pillar.example``): a grain or a key in
the minion's config cannot change where a VM goes or switch a safety check off.

.. code-block:: yaml

    vmigrate:
      transport: ssh              # ssh | tls | tcp; tcp needs allow_insecure_transport
      hypervisors:
        host1: {address: 192.0.2.11}
        host2: {address: 192.0.2.12, migration_address: 198.51.100.12}

CLI Example:

.. code-block:: bash

    salt host1 vmigrate.domains
    salt host1 vmigrate.precheck vdisk host2
    salt host1 vmigrate.migrate vdisk host2
    salt host1 vmigrate.migrate vdisk host2 mode=offline
"""

import contextlib
import contextvars
import errno
import itertools
import logging
import os
import queue
import re
import runpy
import secrets
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape as xml_escape

from salt.exceptions import CommandExecutionError, SaltInvocationError


# The shared code (``_utils``) as plain Python in every install: _utils/vmigrate_imports.py.
_shared = runpy.run_path(next(p for p in (os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), d, "vmigrate_imports.py") for d in ("utils", "_utils"))
    if os.path.isfile(p)))["load"]
checks_, install_, options_, storage_, validate_, xmlguard_ = map(_shared, (
    "vmigrate_checks", "vmigrate_install", "vmigrate_options", "vmigrate_storage",
    "vmigrate_validate", "vmigrate_xmlguard"))

try:
    import libvirt

    HAS_LIBVIRT = True
except ImportError:
    HAS_LIBVIRT = False

log = logging.getLogger(__name__)

__virtualname__ = "vmigrate"

TRANSPORTS = ("ssh", "tls", "tcp")
DEFAULTS = {
    "uri": "qemu:///system",
    "transport": "ssh",
    "ssh_user": "root",
    "ssh_keyfile": None,
    "hypervisors": {},
    "keepalive_interval": 5,
    "keepalive_count": 3,
    "timeout": 600,
    "abort_deadline": 30,
    "memory_reserve_mib": 256,
    "poll_interval": 0.5,
    "progress_events": True,
    "shutdown_timeout": 120,
    "options": {},
    "allow_xml_changes": None,
}
# Switches that weaken a safety check: False unless pillar says otherwise, each named in results.
SAFETY_SWITCHES = ("allow_unsafe", "allow_insecure_transport", "allow_plain_migration_stream")
# libvirt's names for virDomainState, in order, and for the reasons vmigrate reports.
STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed",
          "pmsuspended")
REASONS = {
    "running": ("unknown", "booted", "migrated", "restored", "from_snapshot", "unpaused",
                "migration_canceled", "save_canceled", "wakeup", "crashed", "postcopy",
                "postcopy_failed"),
    "paused": ("unknown", "user", "migration", "save", "dump", "ioerror", "watchdog",
               "from_snapshot", "shutting_down", "snapshot", "crashed", "starting_up",
               "postcopy", "postcopy_failed", "api_error"),
    "shutoff": ("unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
                "from_snapshot", "daemon"),
}
_ADDR_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]{0,252})")
_SSH_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_KEYFILE_RE = re.compile(r"/[A-Za-z0-9._/-]{1,4095}")

_EVENT_LOOP = {"pid": None}
# Words for a person; the master decides on an outcome's status code, never on these.
REFUSED = "nothing was moved"
# Undefining a copy keeps what other hosts or a later start may need: the NVRAM and TPM state
# (a path on shared storage is the kept copy's too). vmigrate never deletes such a file.
_UNDEFINE_KEEP = ((libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
                   | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_TPM", 0)) if HAS_LIBVIRT else 0)
JOB_OPERATIONS = ("unknown", "start", "save", "restore", "migration_in", "migration_out",
                  "snapshot", "snapshot_revert", "dump", "backup", "snapshot_delete")


def __virtual__():
    if not HAS_LIBVIRT:
        return (False, "vmigrate: libvirt-python is not installed (pip install libvirt-python)")
    return __virtualname__


# ---- configuration and validation -----------------------------------------------------------
def _check(rule, *args, **kwargs):
    """Run input rule ``rule`` of _utils/vmigrate_validate.py (raises SaltInvocationError)."""
    return getattr(validate_, rule)(*args, **kwargs)


def _config():
    pillar = __pillar__.get("vmigrate") or {}
    if not isinstance(pillar, dict):
        raise SaltInvocationError(f"pillar vmigrate must be a mapping, got {type(pillar).__name__}")
    conf = dict(DEFAULTS)
    conf.update(pillar)
    for key in SAFETY_SWITCHES:
        if not isinstance(conf.get(key, False), bool):
            raise SaltInvocationError(f"pillar vmigrate:{key} must be true or false")
        conf[key] = conf.get(key, False)
    for key in ("timeout", "abort_deadline", "shutdown_timeout"):
        conf[key] = _check("seconds", conf[key], f"pillar vmigrate:{key}", allow_none=False)
    try:
        conf["allow_xml_changes"] = xmlguard_.allowed(
            conf["allow_xml_changes"])
    except ValueError as err:
        raise SaltInvocationError(str(err)) from err
    return conf


def _check_addr(value, where):
    if not isinstance(value, str) or not _ADDR_RE.fullmatch(value):
        raise SaltInvocationError(f"pillar {where} {value!r} is not a host name or address")
    return value


def dest_uris(dest, mode="live"):
    """
    Resolve how to reach hypervisor ``dest``, from pillar.

    Returns a dict: ``uri`` (the libvirt connection the source libvirtd opens to the
    destination), ``migrate_uri`` (where QEMU sends the memory stream, None when it is
    tunnelled), ``transport`` and ``data_stream`` (``tls``, ``tunnelled`` or ``plain tcp``).

    :param dest: the destination's minion id, a key of pillar ``vmigrate:hypervisors``
    :param mode: ``live`` (default) or ``offline`` (no memory moves: no data stream)

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.dest_uris host2
    """
    _check("minion_id", dest)
    conf = _config()
    hypervisors = conf["hypervisors"] or {}
    if dest not in hypervisors:
        raise SaltInvocationError(
            f"dest {dest!r} is not a hypervisor: add it to pillar vmigrate:hypervisors "
            f"(known: {', '.join(sorted(hypervisors)) or 'none'})"
        )
    entry = hypervisors[dest] or {}
    where = f"vmigrate:hypervisors:{dest}"
    address = _check_addr(entry.get("address", dest), f"{where}:address")
    mig_address = _check_addr(entry.get("migration_address", address),
                              f"{where}:migration_address")
    transport = entry.get("transport", conf["transport"])
    if transport not in TRANSPORTS:
        raise SaltInvocationError(
            f"pillar vmigrate:transport {transport!r}: must be one of {', '.join(TRANSPORTS)}"
        )
    if transport == "tcp" and not conf["allow_insecure_transport"]:
        raise SaltInvocationError(
            "transport tcp is unauthenticated and unencrypted: use ssh or tls, or set pillar "
            "vmigrate:allow_insecure_transport: true on an isolated network"
        )
    if transport == "ssh":
        user = entry.get("ssh_user", conf["ssh_user"])
        if not isinstance(user, str) or not _SSH_USER_RE.fullmatch(user):
            raise SaltInvocationError(
                f"pillar vmigrate ssh_user {user!r}: a user name (lowercase letters, digits, "
                "_ and -, at most 32)")
        uri = f"qemu+ssh://{urllib.parse.quote(user, safe='')}@{address}/system"
        keyfile = entry.get("ssh_keyfile", conf["ssh_keyfile"])
        if keyfile is not None:
            if (not isinstance(keyfile, str) or not _KEYFILE_RE.fullmatch(keyfile)
                    or "/../" in f"{keyfile}/" or "/./" in f"{keyfile}/"):
                raise SaltInvocationError(
                    f"pillar vmigrate ssh_keyfile {keyfile!r}: an absolute path of letters, "
                    "digits, '.', '_', '-' and '/' (no '..')")
            uri += "?" + urllib.parse.urlencode({"keyfile": keyfile}, safe="/")
    else:
        uri = f"qemu+{transport}://{address}/system"
    # The memory stream: QEMU's own TLS with tls; through the ssh-protected libvirt connection
    # with ssh; plain TCP only with its own switch (guest RAM holds keys).
    if mode != "live":
        migrate_uri, stream = None, None
    elif transport == "tls":
        migrate_uri, stream = f"tcp://{mig_address}", "tls"
    elif transport == "ssh":
        migrate_uri, stream = None, "tunnelled"
    elif conf["allow_plain_migration_stream"]:
        migrate_uri, stream = f"tcp://{mig_address}", "plain tcp"
    else:
        raise SaltInvocationError(
            "transport tcp sends the guest's memory unencrypted: use ssh or tls, or also set "
            "pillar vmigrate:allow_plain_migration_stream: true on an isolated network"
        )
    return {"uri": uri, "migrate_uri": migrate_uri, "transport": transport,
            "data_stream": stream}


# ---- libvirt connection and errors ----------------------------------------------------------
def _libvirt_error(err, what):
    """Translate a libvirtError into a CommandExecutionError keeping libvirt's code and text."""
    return CommandExecutionError(
        f"{what}: {err.get_error_message()} "
        f"(libvirt error code {err.get_error_code()}, domain {err.get_error_domain()})"
    )


def _ensure_event_loop():
    """One libvirt event loop thread per process: needed for keepalive and domain events."""
    if _EVENT_LOOP["pid"] == os.getpid():
        return
    # Errors reach callers as exceptions (translated by _libvirt_error); without a handler
    # libvirt-python would also print each one to the minion's stderr.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    libvirt.virEventRegisterDefaultImpl()

    def loop():
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
    _EVENT_LOOP["pid"] = os.getpid()


@contextlib.contextmanager
def _connect(conf, uri=None, what="libvirt"):
    """Open this hypervisor's libvirt (or ``uri``) with keepalive (a dead peer fails instead of
    hanging)."""
    uri = uri or conf["uri"]
    _ensure_event_loop()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise _libvirt_error(err, f"cannot connect to {what} at {uri}") from err
    try:
        kept = _keepalive(conn, conf)
        yield conn
    finally:
        _close_soon(conn, f"{what} at {uri}", bounded=kept)


def _lookup(conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise CommandExecutionError(
                f"vm {name!r} is not defined on {__opts__['id']}"
            ) from err
        raise _libvirt_error(err, f"looking up vm {name!r}") from err


def _describe(dom):
    code, reason = dom.state()
    state = STATES[code] if 0 <= code < len(STATES) else str(code)
    names = REASONS.get(state, ())
    return {
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "state": state,
        "reason": names[reason] if 0 <= reason < len(names) else str(reason),
        "persistent": bool(dom.isPersistent()),
    }


# ---- public functions -----------------------------------------------------------------------
def domains():
    """
    List the domains on this hypervisor.

    Returns a dict: ``host`` (this minion's id), ``host_uuid`` (its libvirt host UUID: the
    master checks that a migration's URI reaches this machine), ``timeout``,
    ``abort_deadline`` and ``shutdown_timeout`` (this host's, seconds) and ``options`` (pillar
    ``vmigrate:options``, the defaults it applies to every migration): the master waits for a
    migration from here exactly as long as these make it, and verifies it as they make it
    (``suspend``: it arrives paused); and ``domains``, keyed by domain name, each with
    ``uuid``, ``state`` (running, paused, shutoff, ...), ``reason`` (libvirt's reason for that
    state, e.g. paused by ``migration``) and ``persistent``. A domain that vanishes while it is being read (an
    incoming migration that failed) is left out.

    CLI Example:

    .. code-block:: bash

        salt -G 'virtual:physical' vmigrate.domains
    """
    conf = _config()
    found = {}
    with _connect(conf) as conn:
        try:
            doms = conn.listAllDomains()
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, "listing domains") from err
        for dom in doms:
            try:
                info = _describe(dom)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise _libvirt_error(err, "reading a domain") from err
            found[info.pop("name")] = info
        host_uuid = _host_uuid_of(conn)
    return {"host": __opts__["id"], "host_uuid": host_uuid, "timeout": conf["timeout"],
            "abort_deadline": conf["abort_deadline"],
            "shutdown_timeout": conf["shutdown_timeout"],
            "options": options_.merge(conf["options"], None),
            "domains": found}


def version():
    """
    Which vmigrate this minion runs and how it is installed: the ``saltext-vmigrate``
    extension package, or synced from the master's file_roots; and whether both are there
    (the synced copy then shadows the extension).

    Returns a dict: ``version``, ``install`` (extension, synced or repository), ``path``,
    ``sls_path``, ``shadowed`` and ``comment``.

    CLI Example:

    .. code-block:: bash

        salt '*' vmigrate.version
    """
    return install_.describe(__file__, __opts__.get("extension_modules"))


def _host_uuid_of(conn):
    """The libvirt host UUID ``conn`` reaches (its capabilities' <host><uuid>), or None."""
    try:
        return checks_.host_uuid(conn.getCapabilities())
    except libvirt.libvirtError:
        return None


def domain(name):
    """
    Describe one domain on this hypervisor: ``name``, ``uuid``, ``state``, ``reason``,
    ``persistent``.

    :param name: the domain name

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.domain vdisk
    """
    _check("vm_name", name)
    with _connect(_config()) as conn:
        dom = _lookup(conn, name)
        try:
            return _describe(dom)
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, f"reading vm {name!r}") from err


def _xml(dom):
    """The domain's migratable XML: what the destination will be asked to run."""
    try:
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    except libvirt.libvirtError as err:
        raise _libvirt_error(err, "reading the domain's XML") from err


def _volumes(conn, xml):
    """{"pool/volume": (type, path)} of a domain's volume disks, as this host's libvirt resolves
    them (a dir or netfs pool's volume is a file, a logical or iSCSI pool's a block device);
    one it cannot read is left out (and refused as such)."""
    kinds = {libvirt.VIR_STORAGE_VOL_FILE: "file", libvirt.VIR_STORAGE_VOL_BLOCK: "block",
             libvirt.VIR_STORAGE_VOL_NETWORK: "network", libvirt.VIR_STORAGE_VOL_NETDIR: "network"}
    out = {}
    for pool, volume in storage_.disk_volumes(xml):
        with contextlib.suppress(libvirt.libvirtError):
            vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
            kind = kinds.get(vol.info()[0])
            if kind:
                out[f"{pool}/{volume}"] = (kind, vol.path())
    return out


def _storage_facts(dom, xml=None):
    xml = xml or _xml(dom)
    try:
        volumes = _volumes(dom.connect(), xml)
    except libvirt.libvirtError:
        volumes = {}
    return storage_.gather(xml, volumes=volumes)


def _storage_checks(dom, xml=None, facts=None):
    return storage_.assess(facts or _storage_facts(dom, xml),
                                                __opts__["id"])


def _destroy_transient(pool):
    try:
        pool.destroy()
    except libvirt.libvirtError as err:  # it goes when that libvirtd restarts
        log.warning("vmigrate: could not destroy transient storage pool %s: %s",
                    pool.name(), err.get_error_message())


def _probe_seen(dconn, probe, strict=False):
    """Does the destination's libvirtd see the probe directory, and its sentinel, at the same
    path? Asked through a transient ``dir`` storage pool over the probe directory alone (a
    fresh path no other pool can claim; libvirt only lists it, and the pool goes when
    destroyed). None when the destination has no storage driver to ask. ``strict`` (before
    copying a disk, where seeing it is the danger): the random directory being there at all
    counts as seen, and only "No such file or directory" as not seen; any other answer is
    None."""
    name = os.path.basename(probe).lstrip(".")
    xml = (f"<pool type='dir'><name>{name}</name>"
           f"<target><path>{xml_escape(probe)}</path></target></pool>")
    try:
        pool = dconn.storagePoolCreateXML(xml, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_NO_CONNECT):
            return None, err.get_error_message()
        missing = (err.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR
                   and err.get_int1() == errno.ENOENT)
        return (False if missing or not strict else None), err.get_error_message()
    try:
        if strict:
            return True, None
        names = pool.listVolumes()
        if "sentinel" in names:
            return True, None
        return False, f"{probe} is there but holds no sentinel"
    finally:
        _destroy_transient(pool)


def _probes(dconn, facts, dirs=None, strict=False):
    """One sentinel per disk directory (``dirs``, default the resolved ones), written here and
    looked for from the destination; every probe directory is removed before this returns."""
    results = []
    if dirs is None:
        dirs = storage_.disk_dirs(facts)
    for directory in dirs:
        result = {"dir": directory}
        try:
            result.update(storage_.probe_write(directory,
                                                                    secrets.token_hex(8)))
        except OSError as err:
            result["error"] = f"{err.strerror} ({err.filename or directory})"
            results.append(result)
            continue
        try:
            result["seen"], result["detail"] = _probe_seen(dconn, result["probe"], strict)
        finally:
            storage_.probe_remove(result["probe"],
                                                       result.get("root_denied", False))
        results.append(result)
    return results


def _available_bytes(dconn):
    """Memory the destination can give: free plus reclaimable page cache and buffers."""
    try:
        stats = dconn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
        return 1024 * sum(stats.get(k, 0) for k in ("free", "buffers", "cached"))
    except libvirt.libvirtError:
        return dconn.getFreeMemory()


def _cpu_compare(dconn, needs):
    if not needs["cpu"]:
        return None
    if "host-passthrough" in needs["cpu"]:
        return {"ok": True, "detail": "host-passthrough needs identical host CPUs (not verified)"}
    try:
        # FAIL_INCOMPATIBLE: libvirt then says which features the destination lacks.
        res = dconn.compareHypervisorCPU(needs["emulator"], needs["arch"], needs["machine"],
                                         needs["type"], needs["cpu"],
                                         libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
    except libvirt.libvirtError as err:
        return {"ok": False, "detail": err.get_error_message()}
    return {"ok": res != libvirt.VIR_CPU_COMPARE_INCOMPATIBLE, "detail": None}


def _network_active(dconn, name):
    try:
        return bool(dconn.networkLookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def _clash(dconn, dom, name=None):
    """A domain on the destination with this guest's UUID, or with the name it will have
    there (``name``, option dname; else its own), if any: which, in words."""
    name = name or dom.name()
    for lookup, key, what in ((dconn.lookupByUUIDString, dom.UUIDString(), "this guest's UUID"),
                              (dconn.lookupByName, name, "the name it would have there")):
        try:
            return f"{lookup(key).name()!r} with {what}"
        except libvirt.libvirtError:
            continue
    return None


@contextlib.contextmanager
def _dest_link(uris, conf):
    """The destination's libvirtd through the migration's own URI, with keepalive, for the
    prechecks and then the verification (one connection: over ssh, one handshake). Yields
    (connection, None), or (None, why) when it cannot be opened: the prechecks report that."""
    _ensure_event_loop()
    try:
        dconn = libvirt.open(uris["uri"])
    except libvirt.libvirtError as err:
        yield None, f"{err.get_error_message()} (libvirt error code {err.get_error_code()})"
        return
    try:
        kept = _keepalive(dconn, conf)
        yield dconn, None
    finally:
        _close_soon(dconn, f"link to {uris['uri']}", bounded=kept)


def _keepalive(conn, conf):
    """Turn on keepalive (a dead peer fails instead of hanging); False if libvirt refused."""
    try:
        conn.setKeepAlive(int(conf["keepalive_interval"]), int(conf["keepalive_count"]))
        return True
    except libvirt.libvirtError:
        return False


def _close_soon(conn, what, wait=1.0, bounded=True):
    """Close a libvirt connection, waiting here at most ``wait`` seconds. Closing is a call to
    the peer: when a migration failed because the destination was cut off, it waits until
    keepalive gives up (interval x count seconds, 10 s and more), and the job's answer, the
    master's verification and any repair would all wait for it. A close not done by then
    goes on in its own thread. With keepalive on (``bounded``) that thread is not a daemon:
    the job's process, its return already sent, still lets the close finish before it exits,
    so libvirt's own teardown ends the transport (an ssh transport's ssh child with it).
    Without keepalive nothing bounds it, and a daemon thread does not hold the exit."""
    def close():
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    closer = threading.Thread(target=close, name=f"vmigrate close {what}", daemon=not bounded)
    try:
        closer.start()
    except RuntimeError:  # no thread to be had: close here, however long it takes
        close()
        return
    closer.join(wait)
    if closer.is_alive():
        log.warning("vmigrate: %s: no answer to close within %gs; not waiting for it", what,
                    wait)


def _dest_facts(conn, dom, uris, conf, link, xml=None, storage=None, dname=None):
    """What the destination offers, read through the URI the migration will use (``link``:
    the open (connection, error) from :func:`_dest_link`; ``dname``: the guest's name there,
    when option dname renames it)."""
    facts = {"uri": uris["uri"]}
    dconn, why = link
    if dconn is None:
        return dict(facts, error=why)
    try:
        needs = checks_.domain_needs(xml or _xml(dom))
        if dom.isActive():
            # The CPU the guest runs with, as QEMU gave it (features it could not have are
            # listed as disabled), is what the destination must provide, not the definition.
            needs["cpu"] = checks_.domain_needs(dom.XMLDesc(0))["cpu"]
        dest_caps = dconn.getCapabilities()
        facts.update(
            source_uuid=checks_.host_uuid(conn.getCapabilities()),
            dest_uuid=checks_.host_uuid(dest_caps),
            source_libvirt=conn.getLibVersion(), dest_libvirt=dconn.getLibVersion(),
            source_qemu=conn.getVersion(), dest_qemu=dconn.getVersion(),
            memory_kib=dom.maxMemory(), reserve_mib=int(conf["memory_reserve_mib"]),
            dest_free_bytes=_available_bytes(dconn),
            networks={n: _network_active(dconn, n) for n in needs["networks"]},
            bridges=needs["bridges"], cpu_compare=_cpu_compare(dconn, needs),
            uuid_clash=_clash(dconn, dom, dname))
        if storage is not None:
            facts.update(
                dest_security=checks_.security_models(
                    dest_caps, needs["type"] or "qemu"),
                images=storage_.image_owners(storage),
                probes=_probes(dconn, storage))
    except libvirt.libvirtError as err:
        facts["error"] = f"reading it failed: {err.get_error_message()}"
    return facts


def _disk_user(dconn, path):
    """The name of a domain on the destination with ``path`` as a disk (a file, or a storage
    pool's volume) or in a disk's backing chain (a running domain's XML shows its chains; an
    inactive one's is not read), or None."""
    for other in dconn.listAllDomains(0):
        try:
            xml = other.XMLDesc(0)
        except libvirt.libvirtError:
            continue
        files = storage_.disk_files(xml)
        for pool, volume in storage_.disk_volumes(xml):
            with contextlib.suppress(libvirt.libvirtError):
                files.add(dconn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
                          .path())
        if path in files:
            return other.name()
    return None


def _dest_image(dconn, path):
    """What the destination's libvirtd has at ``path``: ``exists`` (then its ``allocation``
    and ``physical`` length in bytes, ``format`` and ``backing`` file), ``pool`` (the active
    storage pool whose target is its directory, in which libvirt would create it), ``error``
    and ``in_use_by``. Looked at through that pool, or else a transient ``dir`` pool over the
    directory, destroyed before this returns; nothing is created or removed in it."""
    directory, base = os.path.split(path)
    info = {"exists": None, "pool": None, "error": None, "allocation": None, "physical": None,
            "format": None, "backing": None}
    transient = None
    try:
        try:
            pool = dconn.storagePoolLookupByTargetPath(directory)  # active pools only
        except libvirt.libvirtError:
            pool = _inactive_pool(dconn, directory)
        if pool is not None and pool.name().startswith("vmigrate-"):
            info["error"] = ("another vmigrate precheck is looking into it right now (its "
                             f"transient pool {pool.name()}): run this again")
        elif pool is not None and not pool.isActive():
            info["error"] = (f"storage pool {pool.name()!r} there has it as its target but is "
                             f"not active (virsh pool-start {pool.name()})")
        else:
            if pool is None:
                name = f"vmigrate-look-{secrets.token_hex(6)}"
                transient = pool = dconn.storagePoolCreateXML(
                    f"<pool type='dir'><name>{name}</name><target><path>"
                    f"{xml_escape(directory)}</path></target></pool>", 0)
            else:
                info["pool"] = pool.name()
                pool.refresh(0)
            info["exists"] = base in pool.listVolumes()
            if info["exists"]:
                vol = pool.storageVolLookupByName(base)
                info["allocation"] = vol.info()[2]
                info["physical"] = vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
                info.update(storage_.volume_facts(vol.XMLDesc(0)))
        info["in_use_by"] = _disk_user(dconn, path)
    except libvirt.libvirtError as err:
        info["error"] = err.get_error_message()
    finally:
        if transient is not None:
            _destroy_transient(transient)
    return info


def _inactive_pool(dconn, directory):
    """A defined, inactive storage pool on the destination whose target is ``directory``."""
    for pool in dconn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_INACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            if storage_.pool_target(pool.XMLDesc(0)) == directory:
                return pool
    return None


def _copy_checks(dom, storage, dest, link, opts):
    """With option ``copy_storage``: this host's side of each disk to copy, then (through
    ``link``, when open) the destination's: not the same storage as here, a place libvirt can
    copy into, no other guest's disk there. Nothing without it."""
    copied = storage_.copied_targets(storage["disks"], opts)
    if copied is None:
        return []
    source = __opts__["id"]
    checks = storage_.assess_copy(storage, opts, source)
    dconn = link[0]
    if dconn is None:
        return checks  # no destination asked, or dest_reachable says why
    local = [d for d in storage_.split_copied(storage, copied)[1]["disks"]
             if d.get("resolved")]  # the others are not writable file disks: refused above
    incremental = opts["copy_storage"] == "inc"
    images = []
    try:
        # The chain is in the live XML only; inc needs the destination's image over the same.
        backing = storage_.backing_files(dom.XMLDesc(0)) if incremental else {}
        # Probed where the destination will open the image (the directory as the XML names
        # it) and where the image really lives here (a symlink may lead from one to the other,
        # and that place may be what the destination mounts): seen in either refuses.
        dirs = {d["target"]: sorted({os.path.dirname(d["path"]),
                                     os.path.dirname(d["resolved"])}) for d in local}
        probes = {p["dir"]: p for p in _probes(
            dconn, None, sorted({x for ds in dirs.values() for x in ds}), strict=True)}
        for disk in local:
            image = {"target": disk["target"], "path": disk["path"], "seen": False}
            for directory in dirs[disk["target"]]:
                probe = probes.get(directory, {})
                if probe.get("seen") is not False:  # True, or None: cannot tell
                    image.update(seen=probe.get("seen"), seen_detail=(
                        f"could not write a sentinel in {directory} on {source}: "
                        f"{probe['error']}" if probe.get("error") else probe.get("detail")))
                    break
            if image["seen"] is False:
                image.update(_dest_image(dconn, disk["path"]),
                             source_backing=backing.get(disk["target"]))
            images.append(image)
    except (libvirt.libvirtError, OSError) as err:
        why = err.get_error_message() if isinstance(err, libvirt.libvirtError) else str(err)
        images = [{"target": d["target"], "path": d["path"], "seen": None,
                   "seen_detail": f"asking its libvirtd failed: {why}"} for d in local]
    return checks + checks_.assess_copy_dest(images, source, dest, incremental)


def _shared_checks(dom, storage, opts):
    """This host's checks of the disks that stay on the shared storage (all of them without
    option ``copy_storage``), and those disks' facts."""
    copied = storage_.copied_targets(storage["disks"], opts)
    shared = storage_.split_copied(storage, copied)[0]
    return _storage_checks(dom, facts=shared), shared


def _xml_checks(dom, opts, conf):
    """Options ``xml`` and ``persistent_xml`` against the definition libvirt holds (the live
    one, and the persistent one for ``persistent_xml``): one check each, refused for every
    class of host resource they change that pillar ``vmigrate:allow_xml_changes`` does not
    allow (_utils/vmigrate_xmlguard.py)."""
    checks = []
    for key in ("xml", "persistent_xml"):
        if key not in opts:
            continue
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE
        try:
            if key == "persistent_xml" and dom.isPersistent():
                flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
            current = dom.XMLDesc(flags)
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, "reading the domain's XML") from err
        checks.append(xmlguard_.check(
            key, xmlguard_.changes(current, opts[key]),
            conf["allow_xml_changes"]))
    return checks


def _live_checks(conn, dom, dest, uris, conf, mode, link, opts):
    """Storage on this host, then the destination, as libvirt will meet them (``link``: the
    open (connection, error) from :func:`_dest_link`). A cold migration boots the guest afresh
    there: the CPU it runs with here does not bind it. With option ``xml`` its disks are
    judged (they are the guest's own unless pillar allows ``disk_sources`` changes)."""
    xml = opts.get("xml") or _xml(dom)  # read once for both
    storage = _storage_facts(dom, xml)
    checks, shared = _shared_checks(dom, storage, opts)
    facts = _dest_facts(conn, dom, uris, conf, link, xml, shared, opts.get("dname"))
    checks += checks_.assess_dest(facts, __opts__["id"], dest)
    checks += _copy_checks(dom, storage, dest, link, opts)
    return [c for c in checks if mode != "cold" or c["name"] != "dest_cpu"]


def _identity_check(link, uris, dest, expected):
    """Whether the migration's URI reaches the machine minion ``dest`` runs on (``expected``:
    the libvirt host UUID that minion reported to the master); None when not asked."""
    if expected is None or link[0] is None:
        return None  # unreachable: dest_reachable already says so
    return checks_.identity(dest, uris["uri"], _host_uuid_of(link[0]),
                                                 expected)


def precheck(name, dest=None, mode="live", dest_host_uuid=None, options=None):
    """
    What this source hypervisor can check before a migration moves anything.

    For a live migration: every writable disk must be on storage libvirt treats as shared
    (NFS and the other network filesystems by type, or a qemu.conf ``shared_filesystems``
    entry the running daemon took in), with the filesystem it saw and the fix; and, with
    ``dest``, the destination as the migration will meet it, through the same libvirt URI:
    it answers, it is another host (libvirt host UUID), its libvirt and QEMU are not older,
    it has the memory (plus pillar ``vmigrate:memory_reserve_mib``), its hypervisor can
    provide the CPU the guest runs with, the guest's libvirt networks are active there, no
    other domain there has this guest's UUID or the name it will have (option dname's), its
    libvirtd sees a sentinel written here beside each disk at the same path, and QEMU's user
    there can open each image (root squashed or not). A disk with ``cache='unsafe'`` is
    refused. The sentinel's directory is the only thing a precheck writes, and it is removed
    before this returns.

    :param name: the domain
    :param dest: the destination minion id (validated when given)
    :param mode: ``live`` (default), ``cold`` or ``save`` (the same checks; cold leaves out
        the CPU, as the guest boots afresh), or ``offline`` (none but the next)
    :param dest_host_uuid: the libvirt host UUID ``dest``'s minion reports (``vmigrate.domains``;
        the master passes it): check ``dest_identity`` then verifies that the URI reaches it
    :param options: the migration's options (over pillar ``vmigrate:options``), validated;
        with ``copy_storage`` the disks to copy are checked as such (``copy_storage:<disk>``,
        ``dest_disk:<disk>``) instead of as shared storage

    Returns a dict: ``name``, ``host``, ``mode``, ``checks`` (each with ``name``, ``ok``,
    ``detail`` and ``fix``) and ``blockers`` (the names of the checks that failed).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.precheck vdisk host2
    """
    _check("vm_name", name)
    _check("mode", mode)
    if dest is not None:
        _check("minion_id", dest)
    _check("host_uuid", dest_host_uuid)
    conf = _config()
    opts = options_.merge(conf["options"], options, mode)
    uris = dest_uris(dest, mode) if dest is not None else None
    options_.check(opts, mode, name, None,
                                        uris["data_stream"] if uris else None)
    with _connect(conf) as conn:
        dom = _lookup(conn, name)
        checks = _xml_checks(dom, opts, conf)
        if uris is None:
            if mode != "offline":
                storage = _storage_facts(dom, opts.get("xml"))
                checks += (_shared_checks(dom, storage, opts)[0]
                          + _copy_checks(dom, storage, None, (None, None), opts))
        else:
            with _dest_link(uris, conf) as link:
                if mode != "offline":
                    checks += _live_checks(conn, dom, dest, uris, conf, mode, link, opts)
                identity = _identity_check(link, uris, dest, dest_host_uuid)
                checks += [identity] if identity else []
    return {"name": name, "host": __opts__["id"], "mode": mode, "checks": checks,
            "blockers": [c["name"] for c in checks if not c["ok"]]}


REPAIRS = ("resume", "start", "destroy", "undefine", "persist")


def repair(name, action, uuid=None):
    """
    One step of the master's reconciliation (``salt-run vmigrate.reconcile``) on this host's
    copy of domain ``name``. Never touches a disk image.

    :param name: the domain
    :param action: ``resume`` (a paused copy), ``start`` (a shut-off persistent copy),
        ``destroy`` (stop this copy; its definition and disk stay), ``undefine`` (drop this
        host's definition of a copy that is not running here), ``persist`` (define a running
        transient copy persistently here)
    :param uuid: refuse unless the domain has this UUID (the master passes the one it read:
        a domain redefined under that name since is another guest)

    Returns a dict: ``name``, ``host``, ``action``, ``before`` and ``after`` (state, reason,
    persistent).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.repair vdisk resume
    """
    _check("vm_name", name)
    if action not in REPAIRS:
        raise SaltInvocationError(f"action {action!r}: one of {', '.join(REPAIRS)}")
    with _connect(_config()) as conn:
        dom = _lookup(conn, name)
        try:
            before = _describe(dom)
            if uuid is not None and before["uuid"] != str(uuid):
                raise CommandExecutionError(
                    f"vm {name!r} on {__opts__['id']} has UUID {before['uuid']}, not {uuid}: "
                    f"{action} refused, it is not the domain the master read")
            if before["reason"] in ("postcopy", "postcopy_failed") and action != "persist":
                # Its memory is split with the other host: stopping or resuming loses the guest.
                raise CommandExecutionError(
                    f"vm {name!r} on {__opts__['id']} is {before['state']} in a post-copy "
                    f"migration ({before['reason']}): {action} refused, it would lose the "
                    "guest (README, 'When the network breaks in post-copy')")
            if action == "resume":
                dom.resume()
            elif action == "start":
                dom.create()
            elif action == "destroy":
                dom.destroy()
            elif action == "undefine":
                if dom.isActive():
                    raise CommandExecutionError(
                        f"vm {name!r} runs on {__opts__['id']}: destroy it before undefining")
                dom.undefineFlags(_UNDEFINE_KEEP)
            else:
                conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
            try:
                after = _describe(dom)
            except libvirt.libvirtError:
                after = None  # an undefined, inactive domain is gone
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, f"{action} of vm {name!r}") from err
    for info in (before, after):
        if info:
            info.pop("name")
    return {"name": name, "host": __opts__["id"], "action": action, "before": before,
            "after": after}


def _blocked(name, checks):
    failed = [c for c in checks if not c["ok"]]
    return CommandExecutionError(
        f"precheck refused the migration of {name!r}, {REFUSED}: "
        + "; ".join(f"{c['detail']}. Fix: {c['fix']}" for c in failed)
    )


def _flags(mode, unsafe, data_stream="plain tcp"):
    flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
    flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    if mode == "live":
        flags |= libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        if data_stream == "tls":
            flags |= libvirt.VIR_MIGRATE_TLS
        elif data_stream == "tunnelled":
            flags |= libvirt.VIR_MIGRATE_TUNNELLED
    else:
        flags |= libvirt.VIR_MIGRATE_OFFLINE
    if unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    return flags


def _validate_migrate(name, dest, mode, bandwidth, timeout, unsafe, conf):
    _check("vm_name", name)
    _check("minion_id", dest)
    _check("mode", mode)
    if dest == __opts__["id"]:
        raise SaltInvocationError(f"vm {name!r}: dest {dest} is this host already")
    _check("mib_per_s", bandwidth)
    _check("seconds", timeout, "timeout")
    if not isinstance(unsafe, bool):
        raise SaltInvocationError(f"unsafe {unsafe!r}: true or false")
    if unsafe and not conf["allow_unsafe"]:
        raise SaltInvocationError(
            "unsafe=True skips libvirt's shared-storage and cache safety checks and can corrupt "
            "the disk: set pillar vmigrate:allow_unsafe: true to permit it"
        )


class _Progress:
    """Sends ``vmigrate/<vm>/progress`` events from a thread of its own, so a slow event bus
    never delays the monitoring loop (and its timeout check). Events carry ``seq``: each
    event.send is its own connection and they may arrive out of order."""

    def __init__(self, enabled, tag, base):
        self.enabled, self.tag, self.base = enabled, tag, base
        self.seq = itertools.count()
        self.queue = queue.Queue()
        # Salt's dunders resolve through a contextvar: the thread runs in a copy of ours.
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._send,),
                                       name="vmigrate-progress", daemon=True)
        if enabled:
            self.thread.start()

    def _send(self):
        while True:
            data = self.queue.get()
            if data is None:
                return
            try:
                __salt__["event.send"](self.tag, data)
            except Exception as err:  # pylint: disable=broad-except
                # Progress is advisory: never let the event bus break a migration.
                log.warning("vmigrate: could not send %s: %s", self.tag, err)

    def put(self, phase, elapsed, stats, final=False):
        if self.enabled:
            self.queue.put(_progress(self.base, phase, next(self.seq), elapsed, stats, final))

    def close(self, wait=2.0):
        if self.enabled:
            self.queue.put(None)
            self.thread.join(wait)


class _Outcome(CommandExecutionError):
    """A migration that did not end as asked, with the code the master decides on: ``status``
    one of ``refused`` (nothing was moved), ``failed`` (it ran and failed; the guest is where
    libvirt left it), ``aborted`` (stopped on request) or ``unknown`` (the outcome could not be
    read: nothing may be repaired until a fresh reading says more); ``reason`` a short code."""

    def __init__(self, message, status="failed", reason=None):
        super().__init__(message)
        self.status, self.reason = status, reason or status


def migrate(name, dest, mode="live", bandwidth=None, timeout=None, unsafe=False, options=None,
            dest_host_uuid=None):
    """
    Migrate domain ``name`` from this hypervisor to hypervisor ``dest``.

    Peer-to-peer (``migrateToURI3``): this host's libvirtd connects to the destination's. The
    domain is persisted on the destination and undefined here, so it ends defined on exactly
    one host. Except offline, the prechecks run first (nothing moves if a disk is not on
    shared storage, the destination lacks memory, ...); if the migration then fails, the
    domain stays here, running as it was.

    :param name: the domain to move
    :param dest: the destination's minion id (a key of pillar ``vmigrate:hypervisors``)
    :param mode: ``live`` (default; the domain keeps running), ``offline`` (a shut-off
        domain's definition moves; refused for a running domain), ``cold`` (the ACPI power
        button, a bounded wait, the definition moves, the domain starts there: a reboot) or
        ``save`` (its memory is saved beside its disk on the shared storage, the definition
        moves, and it is restored running there: it resumes where it stopped)
    :param bandwidth: cap in MiB/s for the memory transfer (default: unlimited)
    :param timeout: a live migration still running after this many seconds gets option
        ``timeout_action`` (default: abort; the domain stays here) (default: pillar
        ``vmigrate:timeout``, 600). An offline migration still running then is reported as
        not finished.
    :param unsafe: skip libvirt's storage safety checks; refused unless pillar
        ``vmigrate:allow_unsafe`` is true
    :param options: more of ``virsh migrate``'s options, over pillar ``vmigrate:options``:
        ``auto_converge``, ``max_downtime`` with ``downtime_steps``, ``timeout_action``
        (``abort``, ``pause``, ``postcopy``), ``compressed``, ``parallel_connections``, ...;
        cold's ``shutdown_timeout`` and ``force_off``; ``dname`` (its name on ``dest``);
        ``copy_storage`` (``all``/``inc``) with
        ``migrate_disks`` for a guest on local storage (README, "Every virsh migrate option")
    :param dest_host_uuid: the libvirt host UUID ``dest``'s minion reports (the master passes
        it from its locate): refused unless the URI reaches that machine (check
        ``dest_identity``, in every mode)

    Returns a dict: ``name``, ``source``, ``dest``, ``mode``, ``data_stream``, ``elapsed``
    (seconds of the call), ``downtime_ms`` (for cold and save: from the shutdown or save to
    running there), ``bytes`` (memory transferred or saved), ``iterations``, ``stats``
    (libvirt's job statistics), ``final`` (whether those are the completed job's, not the last
    poll's), ``options`` (those used), ``policy`` (what the convergence policy did),
    ``switches`` (safety switches that were used), ``copies`` (where the domain is now,
    read from both hosts' libvirtd after the move: the master's verification) and
    ``warnings`` (what a person must do after a move that worked, e.g. a save file left).

    When it does not move as asked it returns (retcode 1) ``result: False``, ``status``
    (``refused``: nothing was moved; ``failed``; ``aborted``: stopped on request;
    ``unknown``: the outcome could not be read, nothing may be repaired until a fresh reading
    says more), ``reason`` (a short code), ``comment`` and ``name``, ``source``, ``dest``,
    ``mode``. The master decides on ``status``, never on the words.

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.migrate vdisk host2
        salt host1 vmigrate.migrate vdisk host2 mode=offline
        salt host1 vmigrate.migrate vdisk host2 mode=cold options='{force_off: true}'
        salt host1 vmigrate.migrate vdisk host2 bandwidth=100 timeout=300
        salt host1 vmigrate.migrate vdisk host2 options='{auto_converge: true, max_downtime: 500}'
    """
    try:
        return _migrate(name, dest, mode, bandwidth, timeout, unsafe, options, dest_host_uuid)
    except _Outcome as err:
        status, reason, text = err.status, err.reason, str(err)
    except SaltInvocationError as err:
        status, reason, text = "refused", "invalid", str(err)
    except CommandExecutionError as err:
        # Raised before any job began (lookups, connections, prechecks): nothing moved.
        status, reason, text = "refused", "error", str(err)
    __context__["retcode"] = 1
    return {"result": False, "status": status, "reason": reason, "comment": text,
            "name": name, "source": __opts__["id"], "dest": dest, "mode": mode}


def _migrate(name, dest, mode, bandwidth, timeout, unsafe, options, dest_host_uuid):
    """:func:`migrate`; a failure raises (an :class:`_Outcome` once anything may have moved)."""
    conf = _config()
    _validate_migrate(name, dest, mode, bandwidth, timeout, unsafe, conf)
    _check("host_uuid", dest_host_uuid)
    opts = options_.merge(conf["options"], options, mode)
    if "dname" in opts:
        _check("vm_name", opts["dname"], "option dname")
    uris = dest_uris(dest, mode)
    timeout = float(timeout or conf["timeout"])
    params = {}
    if mode == "live":
        if uris["migrate_uri"]:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = uris["migrate_uri"]
        if bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth)
    flags = _flags("live" if mode == "live" else "offline", unsafe, uris["data_stream"])
    source = __opts__["id"]
    switches = [s for s, used in (("allow_unsafe", unsafe),
                                  ("allow_insecure_transport", uris["transport"] == "tcp"),
                                  ("allow_plain_migration_stream",
                                   mode == "live" and uris["data_stream"] == "plain tcp"))
                if used]

    with _connect(conf) as conn:
        dom = _lookup(conn, name)
        try:
            active = bool(dom.isActive())
            persistent = bool(dom.isPersistent())
            uuid = dom.UUIDString()
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, f"reading vm {name!r}") from err
        options_.check(opts, mode, name, uuid, uris["data_stream"])
        more_flags, more_params = options_.to_libvirt(
            libvirt, opts, mode, uris["data_stream"])
        flags |= more_flags
        params.update(more_params)
        if mode != "offline" and not active:
            raise CommandExecutionError(
                f"vm {name!r} is not running on {source}, {REFUSED}: use mode=offline to move "
                "its definition")
        if mode == "offline" and active:
            raise CommandExecutionError(
                f"vm {name!r} is running on {source}, {REFUSED}: an offline migration would leave "
                "it running here; shut it down first or use mode=live")
        if mode != "live" and not persistent:
            raise CommandExecutionError(
                f"vm {name!r} is transient, {REFUSED}: there is no definition to move "
                f"({'use mode=live' if active else 'nothing to migrate'})")
        with _dest_link(uris, conf) as link:
            checks = _xml_checks(dom, opts, conf)
            if mode != "offline":
                # unsafe=True (explicitly allowed) skips libvirt's storage check, not ours of
                # the destination.
                checks += (_live_checks(conn, dom, dest, uris, conf, mode, link, opts)
                          if not unsafe else checks_.assess_dest(
                              _dest_facts(conn, dom, uris, conf, link, dname=opts.get("dname")),
                              source, dest)
                          + _copy_checks(dom, _storage_facts(dom), dest, link, opts))
            identity = _identity_check(link, uris, dest, dest_host_uuid)
            checks += [identity] if identity else []
            if any(not c["ok"] for c in checks):
                raise _blocked(name, checks)
            job = (source, dest, uris, conf, opts)
            try:
                if mode in ("live", "offline"):
                    outcome = _run_job(conn, dom, name, mode, params, flags, timeout, job)
                elif mode == "cold":
                    outcome = _cold(conn, dom, name, params, flags, timeout, job)
                else:
                    outcome = _save(conn, dom, name, timeout, job)
            except (CommandExecutionError, libvirt.libvirtError, OSError) as err:
                if isinstance(err, _Outcome):
                    raise
                # Anything may have moved by now: only a fresh reading can tell.
                raise _Outcome(f"{mode} migration of {name!r} from {source} to {dest}: {err}; "
                               f"check with salt-run vmigrate.locate {name} before acting",
                               "unknown", "error") from err
            if "error" not in outcome:
                outcome["copies"] = _copies(name, uuid, ((source, conn), (dest, link[0])))
                # Read through the connection whose identity was checked (or not).
                outcome["copies"]["dest_host_uuid"] = dest_host_uuid if identity else None

    if "error" in outcome:
        raise outcome["error"]
    stats = outcome["stats"]
    return {
        "name": name,
        "source": source,
        "dest": dest,
        "mode": mode,
        "data_stream": uris["data_stream"] if mode == "live" else None,
        "switches": switches,
        "elapsed": round(outcome["elapsed"], 3),
        "downtime_ms": outcome.get("downtime_ms", stats.get("downtime")),
        "bytes": outcome.get("bytes", stats.get("memory_processed", stats.get("data_processed"))),
        "iterations": stats.get("memory_iteration"),
        "final": outcome["final"],
        "options": opts,
        "policy": outcome.get("policy", {}),
        "stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
        "copies": outcome["copies"],
        "warnings": outcome.get("warnings", []),
        "deadline": round(options_.job_deadline(
            mode, timeout, conf["abort_deadline"], opts, conf["shutdown_timeout"]), 3),
    }


def _copies(name, uuid, links):
    """Where domain ``name`` (``uuid``) is after the move, read from each host's libvirtd (the
    destination's through the migration's URI): ``hosts`` ({host: state, reason, persistent,
    uuid} for each that has it, as :func:`domains` gives them, and ``name`` where option
    dname renamed it) and ``unaccounted`` ({host: why} for each that could not be read). The
    master verifies the move from this instead of asking both hosts again; anything
    unexpected there, and it asks them itself."""
    out = {"hosts": {}, "unaccounted": {}}
    for host, conn in links:
        if conn is None:
            out["unaccounted"][host] = "no connection to it"
            continue
        try:
            info = _describe(conn.lookupByUUIDString(uuid))
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                out["unaccounted"][host] = err.get_error_message()
            continue
        if info["name"] == name:
            info.pop("name")
        out["hosts"][host] = info
    return out


def _in_postcopy(dom):
    """Whether ``dom``'s migration has switched to post-copy (read now; False if unreadable):
    the guest runs on the destination and its memory is split between the hosts."""
    try:
        code, reason = dom.state()
    except libvirt.libvirtError:
        return False
    return (code, reason) in ((libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
                              (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY))


def _abort(dom, name, deadline):
    """Ask libvirt to abort the job until it takes or ``deadline`` passes. Returns ``took``
    (libvirt accepted the abort), ``ended`` (it refused because a fresh reading shows no job
    left), ``postcopy`` (it refused because the job is in post-copy, which cannot be aborted:
    the guest runs on the destination) or ``failed``. A refusal is never read as the job's
    end without that reading."""
    while True:
        try:
            dom.abortJob()
            return "took"
        except libvirt.libvirtError as err:
            try:
                if err.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                    if _in_postcopy(dom):
                        return "postcopy"
                    if not _job_of(dom):
                        return "ended"
            except libvirt.libvirtError as err2:
                log.warning("vmigrate: %s: cannot read the job after the abort: %s", name, err2)
            if time.monotonic() >= deadline:
                log.error("vmigrate: %s: abort did not take: %s", name, err)
                return "failed"
            log.warning("vmigrate: %s: abort failed, retrying: %s", name, err)
            time.sleep(0.5)


def _try(what, call, *args):
    """One libvirt call the policy makes; True if it took (a failure is logged, not raised)."""
    try:
        call(*args)
        return True
    except libvirt.libvirtError as err:
        log.warning("vmigrate: %s failed: %s", what, err)
        return False


def _dest_connection(uri, conf):
    """The destination's libvirtd, through the migration's own URI, with keepalive."""
    return _connect(conf, uri, "the destination")


class _Policy:
    """The convergence policy a live migration runs under, applied from the monitoring loop:
    the allowed downtime rises in steps (``max_downtime``, ``downtime_steps``,
    ``downtime_step_delay``); post-copy starts after the first pass when asked
    (``postcopy_after_precopy``); at the timeout, ``timeout_action``: ``abort`` (default: the
    guest stays here), ``pause`` (the guest stops here, the rest is copied, it resumes there)
    or ``postcopy`` (it runs there at once; pages it lacks come over the network)."""

    def __init__(self, dom, name, opts, timeout, conf):
        self.dom, self.name, self.opts, self.conf = dom, name, opts, conf
        self.timeout = timeout
        self.downtime = None
        self.postcopy = False
        self.paused = False
        self.aborted = self.abort_took = None
        self.action = None
        self.grace = None

    def report(self):
        out = {"timeout_action": self.action}
        if self.downtime is not None:
            out["max_downtime_ms"] = self.downtime
        if self.postcopy:
            out["postcopy"] = True
        if self.paused:
            out["paused_source"] = True
        return out

    def step(self, elapsed, stats, hard_deadline):
        """Apply the policy at ``elapsed`` seconds; returns the (maybe later) hard deadline."""
        target = options_.downtime_at(self.opts, elapsed)
        if target is not None and target != self.downtime and not self.postcopy:
            if _try(f"{self.name}: max downtime {target} ms", self.dom.migrateSetMaxDowntime,
                    target, 0):
                self.downtime = target
        if (self.opts.get("postcopy_after_precopy") and not self.postcopy
                and (stats.get("memory_iteration") or 0) >= 2):
            self.postcopy = _try(f"{self.name}: post-copy", self.dom.migrateStartPostCopy, 0)
        now = time.monotonic()
        if elapsed > self.timeout and self.action is None:
            self.action = self.opts.get("timeout_action", "abort")
            log.warning("vmigrate: %s: migration still running after %.0fs: %s", self.name,
                        elapsed, self.action)
            if self.action == "postcopy" and not self.postcopy:
                self.postcopy = _try(f"{self.name}: post-copy", self.dom.migrateStartPostCopy, 0)
            if self.action == "pause":
                self.paused = _try(f"{self.name}: pause", self.dom.suspend)
            if self.postcopy or self.paused:
                # The rest is one bounded copy: allow it the abort deadline, then abort.
                self.grace = now + self.conf["abort_deadline"]
                return max(hard_deadline, self.grace + self.conf["abort_deadline"])
            return self._abort(hard_deadline)
        if self.grace is not None and now > self.grace and self.aborted is None \
                and not self.postcopy:
            return self._abort(hard_deadline)
        return hard_deadline

    def _abort(self, hard_deadline):
        self.aborted = True
        self.abort_took = _abort(self.dom, self.name, hard_deadline) in ("took", "ended")
        if self.abort_took:  # libvirt ends the job now: give it its grace period
            return max(hard_deadline, time.monotonic() + self.conf["abort_deadline"])
        return hard_deadline


def _run_job(conn, dom, name, mode, params, flags, timeout, job):
    """Run migrateToURI3 in a worker thread; poll, report progress, apply the policy."""
    source, dest, uris, conf, opts = job
    completed = {}
    got_completed = threading.Event()

    def on_job_completed(_conn, _dom, stats, _opaque):
        completed.update(stats)
        got_completed.set()

    callback_id = None
    with contextlib.suppress(libvirt.libvirtError):
        callback_id = conn.domainEventRegisterAny(
            dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_job_completed, None)
    outcome = {}

    def worker():
        try:
            dom.migrateToURI3(uris["uri"], params, flags)
        except libvirt.libvirtError as err:
            outcome["libvirt_error"] = err

    log.info("vmigrate: %s migration of %s from %s to %s (%s, data %s)", mode, name, source,
             dest, uris["uri"], uris["data_stream"])
    progress = _Progress(conf["progress_events"], f"vmigrate/{name}/progress",
                         {"name": name, "source": source, "dest": dest, "mode": mode})
    policy = _Policy(dom, name, opts, timeout, conf)
    start = time.monotonic()
    thread = threading.Thread(target=worker, name=f"vmigrate-{name}", daemon=True)
    thread.start()
    # A short job can finish before the first poll: a watcher always sees it start.
    progress.put("started", 0.0, {})
    last = {}
    hard_deadline = start + timeout + conf["abort_deadline"]
    while thread.is_alive():
        thread.join(conf["poll_interval"])
        if not thread.is_alive():
            break
        elapsed = time.monotonic() - start
        if mode == "live":
            with contextlib.suppress(libvirt.libvirtError):
                last = dom.jobStats()
            hard_deadline = policy.step(elapsed, last, hard_deadline)
            if last.get("type", 0):
                progress.put("running", elapsed, last)
        if time.monotonic() > hard_deadline:
            break  # the job outlived its timeout and the abort deadline: report, don't hang
    elapsed = time.monotonic() - start
    finished = not thread.is_alive()
    if finished and "libvirt_error" not in outcome and mode == "live":
        got_completed.wait(0.5)
    final = bool(completed)
    stats = completed or last
    failed = not finished or "libvirt_error" in outcome
    if callback_id is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback_id)

    what = f"{mode} migration of {name!r} from {source} to {dest}"
    if not finished:
        state = ("the abort did not take" if policy.aborted and not policy.abort_took
                 else "it did not finish")
        outcome["error"] = _Outcome(
            f"{what}: still running after {elapsed:.0f}s ({state}); it may yet complete: "
            f"check with salt-run vmigrate.locate {name}"
            + (f" dname={opts['dname']}" if "dname" in opts else "") + " before acting",
            "unknown", "still_running")
    elif "libvirt_error" in outcome:
        err = outcome["libvirt_error"]
        status, reason = "failed", "libvirt"
        if policy.aborted:
            what += f" aborted after the {timeout:.0f}s timeout"
            reason = "timeout"
        elif err.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED:
            what += " was aborted on request (salt-run vmigrate.abort or virsh domjobabort)"
            status = reason = "aborted"
        elif err.get_error_code() == libvirt.VIR_ERR_MIGRATE_UNSAFE:
            # libvirt's own storage check, made before anything moves.
            what += f", {REFUSED}"
            status, reason = "refused", "unsafe"
        text = str(_libvirt_error(err, what))
        if status == "refused" and "shared storage" in (err.get_error_message() or ""):
            # (prose only: which explanation fits; the status came from the code above)
            with contextlib.suppress(CommandExecutionError, OSError):
                facts = _storage_facts(dom)
                text += ": " + storage_.explain_unsafe(facts, source)
        if policy.paused and not _in_postcopy(dom) \
                and _try(f"{name}: resume after the failed migration", dom.resume):
            text += "; resumed here (timeout_action pause)"
        outcome["error"] = _Outcome(text, status, reason)
    elif policy.paused and not opts.get("suspend"):
        # Paused here to converge; libvirt resumes it there unless it was paused when the job
        # began. Make sure it runs there, as it ran here.
        with contextlib.suppress(CommandExecutionError, libvirt.libvirtError):
            with _dest_connection(uris["uri"], conf) as dconn:
                ddom = dconn.lookupByUUIDString(dom.UUIDString())  # option dname renames it
                if ddom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                    ddom.resume()
    progress.put("failed" if failed else "completed", elapsed, stats, final)
    progress.close()
    outcome.update(elapsed=elapsed, stats=stats, final=final, policy=policy.report())
    return outcome


def _cold(conn, dom, name, params, flags, timeout, job):
    """Shut the guest down (the ACPI power button; powered off after ``shutdown_timeout``
    only with ``force_off``), move its definition, start it there. Any failure after the
    shutdown starts it here again: it ends running on one host, or the error says how not."""
    source, dest, uris, conf, opts = job
    wait = opts.get("shutdown_timeout", conf["shutdown_timeout"])
    progress = _Progress(conf["progress_events"], f"vmigrate/{name}/progress",
                         {"name": name, "source": source, "dest": dest, "mode": "cold"})
    start = time.monotonic()
    progress.put("shutting down", 0.0, {})
    try:
        dom.shutdown()
        while dom.isActive() and time.monotonic() - start < wait:
            time.sleep(0.2)
        forced = bool(dom.isActive())
        if forced and opts.get("force_off"):
            dom.destroy()
    except libvirt.libvirtError as err:
        progress.put("failed", time.monotonic() - start, {})
        progress.close()
        return {"error": _Outcome(str(_libvirt_error(err, f"shutting {name!r} down on {source}")))}
    if forced and not opts.get("force_off"):
        progress.put("failed", time.monotonic() - start, {})
        progress.close()
        return {"error": _Outcome(
            f"vm {name!r} did not shut down within {wait:g}s of the ACPI power button, "
            f"{REFUSED}: it runs on {source} (a guest that honours the request later ends shut "
            "off there); shut it down from inside, or pass options {force_off: true} to power "
            "it off after the wait", "refused", "shutdown_timeout")}
    down_at = time.monotonic()
    progress.put("moving", down_at - start, {})
    progress.close()
    outcome = _run_job(conn, dom, name, "offline", params, flags, timeout, job)
    if "error" not in outcome:
        there = opts.get("dname", name)
        try:
            with _dest_connection(uris["uri"], conf) as dconn:
                # By UUID: the definition that just moved, whatever option dname named it.
                dconn.lookupByUUIDString(dom.UUIDString()).create()
        except (libvirt.libvirtError, CommandExecutionError) as err:
            text = err.get_error_message() if isinstance(err, libvirt.libvirtError) else err
            outcome["error"] = _Outcome(
                f"cold migration of {name!r}: its definition moved to {dest} but it did not "
                f"start there: {text}. Fix: salt {dest} vmigrate.repair {there} start")
    else:
        try:
            dom.create()
            note = f"started again on {source}"
        except libvirt.libvirtError as err:
            note = (f"could not start it again on {source}: {err.get_error_message()}; "
                    f"salt {source} vmigrate.repair {name} start")
        outcome["error"] = _Outcome(f"{outcome['error']}; {note}",
                                    "failed", getattr(outcome["error"], "reason", None))
    end = time.monotonic()
    outcome.update(elapsed=end - start, downtime_ms=round((end - start) * 1000),
                   policy={"forced_off": forced, "shutdown_s": round(down_at - start, 3)})
    return outcome


def _lost_contact(err, conn):
    """Whether libvirt error ``err`` on connection ``conn`` says the link to that daemon failed
    (raised by libvirt's RPC or remote layer, or the connection is no longer alive) rather
    than the call: then the daemon may have carried the call out all the same (a remote
    libvirtd finishes an API call after its client is gone), and only a fresh reading tells."""
    if err.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE):
        return True
    if err.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN,
                                libvirt.VIR_ERR_RPC):
        return True
    try:
        return conn.isAlive() != 1
    except libvirt.libvirtError:
        return True


class _Call:
    """One blocking libvirt call in a thread of its own, waited for in bounded steps; a call
    still running when the caller stops waiting is left to finish on its own."""

    def __init__(self, call):
        self.error = None

        def run():
            try:
                call()
            except libvirt.libvirtError as err:
                self.error = err

        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(run,),
                                       name="vmigrate-call", daemon=True)
        self.thread.start()

    def wait(self, seconds):
        """Whether the call has returned, waiting up to ``seconds`` for it."""
        self.thread.join(max(0.0, seconds))
        return not self.thread.is_alive()


def _read_dest(uris, conf, uuid, within):
    """Where the destination's libvirtd has domain ``uuid`` now, asked on a new connection for
    up to ``within`` seconds: ``absent``, ``defined`` (shut off, no job), ``running``, or
    ``unclear`` (active but not running, a job on it, or no answer)."""
    give_up = time.monotonic() + within
    while True:
        try:
            with _dest_connection(uris["uri"], conf) as dconn:
                try:
                    ddom = dconn.lookupByUUIDString(uuid)
                except libvirt.libvirtError as err:
                    if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        return "absent"
                    raise
                if ddom.isActive():
                    return ("running" if ddom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
                            else "unclear")
                try:
                    busy = _job_of(ddom)
                except libvirt.libvirtError as err:
                    # libvirt's answer for a domain that is not running: no job it reports
                    # (a restore makes the domain active as soon as its QEMU starts).
                    if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                        raise
                    busy = None
                return "unclear" if busy else "defined"
        except (libvirt.libvirtError, CommandExecutionError) as err:
            if time.monotonic() >= give_up:
                log.warning("vmigrate: cannot read the destination again: %s", err)
                return "unclear"
            time.sleep(1.0)


def _undefine_dest(uris, conf, uuid):
    """Drop the definition a failed save migration left on the destination (None when done,
    else why not)."""
    try:
        with _dest_connection(uris["uri"], conf) as dconn:
            ddom = dconn.lookupByUUIDString(uuid)
            if not ddom.isActive():
                ddom.undefineFlags(_UNDEFINE_KEEP)
            return None
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        return err.get_error_message()
    except CommandExecutionError as err:
        return str(err)


def _restore_here(conn, path, source):
    """Restore the saved guest on this host and remove its save file; what happened, in words
    for the error, and whether it runs here."""
    try:
        conn.restore(path)
    except libvirt.libvirtError as err:
        return (f"could not restore it on {source} either: {err.get_error_message()}; its "
                f"memory is kept in {path}: virsh restore {path} on {source}"), False
    try:
        os.unlink(path)
    except OSError as err:
        return (f"restored running on {source}; its save file {path} could not be removed "
                f"({err.strerror}): remove it by hand, it holds the guest's memory"), True
    return f"restored running on {source}", True


def _save(conn, dom, name, timeout, job):
    """Save the guest's memory beside its disk on the shared storage, define it there, restore
    it running there, undefine it here, remove the save file. The save is bounded by
    ``timeout`` (then libvirt aborts it and the guest runs on here). After a definite failure
    there it is restored here; after lost contact the destination is read again first, and
    when that reading does not settle it, nothing is started: the outcome is unknown and the
    save file is kept."""
    source, dest, uris, conf, _opts = job
    dirs = storage_.disk_dirs(_storage_facts(dom))
    if not dirs:
        return {"error": _Outcome(
            f"vm {name!r} has no file disk on shared storage to save its memory beside, "
            f"{REFUSED}: use mode=live", "refused", "no_shared_disk")}
    path = os.path.join(dirs[0], f".vmigrate-save-{name}-{secrets.token_hex(4)}.sav")
    progress = _Progress(conf["progress_events"], f"vmigrate/{name}/progress",
                         {"name": name, "source": source, "dest": dest, "mode": "save"})
    start = time.monotonic()
    grace = conf["abort_deadline"]
    progress.put("saving", 0.0, {})

    def fail(text, status="failed", reason="libvirt"):
        progress.put("failed", time.monotonic() - start, {})
        progress.close()
        return {"error": _Outcome(f"save migration of {name!r} to {dest}: {text}", status,
                                  reason)}

    try:
        uuid = dom.UUIDString()
        definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    except libvirt.libvirtError as err:
        return fail(f"reading it on {source}: {err.get_error_message()}, {REFUSED}", "refused")
    call = _Call(lambda: dom.save(path))
    timed_out = not call.wait(timeout)
    if timed_out:
        _try(f"{name}: abort the save after {timeout:g}s", dom.abortJob)
        if not call.wait(grace):
            return fail(f"the save on {source} did not finish within {timeout:g}s and the "
                        f"abort did not take; its memory may go to {path}: check with salt-run "
                        f"vmigrate.locate {name} before acting", "unknown", "still_running")
    if call.error is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
        what = (f"the save on {source} did not finish within {timeout:g}s and was aborted"
                if timed_out else f"saving it on {source}")
        return fail(f"{what}: {call.error.get_error_message()}; it runs on {source}, "
                    f"{REFUSED}", "refused", "timeout" if timed_out else "libvirt")
    saved = time.monotonic()
    size = None
    with contextlib.suppress(OSError):  # a number for the report: never a reason to stop here
        size = os.path.getsize(path)
    progress.put("restoring", saved - start, {})
    there, text = _restore_there(uris, conf, definition, path, uuid,
                                 max(grace, start + timeout - time.monotonic()))
    if there == "unclear":
        return fail(
            f"lost contact with {dest} during the restore ({text}) and could not read it again "
            f"within {grace:g}s: the guest may run there, so nothing was started; it is saved "
            f"on {source} (shut off, defined) and its memory kept in {path}. Check with "
            f"salt-run vmigrate.locate {name}: if it runs on {dest}, salt {source} vmigrate."
            f"repair {name} undefine; if not, virsh restore {path} on {source}",
            "unknown", "lost_contact")
    if there in ("absent", "defined"):
        # Lost contact, and the fresh reading found no copy running there. Fence the save
        # file (a restore that reaches the destination late can no longer open it), read
        # once more, and only then go on here.
        moved = path + ".source"
        try:
            os.rename(path, moved)
            path = moved
        except OSError as err:
            return fail(f"{text}; its save file {path} could not be fenced ({err.strerror}), "
                        f"so nothing was started: it is saved on {source}. Check with salt-run "
                        f"vmigrate.locate {name}, then virsh restore {path} on {source}",
                        "unknown", "lost_contact")
        there = _read_dest(uris, conf, uuid, grace)
        text += f", after fencing: {there}"
        if there == "unclear":
            return fail(f"{text}: nothing was started; it is saved on {source}, its memory in "
                        f"{path}. Check with salt-run vmigrate.locate {name} before acting",
                        "unknown", "lost_contact")
        if there == "defined":
            left = _undefine_dest(uris, conf, uuid)
            if left:
                return fail(f"{text}; the restore did not happen there, but its definition "
                            f"could not be dropped ({left}), so nothing was started: it is "
                            f"saved on {source}, its memory in {path}. Fix: salt {dest} "
                            f"vmigrate.repair {name} undefine, then virsh restore {path} on "
                            f"{source}", "failed", "lost_contact")
    if there != "running":
        note, _running = _restore_here(conn, path, source)
        return fail(f"{text}; {note}")
    running = time.monotonic()
    warnings = []
    if text:
        warnings.append(text)
    try:
        dom.undefineFlags(_UNDEFINE_KEEP)
    except libvirt.libvirtError as err:
        return fail(f"it runs on {dest} but its definition stays on {source} too: "
                    f"{err.get_error_message()}. Fix: salt-run vmigrate.reconcile {name}",
                    "failed", "undefine")
    finally:
        try:
            os.unlink(path)
        except OSError as err:
            warnings.append(f"its save file {path} could not be removed ({err.strerror}): "
                            "remove it by hand, it holds the guest's memory")
    elapsed = time.monotonic() - start
    progress.put("completed", elapsed, {}, True)
    progress.close()
    return {"elapsed": elapsed, "downtime_ms": round((running - start) * 1000), "bytes": size,
            "stats": {}, "final": True, "warnings": warnings,
            "policy": {"save_s": round(saved - start, 3), "restore_s": round(running - saved, 3)}}


def _restore_there(uris, conf, definition, path, uuid, wait):
    """Define the saved guest on the destination and restore it there, for at most ``wait``
    seconds. Returns (where it is there, words): ``running`` (restored), ``failed`` (libvirt
    refused: nothing is there but maybe the definition, dropped here), ``defined`` or
    ``absent`` (lost contact, and a fresh reading shows it did not restore), ``unclear``."""
    try:
        with _dest_connection(uris["uri"], conf) as dconn:
            step = "defining it there"
            try:
                ddom = dconn.defineXML(definition)
                step = "restoring it there"
                call = _Call(lambda: dconn.restore(path))
                if not call.wait(wait):
                    return "unclear", f"the restore did not return within {wait:g}s"
                if call.error is None:
                    return "running", None
                raise call.error
            except libvirt.libvirtError as err:
                words = f"{step}: {err.get_error_message()}"
                if not _lost_contact(err, dconn):
                    if step == "restoring it there":
                        try:
                            ddom.undefineFlags(_UNDEFINE_KEEP)
                        except libvirt.libvirtError as err2:
                            # Not restored, but still defined there: the caller fences and
                            # drops it before the guest goes on here.
                            return "defined", f"{words}; {err2.get_error_message()}"
                    return "failed", words
    except CommandExecutionError as err:  # no connection: nothing reached the destination
        return "failed", str(err)
    # Lost contact: the destination may have done it all the same. Read it again.
    seen = _read_dest(uris, conf, uuid, conf["abort_deadline"])
    return seen, f"{words} (lost contact; read again: {seen})"


# ---- jobs: what migrates now, and stopping one ----------------------------------------------
def _job_of(dom):
    """The job libvirt runs for ``dom`` now, or None."""
    try:
        stats = dom.jobStats()
    except libvirt.libvirtError as err:
        # libvirt gives statistics only on the source: here, the domain is arriving.
        if err.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED:
            return {"operation": "migration_in", "elapsed_ms": None, "percent": None,
                    "memory_remaining": None, "memory_bps": None, "iteration": None,
                    "dirty_rate": None}
        raise
    if not stats.get("type"):
        return None
    operation = stats.get("operation", 0)
    total = stats.get("memory_total") or 0
    remaining = stats.get("memory_remaining") or 0
    return {
        "operation": (JOB_OPERATIONS[operation] if 0 <= operation < len(JOB_OPERATIONS)
                      else str(operation)),
        "elapsed_ms": stats.get("time_elapsed"),
        "percent": round(100.0 * (total - remaining) / total, 1) if total else None,
        "memory_remaining": remaining,
        "memory_bps": stats.get("memory_bps"),
        "iteration": stats.get("memory_iteration"),
        "dirty_rate": stats.get("memory_dirty_rate"),
    }


def job(name):
    """
    The job libvirt runs for domain ``name`` on this hypervisor now (None when there is none).

    :param name: the domain

    Returns a dict: ``name``, ``host`` and ``job`` (``operation``, ``elapsed_ms``, ``percent``,
    ``memory_remaining``, ``memory_bps``, ``iteration``, ``dirty_rate``; or None).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.job vdisk
    """
    _check("vm_name", name)
    with _connect(_config()) as conn:
        dom = _lookup(conn, name)
        try:
            info = _job_of(dom)
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, f"reading the job of {name!r}") from err
    return {"name": name, "host": __opts__["id"], "job": info}


def jobs():
    """
    The jobs libvirt runs on this hypervisor now (migrations out and in, saves, ...).

    Returns a dict: ``host`` and ``jobs`` ({domain: ``operation``, ``elapsed_ms``,
    ``percent``, ``memory_remaining``, ``memory_bps``, ``iteration``, ``dirty_rate``}).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.jobs
    """
    conf = _config()
    out = {}
    with _connect(conf) as conn:
        try:
            doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, "listing domains") from err
        for dom in doms:
            with contextlib.suppress(libvirt.libvirtError):  # gone meanwhile
                info = _job_of(dom)
                if info:
                    out[dom.name()] = info
    return {"host": __opts__["id"], "jobs": out}


def abort(name):
    """
    Abort the migration of ``name`` going out of this hypervisor: the domain stays here, as it
    was (libvirt ends the job; the ``vmigrate.migrate`` call reports it aborted on request).
    Nothing is done when no migration of it goes out from here. A migration in post-copy
    cannot be aborted (the guest already runs on the destination): that is said, and nothing
    is done. A migration counts as stopped only when a fresh reading shows no job left.

    :param name: the domain

    Returns a dict: ``name``, ``host``, ``aborted`` (True when a migration was stopped),
    ``outcome`` (``aborted``; ``none``: no migration goes out from here; ``ended``: it ended
    before the abort; ``postcopy``: in post-copy, not abortable; ``running``: libvirt took the
    abort but the job still runs), ``comment`` and ``state`` (the domain's state here
    afterwards).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.abort vdisk
    """
    _check("vm_name", name)
    conf = _config()
    host = __opts__["id"]
    with _connect(conf) as conn:
        dom = _lookup(conn, name)
        try:
            info = _job_of(dom)
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, f"reading the job of {name!r}") from err
        if not info or info["operation"] != "migration_out":
            what = f" (its job here: {info['operation']})" if info else ""
            return {"name": name, "host": host, "aborted": False, "outcome": "none",
                    "state": _describe(dom),
                    "comment": f"no migration of {name} goes out from {host}{what}"}
        deadline = time.monotonic() + conf["abort_deadline"]
        took = "postcopy" if _in_postcopy(dom) else _abort(dom, name, deadline)
        if took == "failed":
            raise CommandExecutionError(
                f"the migration of {name!r} from {host} did not take the abort within "
                f"{conf['abort_deadline']:g}s; check with salt-run vmigrate.jobs")
        ended = took == "ended"
        while took == "took" and time.monotonic() < deadline:
            # Aborted only once a fresh reading shows no job left.
            with contextlib.suppress(libvirt.libvirtError):
                if not _job_of(dom):
                    ended = True
                    break
            time.sleep(0.2)
        state = _describe(dom)
    if took == "postcopy":
        return {"name": name, "host": host, "aborted": False, "outcome": "postcopy",
                "state": state,
                "comment": f"the migration of {name} from {host} is in post-copy and cannot be "
                           "aborted (libvirt refuses): the guest already runs on the "
                           f"destination and pulls the rest of its memory from {host}, so "
                           "neither host may be stopped until it completes (salt-run "
                           f"vmigrate.watch {name})"}
    if took == "ended":
        return {"name": name, "host": host, "aborted": False, "outcome": "ended",
                "state": state, "comment": f"the migration of {name} from {host} ended before "
                                           f"the abort: it is {state['state']} here"}
    if not ended:
        return {"name": name, "host": host, "aborted": False, "outcome": "running",
                "state": state,
                "comment": f"libvirt took the abort of {name}'s migration from {host}, but the "
                           f"job still runs after {conf['abort_deadline']:g}s: check with "
                           "salt-run vmigrate.jobs"}
    return {"name": name, "host": host, "aborted": True, "outcome": "aborted", "state": state,
            "comment": f"aborted the migration of {name} from {host}: it is {state['state']} "
                       f"here"}


def _progress(base, phase, seq, elapsed, stats, final=False):
    """One progress event: ``phase`` started | running | completed | failed, and numbers.
    ``final`` says the numbers are the completed job's, not the last poll's."""
    total = stats.get("memory_total") or 0
    remaining = stats.get("memory_remaining") or 0
    return dict(
        base,
        phase=phase,
        seq=seq,
        final=final,
        elapsed=round(elapsed, 2),
        percent=round(100.0 * (total - remaining) / total, 1) if total else None,
        memory_remaining=remaining,
        memory_bps=stats.get("memory_bps"),
        iteration=stats.get("memory_iteration"),
        dirty_rate=stats.get("memory_dirty_rate"),
        # copy_storage: the disks' copy (libvirt's disk_* job statistics).
        disk_total=stats.get("disk_total"),
        disk_remaining=stats.get("disk_remaining"),
    )
