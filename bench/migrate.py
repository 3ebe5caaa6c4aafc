#!/usr/bin/env python3
"""Benchmark: migration through vmigrate against baselines measured in the same lab run.

Writes bench/results.json and prints the table. BENCH_ROUNDS round trips per path (default 3:
six migrations each), medians. Every sample counts only if libvirt then reports the guest on
the destination (asked directly, not through Salt).

p1  `salt-run state.orch migrate` vs `virsh migrate --live --p2p --persistent --undefinesource`
    (same transport and data stream: the lab's plain TCP), a 256 MiB guest rewriting 32 MiB:
    wall of each command, and the switchover (request -> the destination's "Resumed Migrated"
    lifecycle event, from a libvirt event listener on both hosts).
    Salt's own floor, measured in the same run beside them: `salt-run state.orchestrate_single
    test.nop` (the CLI's start, the master minion, pillar and state compile: what any
    orchestration pays before its first step) and `salt <src> test.ping` (one minion job's
    round trip, the CLI's start included). `p1_overhead_beyond_floor_s` is the orchestration's
    wall minus virsh's minus that floor: what vmigrate's own steps add.
p2  `salt <src> vmigrate.migrate` vs saltext-virt's `salt <src> virt.migrate` on the same VM
    (both minion jobs from the master, same lab, same URI).
p3  downtime under `max_downtime: 300`; and convergence: a guest dirtying faster than an
    8 MiB/s cap, plain `virsh migrate --live --bandwidth 8` (aborted at the deadline) vs
    vmigrate's policy (allowed downtime raised in steps to 5 s, timeout_action pause as the
    backstop) with the same cap and deadline.
p4  evacuation of three guests, one at a time vs two at a time.
"""
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab"))
import vmlab  # noqa: E402  pylint: disable=wrong-import-position

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
GUEST, GUEST_MIB, WORKSET_MIB = "vbench", 256, 32
CAP_MIB, DEADLINE_S, MAX_DOWNTIME_MS = 8, 45, 300
RESULTS = HERE / "results.json"


class Lifecycle:
    """libvirt lifecycle events of ``name`` on every hypervisor, with their arrival time."""

    def __init__(self, lab, name):
        self.libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
        self.libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=self._loop, daemon=True).start()
        self.events, self.conns, self.name = [], [], name
        for host in vmlab.HYPERVISORS:
            conn = self.libvirt.open(lab.libvirt_uri(host))
            conn.domainEventRegisterAny(None, self.libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                        self._got, host)
            self.conns.append(conn)

    def _loop(self):
        while True:
            self.libvirt.virEventRunDefaultImpl()

    def _got(self, _conn, dom, event, detail, host):
        if dom.name() == self.name:
            self.events.append((time.perf_counter(), host, event, detail))

    def resumed_on(self, host, since, timeout=30):
        """Seconds from ``since`` to the guest resuming on ``host`` after a migration."""
        lv = self.libvirt
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, where, event, detail in list(self.events):
                if at >= since and where == host and event == lv.VIR_DOMAIN_EVENT_RESUMED \
                        and detail in (lv.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
                                       lv.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY):
                    return at - since
            time.sleep(0.02)
        return None


def _json(argv):
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise SystemExit(f"{' '.join(map(str, argv))}: {out.stdout[-800:]} {out.stderr[-800:]}")


def _virsh_argv(lab, source, dest, *extra):
    return lab.host_argv(source, [
        "virsh", "migrate", GUEST, "--live", "--p2p", "--persistent", "--undefinesource",
        f"qemu+tcp://{lab.addr(dest)}/system", "--migrateuri", f"tcp://{lab.addr(dest)}",
        *extra])


def _alternate(lab, events, paths, rounds):
    """Each path ``rounds * 2`` times, alternating directions; median wall and switchover."""
    where = {"at": lab.running_on(GUEST)[0]}
    out = {}
    for name, fn in paths:
        walls, switches = [], []
        for _ in range(rounds * 2):
            source = where["at"]
            dest = "host2" if source == "host1" else "host1"
            lab.counter_lines_on(source, GUEST, count=1)  # it counts where we think
            t0 = time.perf_counter()
            fn(source, dest)
            walls.append(time.perf_counter() - t0)
            if lab.running_on(GUEST) != [dest]:
                raise SystemExit(f"{name}: {GUEST} did not move to {dest}: libvirt reports it on "
                                 f"{lab.running_on(GUEST)}")
            switches.append(events.resumed_on(dest, t0))
            where["at"] = dest
        out[name] = {"wall_s": round(statistics.median(walls), 3),
                     "switchover_s": (round(statistics.median(switches), 3)
                                      if None not in switches else None),
                     "samples": [round(w, 3) for w in walls]}
    return out


def p1_p2(lab, events):
    def virsh(source, dest):
        subprocess.run(_virsh_argv(lab, source, dest), check=True, capture_output=True)

    def orch(_source, dest):
        ret = _json(lab.salt_cli("salt-run", "state.orch", "migrate", "--out=json",
                                 f"pillar={json.dumps({'vm': GUEST, 'dest': dest})}"))
        assert ret.get("retcode", 0) == 0, ret

    def module(source, dest):
        ret = _json(lab.salt_cli("salt", source, "vmigrate.migrate", GUEST, dest, "--out=json"))
        assert ret[source]["dest"] == dest, ret

    def saltext_virt(source, dest):
        ret = _json(lab.salt_cli("salt", source, "virt.migrate", GUEST,
                                 f"qemu+tcp://{lab.addr(dest)}/system", "--out=json"))
        assert ret[source] is True, ret

    return _alternate(lab, events, (("virsh", virsh), ("orch", orch), ("module", module),
                                    ("saltext_virt", saltext_virt)), ROUNDS)


def floors(lab):
    """Salt's fixed costs, no migration: median walls (seconds) of an orchestration that does
    nothing and of one minion job, ``ROUNDS * 2`` each, the guest running as for p1."""
    source = lab.running_on(GUEST)[0]
    commands = {
        "orch_nop": lab.salt_cli("salt-run", "state.orchestrate_single", "test.nop",
                                 "name=floor", "--out=json"),
        "job_ping": lab.salt_cli("salt", source, "test.ping", "--out=json"),
    }
    out = {}
    for name, argv in commands.items():
        walls = []
        for _ in range(ROUNDS * 2):
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
        out[name] = {"wall_s": round(statistics.median(walls), 3),
                     "samples": [round(w, 3) for w in walls]}
    return out


def p3(lab):
    """Downtime within max_downtime; convergence under a cap, plain virsh vs the policy."""
    downtimes = []
    at = lab.running_on(GUEST)[0]
    for _ in range(ROUNDS * 2):
        dest = "host2" if at == "host1" else "host1"
        ret = _json(lab.salt_cli("salt-run", "vmigrate.migrate", GUEST, dest, "--out=json",
                                 f"options={{max_downtime: {MAX_DOWNTIME_MS}}}"))
        assert ret["status"] == "migrated", ret
        downtimes.append(ret["downtime_ms"])
        at = dest
    # Plain virsh with the cap: aborted at the deadline unless it completes before.
    dest = "host2" if at == "host1" else "host1"
    proc = subprocess.Popen(_virsh_argv(lab, at, dest, "--bandwidth", str(CAP_MIB)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(DEADLINE_S)
    except subprocess.TimeoutExpired:
        subprocess.run(lab.host_argv(at, ["virsh", "domjobabort", GUEST]), capture_output=True,
                       check=False)
        proc.wait(60)
    plain = proc.returncode == 0 and lab.running_on(GUEST) == [dest]
    at = lab.running_on(GUEST)[0]
    dest = "host2" if at == "host1" else "host1"
    t0 = time.perf_counter()
    options = ("{max_downtime: 5000, downtime_steps: 5, downtime_step_delay: 3, "
               "timeout_action: pause}")
    ret = _json(lab.salt_cli("salt-run", "vmigrate.migrate", GUEST, dest, f"bandwidth={CAP_MIB}",
                             f"timeout={DEADLINE_S}", f"options={options}", "--out=json"))
    policy_wall = time.perf_counter() - t0
    policy = ret["status"] == "migrated" and lab.running_on(GUEST) == [dest]
    return {"p3_downtime_ms": statistics.median(downtimes),
            "p3_downtime_samples_ms": downtimes,
            "p3_max_downtime_ms": MAX_DOWNTIME_MS,
            "p3_within_max_downtime": max(downtimes) <= MAX_DOWNTIME_MS,
            "p3_policy_converged": policy,
            "p3_policy_wall_s": round(policy_wall, 2),
            "p3_policy": ret.get("policy"),
            "p3_plain_virsh_converged": plain,
            "p3_cap_mib_s": CAP_MIB, "p3_deadline_s": DEADLINE_S}


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


def _versions(lab):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    conn = libvirt.open(lab.libvirt_uri("host1"))
    try:
        lv, qemu = conn.getLibVersion(), conn.getVersion()
    finally:
        conn.close()
    import salt.version  # pylint: disable=import-outside-toplevel

    rev = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False).stdout.strip()
    dotted = lambda v: f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"  # noqa: E731
    return {"libvirt": dotted(lv), "qemu": dotted(qemu), "salt": salt.version.__version__,
            "python": platform.python_version(), "vmigrate": rev or None}


def _machine():
    model = next((line.split(":", 1)[1].strip() for line in
                  pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in pathlib.Path("/proc/meminfo").read_text()
               .splitlines() if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem / 2**20, 1),
            "kernel": platform.release(),
            "debian": pathlib.Path("/etc/debian_version").read_text().strip(),
            "accel": "tcg"}


def main():
    lab = vmlab.Lab()
    lab.up()
    vmlab.setup_storage_and_guest(lab)
    lab.remove_guest_everywhere(GUEST)
    lab.create_guest("host1", GUEST, workset_mib=WORKSET_MIB, memory_mib=GUEST_MIB)
    lab.wait_counter(GUEST, timeout=90)
    events = Lifecycle(lab, GUEST)
    paths = p1_p2(lab, events)
    floor = floors(lab)
    three = p3(lab)
    lines = lab.counter_lines(GUEST)
    intact = all(bad == 0 for _, bad in lines)
    lab.remove_guest_everywhere(GUEST)
    p4 = evacuation(lab)
    base, orch = paths["virsh"], paths["orch"]
    results = {
        "p1_orch_over_virsh": round(orch["wall_s"] / base["wall_s"], 3),
        "p1_overhead_s": round(orch["wall_s"] - base["wall_s"], 3),
        "p1_switchover_s": orch["switchover_s"],
        "p1_virsh_switchover_s": base["switchover_s"],
        "p1_salt_floor_s": floor["orch_nop"]["wall_s"],
        "p1_overhead_beyond_floor_s": round(orch["wall_s"] - base["wall_s"]
                                            - floor["orch_nop"]["wall_s"], 3),
        "salt_floors": floor,
        "p2_module_over_saltext_virt": round(paths["module"]["wall_s"]
                                             / paths["saltext_virt"]["wall_s"], 3),
        **three,
        "p4_two_hosts_parallel_over_sequential": round(p4["parallel"] / p4["sequential"], 3),
        "paths": paths,
        "evacuation_s": {k: round(v, 2) for k, v in p4.items()},
        "guest": {"memory_mib": GUEST_MIB, "workset_mib": WORKSET_MIB, "intact": intact,
                  "counter_lines": len(lines)},
        "rounds": ROUNDS * 2,
        "machine": _machine(),
        "versions": _versions(lab),
        "date": datetime.date.today().isoformat(),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"migration benchmark: {GUEST_MIB} MiB TCG guest rewriting {WORKSET_MIB} MiB, "
          f"{ROUNDS * 2} migrations per path, medians (bench/results.json)")
    for key, label in (("virsh", "virsh migrate --live --p2p (baseline)"),
                       ("orch", "salt-run state.orch migrate"),
                       ("module", "salt <src> vmigrate.migrate"),
                       ("saltext_virt", "salt <src> virt.migrate (saltext-virt)")):
        p = paths[key]
        print(f"  {label:40s} {p['wall_s']:6.2f} s  x{p['wall_s'] / base['wall_s']:4.2f}  "
              f"switchover {p['switchover_s']} s")
    print(f"  {'salt-run state.orchestrate_single test.nop':40s} "
          f"{floor['orch_nop']['wall_s']:6.2f} s  (Salt's floor: an orchestration doing nothing)")
    print(f"  {'salt <src> test.ping':40s} {floor['job_ping']['wall_s']:6.2f} s  "
          "(one minion job, the CLI's start included)")
    for key in ("p1_orch_over_virsh", "p1_overhead_s", "p1_salt_floor_s",
                "p1_overhead_beyond_floor_s", "p1_switchover_s",
                "p2_module_over_saltext_virt", "p3_downtime_ms", "p3_max_downtime_ms",
                "p3_policy_converged", "p3_plain_virsh_converged",
                "p4_two_hosts_parallel_over_sequential"):
        print(f"  {key:32s} {results[key]}")
    print(f"  guest intact (bad=0 on {len(lines)} counter lines): {intact}")
    return 0 if intact else 1


if __name__ == "__main__":
    sys.exit(main())
