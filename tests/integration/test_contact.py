"""Decisions on partial answers, on real daemons: a hypervisor minion that is down, and a source
minion too busy to answer anything but its own job's return."""
import json
import os
import signal
import threading
import time

import vmlab

from .test_migrate import orch_state


def _orch(salt_run_cli, **pillar):
    return salt_run_cli.run("state.orch", "migrate", f"pillar={json.dumps(pillar)}")


def _minion_pids(lab, host):
    """The salt-minion processes running in ``host`` now (picked by its mount namespace)."""
    mntns = vmlab._mntns(lab.holder_pid(host))  # pylint: disable=protected-access
    found = []
    for pid in vmlab._pids():  # pylint: disable=protected-access
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if b"cli_salt_minion" in cmdline and vmlab._mntns(pid) == mntns:  # pylint: disable=protected-access
            found.append(pid)
    return found


def test_a_hypervisor_minion_down_blocks_the_decision(vdisk_on_host1, minions, lab,
                                                      salt_run_cli):
    minions["host2"].terminate()
    try:
        where = salt_run_cli.run("vmigrate.locate", "vdisk")
        assert where.returncode != 0  # an incomplete answer is not a clean one
        assert "host2" in where.data["unaccounted"], where.data
        assert "did not answer" in where.data["unaccounted"]["host2"]
        ret = _orch(salt_run_cli, vm="vdisk", dest="host2")
        assert ret.returncode != 0, ret
        comment = orch_state(ret)["comment"]
        assert "could not verify host2 (did not answer within" in comment, comment
        assert "may run there, so nothing was moved" in comment
        assert lab.running_on() == ["host1"]
    finally:
        minions["host2"].start(start_timeout=120)
    vmlab.wait_for("host2 to answer again", lambda: salt_run_cli.run(
        "vmigrate.locate", "vdisk").returncode == 0, 60, 1)


def test_a_source_minion_slow_to_answer_is_waited_for_not_failed(vdisk_on_host1, lab,
                                                                 salt_run_cli):
    """The source's salt-minion daemon freezes for 20 s while it migrates (an overloaded host):
    it answers no saltutil.find_job ping, and in Salt 3008 its job's return also waits for it
    (returns travel through the daemon). The old runner gave up after 15 s and one missed
    ping and reported a failure; the flow waits for the job's own return instead."""
    daemon = _minion_pids(lab, "host1")
    assert daemon, "no salt-minion found in host1"
    outcome = {}
    started = time.monotonic()
    worker = threading.Thread(target=lambda: outcome.update(
        ret=_orch(salt_run_cli, vm="vdisk", dest="host2")))
    worker.start()
    stopped = []
    try:
        lab.incoming_qemu("host2")
        for pid in daemon:  # the job runs in a process of its own, started before this
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        time.sleep(20)  # beyond the old 15 s window
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        worker.join(150)
    took = time.monotonic() - started
    ret = outcome["ret"]
    state = orch_state(ret)
    assert ret.returncode == 0, state["comment"]
    assert state["changes"]["host"] == {"old": "host1", "new": "host2"}
    assert took > 20, took
    assert lab.running_on() == ["host2"]


def test_two_requests_for_one_vm_the_second_fails_fast_naming_the_first(vdisk_on_host1, lab,
                                                                        salt_master,
                                                                        salt_run_cli):
    outcome = {}
    # A CLI object of its own: salt-factories' CLI keeps each run's state on the instance.
    other_cli = salt_master.salt_run_cli(timeout=180)
    # 2 MiB/s cannot move the guest in 8 s: the first request stays busy, then aborts.
    first = threading.Thread(target=lambda: outcome.update(
        ret=_orch(other_cli, vm="vdisk", dest="host2", bandwidth=2, timeout=8)))
    first.start()
    try:
        lab.incoming_qemu("host2")
        started = time.monotonic()
        second = _orch(salt_run_cli, vm="vdisk", dest="host2")
        took = time.monotonic() - started
    finally:
        first.join(120)
    assert second.returncode != 0
    comment = orch_state(second)["comment"]
    assert "vm vdisk is already being migrated: vdisk host1 -> host2 by state" in comment
    assert took < 10, took  # refused at once, without waiting for the first
    assert "aborted after the 8s timeout" in orch_state(outcome["ret"])["comment"]
    assert lab.running_on() == ["host1"]
