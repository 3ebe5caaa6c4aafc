"""The master-side flow (locate, decide, migrate, verify) and the runner over it, against a
fake LocalClient that publishes jobs and delivers their return events -- or does not."""
import pytest
from salt.exceptions import SaltInvocationError

from tests.support.modload import load, utils

RUNNING = {"uuid": "u", "state": "running", "reason": "booted", "persistent": True}
OPTS = {"vmigrate": {"hypervisors_target": ["host1", "host2"]}, "conf_file": "/x",
        "sock_dir": "/x"}


@pytest.fixture(autouse=True)
def _cachedir(tmp_path, monkeypatch):
    """Locks live in the master's cachedir: a fresh one per test."""
    monkeypatch.setitem(OPTS, "cachedir", str(tmp_path))


def host_uuid(host):
    return f"00000000-0000-4000-8000-{host[-1]:0>12}"


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def time(self):
        return 1.8e9 + self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeEvents:
    def __init__(self, client):
        self.client = client

    def get_event(self, wait, tag, full):
        self.client.clock.now += wait
        for i, (due, event) in enumerate(self.client.pending):
            if due <= self.client.clock.now and event["tag"].startswith(tag):
                del self.client.pending[i]
                return event
        return None


class FakeClient:
    """``hosts``: {minion: {vm: info}} answering vmigrate.domains; ``dead``: minions that
    never answer; ``errors``: minions that answer with an error; ``migrate``: (delay, retcode,
    return) of the source's vmigrate.migrate, or None for no return ever."""

    def __init__(self, clock, hosts, dead=(), errors=(), migrate=(0, 0, None), after=None,
                 reported=None):
        self.clock, self.hosts, self.dead, self.errors = clock, hosts, set(dead), set(errors)
        # What each host's vmigrate.domains reports of its pillar (options, shutdown_timeout).
        self.reported = reported or {}
        self.migrate, self.after = migrate, after
        self.pending, self.calls, self.opened, self.closed = [], [], 0, 0
        # Salt jobs still running on their minion (saltutil.find_job), libvirt's jobs per host.
        self.running, self.libvirt_jobs = set(), {}
        self.event = FakeEvents(self)

    def __enter__(self):
        self.opened += 1
        return self

    def __exit__(self, *exc):
        self.closed += 1

    def run_job(self, tgt, fun, arg, tgt_type, kwarg, listen, timeout):
        assert listen is True
        jid = f"j{len(self.calls)}"
        self.calls.append((fun, tgt, list(arg), dict(kwarg)))
        targets = list(tgt) if tgt_type == "list" else list(self.hosts) + sorted(self.dead)
        targets = [t for t in targets if t in self.hosts or t in self.dead]
        for host in targets:
            if host in self.dead:
                continue
            delay, retcode, value = 0, 0, None
            if fun == "vmigrate.domains":
                if host in self.errors:
                    retcode, value = 1, "ERROR: cannot connect to libvirt"
                else:
                    value = {"host": host, "timeout": 600, "domains": self.hosts[host],
                             "host_uuid": host_uuid(host), **self.reported.get(host, {})}
            elif fun == "vmigrate.migrate":
                if self.after is not None:
                    self.hosts.update(self.after)
                if self.migrate is None:
                    continue
                delay, retcode, value = self.migrate
            elif fun == "vmigrate.precheck":
                value = {"checks": [], "blockers": []}
            elif fun == "saltutil.find_job":
                value = {"jid": arg[0], "fun": "vmigrate.migrate"} \
                    if arg[0] in self.running else {}
            elif fun == "vmigrate.jobs":
                value = {"host": host, "jobs": self.libvirt_jobs.get(host, {})}
            elif fun == "vmigrate.repair":
                vm, action = arg
                info = self.hosts[host][vm]
                if kwarg.get("uuid") != info["uuid"]:  # as the minion's repair refuses
                    retcode, value = 1, f"ERROR: {vm} has UUID {info['uuid']}"
                    self.pending.append((self.clock.now, {
                        "tag": f"salt/job/{jid}/ret/{host}",
                        "data": {"id": host, "fun": fun, "return": value, "retcode": 1}}))
                    continue
                if action == "destroy" and not info["persistent"]:
                    del self.hosts[host][vm]
                else:
                    info.update({"destroy": {"state": "shutoff"}, "resume": {"state": "running"},
                                 "persist": {"persistent": True}}.get(action, {}))
                    if action == "undefine":
                        del self.hosts[host][vm]
                value = {"name": vm, "host": host, "action": action}
            self.pending.append((self.clock.now + delay, {
                "tag": f"salt/job/{jid}/ret/{host}",
                "data": {"id": host, "fun": fun, "return": value, "retcode": retcode}}))
        return {"jid": jid, "minions": targets}


@pytest.fixture
def env(monkeypatch):
    clock = Clock()
    flow = load("_utils", "vmigrate_flow")
    monkeypatch.setattr(flow, "time", clock)
    fired = []
    monkeypatch.setattr(flow, "fire", lambda opts, tag, data: fired.append((tag, dict(data))))
    box = {}

    def make(**kw):
        box["client"] = FakeClient(clock, **kw)
        monkeypatch.setattr(flow, "_client", lambda opts: box["client"])
        return box["client"]

    return {"flow": flow, "fired": fired, "make": make, "clock": clock}


def _published(client, fun):
    return [c for c in client.calls if c[0] == fun]


@pytest.mark.parametrize("hosts, vm, dest, words", [
    ({"host1": {}, "host2": {}}, "vdisk", "host2", "not found on any hypervisor"),
    ({"host1": {"vdisk": RUNNING}, "host2": {"vdisk": RUNNING}}, "vdisk", "host2",
     "on several hypervisors (host1: running; host2: running)"),
    ({"host1": {"vdisk": RUNNING}, "host2": {}}, "vdisk", "host1", "already on host1"),
    ({"host1": {"vdisk": RUNNING}, "host2": {}}, "vdisk", "host3", "not an available hypervisor"),
    ({"host1": {"vdisk": RUNNING}}, "vdisk\n", "host2", "not a valid domain name"),
    ({"host1": {"vdisk": RUNNING}}, "vdisk", None, "dest is required"),
    ({"host1": {"vdisk": RUNNING}}, "vdisk", "host2", "not an available hypervisor"),
])
def test_refusals_move_nothing_and_fire_one_result(env, hosts, vm, dest, words):
    client = env["make"](hosts=hosts)
    ret = env["flow"].migrate(OPTS, vm, dest)
    assert ret["result"] is False and ret["status"] == "refused"
    assert words in ret["comment"], ret["comment"]
    assert not _published(client, "vmigrate.migrate")
    assert len(env["fired"]) == 1 and env["fired"][0][1]["comment"] == ret["comment"]
    assert env["fired"][0][0] == ("vmigrate/-/result" if vm != "vdisk" else "vmigrate/vdisk/result")
    assert client.opened == client.closed


@pytest.mark.parametrize("dead, errors, why", [
    (["host3"], [], "host3 (did not answer within 10s)"),
    ([], ["host2"], "host2 (answered with an error: ERROR: cannot connect"),
])
def test_a_hypervisor_without_a_valid_answer_blocks_the_decision(env, dead, errors, why):
    hosts = {"host1": {"vdisk": dict(RUNNING, state="shutoff")}, "host2": {}}
    client = env["make"](hosts=hosts, dead=dead, errors=errors)
    opts = dict(OPTS, vmigrate={"hypervisors_target": "host*"})
    ret = env["flow"].migrate(opts, "vdisk", "host2", mode="offline")
    assert ret["result"] is False and why in ret["comment"], ret["comment"]
    assert "may run there" in ret["comment"] and "force=True" in ret["comment"]
    assert not _published(client, "vmigrate.migrate")


def test_force_decides_without_the_silent_host_and_says_so(env):
    hosts = {"host1": {"vdisk": RUNNING}, "host2": {}}
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts=hosts, dead=["host3"], after=after,
                         migrate=(1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}))
    opts = dict(OPTS, vmigrate={"hypervisors_target": "host*"})
    ret = env["flow"].migrate(opts, "vdisk", "host2", force=True)
    assert ret["result"] is True and ret["forced"] == ["host3"], ret
    assert _published(client, "vmigrate.migrate")


def test_a_migration_longer_than_any_ping_window_is_waited_for(env):
    # The source answers after 200 s: well past the old 15 s + find_job window, inside the
    # migration's own timeout plus the margin.
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=(200, 0, {"elapsed": 200.0, "downtime_ms": 50, "stats": {}}))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", timeout=300)
    assert ret["result"] is True and ret["status"] == "migrated", ret["comment"]
    fun, tgt, args, kwarg = _published(client, "vmigrate.migrate")[0]
    assert tgt == ["host1"] and args == ["vdisk", "host2"] and kwarg["timeout"] == 300


def test_lost_contact_is_unknown_never_failed(env):
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, migrate=None, after=incoming)
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", timeout=60)
    assert ret["result"] is False and ret["status"] == "unknown"
    assert "may still be running (job j1)" in ret["comment"] and "failed" not in ret["comment"]
    assert "host2: paused (migration): do not resume before checking host1" in ret["comment"]
    assert env["clock"].now >= 60 + 30


def test_source_paused_by_a_migration_is_refused(env):
    hosts = {"host1": {"vdisk": dict(RUNNING, state="paused", reason="migration")}, "host2": {}}
    client = env["make"](hosts=hosts)
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and "paused by an unfinished migration" in ret["comment"]
    assert not _published(client, "vmigrate.migrate")


def test_verification_never_reads_silence_as_absence(env):
    hosts = {"host1": {"vdisk": RUNNING}, "host2": {}}
    client = env["make"](hosts=hosts, after={"host1": {}, "host2": {"vdisk": RUNNING}},
                         migrate=(1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}))
    real_run_job = client.run_job

    def run_job(tgt, fun, *a, **k):
        if fun == "vmigrate.domains" and tgt == ["host1", "host2"]:
            client.dead.add("host1")  # the source stops answering after the migration
        return real_run_job(tgt, fun, *a, **k)

    client.run_job = run_job
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and "could not verify host1" in ret["comment"]


def _moved(copies, read_on="host2"):
    if copies is not None:
        copies = dict(copies, dest_host_uuid=host_uuid(read_on))
    return (1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}, "copies": copies})


def test_the_sources_own_reading_of_both_hosts_is_the_verification(env):
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=_moved({"hosts": {"host2": RUNNING}, "unaccounted": {}}))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is True and ret["verified_by"] == "host1", ret["comment"]
    assert len(_published(client, "vmigrate.domains")) == 1  # the locate, no second ask
    # The source was told which machine host2's minion runs on, to check its URI reaches it.
    assert _published(client, "vmigrate.migrate")[0][3]["dest_host_uuid"] == host_uuid("host2")
    assert ret["after"]["running"] == ["host2"] and ret["after"]["defined"] == ["host2"]


@pytest.mark.parametrize("copies", [
    None,                                                          # an older minion
    {"hosts": {"host2": RUNNING}},                                 # malformed
    {"hosts": {"host2": RUNNING, "host3": RUNNING}, "unaccounted": {}},  # not its to say
    {"hosts": {"host2": dict(RUNNING, state=7)}, "unaccounted": {}},
    {"hosts": {"host2": RUNNING}, "unaccounted": {"host1": "connection closed"}},
    {"hosts": {"host1": RUNNING, "host2": RUNNING}, "unaccounted": {}},  # two copies
    {"hosts": {"host2": dict(RUNNING, persistent=False)}, "unaccounted": {}},
])
def test_anything_but_a_clean_reading_is_checked_again_from_the_master(env, copies):
    """The master asks both hosts itself, and decides from that answer alone: here the
    move did complete, so the outcome is a success verified by the master."""
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=_moved(copies))
    _a_clean_reading_is_not_trusted_blindly(env, client)


def test_a_reading_from_another_machine_than_the_dests_is_checked_again(env):
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=_moved({"hosts": {"host2": RUNNING}, "unaccounted": {}},
                                        read_on="host3"))
    _a_clean_reading_is_not_trusted_blindly(env, client)


def _a_clean_reading_is_not_trusted_blindly(env, client):
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is True and ret["verified_by"] == "master", ret["comment"]
    asked = _published(client, "vmigrate.domains")
    assert len(asked) == 2 and asked[1][1] == ["host1", "host2"]


def test_a_wrong_placement_the_master_confirms_is_repaired_not_reported_migrated(env):
    # (copies: the repairs below change the fake hosts' entries in place)
    both = {"host1": {"vdisk": dict(RUNNING)}, "host2": {"vdisk": dict(RUNNING)}}
    env["make"](hosts={"host1": {"vdisk": dict(RUNNING)}, "host2": {}}, after=both,
                migrate=_moved({"hosts": {"host1": RUNNING, "host2": RUNNING},
                                "unaccounted": {}}))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and ret["verified_by"] == "master"
    assert "host1 still has it (running)" in ret["comment"]
    assert ret["reconciled"]["result"] is True, ret["reconciled"]


def test_failure_reports_where_it_is_now(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}},
                migrate=(1, 1, "ERROR: live migration failed: Channel error"))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "failed" and "Channel error" in ret["comment"]
    assert "now: host1: running" in ret["comment"]


def test_hypervisors_must_be_named(env):
    env["make"](hosts={})
    ret = env["flow"].migrate({"conf_file": "/x", "sock_dir": "/x", "cachedir": OPTS["cachedir"]},
                              "vdisk", "host2")
    assert ret["result"] is False and "vmigrate:hypervisors_target is not set" in ret["comment"]
    with pytest.raises(SaltInvocationError, match="query_timeout"):
        env["flow"].settings({"vmigrate": {"hypervisors_target": ["a"], "query_timeout": True}})


def test_runner_resets_retcode_between_jobs(env):
    runner = load("_runners", "vmigrate", opts=OPTS, context={},
                  utils=utils("vmigrate_validate", **{
                      "vmigrate_flow.migrate": env["flow"].migrate,
                      "vmigrate_flow.locate": env["flow"].locate,
                      "vmigrate_flow.plan": env["flow"].plan,
                      "vmigrate_flow.terminal_report": env["flow"].terminal_report}))
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    assert runner.migrate("vdisk", "host1")["retcode"] == 1
    assert runner.__context__["retcode"] == 1
    # Reused runner client (the reactor): the next good call must not inherit the failure.
    where = runner.locate("vdisk")
    assert where["running"] == ["host1"] and where["retcode"] == 0
    assert runner.__context__["retcode"] == 0
    # An incomplete answer is not a clean one: salt-run exits with the returned retcode.
    env["make"](hosts={"host1": {"vdisk": RUNNING}}, dead=["host2"])
    assert runner.locate("vdisk")["retcode"] == 1


def test_a_second_request_for_the_same_vm_fails_fast_naming_the_first(env):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    with env["flow"].locks.hold(OPTS, "vdisk", trigger="reactor") as first:
        first.take_slots("host1", "host2")
        ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and ret["status"] == "refused"
    assert "vm vdisk is already being migrated: vdisk host1 -> host2 by reactor" in ret["comment"]
    assert client.calls == []  # not even located


def _where(**hosts):
    """A locate result from host=(state, persistent[, reason[, uuid]]) tuples."""
    def info(state, persistent, reason="migration", uuid="u"):
        return {"state": state, "reason": reason, "persistent": persistent, "uuid": uuid}
    return {"name": "vdisk", "hosts": {h: info(*v) for h, v in hosts.items()},
            "unaccounted": {}}


@pytest.mark.parametrize("where, prefer, actions, why", [
    # one running copy and a paused incoming one: the incoming copy goes
    (_where(host1=("running", True), host2=("paused", False)), None,
     [("host2", "destroy")], None),
    # the destination runs it after a failed report: dest persisted first (a failed persist
    # leaves the source's definition), then the source copy goes
    (_where(host1=("paused", True), host2=("running", False)), "host2",
     [("host2", "persist"), ("host1", "destroy"), ("host1", "undefine")], None),
    # paused by a failed migration on the source only: resume it
    (_where(host1=("paused", True)), None, [("host1", "resume")], None),
    # paused on both: keep the persistent source, drop the transient incoming copy
    # (the other copy stops before the kept one resumes: never two running)
    (_where(host1=("paused", True), host2=("paused", False)), None,
     [("host2", "destroy"), ("host1", "resume")], None),
    # a stale shut-off definition beside the running copy: undefine, never touch the disk
    (_where(host1=("shutoff", True), host2=("running", True)), None,
     [("host1", "undefine")], None),
    (_where(host1=("running", True)), None, [], None),
    (_where(host1=("shutoff", True)), None, [], None),
    (_where(host1=("running", True), host2=("running", True)), None, [], "two guests on one disk"),
    (_where(host1=("paused", True), host2=("paused", True)), None, [], "cannot tell which"),
    (_where(host1=("shutoff", True), host2=("shutoff", True)), None, [], "keep one definition"),
    # a user's pause (or an I/O error's) is not undone
    (_where(host1=("paused", True, "user")), None, [], None),
    (_where(host1=("paused", True, "ioerror"), host2=("paused", False)), None,
     [("host2", "destroy")], None),
    # same name, different UUIDs: two VMs, not two copies
    (_where(host1=("running", True), host2=("shutoff", True, "x", "other")), None, [],
     "different UUIDs"),
])
def test_repairs_end_with_one_running_copy_defined_once(env, where, prefer, actions, why):
    got, reason = env["flow"].repairs(where, prefer)
    assert got == actions
    assert (why is None and reason is None) or why in reason


def test_repairs_decide_nothing_while_a_host_is_unaccounted(env):
    where = _where(host1=("paused", True))
    where["unaccounted"] = {"host3": "did not answer within 10s"}
    assert env["flow"].repairs(where) == ([], "could not verify host3 (did not answer within "
                                              "10s): nothing changed")


@pytest.mark.parametrize("error, status", [
    ({"result": False, "status": "unknown", "reason": "still_running",
      "comment": "live migration of 'vdisk' from host1 to host2: still running after 700s (the "
                 "abort did not take); it may yet complete"}, "unknown"),
    ({"result": False, "status": "refused", "reason": "error",
      "comment": "precheck refused the migration of 'vdisk', nothing was moved: disk vda on "
                 "ext4"}, "refused"),
    # lost contact during a save's restore: unknown, whatever the words say
    ({"result": False, "status": "unknown", "reason": "lost_contact",
      "comment": "save migration of 'vdisk' to host2: restoring it there: failed"}, "unknown"),
])
def test_a_job_still_running_or_refused_is_never_repaired(env, error, status):
    # The incoming copy is paused on host2: a repair would destroy it, which is wrong while the
    # job may still switch over (unknown) and pointless when nothing moved (refused).
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                         migrate=(1, 1, error))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == status and ret["result"] is False
    assert "reconciled" not in ret
    assert not _published(client, "vmigrate.repair")


@pytest.mark.parametrize("value, status", [
    # the words of a refusal or of a job still running decide nothing: only the code does
    ("ERROR: precheck refused the migration of 'vdisk', nothing was moved", "failed"),
    ({"result": False, "status": "failed", "reason": "libvirt",
      "comment": "still running after 700s, nothing was moved"}, "failed"),
    ({"result": False, "status": "aborted", "reason": "aborted",
      "comment": "live migration failed"}, "aborted"),
])
def test_the_status_is_the_minions_code_never_its_words(env, value, status):
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                migrate=(1, 1, value))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == status and "reconciled" in ret, ret


def test_a_definite_failure_is_repaired_toward_one_copy(env):
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                         migrate=(1, 1, "ERROR: live migration failed: Channel error"))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "failed" and "reconciled" in ret
    assert [(c[1], c[2]) for c in _published(client, "vmigrate.repair")] == [
        (["host2"], ["vdisk", "destroy"])]
    # Every host answered: the repair reads them again (a copy libvirt is still removing is
    # then seen gone), and once more to verify it.
    assert len(_published(client, "vmigrate.domains")) == 4


def test_a_failure_with_the_destination_cut_off_waits_for_it_once_not_again_to_repair(env):
    # The master's reading after the failure is what the repair decides from: asking a host
    # that just did not answer a second time only waits out the query timeout again.
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}},
                         migrate=(1, 1, "ERROR: live migration failed: client socket is closed"))
    run_job = client.run_job

    def cut_off_after_the_migrate(tgt, fun, *args, **kwargs):
        out = run_job(tgt, fun, *args, **kwargs)
        if fun == "vmigrate.migrate":
            client.dead.add("host2")
        return out

    client.run_job = cut_off_after_the_migrate
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "failed"
    assert "could not verify host2" in ret["reconciled"]["comment"], ret["comment"]
    assert len(_published(client, "vmigrate.domains")) == 2  # the locate, the check after
    assert not _published(client, "vmigrate.repair")


@pytest.mark.parametrize("source, dest", [
    # the network broke in post-copy: libvirt leaves the destination running, the source paused
    (dict(RUNNING, state="paused", reason="postcopy_failed"),
     dict(RUNNING, reason="postcopy_failed")),
    (dict(RUNNING, state="paused", reason="postcopy"), dict(RUNNING, reason="postcopy")),
    (dict(RUNNING, state="paused", reason="postcopy_failed"), None),  # the other half unseen
])
def test_a_failed_post_copy_is_never_repaired_by_stopping_or_resuming_a_half(env, source,
                                                                            dest):
    after = {"host1": {"vdisk": source}, "host2": {"vdisk": dest} if dest else {}}
    client = env["make"](hosts={"host1": {"vdisk": dict(RUNNING)}, "host2": {}}, after=after,
                         migrate=(1, 1, "ERROR: post-copy migration failed: Channel error"))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"postcopy": True})
    assert ret["status"] == "failed" and not _published(client, "vmigrate.repair")
    assert "memory is split between the hosts" in ret["reconciled"]["comment"], ret
    assert "only libvirt's post-copy recovery can finish it" in ret["comment"]
    # Nor later: reconcile and a new migration refuse, naming the recovery.
    assert env["flow"].reconcile(OPTS, "vdisk")["result"] is False
    assert not _published(client, "vmigrate.repair")
    again = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert again["status"] == "refused" and "post-copy recovery" in again["comment"]


RENAMED = dict(RUNNING, name="vdisk-new")


def test_dname_renames_it_and_the_verification_finds_it_by_its_uuid(env):
    after = {"host1": {}, "host2": {"vdisk-new": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=_moved({"hosts": {"host2": RENAMED}, "unaccounted": {}}))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is True and ret["verified_by"] == "host1", ret["comment"]
    assert "vdisk migrated live from host1 to host2 as vdisk-new" in ret["comment"]
    assert _published(client, "vmigrate.migrate")[0][3]["options"] == {"dname": "vdisk-new"}
    # Verified again by the master, from its own reading: the same.
    client.hosts = {"host1": {"vdisk": RUNNING}, "host2": {}}
    client.migrate = _moved({"hosts": {"host2": RENAMED}, "unaccounted": {}}, read_on="host3")
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is True and ret["verified_by"] == "master", ret["comment"]
    assert ret["after"]["hosts"]["host2"]["name"] == "vdisk-new"


def test_dname_the_destination_ignored_is_a_failed_verification(env):
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                migrate=_moved({"hosts": {"host2": RUNNING}, "unaccounted": {}}))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is False and ret["verified_by"] == "master"
    assert "on host2 it is named vdisk, not vdisk-new" in ret["comment"]


def test_a_failed_rename_leaves_a_copy_under_the_new_name_which_is_repaired(env):
    # The incoming copy, paused and transient on host2, already has the new name: looked up by
    # the old name it would be invisible, and stay there.
    incoming = {"host2": {"vdisk-new": dict(RUNNING, state="paused", reason="migration",
                                            persistent=False)}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                         migrate=(1, 1, "ERROR: live migration failed: Channel error"))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["status"] == "failed" and "host2: paused (migration)" in ret["comment"]
    assert "(as vdisk-new)" in ret["comment"]
    assert [(c[1], c[2], c[3]) for c in _published(client, "vmigrate.repair")] == [
        (["host2"], ["vdisk-new", "destroy"], {"uuid": "u"})]
    assert ret["reconciled"]["result"] is True and client.hosts["host2"] == {}


@pytest.mark.parametrize("hosts, words", [
    # another VM has that name already, on the destination or anywhere else
    ({"host1": {"vdisk": RUNNING}, "host2": {"vdisk-new": dict(RUNNING, uuid="v")}},
     "host2 already has another domain of that name (UUID v), nothing was moved"),
    ({"host1": {"vdisk": RUNNING, "vdisk-new": dict(RUNNING, uuid="v")}, "host2": {}},
     "host1 already has another domain of that name"),
])
def test_dname_taken_by_another_domain_is_refused_before_anything_is_sent(env, hosts, words):
    client = env["make"](hosts=hosts)
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["status"] == "refused" and words in ret["comment"], ret["comment"]
    assert not _published(client, "vmigrate.migrate")


def test_a_copy_under_another_name_with_the_uuid_is_seen_without_dname(env):
    # A renamed copy a migration left, or another VM sharing the UUID: either way the VM is
    # not on one host only, and nothing is moved.
    client = env["make"](hosts={"host1": {"vdisk": RUNNING},
                                "host2": {"vclone": dict(RUNNING, state="shutoff")}})
    where = env["flow"].locate(OPTS, "vdisk")
    assert where["hosts"]["host2"]["name"] == "vclone" and "dname_taken" not in where
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "refused" and (
        "on several hypervisors (host1: running; host2: shutoff (as vclone))" in ret["comment"])
    assert not _published(client, "vmigrate.migrate")


def test_the_master_checks_xml_options_against_the_vms_name_or_the_new_one(env):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    for name in ("vdisk", "vdisk-new"):
        xml = f"<domain><name>{name}</name><uuid>u</uuid></domain>"
        env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new", "xml": xml})
    assert len(_published(client, "vmigrate.migrate")) == 2
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={
        "xml": "<domain><name>other</name></domain>"})
    assert ret["status"] == "refused" and "<name> must be 'vdisk'" in ret["comment"]
    assert len(_published(client, "vmigrate.migrate")) == 2


def test_a_copy_with_another_uuid_under_the_new_name_is_not_a_success(env):
    # What the master reads after the move: the old name gone, the new name on host2 -- but
    # another domain's UUID there.
    after = {"host1": {}, "host2": {"vdisk-new": dict(RUNNING, uuid="v")}}
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                migrate=_moved({"hosts": {"host2": RENAMED}, "unaccounted": {}},
                               read_on="host3"))
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is False and "on host2 it has UUID v, not u" in ret["comment"], ret


def test_a_state_run_again_after_a_rename_is_unchanged(env):
    client = env["make"](hosts={"host1": {}, "host2": {"vdisk-new": RUNNING}})
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"},
                              already_ok=True)
    assert ret["status"] == "unchanged" and ret["result"] is True
    assert ret["comment"] == "vdisk already runs on host2 as vdisk-new"
    ret = env["flow"].migrate(OPTS, "vdisk", "host1", options={"dname": "vdisk-new"})
    assert ret["status"] == "refused" and "already named vdisk-new" in ret["comment"]
    # Already there under its own name: a rename in place is not a migration.
    client.hosts = {"host1": {}, "host2": {"vdisk": RUNNING}}
    for already_ok, words in ((True, "already on host2 under its own name, nothing was moved"),
                              (False, "vm vdisk is already on host2 (running)")):
        ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"},
                                  already_ok=already_ok)
        assert ret["status"] == "refused" and words in ret["comment"], ret["comment"]
    plan = env["flow"].plan(OPTS, "vdisk", "host2", already_ok=True,
                            options={"dname": "vdisk-new"})
    assert plan["result"] is False and "under its own name" in plan["comment"], plan
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk new"})
    assert ret["status"] == "refused" and "option dname 'vdisk new' is not a valid" in (
        ret["comment"])
    assert not _published(client, "vmigrate.migrate")


def test_reconcile_with_dname_finds_the_renamed_copy(env):
    client = env["make"](hosts={"host1": {"vdisk": dict(RUNNING, state="paused",
                                                        reason="migration")},
                                "host2": {"vdisk-new": dict(RUNNING)}})
    # Without the new name the renamed copy is seen (same UUID) but not trusted: the paused
    # source is not resumed beside it.
    out = env["flow"].reconcile(OPTS, "vdisk")
    assert out["result"] is False and "is named vdisk-new on host2: if a migration renamed " \
        "it (option dname), reconcile with dname=<that name>" in out["comment"], out
    assert not _published(client, "vmigrate.repair")
    out = env["flow"].reconcile(OPTS, "vdisk", dname="vdisk-new")
    assert out["result"] is True, out
    assert [(c[1], c[2]) for c in _published(client, "vmigrate.repair")] == [
        (["host1"], ["vdisk", "destroy"]), (["host1"], ["vdisk", "undefine"])]
    assert "now host2: running (as vdisk-new)" in out["comment"]
    # The old name gone, only the new one left: nothing of vdisk, and how to find it is said.
    out = env["flow"].reconcile(OPTS, "vdisk")
    assert "found with dname=<its new name>" in out["comment"], out


@pytest.mark.parametrize("state, mode, words", [
    ("shutoff", "live", "a live migration needs it running; use mode=offline"),
    ("running", "offline", "shut it down first or use mode=live"),
])
def test_mode_and_state_must_agree_before_anything_is_sent(env, state, mode, words):
    client = env["make"](hosts={"host1": {"vdisk": dict(RUNNING, state=state)}, "host2": {}})
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", mode=mode)
    assert ret["status"] == "refused" and words in ret["comment"], ret["comment"]
    assert not _published(client, "vmigrate.migrate")


# Salt's own event reader catches a KeyboardInterrupt that arrives while it waits and returns
# this event instead: read as anything else, the interrupt would be swallowed until the job
# returned (salt-run's handler raises SystemExit; a Python caller of the runner gets this).
SALT_EXIT = {"tag": "salt/event/exit", "data": {}}


@pytest.mark.parametrize("signal_exc", [KeyboardInterrupt, SystemExit, SALT_EXIT])
def test_interrupted_while_the_job_runs_is_reported_unknown_with_the_job(env, monkeypatch,
                                                                         signal_exc):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, migrate=None)

    deliver = client.event.get_event

    def interrupted(wait, tag, full):
        if client.calls[-1][0] == "vmigrate.migrate":
            if signal_exc is SALT_EXIT:
                client.clock.now += wait
                return dict(SALT_EXIT)
            raise signal_exc("Ctrl-c")
        return deliver(wait, tag, full)

    monkeypatch.setattr(client.event, "get_event", interrupted)
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and ret["status"] == "unknown", ret
    assert ret["jid"] == "j1" and "interrupted on the master while vdisk migrates from host1 " \
                                  "to host2 (job j1)" in ret["comment"]
    assert [t for t, _ in env["fired"]] == ["vmigrate/vdisk/result"]
    assert env["fired"][0][1]["status"] == "unknown"
    assert client.opened == client.closed


def test_interrupted_before_anything_was_sent_is_a_refusal(env, monkeypatch):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(client.event, "get_event", interrupted)
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "refused" and "before anything was sent" in ret["comment"]
    assert not _published(client, "vmigrate.migrate")


class MovingClient(FakeClient):
    """vmigrate.migrate moves the domain from its host to the destination and succeeds."""

    def run_job(self, tgt, fun, arg, tgt_type, kwarg, listen, timeout):
        if fun != "vmigrate.migrate":
            return super().run_job(tgt, fun, arg, tgt_type, kwarg, listen, timeout)
        jid = f"j{len(self.calls)}"
        self.calls.append((fun, tgt, list(arg), dict(kwarg)))
        (host,), (vm, dest) = tgt, arg
        info = self.hosts[host].pop(vm)
        if kwarg["mode"] == "live" or info["state"] == "shutoff":
            self.hosts[dest][vm] = dict(info, reason="migrated")
        self.pending.append((self.clock.now, {
            "tag": f"salt/job/{jid}/ret/{host}",
            "data": {"id": host, "fun": fun, "retcode": 0,
                     "return": {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}}}))
        return {"jid": jid, "minions": [host]}


SHUTOFF = dict(RUNNING, state="shutoff", reason="shutdown")


def _evac_env(env, monkeypatch, hosts):
    for domains in hosts.values():  # different VMs: different UUIDs
        for name, info in domains.items():
            info["uuid"] = f"u-{name}"
    client = MovingClient(env["clock"], hosts=hosts)
    monkeypatch.setattr(env["flow"], "_client", lambda opts: client)
    return client


def test_evacuation_moves_every_domain_live_or_offline_spread_over_targets(env, monkeypatch):
    hosts = {"host1": {"a": dict(RUNNING), "b": dict(RUNNING), "c": dict(SHUTOFF)},
             "host2": {}, "host3": {}}
    client = _evac_env(env, monkeypatch, hosts)
    opts = dict(OPTS, vmigrate={"hypervisors_target": ["host1", "host2", "host3"],
                                "max_outgoing": 2})
    ret = env["flow"].evacuate(opts, "host1", concurrency=2)
    assert ret["result"] is True, ret
    assert client.hosts["host1"] == {} and ret["concurrency"] == 2
    modes = {c[2][0]: c[3]["mode"] for c in _published(client, "vmigrate.migrate")}
    assert modes == {"a": "live", "b": "live", "c": "offline"}
    assert {len(client.hosts["host2"]), len(client.hosts["host3"])} == {1, 2}
    assert all(r["trigger"] == "evacuate:cli" for r in ret["vms"].values())
    tags = [t for t, _ in env["fired"]]
    assert tags.count("vmigrate/evacuate/host1/result") == 1 and len(tags) == 4


def test_evacuation_dry_run_moves_nothing_and_caps_bound_concurrency(env, monkeypatch):
    hosts = {"host1": {"a": dict(RUNNING)}, "host2": {}}
    client = _evac_env(env, monkeypatch, hosts)
    ret = env["flow"].evacuate(OPTS, "host1", concurrency=4, dry_run=True)
    assert ret["result"] is None and ret["moves"] == [["a", "live"]]
    assert ret["concurrency"] == 1  # max_outgoing defaults to 1
    assert not _published(client, "vmigrate.migrate")


@pytest.mark.parametrize("kwargs, words", [
    ({"host": "host1\n"}, "not a valid minion id"),
    ({"host": "host1", "concurrency": 0}, "concurrency 0"),
    ({"host": "host1", "targets": "host2"}, "a list of minion ids"),
    ({"host": "host9"}, "host9 is not an answering hypervisor"),
    ({"host": "host1", "targets": ["host1"]}, "no answering hypervisor"),
])
def test_evacuation_refusals_move_nothing(env, monkeypatch, kwargs, words):
    client = _evac_env(env, monkeypatch, {"host1": {"a": dict(RUNNING)}, "host2": {}})
    ret = env["flow"].evacuate(OPTS, **kwargs)
    assert ret["result"] is False and words in ret["comment"], ret
    assert not _published(client, "vmigrate.migrate")


def test_a_reactor_request_for_another_hosts_vm_is_refused_after_locating(env, monkeypatch,
                                                                          tmp_path):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    authz = load("_utils", "vmigrate_authz")
    key = "33" * 32
    opts = dict(OPTS, vmigrate={"hypervisors_target": ["host1", "host2"], "requests": {
        "requesters": {"host2": {"key": key, "vms": "own", "dests": ["host*"]}}}})
    payload = {"vm": "vdisk", "dest": "host2", "requester": "host2", "ts": 1e9,
               "nonce": "ef" * 8}
    payload["sig"] = authz.sign(key, "migrate", payload)
    monkeypatch.setattr(env["flow"].authz.time, "time", lambda: 1e9)
    ret = env["flow"].request(opts, "vmigrate/request", payload)
    assert ret["status"] == "refused"
    assert "only VMs running on host2 may move here" in ret["comment"] and \
        "vdisk runs on host1" in ret["comment"]
    assert not _published(client, "vmigrate.migrate")
    assert env["fired"][-1][1]["trigger"] == "reactor:host2"


def test_the_result_event_records_the_options_for_the_audit(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    env["flow"].migrate(OPTS, "vdisk", "host1", bandwidth=50, timeout=30, trigger="reactor:mon1")
    tag, data = env["fired"][-1]
    assert tag == "vmigrate/vdisk/result" and data["trigger"] == "reactor:mon1"
    assert data["options"] == {"bandwidth": 50, "timeout": 30, "force": False}


def test_an_evacuation_request_keeps_to_the_requesters_destinations(env, monkeypatch):
    hosts = {"host1": {"a": dict(RUNNING), "b": dict(RUNNING)}, "host2": {}, "host3": {}}
    client = _evac_env(env, monkeypatch, hosts)
    opts = dict(OPTS, vmigrate={"hypervisors_target": ["host1", "host2", "host3"]})
    ret = env["flow"].evacuate(opts, "host1", allowed=["host3"])
    assert ret["result"] is True and set(client.hosts["host3"]) == {"a", "b"}
    assert client.hosts["host2"] == {}



def test_a_job_the_master_gave_up_on_keeps_the_vm_in_flight_until_its_end_is_seen(env):
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                         migrate=None)
    first = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert first["status"] == "unknown", first
    jid = first["jid"]
    # The lock ended with that request; the record of its job did not.
    record = env["flow"].locks.in_flight(OPTS, "vdisk")
    assert (record["jid"], record["source"], record["dest"]) == (jid, "host1", "host2")
    client.running.add(jid)
    client.libvirt_jobs["host1"] = {"vdisk": {"operation": "migration_out"}}
    # A second request and a reconcile are refused naming the job, and repair nothing.
    second = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert second["status"] == "refused" and second["reason"] == "busy", second
    assert f"job {jid} on host1 -> host2" in second["comment"], second
    assert "still runs on host1" in second["comment"], second
    with pytest.raises(env["flow"].Busy, match=f"job {jid} on host1 -> host2"):
        env["flow"].reconcile(OPTS, "vdisk")
    # Salt's job ended, libvirt's not yet (a minion that gave up on a job): still refused.
    client.running.clear()
    with pytest.raises(env["flow"].Busy, match="libvirt on host1 still runs a migration_out"):
        env["flow"].reconcile(OPTS, "vdisk")
    assert not _published(client, "vmigrate.repair")
    # Both ended: the record goes, and the request goes on from a fresh reading.
    client.libvirt_jobs.clear()
    client.hosts = {"host1": {}, "host2": {"vdisk": RUNNING}}
    third = env["flow"].migrate(OPTS, "vdisk", "host2", already_ok=True)
    assert third["status"] == "unchanged" and third["in_flight_ended"][0]["jid"] == jid, third
    assert env["flow"].locks.in_flight(OPTS, "vdisk") is None


def test_a_source_silent_about_an_in_flight_job_keeps_it_in_flight(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, migrate=None)
    first = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert first["status"] == "unknown"
    env["make"](hosts={"host2": {}}, dead=("host1",))
    second = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert second["status"] == "refused" and "host1 did not answer" in second["comment"]


def test_a_returned_job_leaves_no_in_flight_record(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}},
                after={"host1": {}, "host2": {"vdisk": RUNNING}},
                migrate=(1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}))
    assert env["flow"].migrate(OPTS, "vdisk", "host2")["status"] == "migrated"
    assert env["flow"].locks.in_flight(OPTS) == {}


def test_a_full_host_is_retried_by_its_code_not_its_words(env):
    assert issubclass(env["flow"].locks.SlotsBusy, env["flow"].Busy)


def test_two_hypervisors_with_one_libvirt_host_uuid_are_refused_with_the_fix(env, monkeypatch):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    clone = FakeClient.run_job

    def same_uuid(self, *a, **kw):
        out = clone(self, *a, **kw)
        for _due, event in self.pending:
            ret = event["data"].get("return")
            if isinstance(ret, dict) and "host_uuid" in ret:
                ret["host_uuid"] = host_uuid("host1")
        return out

    monkeypatch.setattr(FakeClient, "run_job", same_uuid)
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "refused", ret
    assert "host1 and host2 report the same libvirt host UUID" in ret["comment"]
    assert "host_uuid in /etc/libvirt/libvirtd.conf" in ret["comment"]
    assert not _published(client, "vmigrate.migrate")


@pytest.mark.parametrize("hosts, want", [
    ("host1", ["host1"]), ("host1,host2", ["host1", "host2"]), (["host2"], ["host2"]),
    (None, None),
])
def test_hosts_may_be_one_id_or_a_list(env, hosts, want):
    assert env["flow"].host_list(hosts) == want


def test_locate_with_one_host_as_a_string_asks_that_host(env):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    where = env["flow"].locate(OPTS, "vdisk", "host1")
    assert where["running"] == ["host1"] and where["hypervisors"] == ["host1"], where
    assert _published(client, "vmigrate.domains")[0][1] == ["host1"]


def test_the_sources_pillar_suspend_is_what_the_move_is_verified_against(env):
    # Pillar vmigrate:options suspend: true on the source: the guest arrives paused, as asked.
    # The master knew only the call's options before and read a correct move as failed.
    paused = dict(RUNNING, state="paused", reason="migration")
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}},
                         after={"host1": {}, "host2": {"vdisk": paused}},
                         migrate=(1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}),
                         reported={"host1": {"options": {"suspend": True}}})
    ret = env["flow"].migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "migrated", ret["comment"]
    assert not _published(client, "vmigrate.repair")


@pytest.mark.parametrize("mode, reported, call, deadline", [
    # live: timeout 100 + 2 abort deadlines of 30 + the margin 30
    ("live", {}, {}, 100 + 60 + 30),
    # the source's pillar timeout_action pause grants the copy one more
    ("live", {"options": {"timeout_action": "pause"}}, {}, 100 + 90 + 30),
    # save: the save, its abort, the restore and two readings of the destination
    ("save", {}, {}, 100 + 120 + 30),
    # cold: the source's own shutdown_timeout, not the master's guess of 120 s
    ("cold", {"shutdown_timeout": 300}, {}, 300 + 100 + 30 + 30),
    ("cold", {"shutdown_timeout": 300}, {"shutdown_timeout": 10}, 10 + 100 + 30 + 30),
])
def test_the_master_waits_as_long_as_the_source_may_run(env, mode, reported, call, deadline):
    env["make"](hosts={"host1": {"vdisk": RUNNING if mode != "offline" else
                                 dict(RUNNING, state="shutoff")}, "host2": {}},
                migrate=None, reported={"host1": reported})
    ret = env["flow"].migrate(OPTS, "vdisk", "host2", mode=mode, timeout=100, options=call)
    assert ret["status"] == "unknown" and ret["deadline"] == deadline, ret
    assert f"no return from host1 within {deadline:g}s" in ret["comment"], ret["comment"]
