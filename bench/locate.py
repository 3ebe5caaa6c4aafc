#!/usr/bin/env python3
"""Benchmark: `salt-run vmigrate.locate` as minions are added.

locate asks the hypervisors named in master config (vmigrate:hypervisors_target), never every
minion, so minions that are not hypervisors should not change its time. Brings the demo lab
up (2 hypervisor minions + nfs1), times locate (median of BENCH_LOCATE_ROUNDS, default 5), then
starts extra plain salt-minions in the lab's control namespace until the master has 10 and 40
minions, and times it again. Prints each median and the ratio to the first.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
import saltconf  # noqa: E402  pylint: disable=wrong-import-position
import vmlab  # noqa: E402  pylint: disable=wrong-import-position

ROUNDS = int(os.environ.get("BENCH_LOCATE_ROUNDS", "5"))


def _locate(lab):
    samples = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        out = subprocess.run(lab.salt_cli("salt-run", "vmigrate.locate", "vdisk", "--out=json"),
                             capture_output=True, text=True, check=False)
        samples.append(time.perf_counter() - t0)
        if json.loads(out.stdout or "{}").get("running") != ["host1"]:
            raise SystemExit(f"locate did not find vdisk on host1: {out.stdout[-500:]}")
    return statistics.median(samples)


def _start_extra(lab, ids):
    for mid in ids:
        mdir = lab.salt_dir / mid
        mdir.mkdir(parents=True, exist_ok=True)
        conf = saltconf.minion_config(lab, mid, mdir)
        conf.pop("beacons", None)
        (mdir / "minion").write_text(json.dumps(conf))
        vmlab.run(lab.ctl_argv([vmlab.VENV_BIN / "salt-minion", "-c", mdir, "-d"]))


def _answering(lab, want):
    def count():
        out = vmlab.run(lab.salt_cli("salt", "*", "test.ping", "--out=json", "--static",
                                     "--timeout=10"), check=False, capture=True)
        try:
            return len(json.loads(out.stdout or "{}")) >= want
        except json.JSONDecodeError:
            return False
    vmlab.wait_for(f"{want} minions to answer", count, 300, 2)


def _stop_extra(lab, ids):
    for mid in ids:
        pidfile = lab.salt_dir / mid / "var" / "run" / "salt-minion.pid"
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    vmlab.run(lab.salt_cli("salt-key", "-y", "-d", "extra*"), check=False, capture=True)
    for mid in ids:
        shutil.rmtree(lab.salt_dir / mid, ignore_errors=True)


def main():
    lab = vmlab.Lab()
    lab.up()
    vmlab.setup_storage_and_guest(lab)
    results, extra = {}, []
    try:
        for total in (3, 10, 40):  # host1, host2, nfs1, then extra minions
            new = [f"extra{i:02d}" for i in range(len(extra), total - 3)]
            _start_extra(lab, new)
            extra += new
            _answering(lab, total)
            results[total] = _locate(lab)
    finally:
        _stop_extra(lab, extra)
    base = results[3]
    print(f"locate with more minions (2 hypervisors; median of {ROUNDS}):")
    for total, wall in results.items():
        print(f"  {total:3d} minions   {wall:5.2f} s   ratio {wall / base:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
