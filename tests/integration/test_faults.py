"""Faults in the middle of a live migration, on real daemons. After each: the guest runs on
exactly one host and is defined on exactly one, its image passes qemu-img check, its counter is
continuous with bad=0, the orchestration exited non-zero naming the cause, and a retried
migration succeeds."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import vmlab
from tests.support import labsalt

from .test_contact import _minion_pids
from .test_migrate import assert_guest_went_on, counter_before, orch_state


def _assert_one_intact_copy(lab, host, before):
    running, defined = lab.placement()
    assert (running, defined) == ([host], [host]), (running, defined)
    image = lab.export_dir / "vdisk.qcow2"
    check = vmlab.run(["qemu-img", "check", "-U", image], check=False, capture=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert_guest_went_on(lab, host, before)


def _during_migration(lab, salt_master, fault, bandwidth=2, timeout=120):
    """Start a throttled live migration host1 -> host2 and run ``fault`` once the incoming
    domain exists; return the orchestration's result."""
    cli = salt_master.salt_run_cli(timeout=240)
    outcome = {}
    pillar = json.dumps({"vm": "vdisk", "dest": "host2", "bandwidth": bandwidth,
                         "timeout": timeout})
    worker = threading.Thread(target=lambda: outcome.update(
        ret=cli.run("state.orch", "migrate", f"pillar={pillar}")))
    worker.start()
    try:
        lab.incoming_qemu("host2")
        time.sleep(1)
        fault()
    finally:
        worker.join(240)
    return outcome["ret"]


def _retry_succeeds(salt_run_cli, lab, dest="host2"):
    """A new migration request works again (to ``dest``: host1 when the fault's migration
    completed on its own)."""
    pillar = json.dumps({"vm": "vdisk", "dest": dest})
    ret = salt_run_cli.run("state.orch", "migrate", f"pillar={pillar}")
    assert ret.returncode == 0, orch_state(ret)["comment"]
    assert lab.placement() == ([dest], [dest])


def test_destination_libvirtd_killed_mid_copy(vdisk_on_host1, lab, salt_master, salt_run_cli):
    before = counter_before(lab, "host1")

    def kill():
        pid = int(lab.host_path("host2", "/run/libvirtd.pid").read_text())
        os.kill(pid, signal.SIGKILL)

    try:
        ret = _during_migration(lab, salt_master, kill)
    finally:
        lab.libvirtd_up("host2")
        lab.wait_hypervisors_ready(["host2"])
    assert ret.returncode != 0
    comment = orch_state(ret)["comment"]
    assert "migration of vdisk from host1 to host2 failed" in comment
    assert "libvirt error code" in comment, comment
    # With host2's libvirtd down, nothing could be concluded about host2, so nothing was
    # repaired there...
    assert "reconciled: vdisk: could not verify host2" in comment, comment
    # ...and libvirt 11.3, restarted, re-attaches the surviving incoming QEMU: a paused copy
    # stays on host2. Once host2 answers, reconcile removes it.
    ret = salt_run_cli.run("vmigrate.reconcile", "vdisk")
    assert ret.returncode == 0, ret
    assert all(a["host"] == "host2" and a["done"] for a in ret.data["actions"]), ret.data
    _assert_one_intact_copy(lab, "host1", before)
    _retry_succeeds(salt_run_cli, lab)


def test_destination_link_down_mid_copy(vdisk_on_host1, lab, salt_master, salt_run_cli):
    before = counter_before(lab, "host1")
    try:
        ret = _during_migration(
            lab, salt_master, lambda: lab.host_run("host2", ["ip", "link", "set", "eth0", "down"]))
    finally:
        lab.host_run("host2", ["ip", "link", "set", "eth0", "up"])
    assert ret.returncode != 0
    comment = orch_state(ret)["comment"]
    # The source's keepalive gives up on the silent peer, or the data stream breaks: either
    # way libvirt's error, and where the guest is now.
    assert "libvirt error code" in comment and "now: host1: running" in comment, comment
    # host2 kept its half-made incoming domain while cut off; its libvirtd drops it once the
    # source connection is gone.
    vmlab.wait_for("host2 to drop the incoming domain", lambda: "host2" not in lab.running_on(),
                   60, 0.5)
    _assert_one_intact_copy(lab, "host1", before)
    vmlab.wait_for("host2's minion back", lambda: salt_run_cli.run(
        "vmigrate.locate", "vdisk").returncode == 0, 90, 1)
    _retry_succeeds(salt_run_cli, lab)


def test_source_libvirtd_restarted_mid_copy(vdisk_on_host1, lab, salt_master, salt_run_cli):
    before = counter_before(lab, "host1")
    ret = _during_migration(lab, salt_master, lambda: lab.libvirtd_restart("host1"))
    assert ret.returncode != 0
    comment = orch_state(ret)["comment"]
    assert "migration of vdisk from host1 to host2 failed" in comment, comment
    vmlab.wait_for("host2 to drop the incoming domain", lambda: "host2" not in lab.running_on(),
                   60, 0.5)
    running, _ = lab.placement()
    if running != ["host1"]:
        pytest.fail(f"after the source libvirtd restart vdisk runs on {running}: {comment}")
    _assert_one_intact_copy(lab, "host1", before)
    _retry_succeeds(salt_run_cli, lab)


def _lift_cap(lab, host):
    """Let the running migration job on ``host`` go at full speed, and allow it a longer final
    pause, so it completes however loaded the machine is (asked of libvirt directly: the job
    outlives the client that started it). A run on a machine busy with another lab's guest
    kept copying for minutes with the speed alone."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    conn = libvirt.open(lab.libvirt_uri(host))
    try:
        dom = conn.lookupByName("vdisk")
        dom.migrateSetMaxSpeed(100_000, 0)
        dom.migrateSetMaxDowntime(5000, 0)
    finally:
        conn.close()


def _settles_on(lab, host):
    vmlab.wait_for(f"vdisk to settle on {host} alone",
                   lambda: lab.placement() == ([host], [host]), 90, 0.5)


@pytest.fixture
def short_abort_deadline(lab, pillar_dir, salt_cli):
    """host1's minion gives an abort 5 s (default 30): the master's wait for a lost return,
    timeout + 2 x abort_deadline + return_margin, becomes 8 + 10 + 10 s."""
    with labsalt.host1_pillar(lab, pillar_dir, salt_cli, abort_deadline=5):
        yield


def test_source_salt_minion_killed_mid_migration(vdisk_on_host1, short_abort_deadline, minions,
                                                 lab, salt_master, salt_run_cli):
    before = counter_before(lab, "host1")

    def kill():
        pids = _minion_pids(lab, "host1")  # the daemon and the process running the job
        assert len(pids) >= 2, pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # libvirt 11.3 goes on with a peer-to-peer migration whose client is gone (the whole
        # job runs inside the source daemon's one API call); let it finish soon.
        _lift_cap(lab, "host1")

    try:
        ret = _during_migration(lab, salt_master, kill, timeout=8)
    finally:
        minions["host1"].terminate()
        minions["host1"].start(start_timeout=120)
    assert ret.returncode != 0
    comment = orch_state(ret)["comment"]
    assert "no return from host1 within 28s" in comment, comment
    assert "may still be running" in comment and "host1: could not verify" in comment, comment
    _settles_on(lab, "host2")
    vmlab.wait_for("host1's minion back", lambda: salt_run_cli.run(
        "vmigrate.locate", "vdisk").returncode == 0, 90, 1)
    rec = salt_run_cli.run("vmigrate.reconcile", "vdisk")
    assert rec.returncode == 0 and rec.data["actions"] == [], rec.data
    _assert_one_intact_copy(lab, "host2", before)
    _retry_succeeds(salt_run_cli, lab, dest="host1")


def _as_from_a_terminal():
    """In the child before exec: Ctrl-C as a terminal delivers it. A test session started in
    the background (``make test &``) ignores SIGINT, salt-run would inherit that, and Salt
    installs its handler only over the default one, so the Ctrl-C below would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_orchestration_interrupted_on_the_master(vdisk_on_host1, lab, salt_master,
                                                 salt_run_cli):
    before = counter_before(lab, "host1")
    started = time.time()
    pillar = json.dumps({"vm": "vdisk", "dest": "host2", "bandwidth": 2, "timeout": 120})
    argv = salt_master.salt_run_cli().cmdline("state.orch", "migrate", f"pillar={pillar}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_as_from_a_terminal)
    try:
        lab.incoming_qemu("host2")
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0, out
    assert "interrupted on the master while vdisk migrates from host1 to host2" in out, out
    # The lock ended with salt-run; the job did not. A second request and a reconcile, at
    # once, are refused naming it (a reconcile would destroy host2's incoming copy).
    assert lab.running_on() == ["host1", "host2"], "the migration ended already"
    again = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2")
    assert again.returncode != 0 and again.data["status"] == "refused", again.data
    assert "vm vdisk is in flight: job " in again.data["comment"], again.data
    assert "on host1 -> host2" in again.data["comment"], again.data
    rec = salt_run_cli.run("vmigrate.reconcile", "vdisk")
    assert rec.returncode != 0 and "vm vdisk is in flight: job " in rec.data["comment"], rec.data
    assert "vdisk: in flight, job " in salt_run_cli.run("vmigrate.jobs").data["comment"]
    assert lab.running_on() == ["host1", "host2"]
    # The migration is the source minion's job: it goes on, within its own timeout.
    _lift_cap(lab, "host1")
    _settles_on(lab, "host2")
    events = salt_master.event_listener.get_events([(salt_master.id, "vmigrate/vdisk/result")],
                                                   after_time=started)
    # The interrupted request's outcome, then the second request's refusal.
    assert [e.data["status"] for e in sorted(events, key=lambda e: e.stamp)] == [
        "unknown", "refused"], [e.data for e in events]
    _assert_one_intact_copy(lab, "host2", before)
    _retry_succeeds(salt_run_cli, lab, dest="host1")


def test_destination_storage_not_mounted_is_refused_before_anything_moves(
        vdisk_on_host1, lab, salt_cli, salt_run_cli):
    before = counter_before(lab, "host1")
    lab.host_run("host2", ["umount", str(lab.mountpoint)])
    try:
        ret = salt_run_cli.run("state.orch", "migrate", 'pillar={"vm": "vdisk", "dest": "host2"}')
        assert ret.returncode != 0
        comment = orch_state(ret)["comment"]
        assert "precheck refused the migration of 'vdisk', nothing was moved" in comment, comment
        assert (f"host2's libvirtd does not see the sentinel host1 wrote in {lab.mountpoint}"
                in comment), comment
        assert "Fix: mount the shared storage on host2 at the same path" in comment
        assert "state.apply vmigrate.nfs.client on host2" in comment
        _assert_one_intact_copy(lab, "host1", before)
        # The probe left nothing behind on the shared storage.
        assert not list(lab.export_dir.glob(".vmigrate-probe-*"))
    finally:
        ret = salt_cli.run("state.apply", "vmigrate.nfs.client", minion_tgt="host2")
        assert ret.returncode == 0, ret
    assert lab.is_mounted("host2", lab.mountpoint)
    _retry_succeeds(salt_run_cli, lab)


def test_offline_request_for_a_running_vm_is_refused(vdisk_on_host1, lab, salt_run_cli):
    before = counter_before(lab, "host1")
    ret = salt_run_cli.run("state.orch", "migrate",
                           'pillar={"vm": "vdisk", "dest": "host2", "mode": "offline"}')
    assert ret.returncode != 0
    comment = orch_state(ret)["comment"]
    assert "running on host1" in comment and "mode=live" in comment, comment
    _assert_one_intact_copy(lab, "host1", before)
    _retry_succeeds(salt_run_cli, lab)


def test_save_mode_with_the_destination_libvirtd_killed_during_the_restore(
        vdisk_on_host1, lab, salt_master, salt_run_cli):
    """Lost contact is not a refusal: host2's libvirtd dies once the saved guest is defined
    there (before or during its restore). The source reads host2 again before acting, fences
    the save file, and the guest ends running on exactly one host and defined on one, its
    memory continuous, no save file left behind."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    before = counter_before(lab, "host1")
    cli = salt_master.salt_run_cli(timeout=240)
    outcome = {}
    pillar = json.dumps({"vm": "vdisk", "dest": "host2", "mode": "save"})
    worker = threading.Thread(target=lambda: outcome.update(
        ret=cli.run("state.orch", "migrate", f"pillar={pillar}")))

    def defined_on_host2():
        try:
            conn = libvirt.open(lab.libvirt_uri("host2"))
        except libvirt.libvirtError:
            return False
        try:
            conn.lookupByName("vdisk")
            return True
        except libvirt.libvirtError:
            return False
        finally:
            conn.close()

    worker.start()
    try:
        vmlab.wait_for("vdisk defined on host2", defined_on_host2, 60, 0.02)
        os.kill(int(lab.host_path("host2", "/run/libvirtd.pid").read_text()), signal.SIGKILL)
        time.sleep(2)
    finally:
        lab.libvirtd_up("host2")
        lab.wait_hypervisors_ready(["host2"])
        worker.join(240)
    state = orch_state(outcome["ret"])
    # Either outcome is true to what happened, and neither leaves a second copy.
    running, defined = lab.placement()
    print(f"save with host2's libvirtd killed: on {running}: {state['comment']}")
    assert len(running) == 1 and running == defined, (running, defined, state["comment"])
    if running == ["host1"]:
        assert outcome["ret"].returncode != 0, state
        assert "lost contact" in state["comment"] and "restored running on host1" in \
            state["comment"], state["comment"]
    else:
        assert outcome["ret"].returncode == 0, state
    assert not list(lab.export_dir.glob(".vmigrate-save-*")), "a save file was left behind"
    _assert_one_intact_copy(lab, running[0], before)


def _state_on(lab, host, name="vdisk"):
    """(state, reason) codes of ``name`` on ``host``, asked of libvirt directly; None if absent."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    conn = libvirt.open(lab.libvirt_uri(host))
    try:
        return tuple(conn.lookupByName(name).state())
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def test_link_down_in_post_copy_keeps_both_halves(guest, lab, salt_master, salt_run_cli):
    """The risk post-copy carries: the link breaks while the guest already runs on host2 and
    pulls its pages from host1. libvirt leaves host1's copy paused and host2's running; vmigrate
    stops and resumes neither half (either would lose the guest), then or later. A guest of
    its own: this one cannot be saved here (docs, 'When the network breaks in post-copy':
    libvirt 11.3's recovery crashes)."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    name = "vpost"
    cli = salt_master.salt_run_cli(timeout=240)
    outcome = {}
    split = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
    try:
        lab.remove_guest_everywhere(name)
        lab.create_guest("host1", name=name)
        # 1 MiB/s after the switch to post-copy: the guest runs on host2 long before it has its
        # memory.
        worker = threading.Thread(target=lambda: outcome.update(ret=cli.run(
            "vmigrate.migrate", name, "host2", "bandwidth=16", "timeout=3",
            "options={postcopy: true, timeout_action: postcopy, postcopy_bandwidth: 1}")))
        worker.start()
        try:
            vmlab.wait_for(f"{name} running on host2 in post-copy", lambda: _state_on(
                lab, "host2", name) == (libvirt.VIR_DOMAIN_RUNNING,
                                        libvirt.VIR_DOMAIN_RUNNING_POSTCOPY), 60, 0.1)
            lab.host_run("host2", ["ip", "link", "set", "eth0", "down"])
            # host1's libvirtd gives up on host2 at its keepalive timeout.
            vmlab.wait_for("host1 to fail the post-copy", lambda: _state_on(
                lab, "host1", name) == split, 60, 0.2)
            # The first step of libvirt's recovery (virsh domjobabort --postcopy): QEMU stops
            # sending, so the stream cannot quietly complete once the link is back.
            conn = libvirt.open(lab.libvirt_uri("host1"))
            try:
                conn.lookupByName(name).abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
            finally:
                conn.close()
        finally:
            lab.host_run("host2", ["ip", "link", "set", "eth0", "up"])
            worker.join(120)
        ret = outcome["ret"]
        assert ret.returncode != 0 and ret.data["status"] == "failed", ret.data
        # Whether host2 answered again in time or not, the failed migration repaired nothing.
        assert not any(a.get("done") for a in ret.data["reconciled"].get("actions", [])), ret.data
        there = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED)
        assert _state_on(lab, "host1", name) == split
        vmlab.wait_for("host2 to see the failed post-copy", lambda: _state_on(
            lab, "host2", name) == there, 60, 0.5)
        vmlab.wait_for("host2's minion back", lambda: salt_run_cli.run(
            "vmigrate.locate", name).data.get("unaccounted") == {}, 90, 1)
        # With every host answering, nothing may break it up: reconcile (the repair the failed
        # migration could not make while host2 was silent) and a new migration refuse.
        rec = salt_run_cli.run("vmigrate.reconcile", name)
        assert rec.returncode != 0, rec.data
        assert "memory is split between the hosts" in rec.data["comment"], rec.data
        assert rec.data["actions"] == []
        again = salt_run_cli.run("vmigrate.migrate", name, "host1")
        assert again.data["status"] == "refused" and "post-copy recovery" in again.data["comment"]
        assert _state_on(lab, "host1", name) == split
        assert _state_on(lab, "host2", name) == there
    finally:
        lab.remove_guest_everywhere(name)
