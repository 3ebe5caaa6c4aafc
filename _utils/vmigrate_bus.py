"""
The master's side of the Salt bus: a LocalClient for each request, events fired (never failing
the caller), a migration's progress events relayed to a person as they arrive, and a job
published to minions with their returns collected from their own return events.

Plain functions and a class over the master's ``opts``; no Salt dunders.
"""

import logging
import threading
import time

import salt.client
import salt.utils.event
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def local_client(opts):
    """A LocalClient for one request (a context manager: the caller closes it)."""
    return salt.client.get_local_client(opts["conf_file"])


def fire(opts, tag, data):
    """Fire one event on the master's bus; never fails the caller."""
    try:
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
            bus.fire_event(dict(data), tag)  # a copy: Salt adds _stamp to what it fires
    except Exception as err:  # pylint: disable=broad-except
        log.warning("vmigrate: could not fire %s: %s", tag, err)


def progress_line(data):
    """One line for a person from a ``vmigrate/<vm>/progress`` event's data."""
    head = (f"{data.get('name')} {data.get('source')} -> {data.get('dest')}: "
            f"{data.get('phase')} {float(data.get('elapsed') or 0):.1f}s")
    parts = []
    if data.get("percent") is not None:
        parts.append(f"{data['percent']:.0f}%")
    if data.get("memory_remaining"):
        parts.append(f"{data['memory_remaining'] / MIB:.1f} MiB left")
    if data.get("memory_bps"):
        parts.append(f"{data['memory_bps'] / MIB:.1f} MiB/s")
    if data.get("iteration"):
        parts.append(f"pass {data['iteration']}")
    if data.get("dirty_rate"):  # pages/s of 4 KiB
        parts.append(f"dirtying {data['dirty_rate'] * 4096 / MIB:.1f} MiB/s")
    if data.get("disk_total"):  # copy_storage
        left = data.get("disk_remaining") or 0
        parts.append(f"disks {100.0 * (data['disk_total'] - left) / data['disk_total']:.0f}% "
                     f"({left / MIB:.1f} MiB left)")
    return head + (", " + ", ".join(parts) if parts else "")


class Relay:
    """While a migration runs, hands ``report`` a line for each progress event its source
    minion sends (``vmigrate/<vm>/progress``), in order, as they arrive; ``stop_on_result``
    also ends at the request's ``vmigrate/<vm>/result`` (salt-run vmigrate.watch). Listening
    starts before the caller publishes; on exit it drains the last events for a moment. A
    no-op when ``report`` is None."""

    def __init__(self, opts, vm, source, report, stop_on_result=False):
        self.opts, self.vm, self.source, self.report = opts, vm, source, report
        self.stop_on_result = stop_on_result
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.done = threading.Event()
        self.last = None
        self.thread = None

    def __enter__(self):
        if self.report is not None:
            self.thread = threading.Thread(target=self._run, name="vmigrate-relay",
                                           daemon=True)
            self.thread.start()
            self.ready.wait(5)
        return self

    def _run(self):
        # The bus is opened in this thread, and used only here.
        try:
            with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"],
                                                   listen=True) as bus:
                self.ready.set()
                self._loop(bus)
        except Exception as err:  # pylint: disable=broad-except
            log.warning("vmigrate: progress relay stopped: %s", err)
        finally:
            self.ready.set()
            self.done.set()

    def _loop(self, bus):
        seen = -1
        drain_until = None
        prefix = f"vmigrate/{self.vm}/"
        while True:
            if self.stop.is_set() and drain_until is None:
                if (self.last or {}).get("phase") in ("completed", "failed"):
                    return
                drain_until = time.monotonic() + 1.0
            if drain_until is not None and time.monotonic() > drain_until:
                return
            event = bus.get_event(wait=0.05, tag=prefix, full=True)
            if not event:
                continue
            data = event.get("data") or {}
            if event.get("tag") == f"{prefix}result" and self.stop_on_result:
                self.last = data
                return
            if event.get("tag") != f"{prefix}progress":
                continue
            body = data.get("data") or {}
            if (self.source is not None and data.get("id") != self.source) \
                    or not isinstance(body, dict):
                continue
            seq = body.get("seq", 0)
            if isinstance(seq, int) and seq <= seen and body.get("phase") == "running":
                continue  # each event.send is its own connection: a late one is stale
            seen = max(seen, seq) if isinstance(seq, int) else seen
            self.last = body
            try:
                self.report(progress_line(body))
            except Exception as err:  # pylint: disable=broad-except
                log.warning("vmigrate: could not report progress: %s", err)
            if body.get("phase") in ("completed", "failed") and drain_until is not None:
                return

    def wait(self, timeout):
        """Until the relay ended by itself (watch) or ``timeout`` seconds passed."""
        return self.done.wait(timeout)

    def __exit__(self, *exc):
        if self.thread is not None:
            self.stop.set()
            self.thread.join(3)


def gather(client, tgt, tgt_type, fun, arg, kwarg, wait, published=None):
    """Publish ``fun`` to ``tgt`` and collect each targeted minion's own return event until
    every one answered or ``wait`` seconds passed -- no ``saltutil.find_job`` pings, whose one
    miss would end the wait early. ``published(jid)`` is called once the job is out. Returns
    (jid, {minion: return data}, targeted minions)."""
    pub = client.run_job(tgt, fun, arg, tgt_type=tgt_type, kwarg=kwarg, listen=True,
                         timeout=wait)
    if not pub or not pub.get("jid"):
        raise CommandExecutionError(
            f"could not publish {fun} to {tgt}: is the salt master running and are the "
            "minions' keys accepted?")
    jid, expected = pub["jid"], set(pub.get("minions") or [])
    if published:
        published(jid)
    got = {}
    deadline = time.monotonic() + wait
    while not expected <= set(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        event = client.event.get_event(wait=min(1.0, remaining), tag=f"salt/job/{jid}/ret/",
                                       full=True)
        if (event or {}).get("tag") == "salt/event/exit":
            # Salt's event reader turns a KeyboardInterrupt that arrives while it waits into
            # this event: raise it again, or the request would go on waiting for the job's
            # return with the interrupt lost. salt-run's own handler raises SystemExit, which
            # passes through; this is for callers of the runner whose SIGINT is Python's.
            raise KeyboardInterrupt
        data = (event or {}).get("data") or {}
        if data.get("id") in expected and data.get("fun") == fun:
            got[data["id"]] = data
    return jid, got, expected
