"""Requests from the event bus (_utils/vmigrate_intake.py): authorized before anything is
done, a refusal names why and moves nothing."""
from tests.support.master import OPTS, RUNNING, published, shared
from tests.support.modload import load

intake_ = shared("vmigrate_intake")


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
    monkeypatch.setattr(intake_.authz_.time, "time", lambda: 1e9)
    ret = intake_.request(opts, "vmigrate/request", payload)
    assert ret["status"] == "refused"
    assert "only VMs running on host2 may move here" in ret["comment"] and \
        "vdisk runs on host1" in ret["comment"]
    assert not published(client, "vmigrate.migrate")
    assert env["fired"][-1][1]["trigger"] == "reactor:host2"
