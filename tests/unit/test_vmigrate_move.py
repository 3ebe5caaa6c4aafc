"""One migration and its plan, the master's use case (_utils/vmigrate_move.py): locate,
decide, migrate through the source minion, verify, settle -- against a fake LocalClient that
publishes jobs and delivers their return events, or does not (tests/support/master.py)."""
import pytest
from salt.exceptions import SaltInvocationError

from tests.support.master import OPTS, RUNNING, FakeClient, host_uuid, published, shared

decide_ = shared("vmigrate_decide")
locks_ = shared("vmigrate_locks")
move_ = shared("vmigrate_move")
reconcile_ = shared("vmigrate_reconcile")
settings_ = shared("vmigrate_settings")


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
    ret = move_.migrate(OPTS, vm, dest)
    assert ret["result"] is False and ret["status"] == "refused"
    assert words in ret["comment"], ret["comment"]
    assert not published(client, "vmigrate.migrate")
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
    ret = move_.migrate(opts, "vdisk", "host2", mode="offline")
    assert ret["result"] is False and why in ret["comment"], ret["comment"]
    assert "may run there" in ret["comment"] and "force=True" in ret["comment"]
    assert not published(client, "vmigrate.migrate")


def test_force_decides_without_the_silent_host_and_says_so(env):
    hosts = {"host1": {"vdisk": RUNNING}, "host2": {}}
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts=hosts, dead=["host3"], after=after,
                         migrate=(1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}))
    opts = dict(OPTS, vmigrate={"hypervisors_target": "host*"})
    ret = move_.migrate(opts, "vdisk", "host2", force=True)
    assert ret["result"] is True and ret["forced"] == ["host3"], ret
    assert published(client, "vmigrate.migrate")


def test_a_migration_longer_than_any_ping_window_is_waited_for(env):
    # The source answers after 200 s: well past the old 15 s + find_job window, inside the
    # migration's own timeout plus the margin.
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=(200, 0, {"elapsed": 200.0, "downtime_ms": 50, "stats": {}}))
    ret = move_.migrate(OPTS, "vdisk", "host2", timeout=300)
    assert ret["result"] is True and ret["status"] == "migrated", ret["comment"]
    fun, tgt, args, kwarg = published(client, "vmigrate.migrate")[0]
    assert tgt == ["host1"] and args == ["vdisk", "host2"] and kwarg["timeout"] == 300


def test_lost_contact_is_unknown_never_failed(env):
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, migrate=None, after=incoming)
    ret = move_.migrate(OPTS, "vdisk", "host2", timeout=60)
    assert ret["result"] is False and ret["status"] == "unknown"
    assert "may still be running (job j1)" in ret["comment"] and "failed" not in ret["comment"]
    assert "host2: paused (migration): do not resume before checking host1" in ret["comment"]
    assert env["clock"].now >= 60 + 30


def test_source_paused_by_a_migration_is_refused(env):
    hosts = {"host1": {"vdisk": dict(RUNNING, state="paused", reason="migration")}, "host2": {}}
    client = env["make"](hosts=hosts)
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and "paused by an unfinished migration" in ret["comment"]
    assert not published(client, "vmigrate.migrate")


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
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and "could not verify host1" in ret["comment"]


def _moved(copies, read_on="host2"):
    if copies is not None:
        copies = dict(copies, dest_host_uuid=host_uuid(read_on))
    return (1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}, "copies": copies})


def test_the_sources_own_reading_of_both_hosts_is_the_verification(env):
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=_moved({"hosts": {"host2": RUNNING}, "unaccounted": {}}))
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is True and ret["verified_by"] == "host1", ret["comment"]
    assert len(published(client, "vmigrate.domains")) == 1  # the locate, no second ask
    # The source was told which machine host2's minion runs on, to check its URI reaches it.
    assert published(client, "vmigrate.migrate")[0][3]["dest_host_uuid"] == host_uuid("host2")
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
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is True and ret["verified_by"] == "master", ret["comment"]
    asked = published(client, "vmigrate.domains")
    assert len(asked) == 2 and asked[1][1] == ["host1", "host2"]


def test_a_wrong_placement_the_master_confirms_is_repaired_not_reported_migrated(env):
    # (copies: the repairs below change the fake hosts' entries in place)
    both = {"host1": {"vdisk": dict(RUNNING)}, "host2": {"vdisk": dict(RUNNING)}}
    env["make"](hosts={"host1": {"vdisk": dict(RUNNING)}, "host2": {}}, after=both,
                migrate=_moved({"hosts": {"host1": RUNNING, "host2": RUNNING},
                                "unaccounted": {}}))
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and ret["verified_by"] == "master"
    assert "host1 still has it (running)" in ret["comment"]
    assert ret["reconciled"]["result"] is True, ret["reconciled"]


def test_failure_reports_where_it_is_now(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}},
                migrate=(1, 1, "ERROR: live migration failed: Channel error"))
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "failed" and "Channel error" in ret["comment"]
    assert "now: host1: running" in ret["comment"]


def test_hypervisors_must_be_named(env):
    env["make"](hosts={})
    ret = move_.migrate({"conf_file": "/x", "sock_dir": "/x", "cachedir": OPTS["cachedir"]},
                              "vdisk", "host2")
    assert ret["result"] is False and "vmigrate:hypervisors_target is not set" in ret["comment"]
    with pytest.raises(SaltInvocationError, match="query_timeout"):
        settings_.settings({"vmigrate": {"hypervisors_target": ["a"], "query_timeout": True}})


def test_a_second_request_for_the_same_vm_fails_fast_naming_the_first(env):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    with locks_.hold(OPTS, "vdisk", trigger="reactor") as first:
        first.take_slots("host1", "host2")
        ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["result"] is False and ret["status"] == "refused"
    assert "vm vdisk is already being migrated: vdisk host1 -> host2 by reactor" in ret["comment"]
    assert client.calls == []  # not even located


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
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == status and ret["result"] is False
    assert "reconciled" not in ret
    assert not published(client, "vmigrate.repair")


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
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == status and "reconciled" in ret, ret


def test_a_definite_failure_is_repaired_toward_one_copy(env):
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                         migrate=(1, 1, "ERROR: live migration failed: Channel error"))
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "failed" and "reconciled" in ret
    assert [(c[1], c[2]) for c in published(client, "vmigrate.repair")] == [
        (["host2"], ["vdisk", "destroy"])]
    # Every host answered: the repair reads them again (a copy libvirt is still removing is
    # then seen gone), and once more to verify it.
    assert len(published(client, "vmigrate.domains")) == 4


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
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "failed"
    assert "could not verify host2" in ret["reconciled"]["comment"], ret["comment"]
    assert len(published(client, "vmigrate.domains")) == 2  # the locate, the check after
    assert not published(client, "vmigrate.repair")


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
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"postcopy": True})
    assert ret["status"] == "failed" and not published(client, "vmigrate.repair")
    assert "memory is split between the hosts" in ret["reconciled"]["comment"], ret
    assert "only libvirt's post-copy recovery can finish it" in ret["comment"]
    # Nor later: reconcile and a new migration refuse, naming the recovery.
    assert reconcile_.reconcile(OPTS, "vdisk")["result"] is False
    assert not published(client, "vmigrate.repair")
    again = move_.migrate(OPTS, "vdisk", "host2")
    assert again["status"] == "refused" and "post-copy recovery" in again["comment"]


RENAMED = dict(RUNNING, name="vdisk-new")


def test_dname_renames_it_and_the_verification_finds_it_by_its_uuid(env):
    after = {"host1": {}, "host2": {"vdisk-new": RUNNING}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                         migrate=_moved({"hosts": {"host2": RENAMED}, "unaccounted": {}}))
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is True and ret["verified_by"] == "host1", ret["comment"]
    assert "vdisk migrated live from host1 to host2 as vdisk-new" in ret["comment"]
    assert published(client, "vmigrate.migrate")[0][3]["options"] == {"dname": "vdisk-new"}
    # Verified again by the master, from its own reading: the same.
    client.hosts = {"host1": {"vdisk": RUNNING}, "host2": {}}
    client.migrate = _moved({"hosts": {"host2": RENAMED}, "unaccounted": {}}, read_on="host3")
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is True and ret["verified_by"] == "master", ret["comment"]
    assert ret["after"]["hosts"]["host2"]["name"] == "vdisk-new"


def test_dname_the_destination_ignored_is_a_failed_verification(env):
    after = {"host1": {}, "host2": {"vdisk": RUNNING}}
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                migrate=_moved({"hosts": {"host2": RUNNING}, "unaccounted": {}}))
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is False and ret["verified_by"] == "master"
    assert "on host2 it is named vdisk, not vdisk-new" in ret["comment"]


def test_a_failed_rename_leaves_a_copy_under_the_new_name_which_is_repaired(env):
    # The incoming copy, paused and transient on host2, already has the new name: looked up by
    # the old name it would be invisible, and stay there.
    incoming = {"host2": {"vdisk-new": dict(RUNNING, state="paused", reason="migration",
                                            persistent=False)}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                         migrate=(1, 1, "ERROR: live migration failed: Channel error"))
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["status"] == "failed" and "host2: paused (migration)" in ret["comment"]
    assert "(as vdisk-new)" in ret["comment"]
    assert [(c[1], c[2], c[3]) for c in published(client, "vmigrate.repair")] == [
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
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["status"] == "refused" and words in ret["comment"], ret["comment"]
    assert not published(client, "vmigrate.migrate")


def test_a_copy_under_another_name_with_the_uuid_is_seen_without_dname(env):
    # A renamed copy a migration left, or another VM sharing the UUID: either way the VM is
    # not on one host only, and nothing is moved.
    client = env["make"](hosts={"host1": {"vdisk": RUNNING},
                                "host2": {"vclone": dict(RUNNING, state="shutoff")}})
    where = decide_.locate(OPTS, "vdisk")
    assert where["hosts"]["host2"]["name"] == "vclone" and "dname_taken" not in where
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "refused" and (
        "on several hypervisors (host1: running; host2: shutoff (as vclone))" in ret["comment"])
    assert not published(client, "vmigrate.migrate")


def test_the_master_checks_xml_options_against_the_vms_name_or_the_new_one(env):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    for name in ("vdisk", "vdisk-new"):
        xml = f"<domain><name>{name}</name><uuid>u</uuid></domain>"
        move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new", "xml": xml})
    assert len(published(client, "vmigrate.migrate")) == 2
    ret = move_.migrate(OPTS, "vdisk", "host2", options={
        "xml": "<domain><name>other</name></domain>"})
    assert ret["status"] == "refused" and "<name> must be 'vdisk'" in ret["comment"]
    assert len(published(client, "vmigrate.migrate")) == 2


def test_a_copy_with_another_uuid_under_the_new_name_is_not_a_success(env):
    # What the master reads after the move: the old name gone, the new name on host2 -- but
    # another domain's UUID there.
    after = {"host1": {}, "host2": {"vdisk-new": dict(RUNNING, uuid="v")}}
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=after,
                migrate=_moved({"hosts": {"host2": RENAMED}, "unaccounted": {}},
                               read_on="host3"))
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"})
    assert ret["result"] is False and "on host2 it has UUID v, not u" in ret["comment"], ret


def test_a_state_run_again_after_a_rename_is_unchanged(env):
    client = env["make"](hosts={"host1": {}, "host2": {"vdisk-new": RUNNING}})
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"},
                              already_ok=True)
    assert ret["status"] == "unchanged" and ret["result"] is True
    assert ret["comment"] == "vdisk already runs on host2 as vdisk-new"
    ret = move_.migrate(OPTS, "vdisk", "host1", options={"dname": "vdisk-new"})
    assert ret["status"] == "refused" and "already named vdisk-new" in ret["comment"]
    # Already there under its own name: a rename in place is not a migration.
    client.hosts = {"host1": {}, "host2": {"vdisk": RUNNING}}
    for already_ok, words in ((True, "already on host2 under its own name, nothing was moved"),
                              (False, "vm vdisk is already on host2 (running)")):
        ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk-new"},
                                  already_ok=already_ok)
        assert ret["status"] == "refused" and words in ret["comment"], ret["comment"]
    plan = move_.plan(OPTS, "vdisk", "host2", already_ok=True,
                            options={"dname": "vdisk-new"})
    assert plan["result"] is False and "under its own name" in plan["comment"], plan
    ret = move_.migrate(OPTS, "vdisk", "host2", options={"dname": "vdisk new"})
    assert ret["status"] == "refused" and "option dname 'vdisk new' is not a valid" in (
        ret["comment"])
    assert not published(client, "vmigrate.migrate")


@pytest.mark.parametrize("state, mode, words", [
    ("shutoff", "live", "a live migration needs it running; use mode=offline"),
    ("running", "offline", "shut it down first or use mode=live"),
])
def test_mode_and_state_must_agree_before_anything_is_sent(env, state, mode, words):
    client = env["make"](hosts={"host1": {"vdisk": dict(RUNNING, state=state)}, "host2": {}})
    ret = move_.migrate(OPTS, "vdisk", "host2", mode=mode)
    assert ret["status"] == "refused" and words in ret["comment"], ret["comment"]
    assert not published(client, "vmigrate.migrate")


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
    ret = move_.migrate(OPTS, "vdisk", "host2")
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
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "refused" and "before anything was sent" in ret["comment"]
    assert not published(client, "vmigrate.migrate")


def test_the_result_event_records_the_options_for_the_audit(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    move_.migrate(OPTS, "vdisk", "host1", bandwidth=50, timeout=30, trigger="reactor:mon1")
    tag, data = env["fired"][-1]
    assert tag == "vmigrate/vdisk/result" and data["trigger"] == "reactor:mon1"
    assert data["options"] == {"bandwidth": 50, "timeout": 30, "force": False}


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
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "refused", ret
    assert "host1 and host2 report the same libvirt host UUID" in ret["comment"]
    assert "host_uuid in /etc/libvirt/libvirtd.conf" in ret["comment"]
    assert not published(client, "vmigrate.migrate")


def test_the_sources_pillar_suspend_is_what_the_move_is_verified_against(env):
    # Pillar vmigrate:options suspend: true on the source: the guest arrives paused, as asked.
    # The master knew only the call's options before and read a correct move as failed.
    paused = dict(RUNNING, state="paused", reason="migration")
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}},
                         after={"host1": {}, "host2": {"vdisk": paused}},
                         migrate=(1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}),
                         reported={"host1": {"options": {"suspend": True}}})
    ret = move_.migrate(OPTS, "vdisk", "host2")
    assert ret["status"] == "migrated", ret["comment"]
    assert not published(client, "vmigrate.repair")


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
    ret = move_.migrate(OPTS, "vdisk", "host2", mode=mode, timeout=100, options=call)
    assert ret["status"] == "unknown" and ret["deadline"] == deadline, ret
    assert f"no return from host1 within {deadline:g}s" in ret["comment"], ret["comment"]


@pytest.mark.parametrize("hosts, dest, options", [
    ({"host1": {}, "host2": {}}, "host2", None),                              # nowhere
    ({"host1": {"vdisk": RUNNING}, "host2": {"vdisk": RUNNING}}, "host2", None),  # twice
    ({"host1": {"vdisk": RUNNING}, "host2": {}}, "host3", None),              # no such dest
    ({"host1": {}, "host2": {"vdisk": RUNNING}}, "host2", {"dname": "vdisk-new"}),  # in place
    ({"host1": {"vdisk": RUNNING}, "host2": {"vdisk-new": dict(RUNNING, uuid="v")}}, "host2",
     {"dname": "vdisk-new"}),                                                 # name taken
    ({"host1": {}, "host2": {"vdisk-new": RUNNING}}, "host2", {"dname": "vdisk-new"}),  # done
])
def test_a_migration_and_its_plan_decide_alike(env, hosts, dest, options):
    """One decision for both (vmigrate_decide.choose): the plan refuses, with the same words,
    what the migration refuses, and finds nothing to do where the migration changes nothing."""
    client = env["make"](hosts=hosts)
    plan = move_.plan(OPTS, "vdisk", dest, already_ok=True, options=options)
    ret = move_.migrate(OPTS, "vdisk", dest, already_ok=True, options=options)
    if plan["result"] is None:
        assert ret["status"] == "unchanged" and ret["source"] == plan["source"] == dest, ret
    else:
        assert plan["result"] is False and plan["blockers"] == ["placement"], plan
        assert ret["status"] == "refused" and ret["comment"] == plan["comment"], (ret, plan)
    assert plan["located"] == ret["located"]
    assert not published(client, "vmigrate.precheck") + published(client, "vmigrate.migrate")
