"""Evacuate (_utils/vmigrate_evacuate.py): every domain off one hypervisor, each a full
migration to the least busy destination that takes it."""
import pytest

from tests.support.master import OPTS, RUNNING, MovingClient, published, shared

bus_ = shared("vmigrate_bus")
evacuate_ = shared("vmigrate_evacuate")
locks_ = shared("vmigrate_locks")


SHUTOFF = dict(RUNNING, state="shutoff", reason="shutdown")


def _evac_env(env, monkeypatch, hosts):
    for domains in hosts.values():  # different VMs: different UUIDs
        for name, info in domains.items():
            info["uuid"] = f"u-{name}"
    client = MovingClient(env["clock"], hosts=hosts)
    monkeypatch.setattr(bus_, "local_client", lambda opts: client)
    return client


def test_evacuation_moves_every_domain_live_or_offline_spread_over_targets(env, monkeypatch):
    hosts = {"host1": {"a": dict(RUNNING), "b": dict(RUNNING), "c": dict(SHUTOFF)},
             "host2": {}, "host3": {}}
    client = _evac_env(env, monkeypatch, hosts)
    opts = dict(OPTS, vmigrate={"hypervisors_target": ["host1", "host2", "host3"],
                                "max_outgoing": 2})
    ret = evacuate_.evacuate(opts, "host1", concurrency=2)
    assert ret["result"] is True, ret
    assert client.hosts["host1"] == {} and ret["concurrency"] == 2
    modes = {c[2][0]: c[3]["mode"] for c in published(client, "vmigrate.migrate")}
    assert modes == {"a": "live", "b": "live", "c": "offline"}
    assert {len(client.hosts["host2"]), len(client.hosts["host3"])} == {1, 2}
    assert all(r["trigger"] == "evacuate:cli" for r in ret["vms"].values())
    tags = [t for t, _ in env["fired"]]
    assert tags.count("vmigrate/evacuate/host1/result") == 1 and len(tags) == 4


def test_evacuation_dry_run_moves_nothing_and_caps_bound_concurrency(env, monkeypatch):
    hosts = {"host1": {"a": dict(RUNNING)}, "host2": {}}
    client = _evac_env(env, monkeypatch, hosts)
    ret = evacuate_.evacuate(OPTS, "host1", concurrency=4, dry_run=True)
    assert ret["result"] is None and ret["moves"] == [["a", "live", "host2"]]
    assert ret["concurrency"] == 1  # max_outgoing defaults to 1
    assert not published(client, "vmigrate.migrate")


@pytest.mark.parametrize("kwargs, words", [
    ({"host": "host1\n"}, "not a valid minion id"),
    ({"host": "host1", "concurrency": 0}, "concurrency 0"),
    ({"host": "host1", "targets": "host2"}, "a list of minion ids"),
    ({"host": "host9"}, "host9 is not an answering hypervisor"),
    ({"host": "host1", "targets": ["host1"]}, "no answering hypervisor"),
])
def test_evacuation_refusals_move_nothing(env, monkeypatch, kwargs, words):
    client = _evac_env(env, monkeypatch, {"host1": {"a": dict(RUNNING)}, "host2": {}})
    ret = evacuate_.evacuate(OPTS, **kwargs)
    assert ret["result"] is False and words in ret["comment"], ret
    assert not published(client, "vmigrate.migrate")


def test_an_evacuation_request_keeps_to_the_requesters_destinations(env, monkeypatch):
    hosts = {"host1": {"a": dict(RUNNING), "b": dict(RUNNING)}, "host2": {}, "host3": {}}
    client = _evac_env(env, monkeypatch, hosts)
    opts = dict(OPTS, vmigrate={"hypervisors_target": ["host1", "host2", "host3"]})
    ret = evacuate_.evacuate(opts, "host1", allowed=["host3"])
    assert ret["result"] is True and set(client.hosts["host3"]) == {"a", "b"}
    assert client.hosts["host2"] == {}


def test_a_full_host_is_retried_by_its_code_not_its_words(env):
    assert issubclass(locks_.SlotsBusy, locks_.Busy)
