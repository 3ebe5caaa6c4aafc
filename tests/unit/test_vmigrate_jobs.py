"""Jobs in flight (_utils/vmigrate_jobs.py): a job the master gave up on keeps its VM
refused until its end is seen on the source."""
import pytest

from tests.support.master import OPTS, RUNNING, published, shared

locks_ = shared("vmigrate_locks")
move_ = shared("vmigrate_move")
reconcile_ = shared("vmigrate_reconcile")


def test_a_job_the_master_gave_up_on_keeps_the_vm_in_flight_until_its_end_is_seen(env):
    incoming = {"host2": {"vdisk": dict(RUNNING, state="paused", reason="migration",
                                        persistent=False)}}
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, after=incoming,
                         migrate=None)
    first = move_.migrate(OPTS, "vdisk", "host2")
    assert first["status"] == "unknown", first
    jid = first["jid"]
    # The lock ended with that request; the record of its job did not.
    record = locks_.in_flight(OPTS, "vdisk")
    assert (record["jid"], record["source"], record["dest"]) == (jid, "host1", "host2")
    client.running.add(jid)
    client.libvirt_jobs["host1"] = {"vdisk": {"operation": "migration_out"}}
    # A second request and a reconcile are refused naming the job, and repair nothing.
    second = move_.migrate(OPTS, "vdisk", "host2")
    assert second["status"] == "refused" and second["reason"] == "busy", second
    assert f"job {jid} on host1 -> host2" in second["comment"], second
    assert "still runs on host1" in second["comment"], second
    with pytest.raises(locks_.Busy, match=f"job {jid} on host1 -> host2"):
        reconcile_.reconcile(OPTS, "vdisk")
    # Salt's job ended, libvirt's not yet (a minion that gave up on a job): still refused.
    client.running.clear()
    with pytest.raises(locks_.Busy, match="libvirt on host1 still runs a migration_out"):
        reconcile_.reconcile(OPTS, "vdisk")
    assert not published(client, "vmigrate.repair")
    # Both ended: the record goes, and the request goes on from a fresh reading.
    client.libvirt_jobs.clear()
    client.hosts = {"host1": {}, "host2": {"vdisk": RUNNING}}
    third = move_.migrate(OPTS, "vdisk", "host2", already_ok=True)
    assert third["status"] == "unchanged" and third["in_flight_ended"][0]["jid"] == jid, third
    assert locks_.in_flight(OPTS, "vdisk") is None


def test_a_source_silent_about_an_in_flight_job_keeps_it_in_flight(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}}, migrate=None)
    first = move_.migrate(OPTS, "vdisk", "host2")
    assert first["status"] == "unknown"
    env["make"](hosts={"host2": {}}, dead=("host1",))
    second = move_.migrate(OPTS, "vdisk", "host2")
    assert second["status"] == "refused" and "host1 did not answer" in second["comment"]


def test_a_returned_job_leaves_no_in_flight_record(env):
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}},
                after={"host1": {}, "host2": {"vdisk": RUNNING}},
                migrate=(1, 0, {"elapsed": 1.0, "downtime_ms": 5, "stats": {}}))
    assert move_.migrate(OPTS, "vdisk", "host2")["status"] == "migrated"
    assert locks_.in_flight(OPTS) == {}
