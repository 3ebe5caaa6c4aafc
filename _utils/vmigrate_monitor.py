"""
The migration job: libvirt's flags for it, ``migrateToURI3`` run in a worker thread and
polled, progress events sent from a thread of their own, and the convergence policy (allowed
downtime in steps, post-copy, ``timeout_action``) applied from the monitoring loop; aborting a
job, and knowing when an abort took.

Plain Python, no Salt dunders: a :class:`Job` carries the source's id and the function that
sends an event (the module passes ``__salt__["event.send"]``).
"""

import collections
import contextlib
import contextvars
import itertools
import logging
import os
import queue
import runpy
import threading
import time

from salt.exceptions import CommandExecutionError

conn_, options_, outcome_, precheck_, storage_ = runpy.run_path(os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_conn", "vmigrate_options", "vmigrate_outcome", "vmigrate_precheck",
    "vmigrate_storage")
libvirt = conn_.libvirt
REFUSED = outcome_.REFUSED  # words for a person: the status decides

log = logging.getLogger(__name__)

# One migration as the module asked for it: ``source`` (this minion's id), ``dest``, ``uris``
# (conf.dest_uris), ``conf`` (the pillar configuration), ``opts`` (the options applied) and
# ``send`` (event.send, for progress events).
Job = collections.namedtuple("Job", "source dest uris conf opts send")

def flags(mode, unsafe, data_stream="plain tcp"):
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


class Progress:
    """Sends ``vmigrate/<vm>/progress`` events from a thread of its own, so a slow event bus
    never delays the monitoring loop (and its timeout check). Events carry ``seq``: each
    event.send is its own connection and they may arrive out of order."""

    def __init__(self, send, enabled, tag, base):
        self.send, self.enabled, self.tag, self.base = send, enabled, tag, base
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
                self.send(self.tag, data)
            except Exception as err:  # pylint: disable=broad-except
                # Progress is advisory: never let the event bus break a migration.
                log.warning("vmigrate: could not send %s: %s", self.tag, err)

    def put(self, phase, elapsed, stats, final=False):
        if self.enabled:
            self.queue.put(progress_event(self.base, phase, next(self.seq), elapsed, stats,
                                          final))

    def close(self, wait=2.0):
        if self.enabled:
            self.queue.put(None)
            self.thread.join(wait)


def progress_event(base, phase, seq, elapsed, stats, final=False):
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


class Policy:
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
            if conn_.attempt(f"{self.name}: max downtime {target} ms",
                             self.dom.migrateSetMaxDowntime, target, 0):
                self.downtime = target
        if (self.opts.get("postcopy_after_precopy") and not self.postcopy
                and (stats.get("memory_iteration") or 0) >= 2):
            self.postcopy = conn_.attempt(f"{self.name}: post-copy",
                                          self.dom.migrateStartPostCopy, 0)
        now = time.monotonic()
        if elapsed > self.timeout and self.action is None:
            self.action = self.opts.get("timeout_action", "abort")
            log.warning("vmigrate: %s: migration still running after %.0fs: %s", self.name,
                        elapsed, self.action)
            if self.action == "postcopy" and not self.postcopy:
                self.postcopy = conn_.attempt(f"{self.name}: post-copy",
                                              self.dom.migrateStartPostCopy, 0)
            if self.action == "pause":
                self.paused = conn_.attempt(f"{self.name}: pause", self.dom.suspend)
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
        self.abort_took = abort(self.dom, self.name, hard_deadline) in ("took", "ended")
        if self.abort_took:  # libvirt ends the job now: give it its grace period
            return max(hard_deadline, time.monotonic() + self.conf["abort_deadline"])
        return hard_deadline


def abort(dom, name, deadline):
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
                    if conn_.in_postcopy(dom):
                        return "postcopy"
                    if not conn_.job_of(dom):
                        return "ended"
            except libvirt.libvirtError as err2:
                log.warning("vmigrate: %s: cannot read the job after the abort: %s", name, err2)
            if time.monotonic() >= deadline:
                log.error("vmigrate: %s: abort did not take: %s", name, err)
                return "failed"
            log.warning("vmigrate: %s: abort failed, retrying: %s", name, err)
            time.sleep(0.5)


def run_job(conn, dom, name, mode, params, flags, timeout, job):
    """Run migrateToURI3 in a worker thread; poll, report progress, apply the policy."""
    source, dest, uris, conf, opts, send = job
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
    progress = Progress(send, conf["progress_events"], f"vmigrate/{name}/progress",
                         {"name": name, "source": source, "dest": dest, "mode": mode})
    policy = Policy(dom, name, opts, timeout, conf)
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
        outcome["error"] = outcome_.Outcome(
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
        text = str(conn_.error(err, what))
        if status == "refused" and "shared storage" in (err.get_error_message() or ""):
            # (prose only: which explanation fits; the status came from the code above)
            with contextlib.suppress(CommandExecutionError, OSError):
                facts = precheck_.storage_facts(dom)
                text += ": " + storage_.explain_unsafe(facts, source)
        if policy.paused and not conn_.in_postcopy(dom) \
                and conn_.attempt(f"{name}: resume after the failed migration", dom.resume):
            text += "; resumed here (timeout_action pause)"
        outcome["error"] = outcome_.Outcome(text, status, reason)
    elif policy.paused and not opts.get("suspend"):
        # Paused here to converge; libvirt resumes it there unless it was paused when the job
        # began. Make sure it runs there, as it ran here.
        with contextlib.suppress(CommandExecutionError, libvirt.libvirtError):
            with conn_.dest_connection(uris["uri"], conf) as dconn:
                ddom = dconn.lookupByUUIDString(dom.UUIDString())  # option dname renames it
                if ddom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                    ddom.resume()
    progress.put("failed" if failed else "completed", elapsed, stats, final)
    progress.close()
    outcome.update(elapsed=elapsed, stats=stats, final=final, policy=policy.report())
    return outcome


def abort_outgoing(dom, name, host, abort_deadline):
    """The module's ``vmigrate.abort`` of ``dom`` (``name``) on ``host``: abort the migration
    going out, if one does, and say what became of it (a dict: ``name``, ``host``,
    ``aborted``, ``outcome``, ``state``, ``comment``). It counts as aborted only once a fresh
    reading shows no job left."""
    try:
        info = conn_.job_of(dom)
    except libvirt.libvirtError as err:
        raise conn_.error(err, f"reading the job of {name!r}") from err
    if not info or info["operation"] != "migration_out":
        what = f" (its job here: {info['operation']})" if info else ""
        return {"name": name, "host": host, "aborted": False, "outcome": "none",
                "state": conn_.describe(dom),
                "comment": f"no migration of {name} goes out from {host}{what}"}
    deadline = time.monotonic() + abort_deadline
    took = "postcopy" if conn_.in_postcopy(dom) else abort(dom, name, deadline)
    if took == "failed":
        raise CommandExecutionError(
            f"the migration of {name!r} from {host} did not take the abort within "
            f"{abort_deadline:g}s; check with salt-run vmigrate.jobs")
    ended = took == "ended"
    while took == "took" and time.monotonic() < deadline:
        # Aborted only once a fresh reading shows no job left.
        with contextlib.suppress(libvirt.libvirtError):
            if not conn_.job_of(dom):
                ended = True
                break
        time.sleep(0.2)
    state = conn_.describe(dom)
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
                           f"job still runs after {abort_deadline:g}s: check with "
                           "salt-run vmigrate.jobs"}
    return {"name": name, "host": host, "aborted": True, "outcome": "aborted", "state": state,
            "comment": f"aborted the migration of {name} from {host}: it is {state['state']} "
                       f"here"}
