"""The fleet planner (_utils/vmigrate_planner.py): a pure function of the hypervisors' facts,
the hosts in maintenance and the rules."""
import pytest
from salt.exceptions import SaltInvocationError

from tests.support.master import shared

planner_ = shared("vmigrate_planner")


def vm(memory=256, state="running", vcpus=1, persistent=True, reason="booted"):
    return {"state": state, "reason": reason, "persistent": persistent, "uuid": "u",
            "memory_mib": memory, "vcpus": vcpus}


def host(memory=1024, vcpus=8, **domains):
    return {"capacity": {"memory_mib": memory, "vcpus": vcpus}, "domains": domains}


def plan_evacuation(listings, rules=None, from_host="host1", maintenance=(), **kw):
    fleet = planner_.facts(listings, maintenance)
    return planner_.evacuation(fleet, planner_.rules(rules), from_host, **kw)


def dests(plan):
    return {m["vm"]: m["dest"] for m in plan["moves"]}


def test_a_host_in_maintenance_is_never_chosen_and_says_why():
    plan = plan_evacuation({"host1": host(a=vm()), "host2": host(), "host3": host()},
                           maintenance=("host2",))
    assert dests(plan) == {"a": "host3"}
    why = {c["host"]: (c["skip"], c["why"]) for c in plan["candidates"]["a"]}
    assert why["host2"] == ("maintenance", "in maintenance")
    assert why["host3"][1].startswith("chosen")


def test_memory_and_vcpus_bound_a_destination():
    listings = {"host1": host(a=vm(memory=600), b=vm(memory=100, vcpus=4)),
                "host2": host(memory=500), "host3": host(memory=2048, vcpus=4, c=vm(vcpus=2))}
    plan = plan_evacuation(listings)
    # a does not fit host2; b's 4 vCPUs do not fit host3 beside c's and a's.
    assert dests(plan) == {"a": "host3", "b": "host2"}
    skips = {c["host"]: c["skip"] for c in plan["candidates"]["a"]}
    assert skips == {"host3": None, "host2": "memory"}
    skips = {c["host"]: c["skip"] for c in plan["candidates"]["b"]}
    assert skips == {"host2": None, "host3": "vcpus"}


def test_a_guest_no_host_takes_is_left_with_every_reason():
    plan = plan_evacuation({"host1": host(a=vm(memory=900)), "host2": host(memory=512),
                            "host3": None})
    assert plan["moves"] == [] and "host2: needs 900 MiB" in plan["left"]["a"]
    assert "host3: did not answer" in plan["left"]["a"]


def test_the_largest_guests_are_placed_first_and_spread():
    listings = {"host1": host(memory=4096, a=vm(300), b=vm(500), c=vm(400)),
                "host2": host(), "host3": host()}
    plan = plan_evacuation(listings)
    assert [m["vm"] for m in plan["moves"]] == ["b", "c", "a"]
    assert dests(plan) == {"b": "host2", "c": "host3", "a": "host3"}


def test_an_anti_affinity_pair_never_lands_together():
    listings = {"host1": host(web1=vm(), web2=vm()), "host2": host(), "host3": host(),
                "host4": host(memory=4096, web3=vm())}
    plan = plan_evacuation(listings, {"anti_affinity": {"web": ["web*"]}})
    got = dests(plan)
    assert sorted(got.values()) == ["host2", "host3"]  # not host4 (web3), not together
    assert {c["host"]: c["skip"] for c in plan["candidates"]["web1"]}["host4"] == "anti_affinity"


def test_an_affinity_group_moves_together_and_follows_its_members():
    listings = {"host1": host(db=vm(), app=vm(), other=vm()), "host2": host(),
                "host3": host(memory=4096)}
    plan = plan_evacuation(listings, {"affinity": {"app": ["db", "app"]}})
    got = dests(plan)
    assert got["db"] == got["app"]
    # A member elsewhere pins where the rest may go.
    listings = {"host1": host(app=vm()), "host2": host(db=vm()), "host3": host(memory=4096)}
    plan = plan_evacuation(listings, {"affinity": {"app": ["db", "app"]}})
    assert dests(plan) == {"app": "host2"}
    assert {c["host"]: c["skip"] for c in plan["candidates"]["app"]}["host3"] == "affinity"


def test_allowed_hosts_per_vm_pattern():
    listings = {"host1": host(db1=vm(), web=vm()), "host2": host(), "host3": host(memory=4096)}
    plan = plan_evacuation(listings, {"allowed": {"db*": ["host2"]}})
    assert dests(plan) == {"db1": "host2", "web": "host3"}


def test_what_may_not_move_is_left_with_why():
    listings = {"host1": host(p=vm(state="paused", reason="migration"),
                              t=vm(state="shutoff", persistent=False), off=vm(state="shutoff")),
                "host2": host()}
    plan = plan_evacuation(listings)
    assert dests(plan) == {"off": "host2"} and plan["moves"][0]["mode"] == "offline"
    assert "a migration of it is unfinished" in plan["left"]["p"]
    assert "transient" in plan["left"]["t"]


def test_a_vm_on_two_hosts_is_never_planned():
    plan = plan_evacuation({"host1": host(a=vm()), "host2": host(a=vm(state="shutoff")),
                            "host3": host()})
    assert plan["moves"] == [] and "vmigrate.reconcile a" in plan["left"]["a"]


def _balanced(listings, rules=None, **kw):
    fleet = planner_.facts(listings)
    return fleet, planner_.balance(fleet, planner_.rules(rules), **kw)


def _after(fleet, plan):
    """The fleet the plan leaves, as its hosts would report it."""
    listings = {}
    for h, info in fleet.hosts.items():
        listings[h] = {"capacity": {"memory_mib": info["memory_mib"], "vcpus": info["vcpus"]},
                       "domains": {}}
    moved = {m["vm"]: m["dest"] for m in plan["moves"]}
    for name, info in fleet.vms.items():
        listings[moved.get(name, info["host"])]["domains"][name] = vm(
            info["memory_mib"], info["state"], info["vcpus"])
    return listings


def test_a_rebalance_lowers_the_spread_and_a_second_run_moves_nothing():
    listings = {"host1": host(a=vm(200), b=vm(200), c=vm(200), d=vm(100)),
                "host2": host(e=vm(100)), "host3": host(), "host4": host()}
    fleet, plan = _balanced(listings)
    assert plan["spread_before"] == pytest.approx(0.684, abs=0.001)
    assert plan["spread_after"] < plan["spread_before"] and 1 <= len(plan["moves"]) <= 4
    assert all(m["source"] == "host1" for m in plan["moves"])
    again = planner_.balance(planner_.facts(_after(fleet, plan)), planner_.rules(None))
    assert again["moves"] == [] and again["spread_before"] == plan["spread_after"]


def test_a_rebalance_keeps_the_rules_and_maintenance():
    listings = {"host1": host(web1=vm(300), web2=vm(300), x=vm(300)),
                "host2": host(web3=vm(100)), "host3": host(), "host4": host()}
    fleet = planner_.facts(listings, maintenance=("host4",))
    plan = planner_.balance(fleet, planner_.rules({"anti_affinity": {"web": ["web*"]}}))
    assert plan["moves"] and all(m["dest"] != "host4" for m in plan["moves"])
    placed = {m["vm"]: m["dest"] for m in plan["moves"]}
    hosts = {n: placed.get(n, i["host"]) for n, i in fleet.vms.items()}
    webs = [hosts[w] for w in ("web1", "web2", "web3")]
    assert len(set(webs)) == 3, hosts
    assert "host4" not in plan["loads_before"]


def test_a_rebalance_moves_an_affinity_group_as_one():
    listings = {"host1": host(db=vm(300), app=vm(300), z=vm(100)), "host2": host(),
                "host3": host(z2=vm(700))}
    _fleet, plan = _balanced(listings, {"affinity": {"app": ["db", "app"]}})
    moved = {m["vm"]: m["dest"] for m in plan["moves"]}
    assert ("db" in moved) == ("app" in moved)
    assert moved.get("db") == moved.get("app")


def test_max_moves_and_threshold_end_a_rebalance():
    listings = {"host1": host(a=vm(200), b=vm(200), c=vm(200)), "host2": host(),
                "host3": host()}
    _fleet, plan = _balanced(listings, max_moves=1)
    assert len(plan["moves"]) == 1 and "max_moves 1" in plan["stopped"]
    _fleet, plan = _balanced(listings, threshold=0.9)
    assert plan["moves"] == [] and "within the threshold" in plan["stopped"]


@pytest.mark.parametrize("rules, words", [
    ({"anti_affinity": ["a"]}, "anti_affinity: a mapping"),
    ({"affinity": {"g": []}}, "affinity:g"),
    ({"allowed": {"db*": "host1\n"}}, None),
    ({"threshold": 2}, "threshold 2"),
    ({"spread": 1}, "unknown key(s) spread"),
])
def test_bad_rules_are_refused_naming_the_key(rules, words):
    if words is None:
        assert planner_.rules(rules)["allowed"] == {"db*": ["host1\n"]}
        return
    with pytest.raises(SaltInvocationError, match=words.replace("(", r"\(")
                       .replace(")", r"\)").replace("*", r"\*")):
        planner_.rules(rules)


def test_rules_that_contradict_each_other_are_refused():
    fleet = planner_.facts({"host1": host(a=vm(), b=vm())})
    rules = planner_.rules({"affinity": {"g": ["a", "b"]}, "anti_affinity": {"x": ["a", "b"]}})
    with pytest.raises(SaltInvocationError, match="keeps a, b together"):
        planner_.Rules(rules, fleet)
    rules = planner_.rules({"affinity": {"g": ["a"], "h": ["a*"]}})
    with pytest.raises(SaltInvocationError, match="in affinity groups g and h"):
        planner_.Rules(rules, fleet)


def test_a_migration_by_name_is_refused_by_the_rules_only():
    fleet = planner_.facts({"host1": host(web1=vm()), "host2": host(memory=1, web2=vm()),
                            "host3": host(memory=1)})
    rules = planner_.rules({"anti_affinity": {"web": ["web*"]}, "allowed": {"web*": ["host[12]"]}})
    assert planner_.violations(rules, fleet, "web1", "host2")[0] == "anti_affinity"
    assert planner_.violations(rules, fleet, "web1", "host3")[0] == "allowed"
    # Capacity is the destination's own precheck, not a rule.
    free = planner_.facts({"host1": host(web1=vm()), "host2": host(memory=1)})
    assert planner_.violations(rules, free, "web1", "host2") is None


def test_a_rebalanced_affinity_group_keeps_each_members_mode_and_max_moves():
    # The group's first member by name is shut off: the group is still tried, and moves whole,
    # the shut-off member offline (a live move of a shut-off guest is refused).
    listings = {"host1": host(a_off=vm(300, state="shutoff"), b_run=vm(400), c=vm(100)),
                "host2": host(memory=2048)}
    _fleet, plan = _balanced(listings, {"affinity": {"g": ["a_off", "b_run"]}})
    assert {m["vm"]: m["mode"] for m in plan["moves"]} == {"a_off": "offline", "b_run": "live"}
    # max_moves 1 never moves a group of two.
    _fleet, plan = _balanced({"host1": host(a=vm(400), b=vm(400)), "host2": host()},
                             {"affinity": {"g": ["a", "b"]}}, max_moves=1)
    assert plan["moves"] == [] and "no move" in plan["stopped"]


def test_a_vm_on_two_hosts_still_takes_memory_on_both():
    listings = {"host1": host(dup=vm(900)), "host2": host(dup=vm(900)), "host3": host(),
                "host4": host(memory=4096, big=vm(500))}
    plan = plan_evacuation(listings, from_host="host4")
    skips = {c["host"]: c["skip"] for c in plan["candidates"]["big"]}
    assert skips == {"host3": None, "host1": "memory", "host2": "memory"}, skips


def test_planned_moves_spread_by_memory_not_by_slots():
    # A nearly empty large host takes the whole evacuation; moves only planned are not
    # migrations in flight (the caps make a move wait for a slot when it runs).
    listings = {"host1": host(memory=8192, **{f"v{i}": vm(256) for i in range(4)}),
                "big": host(memory=10240), "full": host(memory=1024, x=vm(400))}
    plan = plan_evacuation(listings)
    assert set(dests(plan).values()) == {"big"}, dests(plan)
