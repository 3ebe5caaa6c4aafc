#!/usr/bin/env python3
"""Benchmark: live migration through vmigrate vs. raw `virsh migrate`, same lab, same run.

Brings the demo lab up (vdisk on host1), then alternates host1 -> host2 -> host1 round trips:
  baseline  virsh migrate --live --p2p --persistent --undefinesource (run inside the source host)
  module    salt <source> vmigrate.migrate vdisk <dest>            (one minion job)
  orch      salt-run state.orch migrate pillar='{vm: vdisk, dest: <dest>}'
and prints the median wall time of each, the ratio to the baseline, and the Salt layer's cost
in seconds (orch - baseline). BENCH_ROUNDS round trips each (default 3).

Then evacuation: three guests on host1 (vdisk and two more), `salt-run vmigrate.evacuate`
host1 -> host2 and back, one at a time (concurrency=1) and two at a time (concurrency=2, the
lab's max_outgoing), printing p4_parallel_over_sequential (below 1: parallel is faster).
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
import vmlab  # noqa: E402  pylint: disable=wrong-import-position

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def main():
    lab = vmlab.Lab()
    lab.up()
    vmlab.setup_storage_and_guest(lab)
    where = {"at": "host1"}

    def virsh(dest):
        argv = lab.host_argv(where["at"], [
            "virsh", "migrate", "vdisk", "--live", "--p2p", "--persistent", "--undefinesource",
            f"qemu+tcp://{lab.addr(dest)}/system", "--migrateuri", f"tcp://{lab.addr(dest)}"])
        subprocess.run(argv, check=True, capture_output=True)

    def module(dest):
        # Same data stream as the virsh baseline (plain TCP, the lab's explicit switch).
        out = subprocess.run(lab.salt_cli("salt", where["at"], "vmigrate.migrate", "vdisk", dest,
                                          "--out=json"), check=True, capture_output=True, text=True)
        assert json.loads(out.stdout)[where["at"]]["dest"] == dest, out.stdout

    def orch(dest):
        subprocess.run(lab.salt_cli("salt-run", "state.orch", "migrate",
                                    f"pillar={json.dumps({'vm': 'vdisk', 'dest': dest})}"),
                       check=True, capture_output=True)

    results = {}
    for name, fn in (("virsh", virsh), ("module", module), ("orch", orch)):
        samples = []
        for _ in range(ROUNDS * 2):
            dest = "host2" if where["at"] == "host1" else "host1"
            lab.counter_lines_on(where["at"], count=1)  # the guest counts where we think
            t0 = time.perf_counter()
            fn(dest)
            samples.append(time.perf_counter() - t0)
            # A sample counts only if the guest verifiably moved.
            if lab.running_on() != [dest]:
                raise SystemExit(f"{name}: vdisk did not move to {dest}: libvirt reports it on "
                                 f"{lab.running_on()}")
            where["at"] = dest
        results[name] = statistics.median(samples)
    if where["at"] != "host1":
        orch("host1")
        where["at"] = "host1"
    p4 = evacuation(lab)
    lines = lab.counter_lines()
    numbers = [n for n, _ in lines]
    intact = vmlab.vmguest.continuous(numbers) and all(b == 0 for _, b in lines)
    base = results["virsh"]
    print(f"live migration benchmark: 128 MiB TCG guest, {ROUNDS * 2} migrations each, median")
    for name, label in (("virsh", "raw virsh migrate (baseline)"),
                        ("module", "salt <src> vmigrate.migrate"),
                        ("orch", "salt-run state.orch migrate")):
        print(f"  {label:32s} {results[name]:6.2f} s   ratio {results[name] / base:5.2f}x   "
              f"+{results[name] - base:5.2f} s")
    print(f"  evacuate 3 guests, sequential     {p4['sequential']:6.2f} s   (median of 2)")
    print(f"  evacuate 3 guests, 2 at a time     {p4['parallel']:6.2f} s   "
          f"p4_parallel_over_sequential {p4['parallel'] / p4['sequential']:.2f}")
    print(f"  guest intact across {len(numbers)} counter lines: {intact}")
    return 0 if intact else 1


def evacuation(lab):
    """Median wall of evacuating host1 -> host2 and back, sequential and two at a time."""
    guests = ("vev1", "vev2")
    for name in guests:
        lab.create_guest("host1", name)
    for name in guests:
        lab.counter_lines_on("host1", name, count=1)
    walls = {}
    for label, concurrency in (("sequential", 1), ("parallel", 2)):
        samples = []
        for source in ("host1", "host2"):
            t0 = time.perf_counter()
            out = subprocess.run(lab.salt_cli("salt-run", "vmigrate.evacuate", source,
                                              f"concurrency={concurrency}", "--out=json"),
                                 capture_output=True, text=True, check=False)
            samples.append(time.perf_counter() - t0)
            dest = "host2" if source == "host1" else "host1"
            for name in ("vdisk", *guests):
                if lab.running_on(name) != [dest]:
                    raise SystemExit(f"evacuate {source}: {name} is on {lab.running_on(name)}: "
                                     f"{out.stdout[-2000:]}")
        walls[label] = statistics.median(samples)
    for name in guests:
        lab.remove_guest_everywhere(name)
    return walls


if __name__ == "__main__":
    sys.exit(main())
