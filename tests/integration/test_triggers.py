"""Migration on triggers, on real daemons: the reactor (requests fired on the master, signed
requests from minions, and every forged or malformed one refused with zero actions), a minion
schedule, and evacuation of a host with several guests."""
import json
import pathlib
import time

import pytest

import saltconf
import vmlab
from tests.support.modload import load

from .test_migrate import assert_guest_went_on, counter_before
from .test_shared_storage import _where

GUESTS = ("vev1", "vev2")
authz = load("_utils", "vmigrate_authz")


def _events(salt_master, tags, since):
    return salt_master.event_listener.get_events([(salt_master.id, t) for t in tags],
                                                 after_time=since)


def _wait_event(salt_master, tags, since, predicate=lambda e: True, timeout=90):
    def found():
        return [e for e in _events(salt_master, tags, since) if predicate(e)] or None
    return vmlab.wait_for(f"event {tags}", found, timeout, 0.3)


def _migrations_published(salt_master, since):
    """vmigrate.migrate jobs the master published since ``since``."""
    return [e for e in _events(salt_master, ["salt/job/*/new"], since)
            if e.data.get("fun") == "vmigrate.migrate"]


def _master_log(salt_master):
    return pathlib.Path(salt_master.config["log_file"]).read_text(errors="replace")


def test_a_request_the_master_signs_migrates(vdisk_on_host1, lab, salt_master,
                                                salt_run_cli):
    before = counter_before(lab, "host1")
    since = time.time()
    ret = salt_run_cli.run("vmigrate.request", "vdisk", "host2")
    assert ret.returncode == 0 and ret.data["sent"] == "vmigrate/request", ret
    result = _wait_event(salt_master, ["vmigrate/vdisk/result"], since)[0].data
    assert result["status"] == "migrated" and result["trigger"] == "reactor:master", result
    assert lab.placement() == (["host2"], ["host2"])
    assert_guest_went_on(lab, "host2", before)


def test_a_signed_request_from_the_vms_own_host_migrates(vdisk_on_host1, lab, salt_master,
                                                        salt_cli):
    since = time.time()
    ret = salt_cli.run("vmigrate_request.migrate", "vdisk", "host2", minion_tgt="host1")
    assert ret.returncode == 0 and ret.data["requester"] == "host1", ret
    result = _wait_event(salt_master, ["vmigrate/vdisk/result"], since)[0].data
    assert result["status"] == "migrated" and result["trigger"] == "reactor:host1", result
    assert lab.placement() == (["host2"], ["host2"])


def _batched(event):
    """A minion's batch of events (the path beacons use): Salt fires each one's data as is."""
    return "preload=" + json.dumps({"events": [event]})


def _signed_by_master(lab, tag, fields):
    """A request signed with the master's key, sent with event.send: what salt-run
    vmigrate.request sends, with fields it would never let through."""
    kind = authz.KINDS[tag]
    payload = authz.signed_payload(saltconf.request_key(lab, "master"), kind, fields, "master")
    return ["event.send", tag, json.dumps(payload)]


FORGED = [
    # nfs1 signs with its own key: the policy does not name it.
    ("nfs1", ["vmigrate_request.migrate", "vdisk", "host2"], "requester 'nfs1' is not in"),
    # nfs1 claims to be host1 through the batched path (unsigned).
    ("nfs1", ["event.fire_master", "{}", "ignored", _batched({
        "tag": "vmigrate/request",
        "data": {"id": "host1", "cmd": "_minion_event",
                 "data": {"vm": "vdisk", "dest": "host2"}}})], "unsigned request"),
    # nfs1 imitates a request fired on the master (no id at all).
    ("nfs1", ["event.fire_master", "{}", "ignored", _batched({
        "tag": "vmigrate/request", "data": {"vm": "vdisk", "dest": "host2"}})],
     "unsigned request"),
    # nfs1 imitates the master's runner announcement of event.send (a tag Salt 3008.4 does
    # not stop a minion's single event from using): no reactor takes it.
    ("nfs1", ["event.fire_master", "{}", "salt/run/20261126000000000001/new",
              "preload=" + json.dumps({"fun": "runner.event.send", "fun_args": [
                  "vmigrate/request", {"vm": "vdisk", "dest": "host2"}]})], None),
    # An unsigned request fired on the master itself is refused like any other.
    (None, ["event.send", "vmigrate/request", json.dumps({"vm": "vdisk", "dest": "host2"})],
     "unsigned request"),
    # host2 is a requester, but only for VMs running on itself: vdisk runs on host1.
    ("host2", ["vmigrate_request.migrate", "vdisk", "host2"],
     "only VMs running on host2 may move here"),
    # Signed by the master: an unknown destination, and injection attempts in the fields.
    (None, ("vmigrate/request", {"vm": "vdisk", "dest": "host9"}),
     "host9 is not an available hypervisor"),
    (None, ("vmigrate/request", {"vm": "{{ salt['cmd.run']('touch /tmp/pwned') }}",
                                 "dest": "host2"}), "not a valid domain name"),
    (None, ("vmigrate/request", {"vm": "vdisk", "dest": "host2\n- force: true"}),
     "not a valid minion id"),
    (None, ("vmigrate/request", {"vm": "vdisk", "dest": "host2", "unsafe": True}),
     "unexpected field(s) ['unsafe']"),
    (None, ("vmigrate/evacuate", {"host": "host1\n{% raw %}"}), "not a valid minion id"),
]


@pytest.mark.parametrize("sender, call, why", FORGED,
                         ids=["unknown-requester", "forged-id", "imitated-master",
                              "imitated-runner-announcement", "unsigned-on-master",
                              "another-hosts-vm", "unknown-dest", "jinja-in-vm",
                              "yaml-in-dest", "extra-field", "evacuate-injection"])
def test_forged_or_malformed_requests_do_nothing_and_are_logged(vdisk_on_host1, lab,
                                                                salt_master, salt_cli,
                                                                salt_run_cli, sender, call,
                                                                why):
    since = time.time()
    if sender is None:
        args = _signed_by_master(lab, *call) if isinstance(call, tuple) else call
        ret = salt_run_cli.run(*args)
    else:
        ret = salt_cli.run(*call, minion_tgt=sender)
    assert ret.returncode == 0, ret

    def refused(event):
        # The intake's refusals carry their words in "reason"; a migration's in "comment"
        # beside its reason code (e.g. "owner").
        text = " ".join(str(event.data.get(k) or "") for k in ("reason", "comment"))
        return why in text and event.data.get("status", "refused") == "refused"

    if why is None:
        time.sleep(8)  # what a reactor would have started has had time to act
    else:
        _wait_event(salt_master, ["vmigrate/refused", "vmigrate/*/result"], since, refused)
        time.sleep(2)  # anything else the reactor started has had time to act
        assert why in _master_log(salt_master)
    assert not _migrations_published(salt_master, since)
    assert lab.placement() == (["host1"], ["host1"])
    assert not pathlib.Path("/tmp/pwned").exists()


def test_a_minion_schedule_migrates(vdisk_on_host1, lab, salt_master, salt_cli):
    """host1's own schedule asks (signed) for its guest to move: the reactor does it."""
    since = time.time()
    ret = salt_cli.run("schedule.add", "vmigrate-drain", "function=vmigrate_request.migrate",
                       'job_args=["vdisk", "host2"]', "seconds=2", "persist=False",
                       minion_tgt="host1")
    assert ret.returncode == 0, ret
    try:
        result = _wait_event(salt_master, ["vmigrate/vdisk/result"], since,
                             lambda e: e.data["status"] == "migrated")[0].data
    finally:
        salt_cli.run("schedule.delete", "vmigrate-drain", "persist=False", minion_tgt="host1")
    assert result["trigger"] == "reactor:host1"
    assert lab.placement() == (["host2"], ["host2"])


@pytest.fixture
def more_guests(guest, lab):
    """vev1 and vev2 running beside vdisk on host1, and vev3 defined there, shut off."""
    for name in (*GUESTS, "vev3"):
        lab.remove_guest_everywhere(name)
    for name in GUESTS:
        lab.create_guest("host1", name)
    lab.create_guest("host1", "vev3", start=False)
    yield (*GUESTS, "vev3")
    for name in (*GUESTS, "vev3"):
        lab.remove_guest_everywhere(name)


def test_evacuation_drains_a_host_concurrently_and_the_reactor_brings_them_back(
        vdisk_on_host1, more_guests, lab, salt_master, salt_run_cli):
    before = counter_before(lab, "host1")
    since = time.time()
    ret = salt_run_cli.run("state.orch", "evacuate", 'pillar={"host": "host1"}')
    assert ret.returncode == 0, ret
    for name in ("vdisk", *GUESTS):
        assert _where(lab, name) == {"host2": (True, True)}, name
    assert _where(lab, "vev3") == {"host2": (False, True)}
    assert_guest_went_on(lab, "host2", before)
    events = [e for e in _events(salt_master, ["vmigrate/*/result"], since)
              if not e.tag.startswith("vmigrate/evacuate/")]
    results = [e.data for e in events]
    assert sorted(r["name"] for r in results) == sorted(("vdisk", *GUESTS, "vev3"))
    assert {r["trigger"] for r in results} == {"evacuate:state"}
    # Two at a time (master config vmigrate:max_outgoing 2 in the lab): migrations overlapped.
    spans = sorted((e.stamp.timestamp() - e.data["wall"], e.stamp.timestamp()) for e in events)
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), spans
    # The evacuation left host1 in maintenance: nothing comes back until the operator ends it.
    listed = salt_run_cli.run("vmigrate.maintenance")
    assert list(listed.data["maintenance"]) == ["host1"], listed
    assert salt_run_cli.run("vmigrate.maintenance", "host1", "off").returncode == 0
    # Back through the reactor: an evacuation fired on the master.
    since = time.time()
    ret = salt_run_cli.run("vmigrate.request_evacuate", "host2")
    assert ret.returncode == 0, ret
    try:
        done = _wait_event(salt_master, ["vmigrate/evacuate/host2/result"], since, timeout=180)
        assert done[0].data["result"] is True, done[0].data
        assert done[0].data["trigger"] == "reactor:master"
        for name in ("vdisk", *GUESTS):
            assert _where(lab, name) == {"host1": (True, True)}, name
    finally:
        for host in ("host1", "host2"):
            salt_run_cli.run("vmigrate.maintenance", host, "off")



def test_the_beacons_record_where_a_migrated_vm_runs(vdisk_on_host1, lab, salt_master,
                                                     salt_run_cli):
    """libvirt's lifecycle events, sent by each hypervisor's vmigrate beacon, keep the
    master's placement record: after a migration it says host2, running, by migration."""
    since = time.time()
    ret = salt_run_cli.run("state.orch", "migrate", 'pillar={"vm": "vdisk", "dest": "host2"}')
    assert ret.returncode == 0, ret
    arrived = _wait_event(salt_master, ["salt/beacon/host2/vmigrate/domain/*"], since,
                          lambda e: e.data.get("vm") == "vdisk"
                          and e.data.get("detail") == "migrated", timeout=30)
    assert arrived[0].data["host"] == "host2", arrived[0].data
    _wait_event(salt_master, ["salt/beacon/host1/vmigrate/domain/stopped"], since,
                lambda e: e.data.get("detail") == "migrated", timeout=30)

    def recorded():
        rec = salt_run_cli.run("vmigrate.placement", "vdisk").data
        hosts = rec.get("hosts", {})
        return rec if list(hosts) == ["host2"] and hosts["host2"]["state"] == "running" else None

    rec = vmlab.wait_for("the placement record to show vdisk on host2", recorded, 30, 0.5)
    assert rec["hosts"]["host2"]["persistent"] is True
    assert rec["hypervisors"]["host1"]["connected"] is True
