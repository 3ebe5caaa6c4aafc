"""Fleet use cases on the master against a fake LocalClient (tests/support/master.py): hosts
in maintenance (_utils/vmigrate_maintenance.py), the placement rules on a migration asked by
name (vmigrate_fleet.py), rebalancing (vmigrate_balance.py), and an evacuation that ends with
a fresh reading (vmigrate_evacuate.py)."""
import json

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.master import OPTS, RUNNING, MovingClient, published, shared
from tests.support.modload import load

balance_ = shared("vmigrate_balance")
bus_ = shared("vmigrate_bus")
evacuate_ = shared("vmigrate_evacuate")
maintenance_ = shared("vmigrate_maintenance")
move_ = shared("vmigrate_move")


def small(name, memory=256):
    return dict(RUNNING, uuid=f"u-{name}", memory_mib=memory, vcpus=1)


CAPACITY = {"capacity": {"memory_mib": 1024, "vcpus": 8}}


def fleet_env(env, monkeypatch, hosts, placement=None, dead=()):
    client = MovingClient(env["clock"], hosts=hosts, dead=dead,
                          reported={h: CAPACITY for h in hosts})
    monkeypatch.setattr(bus_, "local_client", lambda opts: client)
    opts = dict(OPTS, vmigrate={"hypervisors_target": sorted([*hosts, *dead]),
                                "max_outgoing": 2, "placement": placement or {}})
    return client, opts


def test_maintenance_is_kept_switched_and_refused_when_malformed(env):
    assert maintenance_.hosts(OPTS) == {}
    on = maintenance_.switch(OPTS, "host2", "on", "firmware")
    assert on["changed"] is True and on["reason"] == "firmware"
    again = maintenance_.switch(OPTS, "host2", True)
    assert again["changed"] is False and again["reason"] == "firmware"  # kept, not reset
    # Kept in the master's cachedir: another process (or a restarted master) reads it.
    with open(f"{OPTS['cachedir']}/vmigrate/maintenance.json", encoding="utf-8") as fh:
        assert set(json.load(fh)) == {"host2"}
    for bad in ({"host": "host2\n", "on": True}, {"host": "host2", "on": "maybe"},
                {"host": "host2", "on": True, "reason": "a\nb"}):
        with pytest.raises(SaltInvocationError):
            maintenance_.switch(OPTS, **bad)
    assert maintenance_.switch(OPTS, "host2", "off")["changed"] is True
    assert maintenance_.hosts(OPTS) == {}


def test_a_destination_in_maintenance_is_refused_by_its_code_before_any_lock(env,
                                                                            monkeypatch):
    client, opts = fleet_env(env, monkeypatch, {"host1": {"a": small("a")}, "host2": {}})
    maintenance_.switch(opts, "host2", True, "disk swap")
    ret = move_.migrate(opts, "a", "host2")
    assert ret["status"] == "refused" and ret["reason"] == "maintenance", ret
    assert "disk swap" in ret["comment"] and "vmigrate.maintenance host2 off" in ret["comment"]
    assert client.calls == [] and len(env["fired"]) == 1  # nothing asked, one result event


def test_an_anti_affinity_rule_refuses_a_migration_by_name(env, monkeypatch):
    hosts = {"host1": {"web1": small("web1")}, "host2": {"web2": small("web2")}, "host3": {}}
    client, opts = fleet_env(env, monkeypatch, hosts, {"anti_affinity": {"web": ["web*"]}})
    ret = move_.migrate(opts, "web1", "host2")
    assert ret["status"] == "refused" and ret["reason"] == "rules", ret
    assert "anti-affinity group web: web2 runs there" in ret["comment"]
    assert not published(client, "vmigrate.migrate")
    assert move_.migrate(opts, "web1", "host3")["status"] == "migrated"


def test_an_evacuation_plans_by_memory_puts_its_host_in_maintenance_and_reads_it_again(
        env, monkeypatch):
    hosts = {"host1": {"a": small("a", 600), "b": small("b", 300)},
             "host2": {"x": small("x", 600)}, "host3": {}}
    client, opts = fleet_env(env, monkeypatch, hosts)
    ret = evacuate_.evacuate(opts, "host1")
    assert ret["result"] is True, ret
    assert {vm: r["dest"] for vm, r in ret["vms"].items()} == {"a": "host3", "b": "host2"}
    assert ret["remaining"] == [] and "host1 runs and defines nothing" in ret["comment"]
    assert set(maintenance_.hosts(opts)) == {"host1"}
    assert {c["host"]: c["skip"] for c in ret["plan"]["a"]} == {"host3": None,
                                                                "host2": "memory"}
    # The last reading is a fresh one of host1 alone.
    assert published(client, "vmigrate.domains")[-1][1] == ["host1"]


def test_an_evacuation_that_leaves_a_domain_behind_fails_naming_it(env, monkeypatch):
    hosts = {"host1": {"a": small("a")}, "host2": {}}
    client, opts = fleet_env(env, monkeypatch, hosts)
    # Every planned move succeeds, but a domain defined on host1 meanwhile (virsh define,
    # behind vmigrate's back) is there at the end: only the fresh reading sees it.
    client.appear = {"host1": {"late": dict(small("late"), state="shutoff")}}
    ret = evacuate_.evacuate(opts, "host1")
    assert ret["vms"]["a"]["result"] is True
    assert ret["result"] is False and ret["remaining"] == ["late"], ret
    assert "still on host1: late" in ret["comment"]


def test_a_silent_hypervisor_stops_an_evacuation_unless_forced(env, monkeypatch):
    hosts = {"host1": {"a": small("a")}, "host2": {}}
    client, opts = fleet_env(env, monkeypatch, hosts, dead=("host3",))
    ret = evacuate_.evacuate(opts, "host1")
    assert ret["result"] is False and "host3 (did not answer" in ret["comment"], ret
    assert "force=True" in ret["comment"] and not published(client, "vmigrate.migrate")
    assert maintenance_.hosts(opts) == {}  # refused before it changed anything
    ret = evacuate_.evacuate(opts, "host1", force=True)
    assert ret["result"] is True and ret["vms"]["a"]["dest"] == "host2", ret
    assert ret["vms"]["a"]["forced"] == ["host3"]


def test_a_rebalance_moves_then_measures_and_a_second_run_moves_nothing(env, monkeypatch):
    hosts = {"host1": {n: small(n) for n in ("a", "b", "c")}, "host2": {}, "host3": {}}
    client, opts = fleet_env(env, monkeypatch, hosts)
    dry = balance_.balance(opts, dry_run=True)
    assert dry["result"] is None and dry["moves"] and not published(client, "vmigrate.migrate")
    ret = balance_.balance(opts)
    assert ret["result"] is True and ret["moves"] == dry["moves"], ret
    assert ret["spread_after"] == ret["spread_planned"] == 0.0 and ret["spread_before"] == 0.75
    assert sorted(len(d) for d in client.hosts.values()) == [1, 1, 1]
    again = balance_.balance(opts)
    assert again["moves"] == [] and again["result"] is True
    assert [t for t, _ in env["fired"]].count("vmigrate/balance/result") == 2  # not the dry run


def test_a_rebalance_never_fills_a_host_in_maintenance_and_refuses_a_silent_one(env,
                                                                               monkeypatch):
    hosts = {"host1": {n: small(n) for n in ("a", "b")}, "host2": {}, "host3": {}}
    client, opts = fleet_env(env, monkeypatch, hosts)
    maintenance_.switch(opts, "host3", True)
    ret = balance_.balance(opts)
    assert ret["result"] is True and {m["dest"] for m in ret["moves"]} == {"host2"}, ret
    client, opts = fleet_env(env, monkeypatch, hosts, dead=("host4",))
    ret = balance_.balance(opts)
    assert ret["result"] is False and "host4" in ret["comment"] and ret["moves"] == []


@pytest.mark.parametrize("kwargs, words", [
    ({"max_moves": -1}, "max_moves -1"), ({"threshold": 1.5}, "threshold 1.5"),
    ({"bandwidth": 0}, "bandwidth"),
])
def test_a_rebalance_refuses_bad_arguments_before_reading_anything(env, monkeypatch, kwargs,
                                                                   words):
    client, opts = fleet_env(env, monkeypatch, {"host1": {}, "host2": {}})
    ret = balance_.balance(opts, **kwargs)
    assert ret["result"] is False and words in ret["comment"] and client.calls == [], ret


@pytest.fixture(params=[False, True], ids=["apply", "test"])
def testmode(request):
    return request.param


def test_the_maintenance_state_is_idempotent_and_truthful_in_test_mode(env, testmode):
    mod = load("_states", "vmigrate", opts=dict(OPTS, test=testmode))
    ret = mod.maintenance("host3", enabled=True, reason="window")
    assert ret["changes"] == {"maintenance": {"old": False, "new": True}}
    assert ret["result"] is (None if testmode else True)
    assert ("host3" in maintenance_.hosts(OPTS)) is (not testmode)
    if not testmode:
        again = mod.maintenance("host3", enabled=True)
        assert again["changes"] == {} and again["result"] is True
    bad = mod.maintenance("host3", enabled="sometimes")
    assert bad["result"] is False and "on or off" in bad["comment"]


def test_the_runner_lists_switches_and_refuses(env):
    mod = load("_runners", "vmigrate", opts=OPTS)
    assert mod.maintenance()["comment"] == "no host is in maintenance"
    on = mod.maintenance("host2", True, reason="bios")  # salt-run reads `on` as True
    assert on["retcode"] == 0 and on["comment"] == "host2 is now in maintenance"
    assert mod.maintenance("host2")["maintenance"] is True
    assert list(mod.maintenance()["maintenance"]) == ["host2"]
    assert mod.maintenance("host2", "off")["comment"] == "host2 is now out of maintenance"
    assert mod.maintenance("host2", "sideways")["retcode"] == 1


def test_a_vm_already_on_a_host_in_maintenance_is_unchanged_for_the_declarative_state(
        env, monkeypatch):
    client, opts = fleet_env(env, monkeypatch, {"host1": {}, "host2": {"a": small("a")}})
    maintenance_.switch(opts, "host2", True)
    ret = move_.migrate(opts, "a", "host2", already_ok=True)
    assert ret["status"] == "unchanged" and ret["result"] is True, ret
    ret = move_.migrate(opts, "a", "host2")  # a request to move it: refused, nothing asked
    assert ret["status"] == "refused" and ret["reason"] == "maintenance"


def test_the_masters_store_refuses_a_document_it_cannot_read_and_writes_whole(env, tmp_path):
    store_ = shared("vmigrate_store")
    path = store_.path(OPTS, "maintenance.json")
    maintenance_.switch(OPTS, "host2", True)
    with open(path, encoding="utf-8") as fh:
        assert set(json.load(fh)) == {"host2"}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"host2": {"since"')  # a torn write by something else
    # Not read as "no host in maintenance": that would let migrations onto host2.
    ret = move_.migrate(OPTS, "a", "host2")
    assert ret["result"] is False and "does not hold a vmigrate document" in ret["comment"]
    with pytest.raises(Exception, match="move it aside"):
        maintenance_.hosts(OPTS)


class FailingClient(MovingClient):
    """As MovingClient, but the source's vmigrate.migrate of a VM in ``fail`` fails there."""

    fail = ()

    def run_job(self, tgt, fun, arg, tgt_type, kwarg, listen, timeout):
        if fun == "vmigrate.migrate" and arg[0] in self.fail:
            jid = f"j{len(self.calls)}"
            self.calls.append((fun, tgt, list(arg), dict(kwarg)))
            self.pending.append((self.clock.now, {
                "tag": f"salt/job/{jid}/ret/{tgt[0]}",
                "data": {"id": tgt[0], "fun": fun, "retcode": 1, "return": {
                    "result": False, "status": "failed", "reason": "libvirt",
                    "comment": "libvirt failed the job"}}}))
            return {"jid": jid, "minions": list(tgt)}
        return super().run_job(tgt, fun, arg, tgt_type, kwarg, listen, timeout)


def test_an_affinity_group_stops_at_its_first_failure_and_the_rest_is_not_begun(env,
                                                                               monkeypatch):
    hosts = {"host1": {"a1": small("a1"), "a2": small("a2")}, "host2": {}, "host3": {}}
    client = FailingClient(env["clock"], hosts=hosts, reported={h: CAPACITY for h in hosts})
    client.fail = ("a1",)
    monkeypatch.setattr(bus_, "local_client", lambda opts: client)
    opts = dict(OPTS, vmigrate={"hypervisors_target": sorted(hosts), "max_outgoing": 2,
                                "placement": {"affinity": {"g": ["a1", "a2"]}}})
    ret = evacuate_.evacuate(opts, "host1")
    assert ret["result"] is False and ret["vms"]["a1"]["status"] == "failed", ret
    assert ret["vms"]["a2"]["reason"] == "group" and "not begun" in ret["vms"]["a2"]["comment"]
    migrated = [c[2][0] for c in published(client, "vmigrate.migrate")]
    assert migrated == ["a1"]  # a2 was never sent, and a1 was not retried elsewhere
    assert set(client.hosts["host1"]) == {"a1", "a2"}  # the group stays together
