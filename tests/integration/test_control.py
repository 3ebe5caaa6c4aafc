"""Watching and steering migrations on real daemons: progress lines at the salt-run terminal,
salt-run vmigrate.jobs / abort / watch, the convergence policy's timeout action, and the
static modes cold and save."""
import json
import subprocess
import time

from tests.support import labsalt

import vmlab

from .test_faults import _assert_one_intact_copy, _state_on
from .test_migrate import assert_guest_went_on, counter_before, orch_state

SALT_RUN = labsalt.REPO / ".venv" / "bin" / "salt-run"


def _salt_run_argv(salt_master, *args):
    """The command a person types: the real ``salt-run`` script (its name is how vmigrate
    knows a terminal waits), with this master's configuration."""
    argv = salt_master.salt_run_cli().cmdline(*args)
    script = next(i for i, a in enumerate(argv) if a.endswith("cli_salt_run.py"))
    return [str(SALT_RUN), *argv[script + 1:]]


def _popen(salt_master, *args):
    return subprocess.Popen(_salt_run_argv(salt_master, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _progress_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("[vmigrate] ")]


def test_progress_lines_reach_the_terminal_of_salt_run_and_state_orch(vdisk_on_host1, lab,
                                                                      salt_master):
    # The runner, throttled so the copy is seen under way (the guest dirties its working set
    # faster than 20 MiB/s: a 2 s pause lets the last pass through).
    proc = _popen(salt_master, "vmigrate.migrate", "vdisk", "host2", "bandwidth=20",
                  "options={max_downtime: 2000}")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, (out, err)
    lines = _progress_lines(err)
    assert lines[0].startswith("[vmigrate] vdisk host1 -> host2: started"), lines
    assert lines[-1].startswith("[vmigrate] vdisk host1 -> host2: completed"), lines
    running = [line for line in lines if ": running " in line and "%" in line]
    # (libvirt may not have a rate yet at the first poll)
    assert any("MiB left" in line and "MiB/s" in line for line in running), lines
    assert json.loads(out)["status"] == "migrated"  # stdout stays the result alone
    # The orchestration, back: the same lines from inside state.orch.
    pillar = json.dumps({"vm": "vdisk", "dest": "host1"})
    proc = _popen(salt_master, "state.orch", "migrate", f"pillar={pillar}")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, (out, err)
    lines = _progress_lines(err)
    assert any(": completed " in line and "host2 -> host1" in line for line in lines), err
    # Not from the reactor's or salt-api's runs, nor salt-run --quiet: no terminal waits there.
    proc = _popen(salt_master, "vmigrate.migrate", "vdisk", "host2", "--quiet")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0 and _progress_lines(err) == [], err


def test_jobs_lists_and_abort_stops_a_migration_leaving_the_guest_on_its_source(
        vdisk_on_host1, lab, salt_master, salt_run_cli):
    before = counter_before(lab, "host1")
    assert salt_run_cli.run("vmigrate.jobs").data["jobs"] == []
    migration = _popen(salt_master, "vmigrate.migrate", "vdisk", "host2", "bandwidth=2",
                       "timeout=120")
    watcher = _popen(salt_master, "vmigrate.watch", "vdisk", "timeout=120")
    try:
        lab.incoming_qemu("host2")
        time.sleep(1.5)
        jobs = salt_run_cli.run("vmigrate.jobs").data
        mine = {(j["vm"], j["host"], j["operation"]): j for j in jobs["jobs"]}
        out = mine[("vdisk", "host1", "migration_out")]
        assert out["route"] == "host1 -> host2" and out["trigger"] == "runner", jobs
        assert 0 < out["percent"] < 100, out
        assert ("vdisk", "host2", "migration_in") in mine, jobs
        assert "vdisk on host1: migration_out host1 -> host2" in jobs["comment"]
        aborted = salt_run_cli.run("vmigrate.abort", "vdisk")
        assert aborted.returncode == 0, aborted
        assert aborted.data["result"] is True and "running here" in aborted.data["comment"]
        result, err = migration.communicate(timeout=120)
        watched, watch_err = watcher.communicate(timeout=60)
    finally:
        migration.kill()
        watcher.kill()
    result = json.loads(result)
    assert result["status"] == "aborted", result
    assert "was aborted on request" in result["comment"], result
    assert "reconciled" not in result  # nothing to repair: one copy, running on its source
    _assert_one_intact_copy(lab, "host1", before)
    # The watcher, started apart from it, followed it to its end.
    watched = json.loads(watched)
    assert watched["status"] == "aborted", watched
    assert any(": running " in line for line in _progress_lines(watch_err)), watch_err
    # Nothing left running, and a second abort says so.
    assert salt_run_cli.run("vmigrate.jobs").data["jobs"] == []
    again = salt_run_cli.run("vmigrate.abort", "vdisk")
    assert again.returncode == 1 and "no migration of vdisk runs now" in again.data["comment"]


def test_timeout_action_pause_converges_where_abort_gives_up(vdisk_on_host1, lab,
                                                             salt_run_cli):
    before = counter_before(lab, "host1")
    # The default action: the capped copy outlives the timeout and is aborted.
    ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2", "bandwidth=16", "timeout=3")
    assert ret.data["status"] == "failed" and "aborted after the 3s timeout" in \
        ret.data["comment"], ret.data
    assert lab.placement() == (["host1"], ["host1"])
    # Pause: the guest stops on host1, the rest is copied, it runs on host2, not paused.
    ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2", "bandwidth=16", "timeout=3",
                           "options={timeout_action: pause}")
    assert ret.returncode == 0, ret.data
    assert ret.data["policy"] == {"timeout_action": "pause", "paused_source": True}, ret.data
    assert lab.placement() == (["host2"], ["host2"])
    assert salt_run_cli.run("vmigrate.locate", "vdisk").data["hosts"]["host2"]["state"] == \
        "running"
    assert_guest_went_on(lab, "host2", before)


def test_timeout_action_postcopy_switches_the_guest_over(vdisk_on_host1, lab, salt_run_cli):
    """Opt-in post-copy: at the timeout the guest runs on host2 and pulls the rest."""
    before = counter_before(lab, "host1")
    ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2", "bandwidth=16", "timeout=3",
                           "options={postcopy: true, timeout_action: postcopy}")
    assert ret.returncode == 0, ret.data
    assert ret.data["policy"] == {"timeout_action": "postcopy", "postcopy": True}, ret.data
    _assert_one_intact_copy(lab, "host2", before)


def test_abort_in_post_copy_says_it_cannot_and_where_the_guest_runs(vdisk_on_host1, lab,
                                                                     salt_master, salt_run_cli):
    """libvirt refuses to abort a post-copy job (VIR_ERR_OPERATION_INVALID, "cannot abort
    migration in post-copy mode"): that refusal is not the job's end. The abort says it
    cannot, names where the guest runs, and the migration completes there."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    before = counter_before(lab, "host1")
    # Post-copy at 3 s, its background copy capped at 4 MiB/s: ~20 s with the guest on host2.
    migration = _popen(salt_master, "vmigrate.migrate", "vdisk", "host2", "bandwidth=16",
                       "timeout=3", "options={postcopy: true, timeout_action: postcopy, "
                                    "postcopy_bandwidth: 4}")
    try:
        vmlab.wait_for("vdisk running on host2 in post-copy", lambda: _state_on(
            lab, "host2") == (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY),
            60, 0.1)
        aborted = salt_run_cli.run("vmigrate.abort", "vdisk")
        assert aborted.returncode != 0, aborted.data
        assert aborted.data["result"] is False, aborted.data
        assert aborted.data["postcopy"] == ["host1"], aborted.data
        assert "is in post-copy and cannot be aborted" in aborted.data["comment"], aborted.data
        assert "(it runs on host2)" in aborted.data["comment"], aborted.data
        # It answered at once, the job untouched: still in post-copy.
        assert _state_on(lab, "host1") == (libvirt.VIR_DOMAIN_PAUSED,
                                           libvirt.VIR_DOMAIN_PAUSED_POSTCOPY)
        result, err = migration.communicate(timeout=180)
    finally:
        migration.kill()
    result = json.loads(result)
    assert result["status"] == "migrated", (result, err)
    _assert_one_intact_copy(lab, "host2", before)


def test_bad_options_are_refused_before_anything_moves(vdisk_on_host1, lab, salt_run_cli):
    for options, words in (({"bogus": 1}, "unknown option 'bogus'"),
                           ({"timeout_action": "postcopy"}, "needs postcopy: true"),
                           ({"force_off": True}, "do not apply to mode=live")):
        pillar = json.dumps({"vm": "vdisk", "dest": "host2", "options": options})
        ret = salt_run_cli.run("state.orch", "migrate", f"pillar={pillar}")
        assert ret.returncode != 0
        assert words in orch_state(ret)["comment"], orch_state(ret)
    assert lab.placement() == (["host1"], ["host1"])
    assert salt_run_cli.run("vmigrate.jobs").data["jobs"] == []


def test_save_mode_moves_the_guest_with_its_memory_no_restart(vdisk_on_host1, lab,
                                                              salt_run_cli):
    before = counter_before(lab, "host1")
    pillar = json.dumps({"vm": "vdisk", "dest": "host2", "mode": "save"})
    ret = salt_run_cli.run("state.orch", "migrate", f"pillar={pillar}")
    assert ret.returncode == 0, orch_state(ret)
    numbers = orch_state(ret)["changes"]["migration"]
    assert numbers["bytes"] > 0 and numbers["downtime_ms"] > 0, numbers
    assert set(numbers["policy"]) == {"save_s", "restore_s"}, numbers
    # Same memory: the counter goes on from where it stopped, intact (continuous, bad=0).
    _assert_one_intact_copy(lab, "host2", before)
    assert not list(lab.export_dir.glob(".vmigrate-save-*")), "the save file was left behind"


def test_cold_mode_shuts_down_moves_and_starts(guest, lab, salt_run_cli):
    """Guests of their own, so vdisk's console stays one continuous count for the others."""
    name = "vcold"
    try:
        # A guest that honours the power button: a graceful shutdown on host1, a fresh boot on
        # host2 (its counter starts again there).
        lab.remove_guest_everywhere(name)
        lab.create_guest("host1", name=name)
        lab.wait_counter(name, timeout=90)
        pillar = json.dumps({"vm": name, "dest": "host2", "mode": "cold"})
        ret = salt_run_cli.run("state.orch", "migrate", f"pillar={pillar}")
        assert ret.returncode == 0, orch_state(ret)
        assert orch_state(ret)["changes"]["migration"]["policy"]["forced_off"] is False
        assert lab.placement(name) == (["host2"], ["host2"])
        assert "power button: powering off" in lab.console_log(name).read_text()
        lines = lab.counter_lines_on("host2", name, count=1)
        assert lines[0][0] < 30, lines
        # A guest that ignores the power button: refused after the wait, still running; then
        # force_off powers it off after the wait and it starts on host2.
        lab.remove_guest_everywhere(name)
        lab.create_guest("host1", name=name, power_button=False)
        pillar = {"vm": name, "dest": "host2", "mode": "cold",
                  "options": {"shutdown_timeout": 2}}
        ret = salt_run_cli.run("state.orch", "migrate", f"pillar={json.dumps(pillar)}")
        assert ret.returncode != 0
        comment = orch_state(ret)["comment"]
        assert "did not shut down within 2s" in comment and "force_off" in comment, comment
        assert lab.placement(name) == (["host1"], ["host1"])
        # ... and option dname: it starts on host2 under its new name.
        pillar["options"].update(force_off=True, dname=f"{name}-new")
        ret = salt_run_cli.run("state.orch", "migrate", f"pillar={json.dumps(pillar)}")
        assert ret.returncode == 0, orch_state(ret)
        assert orch_state(ret)["changes"]["migration"]["policy"]["forced_off"] is True
        assert lab.placement(f"{name}-new") == (["host2"], ["host2"])
        assert lab.placement(name) == ([], [])
    finally:
        lab.remove_guest_everywhere(name)
        lab.remove_guest_everywhere(f"{name}-new")
