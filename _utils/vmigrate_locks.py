"""
Master-side locks for vmigrate: one migration per VM at a time, and per-host caps on outgoing
and incoming migrations, across processes and ``salt-run`` invocations (the reactor's runner
processes included).

Each lock is ``fcntl.flock`` on a file under ``<master cachedir>/vmigrate/locks``. The kernel
drops a lock when its holder dies, so no lock outlives a killed process; the holder writes a
record (who, since when, source, destination, pid) into the file and clears it on release. A
record found in a file just locked therefore means the previous holder died mid-migration: the
new holder reports it (``recovered``) instead of silently going on.

Plain functions and a context manager; no Salt dunders. The caps are master config
``vmigrate:max_outgoing`` and ``vmigrate:max_incoming``, read by ``vmigrate_settings.caps``.
"""

import contextlib
import fcntl
import json
import os
import runpy
import time

from salt.exceptions import CommandExecutionError

(settings_,) = runpy.run_path(os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](__file__, "vmigrate_settings")


class Busy(CommandExecutionError):
    """The VM, or a host's migration slots, are taken: the message names by whom."""


class SlotsBusy(Busy):
    """A host runs as many migrations as its cap allows: another destination, or later."""


# ---- in flight: a job sent to a source minion, until its end is seen ---------------------------
# A lock ends with its holder: when the master gives up on a job (no return), is interrupted or
# dies, the lock goes while the migration may still run on the source. The record below stays
# until a request sees that job ended there (see vmigrate_jobs.check_in_flight).
def _in_flight_path(opts, vm):
    return os.path.join(lock_dir(opts), f"inflight-{vm}.json")


def mark_in_flight(opts, names, record):
    """Record ``record`` (vm, jid, source, dest, since, ...) as in flight for each of ``names``
    (the VM and the name option dname gives it), atomically."""
    for name in names:
        path = _in_flight_path(opts, name)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def in_flight(opts, name=None):
    """The in-flight record of ``name`` (None when there is none), or with no name every
    record, {name: record}."""
    directory = lock_dir(opts)
    names = [name] if name else sorted(e[len("inflight-"):-len(".json")]
                                       for e in os.listdir(directory)
                                       if e.startswith("inflight-") and e.endswith(".json"))
    out = {}
    for each in names:
        try:
            with open(_in_flight_path(opts, each), encoding="utf-8") as fh:
                out[each] = json.loads(fh.read() or "null") or {"unreadable": ""}
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            out[each] = {"unreadable": str(err)}
    return out.get(name) if name else out


def clear_in_flight(opts, names, jid):
    """Drop the in-flight records of ``names`` that name job ``jid`` (another job's stays)."""
    for name in names:
        record = in_flight(opts, name)
        if record is not None and record.get("jid") == jid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_in_flight_path(opts, name))


def describe_in_flight(record):
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("since", 0)))
    return (f"job {record.get('jid')} on {record.get('source')} -> {record.get('dest')} "
            f"(by {record.get('trigger')}, since {since})")


def lock_dir(opts):
    path = os.path.join(opts["cachedir"], "vmigrate", "locks")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _describe(record):
    if not record:
        return "an unknown holder"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("since", 0)))
    return (f"{record.get('vm')} {record.get('source')} -> {record.get('dest')} by "
            f"{record.get('trigger')} (pid {record.get('pid')}) since {since}")


def _read(fh):
    fh.seek(0)
    text = fh.read()
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return {"unreadable": text[:200]}


class _Lock:
    """One flock'ed file; ``take`` returns False (and the holder's record) when it is busy."""

    def __init__(self, path):
        self.path = path
        self.fh = None
        self.previous = None

    def take(self, record):
        fh = open(self.path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fh)
            fh.close()
            return False, holder
        self.previous = _read(fh)  # left by a holder that died without releasing
        self.fh = fh
        self.rewrite(record)
        return True, None

    def rewrite(self, record):
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(json.dumps(record))
        self.fh.flush()

    def release(self):
        if self.fh is None:
            return
        with contextlib.suppress(OSError):
            self.fh.seek(0)
            self.fh.truncate()
            self.fh.flush()
        with contextlib.suppress(OSError):
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
        self.fh.close()
        self.fh = None


def _slot(directory, prefix, count, record):
    """Take one of ``count`` slot files ``<prefix>.<i>``; Busy naming every holder if none."""
    holders = []
    for i in range(count):
        lock = _Lock(os.path.join(directory, f"{prefix}.{i}"))
        ok, holder = lock.take(record)
        if ok:
            return lock
        holders.append(_describe(holder))
    raise Busy(f"{'; '.join(holders)}")


class Holding:
    """What :func:`hold` yields: the VM's lock, and the host slots taken later."""

    def __init__(self, directory, limits, record, vm_lock):
        self.directory, self.limits, self.record = directory, limits, record
        self.locks = [vm_lock]
        # Records of holders that died without releasing: reconcile before trusting placement.
        self.recovered = [vm_lock.previous] if vm_lock.previous else []

    def take_slots(self, source, dest):
        """One outgoing slot on ``source`` and one incoming slot on ``dest``; Busy (taking
        neither) when a host is at its cap, naming what it runs."""
        self.record.update(source=source, dest=dest)
        record = self.record
        for lock in self.locks:  # the VM's record names the route too
            lock.rewrite(record)
        taken = []
        try:
            for prefix, host, key, verb in (("out", source, "max_outgoing", "sends"),
                                            ("in", dest, "max_incoming", "receives")):
                try:
                    taken.append(_slot(self.directory, f"{prefix}-{host}", self.limits[key],
                                       record))
                except Busy as err:
                    raise SlotsBusy(f"{host} already {verb} {self.limits[key]} migration(s) "
                               f"(master config vmigrate:{key}): {err}") from err
        except BaseException:
            for lock in taken:
                lock.release()
            raise
        self.recovered += [lock.previous for lock in taken if lock.previous]
        self.locks += taken

    def note(self, **fields):
        """Add ``fields`` (the job's ``jid`` once published) to every lock's record."""
        self.record.update(fields)
        for lock in self.locks:
            lock.rewrite(self.record)

    def release(self):
        for lock in reversed(self.locks):
            lock.release()


def _take_name(directory, vm, record):
    lock = _Lock(os.path.join(directory, f"vm-{vm}"))
    ok, holder = lock.take(record)
    if not ok:
        raise Busy(f"vm {vm} is already being migrated: {_describe(holder)}")
    return lock


@contextlib.contextmanager
def hold(opts, vm, trigger="cli", jid=None, dname=None):
    """Hold domain ``vm``'s migration lock for the block (then :meth:`Holding.take_slots`
    once the route is known); everything is released on every way out. Raises Busy, naming
    the running migration, when another request holds it. ``dname``: the name the migration
    gives the domain, held too (its record names ``vm``), so no request for that name runs
    meanwhile."""
    directory = lock_dir(opts)
    limits = settings_.caps(opts)
    record = {"vm": vm, "source": None, "dest": None, "trigger": trigger, "jid": jid,
              "pid": os.getpid(), "since": time.time()}
    if dname and dname != vm:
        record["dname"] = dname
    holding = Holding(directory, limits, record, _take_name(directory, vm, record))
    try:
        if "dname" in record:
            renamed = _take_name(directory, dname, record)
            holding.locks.append(renamed)
            if renamed.previous:
                holding.recovered.append(renamed.previous)
        yield holding
    finally:
        holding.release()
