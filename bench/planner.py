#!/usr/bin/env python3
"""Benchmark: the fleet planner (_utils/vmigrate_planner.py) on synthetic fleets.

The planner is a pure function of the facts the hypervisors report, so a fleet of any size can
be planned here without one: 20 VMs per hypervisor (512 MiB..8 GiB, 1..8 vCPUs, placed unevenly
so a rebalance has work), rules on every size (anti-affinity triples over half the hosts' worth
of VMs, affinity pairs, allowed-host patterns), one host in maintenance. For 100, 1,000 and 5,000
hypervisors it times building the facts, planning the evacuation of the fullest host, and a
rebalance of at most BENCH_PLANNER_MOVES moves (default 50), each the median of
BENCH_PLANNER_ROUNDS (default 3). Prints the times and their growth against the 100-host fleet
measured in the same run, and merges planner_* keys into bench/results.json.
"""
import json
import os
import pathlib
import random
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "_utils"))
import vmigrate_planner as planner_  # noqa: E402  pylint: disable=wrong-import-position

ROUNDS = int(os.environ.get("BENCH_PLANNER_ROUNDS", "3"))
MOVES = int(os.environ.get("BENCH_PLANNER_MOVES", "50"))
SIZES = (100, 1000, 5000)
PER_HOST = 20
RESULTS = HERE / "results.json"


def fleet_listings(hosts, seed=7):
    """{host: a vmigrate.domains answer} for ``hosts`` hypervisors, and the rules."""
    rnd = random.Random(seed)
    listings, names = {}, []
    for h in range(hosts):
        domains = {}
        # Uneven: some hosts nearly full, some nearly empty.
        count = rnd.randint(PER_HOST // 2, PER_HOST * 3 // 2)
        for _ in range(count):
            name = f"{rnd.choice(('web', 'db', 'app', 'batch'))}-{len(names):06d}"
            names.append(name)
            domains[name] = {"uuid": name, "state": "running", "reason": "booted",
                             "persistent": True, "memory_mib": rnd.choice((512, 1024, 2048,
                                                                          4096, 8192)),
                             "vcpus": rnd.choice((1, 2, 4, 8))}
        listings[f"hv{h:05d}"] = {"capacity": {"memory_mib": 262144, "vcpus": 256},
                                  "domains": domains}
    anti = {f"anti{i}": names[i * 3:i * 3 + 3] for i in range(len(names) // 6)}
    start = len(names) // 2
    affinity = {f"aff{i}": names[start + i * 2:start + i * 2 + 2]
                for i in range(len(names) // 40)}
    allowed = {f"db-{d}*": [f"hv{d}*", "hv1*"] for d in range(5)}
    return listings, {"anti_affinity": anti, "affinity": affinity, "allowed": allowed,
                      "threshold": 0.05}


def _median(fn):
    samples, out = [], None
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), out


def measure(hosts):
    listings, rules_conf = fleet_listings(hosts)
    rules = planner_.rules(rules_conf)
    maintenance = ("hv00003",)
    facts_s, fleet = _median(lambda: planner_.facts(listings, maintenance))
    fullest = max(listings, key=lambda h: sum(d["memory_mib"]
                                              for d in listings[h]["domains"].values()))
    evac_s, evac = _median(lambda: planner_.evacuation(fleet, rules, fullest))
    bal_s, bal = _median(lambda: planner_.balance(fleet, rules, max_moves=MOVES))
    return {"hosts": hosts, "vms": len(fleet.vms), "facts_s": round(facts_s, 4),
            "evacuation_s": round(evac_s, 4), "evacuation_moves": len(evac["moves"]),
            "evacuation_left": len(evac["left"]), "balance_s": round(bal_s, 4),
            "balance_moves": len(bal["moves"]), "spread_before": bal["spread_before"],
            "spread_after": bal["spread_after"],
            "plan_s": round(facts_s + evac_s + bal_s, 4)}


def main():
    rows = [measure(n) for n in SIZES]
    base = rows[0]
    print(f"planner benchmark: {PER_HOST} VMs per hypervisor on average, rules on, medians of "
          f"{ROUNDS} (growth against the {base['hosts']}-host fleet measured in this run)")
    for r in rows:
        print(f"  {r['hosts']:5d} hosts {r['vms']:6d} VMs: facts {r['facts_s']:.3f} s, "
              f"evacuate {r['evacuation_s']:.3f} s ({r['evacuation_moves']} moves), balance "
              f"{r['balance_s']:.3f} s ({r['balance_moves']} moves, spread "
              f"{r['spread_before']:.3f} -> {r['spread_after']:.3f}); all {r['plan_s']:.3f} s, "
              f"x{r['plan_s'] / base['plan_s']:.1f} for x{r['hosts'] / base['hosts']:.0f} hosts")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    thousand = next(r for r in rows if r["hosts"] == 1000)
    results.update({
        "planner_1000_hosts_plan_s": thousand["plan_s"],
        "planner_1000_hosts_under_1s": thousand["plan_s"] < 1.0,
        "planner_growth_100_to_5000": round(rows[-1]["plan_s"] / base["plan_s"], 1),
        "planner": rows,
    })
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"  planner_1000_hosts_plan_s {thousand['plan_s']} (target < 1 s)")
    return 0 if thousand["plan_s"] < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
