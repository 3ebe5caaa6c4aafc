"""
Move libvirt/KVM domains between hypervisors: the minion side of vmigrate.

Runs on a hypervisor minion and talks to its libvirtd through libvirt-python (never ``virsh``).
The master side (``_runners/vmigrate.py``, ``salt/migrate.sls``) decides where a domain lives
and calls :py:func:`migrate` on the source minion.

Configuration comes from pillar (or minion config) under ``vmigrate`` (see ``pillar.example``):

.. code-block:: yaml

    vmigrate:
      transport: ssh              # ssh | tls | tcp; tcp needs allow_insecure_transport
      hypervisors:
        host1: {address: 192.0.2.11}
        host2: {address: 192.0.2.12, migration_address: 198.51.100.12}

CLI Example:

.. code-block:: bash

    salt host1 vmigrate.domains
    salt host1 vmigrate.migrate vdisk host2
    salt host1 vmigrate.migrate vdisk host2 mode=offline
"""

import contextlib
import itertools
import logging
import os
import re
import threading
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import libvirt

    HAS_LIBVIRT = True
except ImportError:
    HAS_LIBVIRT = False

log = logging.getLogger(__name__)

__virtualname__ = "vmigrate"

MODES = ("live", "offline")
TRANSPORTS = ("ssh", "tls", "tcp")
DEFAULTS = {
    "uri": "qemu:///system",
    "transport": "ssh",
    "ssh_user": "root",
    "allow_insecure_transport": False,
    "allow_unsafe": False,
    "hypervisors": {},
    "keepalive_interval": 5,
    "keepalive_count": 3,
    "timeout": 600,
    "poll_interval": 0.5,
    "progress_events": True,
}
# libvirt's names for virDomainState, in order.
STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed",
          "pmsuspended")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+:@-]{0,254}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
_ADDR_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9_.-]{0,252})$")

_EVENT_LOOP = {"pid": None}


def __virtual__():
    if not HAS_LIBVIRT:
        return (False, "vmigrate: libvirt-python is not installed (pip install libvirt-python)")
    return __virtualname__


# ---- configuration and validation -----------------------------------------------------------
def _config():
    conf = dict(DEFAULTS)
    conf.update(__salt__["config.get"]("vmigrate", {}) or {})
    return conf


def _check_name(name):
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SaltInvocationError(
            f"vm name {name!r} is not a valid domain name (letters, digits, _ . + : @ -)"
        )
    return name


def _check_host(dest):
    if not isinstance(dest, str) or not _HOST_RE.fullmatch(dest):
        raise SaltInvocationError(f"dest {dest!r} is not a valid minion id")
    return dest


def dest_uris(dest):
    """
    Resolve the libvirt URI and the migration data URI of hypervisor ``dest`` from pillar.

    Returns a dict: ``uri`` (the libvirt connection the source libvirtd opens to the
    destination), ``migrate_uri`` (where QEMU sends the memory stream) and ``transport``.

    :param dest: the destination's minion id, a key of pillar ``vmigrate:hypervisors``

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.dest_uris host2
    """
    _check_host(dest)
    conf = _config()
    hypervisors = conf["hypervisors"] or {}
    if dest not in hypervisors:
        raise SaltInvocationError(
            f"dest {dest!r} is not a hypervisor: add it to pillar vmigrate:hypervisors "
            f"(known: {', '.join(sorted(hypervisors)) or 'none'})"
        )
    entry = hypervisors[dest] or {}
    address = entry.get("address", dest)
    mig_address = entry.get("migration_address", address)
    for key, value in (("address", address), ("migration_address", mig_address)):
        if not isinstance(value, str) or not _ADDR_RE.fullmatch(value):
            raise SaltInvocationError(
                f"pillar vmigrate:hypervisors:{dest}:{key} {value!r} is not a host name or address"
            )
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
        uri = f"qemu+ssh://{user}@{address}/system"
        keyfile = entry.get("ssh_keyfile", conf.get("ssh_keyfile"))
        if keyfile:
            uri += f"?keyfile={keyfile}"
    else:
        uri = f"qemu+{transport}://{address}/system"
    return {"uri": uri, "migrate_uri": f"tcp://{mig_address}", "transport": transport}


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
def _connect(uri=None):
    """Open this hypervisor's libvirt with keepalive (a dead peer fails instead of hanging)."""
    conf = _config()
    uri = uri or conf["uri"]
    _ensure_event_loop()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise _libvirt_error(err, f"cannot connect to libvirt at {uri}") from err
    try:
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(int(conf["keepalive_interval"]), int(conf["keepalive_count"]))
        yield conn
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _lookup(conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise CommandExecutionError(
                f"vm {name!r} is not defined on {__opts__['id']}"
            ) from err
        raise _libvirt_error(err, f"looking up vm {name!r}") from err


def _state_name(dom):
    state = dom.state()[0]
    return STATES[state] if 0 <= state < len(STATES) else str(state)


def _describe(dom):
    return {
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "state": _state_name(dom),
        "persistent": bool(dom.isPersistent()),
    }


# ---- public functions -----------------------------------------------------------------------
def domains():
    """
    List the domains on this hypervisor.

    Returns a dict: ``host`` (this minion's id) and ``domains``, keyed by domain name, each with
    ``uuid``, ``state`` (running, paused, shutoff, ...) and ``persistent``.

    CLI Example:

    .. code-block:: bash

        salt -G 'virtual:physical' vmigrate.domains
    """
    with _connect() as conn:
        try:
            doms = conn.listAllDomains()
            found = {d.name(): _describe(d) for d in doms}
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, "listing domains") from err
    for entry in found.values():
        entry.pop("name")
    return {"host": __opts__["id"], "domains": found}


def domain(name):
    """
    Describe one domain on this hypervisor: ``name``, ``uuid``, ``state``, ``persistent``.

    :param name: the domain name

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.domain vdisk
    """
    _check_name(name)
    with _connect() as conn:
        dom = _lookup(conn, name)
        try:
            return _describe(dom)
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, f"reading vm {name!r}") from err


def _flags(mode, unsafe):
    flags = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
    flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    if mode == "live":
        flags |= libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    else:
        flags |= libvirt.VIR_MIGRATE_OFFLINE
    if unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    return flags


def _validate_migrate(name, dest, mode, bandwidth, timeout, unsafe, conf):
    _check_name(name)
    _check_host(dest)
    if mode not in MODES:
        raise SaltInvocationError(f"mode {mode!r}: must be one of {', '.join(MODES)}")
    if dest == __opts__["id"]:
        raise SaltInvocationError(f"vm {name!r}: dest {dest} is this host already")
    if bandwidth is not None and (isinstance(bandwidth, bool) or not isinstance(bandwidth, int)
                                  or bandwidth <= 0):
        raise SaltInvocationError(f"bandwidth {bandwidth!r}: a positive integer, MiB/s")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise SaltInvocationError(f"timeout {timeout!r}: a positive number of seconds")
    if unsafe and not conf["allow_unsafe"]:
        raise SaltInvocationError(
            "unsafe=True skips libvirt's shared-storage and cache safety checks and can corrupt "
            "the disk: set pillar vmigrate:allow_unsafe: true to permit it"
        )


def _fire(tag, data, conf):
    if not conf["progress_events"]:
        return
    try:
        __salt__["event.send"](tag, data)
    except Exception as err:  # pylint: disable=broad-except
        # Progress is advisory: never let the event bus break a migration.
        log.debug("vmigrate: could not send %s: %s", tag, err)


def migrate(name, dest, mode="live", bandwidth=None, timeout=None, unsafe=False):
    """
    Migrate domain ``name`` from this hypervisor to hypervisor ``dest``.

    Peer-to-peer (``migrateToURI3``): this host's libvirtd connects to the destination's. The
    domain is persisted on the destination and undefined here, so it ends defined on exactly
    one host. If the migration fails, libvirt keeps it running here.

    :param name: the domain to move
    :param dest: the destination's minion id (a key of pillar ``vmigrate:hypervisors``)
    :param mode: ``live`` (default; the domain keeps running) or ``offline`` (a shut-off
        domain's definition moves; refused for a running domain, which would stay running here)
    :param bandwidth: cap in MiB/s for the memory transfer (default: unlimited)
    :param timeout: abort a live migration still running after this many seconds
        (default: pillar ``vmigrate:timeout``, 600); the domain stays here
    :param unsafe: skip libvirt's storage safety checks; refused unless pillar
        ``vmigrate:allow_unsafe`` is true

    Returns a dict: ``name``, ``source``, ``dest``, ``mode``, ``elapsed`` (seconds of the
    call), ``downtime_ms``, ``bytes`` (memory transferred), ``iterations`` and ``stats`` (the
    completed job statistics libvirt reported).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.migrate vdisk host2
        salt host1 vmigrate.migrate vdisk host2 mode=offline
        salt host1 vmigrate.migrate vdisk host2 bandwidth=100 timeout=300
    """
    conf = _config()
    _validate_migrate(name, dest, mode, bandwidth, timeout, unsafe, conf)
    uris = dest_uris(dest)
    timeout = float(timeout or conf["timeout"])
    params = {}
    if mode == "live":
        params[libvirt.VIR_MIGRATE_PARAM_URI] = uris["migrate_uri"]
        if bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth)
    flags = _flags(mode, unsafe)
    source = __opts__["id"]

    with _connect() as conn:
        dom = _lookup(conn, name)
        try:
            active = bool(dom.isActive())
            persistent = bool(dom.isPersistent())
        except libvirt.libvirtError as err:
            raise _libvirt_error(err, f"reading vm {name!r}") from err
        if mode == "live" and not active:
            raise CommandExecutionError(
                f"vm {name!r} is not running on {source}: use mode=offline to move its definition"
            )
        if mode == "offline" and active:
            raise CommandExecutionError(
                f"vm {name!r} is running on {source}: an offline migration would leave it running "
                "here; shut it down first or use mode=live"
            )
        if mode == "offline" and not persistent:
            raise CommandExecutionError(f"vm {name!r} is transient: nothing to migrate offline")

        completed = {}
        got_completed = threading.Event()

        def on_job_completed(_conn, _dom, stats, _opaque):
            completed.update(stats)
            got_completed.set()

        callback_id = None
        with contextlib.suppress(libvirt.libvirtError):
            callback_id = conn.domainEventRegisterAny(
                dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_job_completed, None
            )
        outcome = {}

        def worker():
            try:
                dom.migrateToURI3(uris["uri"], params, flags)
            except libvirt.libvirtError as err:
                outcome["error"] = err

        log.info("vmigrate: %s migration of %s from %s to %s (%s)", mode, name, source, dest,
                 uris["uri"])
        start = time.monotonic()
        thread = threading.Thread(target=worker, name=f"vmigrate-{name}", daemon=True)
        tag = f"vmigrate/{name}/progress"
        # A short job can finish before the first poll: a watcher always sees it start.
        seq = itertools.count()
        _fire(tag, _progress(name, source, dest, 0.0, {}, "started", next(seq)), conf)
        thread.start()
        aborted = False
        last = {}
        while thread.is_alive():
            thread.join(conf["poll_interval"])
            if not thread.is_alive() or mode != "live":
                continue
            elapsed = time.monotonic() - start
            if elapsed > timeout and not aborted:
                log.warning("vmigrate: %s: migration timed out after %.0fs, aborting", name,
                            elapsed)
                with contextlib.suppress(libvirt.libvirtError):
                    dom.abortJob()
                aborted = True
            with contextlib.suppress(libvirt.libvirtError):
                last = dom.jobStats()
            if last.get("type", 0):
                _fire(tag, _progress(name, source, dest, elapsed, last, "running", next(seq)),
                      conf)
        elapsed = time.monotonic() - start
        got_completed.wait(0.5 if mode == "live" and "error" not in outcome else 0)
        _fire(tag, _progress(name, source, dest, elapsed, completed or last,
                             "failed" if "error" in outcome else "completed", next(seq)), conf)
        if callback_id is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(callback_id)

    if "error" in outcome:
        err = outcome["error"]
        what = f"{mode} migration of {name!r} from {source} to {dest}"
        if aborted:
            what += f" aborted after the {timeout:.0f}s timeout"
        raise _libvirt_error(err, what) from err
    stats = completed or last
    return {
        "name": name,
        "source": source,
        "dest": dest,
        "mode": mode,
        "elapsed": round(elapsed, 3),
        "downtime_ms": stats.get("downtime"),
        "bytes": stats.get("memory_processed", stats.get("data_processed")),
        "iterations": stats.get("memory_iteration"),
        "stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
    }


def _progress(name, source, dest, elapsed, stats, phase, seq):
    """One progress event: ``phase`` started | running | completed | failed, and numbers.

    Each event.send is its own connection, so events may arrive out of order: ``seq`` orders
    the events of one migration.
    """
    total = stats.get("memory_total") or 0
    remaining = stats.get("memory_remaining") or 0
    return {
        "phase": phase,
        "seq": seq,
        "name": name,
        "source": source,
        "dest": dest,
        "elapsed": round(elapsed, 2),
        "percent": round(100.0 * (total - remaining) / total, 1) if total else None,
        "memory_remaining": remaining,
        "memory_bps": stats.get("memory_bps"),
        "iteration": stats.get("memory_iteration"),
        "dirty_rate": stats.get("memory_dirty_rate"),
    }
