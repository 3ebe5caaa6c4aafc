#!/usr/bin/env python3
"""Benchmark: the convergence forecast beside the outcome, at three bandwidth caps.

The lab guest vdisk (128 MiB, rewriting 16 MiB as fast as its TCG vCPU runs) migrated under
caps of 8, 20 and 64 MiB/s. At each cap: the forecast (`salt-run vmigrate.plan ...
bandwidth=N`: the dirty rate libvirt measured, converges or not, the throttle it needs), plain
pre-copy with the same cap (option `policy: manual`, aborted at BENCH_DEADLINE, default 45 s),
then the default, policy auto (timeout 240 s). The forecast was right when "converges by
downtime alone" matches whether plain pre-copy converged. Merges forecast_* keys into
bench/results.json and prints the table.
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

CAPS = (8, 20, 64)
DEADLINE = int(os.environ.get("BENCH_DEADLINE", "45"))
RESULTS = HERE / "results.json"


def _run(lab, *args):
    out = subprocess.run(lab.salt_cli("salt-run", *args, "--out=json"), capture_output=True,
                         text=True, check=False)
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise SystemExit(f"{args}: {out.stdout[-800:]} {out.stderr[-800:]}")


def _migrate(lab, cap, timeout, options=None):
    at = lab.running_on("vdisk")[0]
    dest = "host2" if at == "host1" else "host1"
    extra = [f"options={options}"] if options else []
    t0 = time.perf_counter()
    ret = _run(lab, "vmigrate.migrate", "vdisk", dest, f"bandwidth={cap}", f"timeout={timeout}",
               *extra)
    wall = time.perf_counter() - t0
    moved = ret.get("status") == "migrated" and lab.running_on("vdisk") == [dest]
    return {"converged": moved, "status": ret.get("status"), "wall_s": round(wall, 1),
            "downtime_ms": ret.get("downtime_ms"), "passes": ret.get("iterations"),
            "applied": (ret.get("forecast") or {}).get("applied")}


def main():
    lab = vmlab.Lab()
    lab.up()
    vmlab.setup_storage_and_guest(lab)
    rows = []
    for cap in CAPS:
        at = lab.running_on("vdisk")[0]
        plan = _run(lab, "vmigrate.plan", "vdisk", "host2" if at == "host1" else "host1",
                    f"bandwidth={cap}")
        fc = plan.get("forecast") or {}
        plain = _migrate(lab, cap, DEADLINE, "{policy: manual}")
        auto = _migrate(lab, cap, 240)
        rows.append({"cap_mib_s": cap, "dirty_mib_s": fc.get("dirty_mib_s"),
                     "forecast_converges": fc.get("converges"), "needs": fc.get("needs"),
                     "throttle": fc.get("throttle"), "forecast_s": fc.get("seconds"),
                     "plain": plain, "auto": auto,
                     "forecast_right": fc.get("converges") == plain["converged"]})
    lab.down()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({"forecast": rows,
                    "forecast_right": sum(r["forecast_right"] for r in rows),
                    "forecast_auto_converged": sum(r["auto"]["converged"] for r in rows),
                    "forecast_caps": len(rows)})
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"forecast benchmark: vdisk (128 MiB, rewriting 16 MiB), plain pre-copy aborted at "
          f"{DEADLINE} s, policy auto at 240 s (bench/results.json)")
    for r in rows:
        p, a = r["plain"], r["auto"]
        print(f"  {r['cap_mib_s']:3d} MiB/s: dirty {r['dirty_mib_s']} MiB/s, forecast "
              f"{'converges' if r['forecast_converges'] else 'needs ' + str(r['needs'])}"
              f"{'' if r['throttle'] is None else ' (throttle %.0f%%)' % (r['throttle'] * 100)}"
              f"; plain {'converged in %.1f s' % p['wall_s'] if p['converged'] else p['status']}"
              f"; auto {'converged in %.1f s, downtime %s ms' % (a['wall_s'], a['downtime_ms']) if a['converged'] else a['status']}"
              f"; forecast {'right' if r['forecast_right'] else 'WRONG'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
