"""The migration job monitor (_run_job) against a fake libvirt domain: abort retries and their
deadline, a missing job-completed event, a hung offline job, a slow event bus."""
import threading
import time

import libvirt
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.modload import load, utils

CONF = {"poll_interval": 0.05, "abort_deadline": 0.6, "progress_events": True}
URIS = {"uri": "qemu+tcp://h2/system", "data_stream": "plain tcp"}


def _error(code, text="boom"):
    err = libvirt.libvirtError(text)
    err.err = (code, 10, text, 2, None, None, None, 0, 0)
    return err


class FakeDomain:
    """migrateToURI3 runs until ``finish_after`` seconds pass or an abort takes."""

    def __init__(self, finish_after=None, abort_failures=0, abort_never=False, fail=None):
        self.finish_after, self.fail = finish_after, fail
        self.abort_failures, self.abort_never = abort_failures, abort_never
        self.aborted = threading.Event()
        self.abort_calls = 0

    def migrateToURI3(self, uri, params, flags):  # noqa: N802  (libvirt's name)
        start = time.monotonic()
        while self.finish_after is None or time.monotonic() < start + self.finish_after:
            if self.aborted.wait(0.01):
                raise _error(libvirt.VIR_ERR_OPERATION_ABORTED, "operation aborted by client")
        if self.fail:
            raise self.fail

    def abortJob(self):  # noqa: N802
        self.abort_calls += 1
        if self.abort_never or self.abort_calls <= self.abort_failures:
            raise _error(libvirt.VIR_ERR_INTERNAL_ERROR, "cannot abort now")
        self.aborted.set()

    def jobStats(self):  # noqa: N802
        return {"type": 2, "memory_total": 100, "memory_remaining": 40, "downtime": 9}

    def state(self):
        return list(getattr(self, "now", (libvirt.VIR_DOMAIN_RUNNING, 0)))

    # What the convergence policy calls.
    def suspend(self):
        self.suspended = time.monotonic()
        self.finish_after = 0  # paused: the last pass completes at once

    def resume(self):
        self.resumed = True

    def migrateSetMaxDowntime(self, ms, flags):  # noqa: N802
        self.downtimes = getattr(self, "downtimes", []) + [ms]

    def migrateStartPostCopy(self, flags):  # noqa: N802
        self.postcopy = True
        self.finish_after = 0


class FakeConn:
    def __init__(self, completed=None):
        self.completed = completed

    def domainEventRegisterAny(self, dom, event, callback, opaque):  # noqa: N802
        self.callback = (callback, dom)
        return 7

    def domainEventDeregisterAny(self, callback_id):  # noqa: N802
        if self.completed is not None:
            pass


@pytest.fixture
def mod():
    module = load("_modules", "vmigrate")
    module.events = []
    return module


@pytest.fixture
def configure_loader_modules(mod):
    """pytest-salt-factories' loader mocking gives the module its dunders; event.send records
    what the progress thread sends."""

    def send(tag, data):
        mod.events.append((time.monotonic(), tag, data))

    return {mod: {"__opts__": {"id": "host1"}, "__salt__": {"event.send": send},
                  "__pillar__": {"vmigrate": {}}}}


def _run(mod, dom, mode="live", timeout=0.3, conn=None, options=None, **conf):
    job = mod.monitor_.Job("host1", "host2", URIS, dict(CONF, **conf), options or {},
                           mod._send_event)
    return mod.monitor_.run_job(conn or FakeConn(), dom, "vdisk", mode, {}, 0, timeout,
                        job)


def test_timeout_aborts_and_retries_a_failed_abort(mod):
    dom = FakeDomain(abort_failures=2)
    out = _run(mod, dom)
    assert dom.abort_calls == 3
    assert isinstance(out["error"], CommandExecutionError)
    assert "aborted after the 0s timeout" in str(out["error"])
    assert "operation aborted" in str(out["error"])


def test_an_abort_that_never_takes_is_reported_not_waited_on_forever(mod):
    dom = FakeDomain(abort_never=True)
    start = time.monotonic()
    out = _run(mod, dom)
    assert time.monotonic() - start < 0.3 + 0.6 + 1.0
    assert "still running" in str(out["error"]) and "the abort did not take" in str(out["error"])
    dom.aborted.set()  # let the fake's worker thread end


def test_stats_without_the_job_completed_event_are_marked_not_final(mod):
    out = _run(mod, FakeDomain(finish_after=0.2), timeout=5)
    assert "error" not in out
    assert out["final"] is False and out["stats"]["downtime"] == 9
    phases = [d["phase"] for _, _, d in sorted(mod.events, key=lambda e: e[2]["seq"])]
    assert phases[0] == "started" and phases[-1] == "completed"
    assert mod.events[-1][2]["final"] is False


def test_offline_migration_is_bounded_too(mod):
    dom = FakeDomain()  # never finishes, offline jobs are not aborted
    out = _run(mod, dom, mode="offline", timeout=0.2)
    assert "still running" in str(out["error"]) and "it did not finish" in str(out["error"])
    dom.aborted.set()


def test_a_slow_event_bus_does_not_delay_the_timeout(mod):
    def slow_send(tag, data):
        time.sleep(1.0)

    mod.__salt__ = {"event.send": slow_send}
    dom = FakeDomain()
    start = time.monotonic()
    aborted_at = {}
    original = dom.abortJob

    def timed_abort():
        aborted_at.setdefault("t", time.monotonic() - start)
        original()

    dom.abortJob = timed_abort
    _run(mod, dom, timeout=0.3)
    assert aborted_at["t"] < 0.8, aborted_at


def test_libvirt_failure_keeps_code_and_message(mod):
    out = _run(mod, FakeDomain(finish_after=0.05,
                               fail=_error(libvirt.VIR_ERR_OPERATION_FAILED, "dest went away")),
               timeout=5)
    assert "dest went away" in str(out["error"])
    assert f"libvirt error code {libvirt.VIR_ERR_OPERATION_FAILED}" in str(out["error"])


class VanishingDomain:
    """A domain listed by listAllDomains that is gone when read (a failed incoming one)."""

    def name(self):
        return "incoming"

    def state(self):
        raise _error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found")


class SteadyDomain:
    def name(self):
        return "vdisk"

    def UUIDString(self):  # noqa: N802
        return "u-1"

    def state(self):
        return [3, 2]  # paused, by a migration

    def isPersistent(self):  # noqa: N802
        return 1

    def info(self):
        return [3, 131072, 131072, 1, 0]


def test_listing_skips_a_domain_that_vanishes_while_read(monkeypatch):
    class Conn:
        def listAllDomains(self):  # noqa: N802
            return [VanishingDomain(), SteadyDomain()]

        def setKeepAlive(self, *a):  # noqa: N802
            pass

        def getCapabilities(self):  # noqa: N802
            return "<capabilities><host><uuid>6f1e4b9a-0000-4000-8000-000000000002</uuid>" \
                   "</host></capabilities>"

        def getInfo(self):  # noqa: N802
            return ["x86_64", 4096, 2, 2400, 1, 1, 2, 1]

        def close(self):
            pass

    mod = load("_modules", "vmigrate", opts={"id": "host2"}, pillar={"vmigrate": {}},
               utils=utils("vmigrate_validate", "vmigrate_storage", "vmigrate_checks",
                              "vmigrate_options", "vmigrate_xmlguard"))
    monkeypatch.setattr(mod.conn_, "ensure_event_loop", lambda: None)
    monkeypatch.setattr(mod.libvirt, "open", lambda uri: Conn())
    out = mod.domains()
    assert out["domains"] == {"vdisk": {"uuid": "u-1", "state": "paused", "reason": "migration",
                                        "persistent": True, "memory_mib": 128, "vcpus": 1}}
    assert out["host_uuid"] == "6f1e4b9a-0000-4000-8000-000000000002"
    # What the host offers its guests: its memory less memory_reserve_mib, 4 vCPUs per CPU.
    assert out["capacity"] == {"memory_mib": 4096 - 256, "vcpus": 8.0, "host_memory_mib": 4096,
                               "cpus": 2, "cpu_allocation_ratio": 4.0}


def test_an_abort_from_elsewhere_is_reported_as_such(mod):
    dom = FakeDomain()
    threading.Timer(0.1, dom.aborted.set).start()  # salt-run vmigrate.abort, in another job
    out = _run(mod, dom, timeout=30)
    assert dom.abort_calls == 0
    assert "was aborted on request" in str(out["error"]) and "timeout" not in str(out["error"])


def test_timeout_action_pause_completes_paused_instead_of_aborting(mod, monkeypatch):
    monkeypatch.setattr(mod.conn_, "dest_connection", _no_dest)
    dom = FakeDomain()
    out = _run(mod, dom, timeout=0.2, options={"timeout_action": "pause"})
    assert "error" not in out, out
    assert dom.abort_calls == 0 and hasattr(dom, "suspended")
    assert out["policy"] == {"timeout_action": "pause", "paused_source": True}


def test_timeout_action_pause_resumes_the_copy_there_found_by_uuid(mod, monkeypatch):
    """Paused to converge: it must run on the destination as it ran here, also when option
    dname gave it another name there."""
    arrived = FakeDomain()
    arrived.state = lambda: (libvirt.VIR_DOMAIN_PAUSED, 0)

    class Dest:
        def __init__(self, uri, conf):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def lookupByUUIDString(self, uuid):  # noqa: N802
            assert uuid == "u-1"
            return arrived

    monkeypatch.setattr(mod.conn_, "dest_connection", Dest)
    dom = FakeDomain()
    dom.UUIDString = lambda: "u-1"
    out = _run(mod, dom, timeout=0.2, options={"timeout_action": "pause", "dname": "vnew"})
    assert "error" not in out, out
    assert getattr(arrived, "resumed", False)


def test_timeout_action_pause_that_still_does_not_finish_is_aborted_and_resumed(mod):
    dom = FakeDomain()
    dom.suspend = lambda: setattr(dom, "suspended", True)  # paused, yet the copy drags on
    out = _run(mod, dom, timeout=0.2, options={"timeout_action": "pause"})
    assert dom.abort_calls >= 1 and getattr(dom, "resumed", False)
    assert "resumed here" in str(out["error"])


def test_timeout_action_postcopy_switches_over(mod):
    dom = FakeDomain()
    out = _run(mod, dom, timeout=0.2, options={"postcopy": True, "timeout_action": "postcopy"})
    assert "error" not in out and dom.postcopy and dom.abort_calls == 0
    assert out["policy"]["postcopy"] is True


def test_downtime_rises_in_steps_to_the_maximum(mod):
    dom = FakeDomain(finish_after=0.5)
    out = _run(mod, dom, timeout=5, options={"max_downtime": 400, "downtime_steps": 4,
                                             "downtime_step_delay": 0.1})
    assert "error" not in out
    assert dom.downtimes[0] == 100 and dom.downtimes[-1] == 400, dom.downtimes
    assert dom.downtimes == sorted(dom.downtimes) and len(set(dom.downtimes)) == len(dom.downtimes)


class _no_dest:  # noqa: N801  (stands in for the _dest_connection context manager)
    def __init__(self, uri, conf):
        pass

    def __enter__(self):
        raise mod_error()

    def __exit__(self, *exc):
        return False


def mod_error():
    return CommandExecutionError("no destination in a unit test")


class _JobConn:
    """A libvirt connection whose domains report the given jobStats (or raise)."""

    def __init__(self, stats):
        self.stats = stats

    def lookupByName(self, name):  # noqa: N802
        conn = self

        class Dom:
            def jobStats(self):  # noqa: N802
                if isinstance(conn.stats, Exception):
                    raise conn.stats
                return conn.stats

        return Dom()

    def setKeepAlive(self, *a):  # noqa: N802
        pass

    def close(self):
        pass


@pytest.mark.parametrize("stats, want", [
    ({"type": 0}, None),
    ({"type": 2, "operation": 5, "memory_total": 200, "memory_remaining": 50,
      "time_elapsed": 1500, "memory_iteration": 2},
     {"operation": "migration_out", "percent": 75.0, "elapsed_ms": 1500, "iteration": 2}),
    # libvirt keeps the statistics on the source: on the destination the domain is arriving.
    (_error(libvirt.VIR_ERR_OPERATION_UNSUPPORTED, "only on the source host"),
     {"operation": "migration_in", "percent": None}),
])
def test_job_names_what_libvirt_runs_for_the_domain(monkeypatch, stats, want):
    mod = load("_modules", "vmigrate", opts={"id": "host1"}, pillar={"vmigrate": {}},
               utils=utils("vmigrate_validate", "vmigrate_storage", "vmigrate_checks",
                           "vmigrate_options", "vmigrate_xmlguard"))
    monkeypatch.setattr(mod.conn_, "ensure_event_loop", lambda: None)
    monkeypatch.setattr(mod.libvirt, "open", lambda uri: _JobConn(stats))
    out = mod.job("vdisk")
    assert out["name"] == "vdisk" and out["host"] == "host1"
    if want is None:
        assert out["job"] is None
    else:
        assert {k: out["job"][k] for k in want} == want, out


class PostcopyDomain(FakeDomain):
    """A source whose job libvirt will not abort: ``postcopy`` (paused here, running there),
    else still a pre-copy job that refuses for another reason, or no job left at all."""

    def __init__(self, postcopy=False, job=True):
        super().__init__()
        self.now = ((libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY) if postcopy
                    else (libvirt.VIR_DOMAIN_RUNNING, 0))
        self.job = job

    def abortJob(self):  # noqa: N802
        self.abort_calls += 1
        raise _error(libvirt.VIR_ERR_OPERATION_INVALID,
                     "cannot abort migration in post-copy mode" if self.job else "no job")

    def jobStats(self):  # noqa: N802
        return super().jobStats() if self.job else {"type": 0}


@pytest.mark.parametrize("dom, want", [
    # libvirt's VIR_ERR_OPERATION_INVALID is not "no job left": the job is in post-copy
    (PostcopyDomain(postcopy=True), "postcopy"),
    # ...or a fresh reading shows the job ended
    (PostcopyDomain(job=False), "ended"),
    # ...or the job still runs: retried until the deadline, never read as ended
    (PostcopyDomain(), "failed"),
])
def test_an_abort_libvirt_refuses_is_read_again_before_it_counts(mod, dom, want):
    assert mod.monitor_.abort(dom, "vdisk", time.monotonic() + 0.3) == want
    assert dom.abort_calls == (1 if want != "failed" else dom.abort_calls) >= 1


def test_the_abort_of_a_postcopy_job_says_it_cannot_and_touches_nothing(monkeypatch):
    dom = PostcopyDomain(postcopy=True)
    dom.operation = 5
    dom.name = lambda: "vdisk"
    dom.UUIDString = lambda: "u-1"
    dom.isPersistent = lambda: 1
    dom.jobStats = lambda: {"type": 2, "operation": 5, "memory_total": 100,
                            "memory_remaining": 40}

    class Conn:
        def lookupByName(self, name):  # noqa: N802
            return dom

        def setKeepAlive(self, *a):  # noqa: N802
            pass

        def close(self):
            pass

    mod = load("_modules", "vmigrate", opts={"id": "host1"}, pillar={"vmigrate": {}},
               utils=utils("vmigrate_validate", "vmigrate_storage", "vmigrate_checks",
                           "vmigrate_options", "vmigrate_xmlguard"))
    monkeypatch.setattr(mod.conn_, "ensure_event_loop", lambda: None)
    monkeypatch.setattr(mod.libvirt, "open", lambda uri: Conn())
    out = mod.abort("vdisk")
    assert out["aborted"] is False and out["outcome"] == "postcopy", out
    assert "cannot be aborted" in out["comment"] and "runs on the destination" in out["comment"]
    assert dom.abort_calls == 0 and not hasattr(dom, "resumed")
