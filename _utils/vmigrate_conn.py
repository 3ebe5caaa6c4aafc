"""
The hypervisor connection and the guest as libvirt shows it: one way to open a libvirt link
(keepalive on, closed without hanging on a dead peer), one translator of libvirt's errors, the
domain's state, job and copies read through it, and a blocking call waited for in bounded
steps.

The only ``import libvirt`` of vmigrate's shared code: the other minion files take it from
here. Plain Python, no Salt dunders.
"""

import contextlib
import contextvars
import logging
import os
import runpy
import threading
import time

from salt.exceptions import CommandExecutionError

try:
    import libvirt
except ImportError:  # a master, or a minion without libvirt-python: the module says so
    libvirt = None

checks_, names_ = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_checks", "vmigrate_names")

log = logging.getLogger(__name__)

_EVENT_LOOP = {"pid": None}
# Undefining a copy keeps what other hosts or a later start may need: the NVRAM and TPM state
# (a path on shared storage is the kept copy's too). vmigrate never deletes such a file.
UNDEFINE_KEEP = ((libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
                  | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_TPM", 0)) if libvirt else 0)


def error(err, what):
    """Translate a libvirtError into a CommandExecutionError keeping libvirt's code and text."""
    return CommandExecutionError(
        f"{what}: {err.get_error_message()} "
        f"(libvirt error code {err.get_error_code()}, domain {err.get_error_domain()})"
    )


def ensure_event_loop():
    """One libvirt event loop thread per process: needed for keepalive and domain events."""
    if _EVENT_LOOP["pid"] == os.getpid():
        return
    # Errors reach callers as exceptions (translated by error); without a handler
    # libvirt-python would also print each one to the minion's stderr.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    libvirt.virEventRegisterDefaultImpl()

    def loop():
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
    _EVENT_LOOP["pid"] = os.getpid()


@contextlib.contextmanager
def connect(conf, uri=None, what="libvirt"):
    """Open this hypervisor's libvirt (or ``uri``) with keepalive (a dead peer fails instead of
    hanging)."""
    uri = uri or conf["uri"]
    ensure_event_loop()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise error(err, f"cannot connect to {what} at {uri}") from err
    try:
        kept = keepalive(conn, conf)
        yield conn
    finally:
        close_soon(conn, f"{what} at {uri}", bounded=kept)


def dest_connection(uri, conf):
    """The destination's libvirtd, through the migration's own URI, with keepalive."""
    return connect(conf, uri, "the destination")


@contextlib.contextmanager
def dest_link(uris, conf):
    """The destination's libvirtd through the migration's own URI, with keepalive, for the
    prechecks and then the verification (one connection: over ssh, one handshake). Yields
    (connection, None), or (None, why) when it cannot be opened: the prechecks report that."""
    ensure_event_loop()
    try:
        dconn = libvirt.open(uris["uri"])
    except libvirt.libvirtError as err:
        yield None, f"{err.get_error_message()} (libvirt error code {err.get_error_code()})"
        return
    try:
        kept = keepalive(dconn, conf)
        yield dconn, None
    finally:
        close_soon(dconn, f"link to {uris['uri']}", bounded=kept)


def keepalive(conn, conf):
    """Turn on keepalive (a dead peer fails instead of hanging); False if libvirt refused."""
    try:
        conn.setKeepAlive(int(conf["keepalive_interval"]), int(conf["keepalive_count"]))
        return True
    except libvirt.libvirtError:
        return False


def close_soon(conn, what, wait=1.0, bounded=True):
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


def lookup(conn, name, host):
    """Domain ``name`` on ``conn`` (this minion ``host``'s libvirtd), or refused in words."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise CommandExecutionError(f"vm {name!r} is not defined on {host}") from err
        raise error(err, f"looking up vm {name!r}") from err


def describe(dom):
    """``name``, ``uuid``, ``state``, ``reason`` (libvirt's, by name) and ``persistent``."""
    code, reason = dom.state()
    state = names_.state(code)
    return {
        "name": dom.name(),
        "uuid": dom.UUIDString(),
        "state": state,
        "reason": names_.reason(state, reason),
        "persistent": bool(dom.isPersistent()),
    }


def sizes(dom):
    """``memory_mib`` (the domain's maximum memory) and ``vcpus``, what it takes of a host."""
    info = dom.info()  # [state, maxMem KiB, memory KiB, nrVirtCpu, cpuTime]
    return {"memory_mib": int(info[1]) // 1024, "vcpus": int(info[3])}


def dirty_rate(conn, dom, seconds=1, wait=5.0):
    """The MiB/s ``dom`` dirties, as libvirt measures it over ``seconds``
    (``virDomainStartDirtyRateCalc``, QEMU's page sampling; then the ``dirtyrate``
    statistics), or None when it cannot be had (an older QEMU, a measurement that does not
    end within ``wait`` more seconds). Read-only: it changes nothing of the guest."""
    try:
        dom.startDirtyRateCalc(seconds, 0)
    except libvirt.libvirtError as err:
        log.info("vmigrate: dirty rate of %s: %s", dom.name(), err)
        return None
    time.sleep(seconds)
    deadline = time.monotonic() + wait
    while True:
        try:
            got = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)
        except libvirt.libvirtError as err:
            log.info("vmigrate: dirty rate of %s: %s", dom.name(), err)
            return None
        stats = got[0][1] if got else {}
        if stats.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED:
            return float(stats.get("dirtyrate.megabytes_per_second", 0))
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def node_info(conn):
    """This host's ``memory_mib`` and ``cpus`` (libvirt's virNodeGetInfo)."""
    try:
        info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    except libvirt.libvirtError as err:
        raise error(err, "reading the host's memory and CPUs") from err
    return {"memory_mib": int(info[1]), "cpus": int(info[2])}


def migratable_xml(dom):
    """The domain's migratable XML: what the destination will be asked to run."""
    try:
        return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    except libvirt.libvirtError as err:
        raise error(err, "reading the domain's XML") from err


def host_uuid_of(conn):
    """The libvirt host UUID ``conn`` reaches (its capabilities' <host><uuid>), or None."""
    try:
        return checks_.host_uuid(conn.getCapabilities())
    except libvirt.libvirtError:
        return None


def job_of(dom):
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
    total = stats.get("memory_total") or 0
    remaining = stats.get("memory_remaining") or 0
    return {
        "operation": names_.operation(stats.get("operation", 0)),
        "elapsed_ms": stats.get("time_elapsed"),
        "percent": round(100.0 * (total - remaining) / total, 1) if total else None,
        "memory_remaining": remaining,
        "memory_bps": stats.get("memory_bps"),
        "iteration": stats.get("memory_iteration"),
        "dirty_rate": stats.get("memory_dirty_rate"),
    }


def in_postcopy(dom):
    """Whether ``dom``'s migration has switched to post-copy (read now; False if unreadable):
    the guest runs on the destination and its memory is split between the hosts."""
    try:
        code, reason = dom.state()
    except libvirt.libvirtError:
        return False
    return (code, reason) in ((libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
                              (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY))


def lost_contact(err, conn):
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


class Call:
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


def attempt(what, call, *args):
    """One libvirt call the policy makes; True if it took (a failure is logged, not raised)."""
    try:
        call(*args)
        return True
    except libvirt.libvirtError as err:
        log.warning("vmigrate: %s failed: %s", what, err)
        return False


def copies(name, uuid, links):
    """Where domain ``name`` (``uuid``) is after the move, read from each host's libvirtd (the
    destination's through the migration's URI): ``hosts`` ({host: state, reason, persistent,
    uuid} for each that has it, as the module's ``domains`` gives them, and ``name`` where option
    dname renamed it) and ``unaccounted`` ({host: why} for each that could not be read). The
    master verifies the move from this instead of asking both hosts again; anything
    unexpected there, and it asks them itself."""
    out = {"hosts": {}, "unaccounted": {}}
    for host, conn in links:
        if conn is None:
            out["unaccounted"][host] = "no connection to it"
            continue
        try:
            info = describe(conn.lookupByUUIDString(uuid))
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                out["unaccounted"][host] = err.get_error_message()
            continue
        if info["name"] == name:
            info.pop("name")
        out["hosts"][host] = info
    return out
