"""Master-side locks on real files with real flock: one migration per VM, per-host caps, a
killed holder's lock recovered and reported, everything released on every way out."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.support.modload import REPO, load

locks = load("_utils", "vmigrate_locks")


@pytest.fixture
def opts(tmp_path):
    return {"cachedir": str(tmp_path), "vmigrate": {"max_outgoing": 1, "max_incoming": 2}}


def test_one_migration_per_vm_names_the_running_one(opts):
    with locks.hold(opts, "vdisk", trigger="reactor", jid="j1") as first:
        first.take_slots("host1", "host2")
        with pytest.raises(locks.Busy, match=r"vm vdisk is already being migrated: vdisk host1 "
                                             r"-> host2 by reactor \(pid \d+\) since 20"):
            with locks.hold(opts, "vdisk"):
                pass
    with locks.hold(opts, "vdisk") as again:  # released on the way out
        assert again.recovered == []


def test_a_rename_holds_the_new_name_too_and_takes_nothing_when_it_is_held(opts):
    with locks.hold(opts, "vdisk", trigger="cli", dname="vdisk-new") as held:
        held.take_slots("host1", "host2")
        for name in ("vdisk", "vdisk-new"):
            with pytest.raises(locks.Busy, match=r"already being migrated: vdisk host1 -> "
                                                 r"host2 by cli"):
                with locks.hold(opts, name):
                    pass
    with locks.hold(opts, "other", dname="vdisk"):
        with pytest.raises(locks.Busy, match="vm vdisk is already being migrated: other"):
            with locks.hold(opts, "vdisk-new", dname="vdisk"):
                pass
        # The refused request let go of its own name on the way out.
        with locks.hold(opts, "vdisk-new"):
            pass


def test_host_caps_and_their_release(opts):
    with locks.hold(opts, "a") as a:
        a.take_slots("host1", "host2")
        with locks.hold(opts, "b") as b:
            with pytest.raises(locks.Busy, match=r"host1 already sends 1 migration\(s\) "
                                                 r"\(master config vmigrate:max_outgoing\): "
                                                 r"a host1 -> host2"):
                b.take_slots("host1", "host3")
            b.take_slots("host3", "host2")  # host2 takes two incoming
            with locks.hold(opts, "c") as c:
                with pytest.raises(locks.Busy, match="host2 already receives 2 migration"):
                    c.take_slots("host4", "host2")
                c.take_slots("host4", "host5")  # a refused take left nothing held
    with locks.hold(opts, "d") as d:
        d.take_slots("host1", "host2")


def test_released_when_the_block_raises(opts):
    with pytest.raises(RuntimeError):
        with locks.hold(opts, "vdisk") as held:
            held.take_slots("host1", "host2")
            raise RuntimeError("migration blew up")
    with locks.hold(opts, "vdisk") as held:
        held.take_slots("host1", "host2")
        assert held.recovered == []


def test_a_killed_holders_lock_is_recovered_and_reported(opts):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.support.modload import load
        locks = load("_utils", "vmigrate_locks")
        with locks.hold({opts!r}, "vdisk", trigger="schedule") as held:
            held.take_slots("host1", "host2")
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(locks.Busy, match="by schedule"):
            with locks.hold(opts, "vdisk"):
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    with locks.hold(opts, "vdisk") as held:
        held.take_slots("host1", "host2")
        holders = {(r["trigger"], r["pid"]) for r in held.recovered}
        assert holders == {("schedule", proc.pid)}, held.recovered
        assert len(held.recovered) == 3  # the VM lock and both host slots


def test_bad_caps_are_refused(opts):
    opts["vmigrate"]["max_outgoing"] = 0
    with pytest.raises(locks.CommandExecutionError, match="vmigrate:max_outgoing"):
        with locks.hold(opts, "vdisk"):
            pass
