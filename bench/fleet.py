#!/usr/bin/env python3
"""Benchmark: evacuation throughput on the four-hypervisor lab.

Six small guests (96 MiB each, rewriting 1 MiB slowly) on host1 of a lab of four
(make lab-up HOSTS=4); `salt-run vmigrate.evacuate host1 bandwidth=CAP` drains them to
host2..host4, one at a time (concurrency=1) and then two at a time (concurrency=2, the lab's
max_outgoing), the guests put back on host1 between the runs. Reports each wall time,
p4_parallel_over_sequential, and p4_over_limit: the parallel wall over the physical limit,
the guests' total memory over the aggregate bandwidth cap (CAP x 2 concurrent streams).
Merges the fleet_* and p4_* keys into bench/results.json.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))
import vmlab  # noqa: E402  pylint: disable=wrong-import-position

GUESTS = tuple(f"f{i}" for i in range(1, 7))
CAP = int(os.environ.get("BENCH_FLEET_CAP", "32"))
RESULTS = HERE / "results.json"


def _place(lab):
    for name in GUESTS:
        lab.remove_guest_everywhere(name)
        lab.create_guest("host1", name, **vmlab.SMALL_GUEST)
    for name in GUESTS:
        lab.wait_counter(name, timeout=120)


def _evacuate(lab, concurrency):
    t0 = time.perf_counter()
    out = subprocess.run(lab.salt_cli("salt-run", "vmigrate.evacuate", "host1",
                                      f"concurrency={concurrency}", f"bandwidth={CAP}",
                                      "--out=json"), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    ret = json.loads(out.stdout)
    if not ret.get("result"):
        raise SystemExit(f"evacuation failed: {ret.get('comment')}")
    dests = {vm: r["dest"] for vm, r in ret["vms"].items()}
    subprocess.run(lab.salt_cli("salt-run", "vmigrate.maintenance", "host1", "off"),
                   capture_output=True, check=False)
    return wall, dests


def main():
    lab = vmlab.Lab(hosts=4)
    lab.up()
    for tgt, sls in ((vmlab.NFS_HOST, "vmigrate.nfs.server"), ("host*", "vmigrate.nfs.client")):
        vmlab.run(lab.salt_cli("salt", tgt, "state.apply", sls, "--out=json"), capture=True)
    walls, spread = {}, {}
    for label, concurrency in (("sequential", 1), ("parallel", 2)):
        _place(lab)
        walls[label], dests = _evacuate(lab, concurrency)
        spread[label] = sorted(dests.values())
    lab.down()
    memory = len(GUESTS) * vmlab.SMALL_GUEST["memory_mib"]
    limit = memory / (CAP * 2)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({
        "fleet_evacuation_s": {k: round(v, 2) for k, v in walls.items()},
        "fleet_evacuation_targets": spread,
        "fleet_evacuation_limit_s": round(limit, 2),
        "p4_parallel_over_sequential": round(walls["parallel"] / walls["sequential"], 3),
        "p4_over_limit": round(walls["parallel"] / limit, 2),
    })
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"fleet benchmark: {len(GUESTS)} guests of {vmlab.SMALL_GUEST['memory_mib']} MiB off "
          f"host1 to host2..host4 at {CAP} MiB/s each (bench/results.json)")
    print(f"  sequential {walls['sequential']:.1f} s, two at a time {walls['parallel']:.1f} s "
          f"(x{results['p4_parallel_over_sequential']}); physical limit {limit:.1f} s "
          f"({memory} MiB / {CAP * 2} MiB/s): x{results['p4_over_limit']}")
    print(f"  destinations: {spread['parallel']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
