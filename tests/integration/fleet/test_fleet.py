"""Fleet operations on four real hypervisors: maintenance, placement by capacity and rules,
evacuation that ends with a fresh reading, and rebalancing (salt-run vmigrate.maintenance,
vmigrate.evacuate, vmigrate.balance), each move a real live migration of a real guest."""
import time

from ..test_triggers import _wait_event
from .conftest import hosts_of


def _dests(ret):
    return {vm: r.get("dest") for vm, r in ret.data["vms"].items() if r.get("result")}


def test_a_host_in_maintenance_is_never_a_destination(layout, salt_run_cli, salt_master):
    lab = layout({"g1": "host1", "g2": "host1", "g3": "host1"})
    on = salt_run_cli.run("vmigrate.maintenance", "host2", "on", "reason=firmware")
    assert on.returncode == 0 and on.data["changed"] is True, on
    # Asked by name: refused by its code, before anything is located or locked.
    ret = salt_run_cli.run("vmigrate.migrate", "g1", "host2")
    assert ret.returncode != 0 and ret.data["status"] == "refused", ret
    assert ret.data["reason"] == "maintenance" and "firmware" in ret.data["comment"], ret
    # Through the reactor (a signed request): refused the same way.
    since = time.time()
    sent = salt_run_cli.run("vmigrate.request", "g1", "host2")
    assert sent.returncode == 0, sent
    result = _wait_event(salt_master, ["vmigrate/g1/result"], since)[0].data
    assert result["status"] == "refused" and result["reason"] == "maintenance", result
    # An evacuation: host2 is skipped, named, and host1 goes into maintenance itself.
    ret = salt_run_cli.run("vmigrate.evacuate", "host1")
    assert ret.returncode == 0 and ret.data["result"] is True, ret
    assert set(_dests(ret)) == {"g1", "g2", "g3"}
    assert set(_dests(ret).values()) <= {"host3", "host4"}, _dests(ret)
    assert all({c["host"]: c["skip"] for c in ret.data["plan"][vm]}["host2"] == "maintenance"
               for vm in ("g1", "g2", "g3"))
    assert ret.data["remaining"] == [] and "host1 runs and defines nothing" in ret.data["comment"]
    assert hosts_of(lab, ("g1", "g2", "g3")) == {vm: [d] for vm, d in _dests(ret).items()}
    listed = salt_run_cli.run("vmigrate.maintenance")
    assert set(listed.data["maintenance"]) == {"host1", "host2"}, listed
    jobs = salt_run_cli.run("vmigrate.jobs")
    assert set(jobs.data["maintenance"]) == {"host1", "host2"}, jobs
    # Nothing lands on host1 either while it is in maintenance.
    ret = salt_run_cli.run("vmigrate.migrate", "g1", "host1")
    assert ret.returncode != 0 and ret.data["reason"] == "maintenance", ret


def test_an_anti_affinity_pair_never_shares_a_host(layout, salt_run_cli):
    # host2 is the least used after host1, but anti2 runs there: anti1 must go elsewhere.
    lab = layout({"anti1": "host1", "anti2": "host2", "g1": "host3", "g2": "host3",
                  "g3": "host4", "g4": "host4"})
    dry = salt_run_cli.run("vmigrate.evacuate", "host1", "dry_run=True")
    assert dry.returncode == 0, dry
    skips = {c["host"]: (c["skip"], c["why"]) for c in dry.data["plan"]["anti1"]}
    assert skips["host2"] == ("anti_affinity", "anti-affinity group pair: anti2 runs there")
    ret = salt_run_cli.run("vmigrate.evacuate", "host1")
    assert ret.returncode == 0, ret
    assert _dests(ret)["anti1"] in ("host3", "host4")
    # Asked by name, the rule refuses too.
    by_name = salt_run_cli.run("vmigrate.migrate", "anti1", "host2")
    assert by_name.returncode != 0 and by_name.data["reason"] == "rules", by_name
    # A rebalance (host1 back) keeps them apart as well.
    assert salt_run_cli.run("vmigrate.maintenance", "host1", "off").returncode == 0
    bal = salt_run_cli.run("vmigrate.balance")
    assert bal.returncode == 0, bal
    where = hosts_of(lab, ("anti1", "anti2"))
    assert len(where["anti1"]) == 1 and where["anti1"] != where["anti2"], (where, bal.data)


def test_an_affinity_pair_moves_together(layout, salt_run_cli):
    lab = layout({"aff1": "host1", "aff2": "host1", "g1": "host2"})
    ret = salt_run_cli.run("vmigrate.evacuate", "host1")
    assert ret.returncode == 0, ret
    dests = _dests(ret)
    assert dests["aff1"] == dests["aff2"], dests
    assert hosts_of(lab, ("aff1", "aff2")) == {"aff1": [dests["aff1"]],
                                               "aff2": [dests["aff1"]]}


def test_a_pinned_guest_goes_only_where_it_is_allowed(layout, salt_run_cli):
    # host2 is the fullest, but pinned* may run on host1 and host2 only.
    layout({"pinned1": "host1", "g1": "host2", "g2": "host2"})
    ret = salt_run_cli.run("vmigrate.evacuate", "host1")
    assert ret.returncode == 0 and _dests(ret) == {"pinned1": "host2"}, ret
    skips = {c["host"]: c["skip"] for c in ret.data["plan"]["pinned1"]}
    assert skips == {"host2": None, "host3": "allowed", "host4": "allowed"}, skips


def test_a_rebalance_converges_and_a_second_run_moves_nothing(layout, salt_run_cli):
    lab = layout({"g1": "host1", "g2": "host1", "g3": "host1", "g4": "host1"})
    dry = salt_run_cli.run("vmigrate.balance", "dry_run=True")
    assert dry.returncode == 0 and dry.data["result"] is None and dry.data["moves"], dry
    ret = salt_run_cli.run("vmigrate.balance")
    assert ret.returncode == 0 and ret.data["result"] is True, ret
    assert [m["vm"] for m in ret.data["moves"]] == [m["vm"] for m in dry.data["moves"]]
    assert ret.data["spread_after"] == ret.data["spread_planned"] < ret.data["spread_before"]
    assert ret.data["spread_after"] <= 0.1, ret.data
    placed = {m["vm"]: m["dest"] for m in ret.data["moves"]}
    assert hosts_of(lab, placed) == {vm: [d] for vm, d in placed.items()}
    again = salt_run_cli.run("vmigrate.balance")
    assert again.returncode == 0 and again.data["moves"] == [] and again.data["vms"] == {}, again


def test_a_silent_hypervisor_stops_an_evacuation_unless_forced(layout, salt_run_cli, minions):
    lab = layout({"g1": "host1", "g2": "host3"})
    minions["host4"].terminate()
    try:
        ret = salt_run_cli.run("vmigrate.evacuate", "host1")
        assert ret.returncode != 0 and "host4" in ret.data["comment"], ret
        assert "force=True" in ret.data["comment"] and ret.data["vms"] == {}, ret
        assert hosts_of(lab, ("g1",)) == {"g1": ["host1"]}
        forced = salt_run_cli.run("vmigrate.evacuate", "host1", "force=True")
        assert forced.returncode == 0, forced
        assert _dests(forced) == {"g1": "host2"}, forced.data  # the least used answering one
        assert forced.data["vms"]["g1"]["forced"] == ["host4"]
    finally:
        minions["host4"].start(start_timeout=120)
