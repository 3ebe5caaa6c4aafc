"""Live and offline migration through `salt-run state.orch migrate` on real daemons."""
import json
import os
import signal
import threading
import time

import vmguest
import vmlab


def _orch(salt_run_cli, **pillar):
    return salt_run_cli.run("state.orch", "migrate", f"pillar={json.dumps(pillar)}")


def orch_state(ret):
    """The one state result (result, comment, changes) inside a state.orch return."""
    data = ret.data
    states = data.get("data", data)
    states = next(iter(states.values())) if len(states) == 1 else states
    return next(iter(states.values()))


def counter_before(lab, host, name="vdisk"):
    """The guest's last counter, read while it verifiably runs on ``host``."""
    return lab.counter_lines_on(host, name, count=1)[-1][0]


def assert_guest_went_on(lab, host, since, name="vdisk"):
    """The guest counts on ``host`` (verified there), past ``since``, and the whole console
    log is continuous with its memory intact."""
    after = lab.counter_lines_on(host, name, count=3)
    assert after[0][0] > since, (after, since)
    lines = lab.counter_lines(name)
    numbers = [n for n, _ in lines]
    assert vmguest.continuous(numbers), numbers
    assert all(bad == 0 for _, bad in lines), lines[-5:]


def test_live_migration_round_trip_keeps_guest_running(vdisk_on_host1, lab, salt_run_cli,
                                                       salt_master):
    for source, dest in (("host1", "host2"), ("host2", "host1")):
        before = counter_before(lab, source)
        started = time.time()
        ret = _orch(salt_run_cli, vm="vdisk", dest=dest)
        assert ret.returncode == 0, ret
        state = orch_state(ret)
        assert state["result"] is True, state
        assert state["changes"]["host"] == {"old": source, "new": dest}
        result = state["changes"]["migration"]
        assert result["downtime_ms"] is not None and 0 <= result["downtime_ms"] < 5000
        assert result["elapsed"] > 0 and result["bytes"] > 0 and result["iterations"] >= 1
        assert lab.running_on() == [dest]
        where = salt_run_cli.run("vmigrate.locate", "vdisk").data
        assert where["running"] == [dest] and where["defined"] == [dest]
        # Progress from the source minion and the result from the runner reach the master.
        def arrived():
            events = salt_master.event_listener.get_events(
                [(salt_master.id, "vmigrate/vdisk/progress"),
                 (salt_master.id, "vmigrate/vdisk/result")], after_time=started)
            tags = [e.tag for e in events]
            done = any(e.tag.endswith("/progress") and e.data["data"]["phase"] == "completed"
                       for e in events)
            return events if done and "vmigrate/vdisk/result" in tags else None

        events = vmlab.wait_for("progress and result events", arrived, 15, 0.2)
        tags = [e.tag for e in events]
        assert "vmigrate/vdisk/result" in tags and "vmigrate/vdisk/progress" in tags, tags
        # A minion's event.send reaches the master as {"id": <minion>, "data": <payload>}.
        progress = [e.data for e in events if e.tag == "vmigrate/vdisk/progress"]
        assert all(p["id"] == source for p in progress), progress
        phases = [p["data"]["phase"] for p in sorted(progress, key=lambda p: p["data"]["seq"])]
        assert phases[0] == "started" and phases[-1] == "completed", phases
        final = [e.data for e in events if e.tag == "vmigrate/vdisk/result"]
        assert len(final) == 1, final  # exactly one result event per request
        assert final[0]["dest"] == dest and final[0]["downtime_ms"] == result["downtime_ms"]
        assert final[0]["status"] == "migrated" and final[0]["trigger"] == "state"
        # Verified from the source's own reading of both libvirtds, without a second ask,
        # and that reading agrees with the lab's and the master's above.
        assert final[0]["verified_by"] == source, final[0]
        assert final[0]["after"]["running"] == [dest] and final[0]["after"]["hosts"].keys() \
            == {dest}
        # The guest keeps counting on the destination, without a gap and with memory intact.
        assert_guest_went_on(lab, dest, before)


def test_dname_renames_the_guest_on_the_destination_and_back(vdisk_on_host1, lab,
                                                            salt_run_cli):
    before = counter_before(lab, "host1")
    try:
        pillar = json.dumps({"vm": "vdisk", "dest": "host2", "options": {"dname": "vdisk-new"}})
        ret = salt_run_cli.run("state.orch", "migrate", f"pillar={pillar}")
        assert ret.returncode == 0, ret
        state = orch_state(ret)
        assert "vdisk migrated live from host1 to host2 as vdisk-new" in state["comment"]
        assert state["changes"]["name"] == {"old": "vdisk", "new": "vdisk-new"}
        # One copy, under its new name, running and defined there only (libvirt's, asked
        # directly); nothing of the old name anywhere.
        assert lab.running_on("vdisk-new") == ["host2"] and lab.running_on("vdisk") == []
        where = salt_run_cli.run("vmigrate.locate", "vdisk-new").data
        assert where["running"] == ["host2"] and where["defined"] == ["host2"], where
        assert salt_run_cli.run("vmigrate.locate", "vdisk").data["hosts"] == {}
        # The same guest goes on counting there: memory kept.
        after = lab.counter_lines_on("host2", "vdisk-new", count=2, console="vdisk")
        assert after[0][0] > before, (after, before)
        # And back under its old name, through the runner.
        ret = salt_run_cli.run("vmigrate.migrate", "vdisk-new", "host1",
                               "options={dname: vdisk}")
        assert ret.returncode == 0 and ret.data["status"] == "migrated", ret.data
        assert lab.running_on("vdisk-new") == [] and lab.running_on("vdisk") == ["host1"]
        assert_guest_went_on(lab, "host1", after[-1][0])
    finally:
        if lab.running_on("vdisk-new"):  # a failure above: put it back for the next tests
            salt_run_cli.run("vmigrate.migrate", "vdisk-new", "host1", "options={dname: vdisk}")


def test_offline_migration_moves_a_shut_off_definition(guest, lab, salt_run_cli, salt_cli):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    conn = libvirt.open(lab.libvirt_uri("host1"))
    try:
        conn.defineXML(lab.guest_xml("voff"))
    finally:
        conn.close()
    try:
        ret = _orch(salt_run_cli, vm="voff", dest="host2", mode="offline")
        assert ret.returncode == 0, ret
        state = orch_state(ret)
        assert state["result"] is True and "migrated offline" in state["comment"]
        assert state["changes"]["host"] == {"old": "host1", "new": "host2"}
        where = salt_run_cli.run("vmigrate.locate", "voff").data
        assert where["defined"] == ["host2"] and where["running"] == []
        assert where["hosts"]["host2"]["state"] == "shutoff"
        # A live migration of a shut-off domain is refused with a hint, nothing changes.
        ret = salt_cli.run("vmigrate.migrate", "voff", "host1", minion_tgt="host2")
        assert ret.returncode != 0 and "use mode=offline" in str(ret.data)
        assert salt_run_cli.run("vmigrate.locate", "voff").data["defined"] == ["host2"]
    finally:
        for host in vmlab.HYPERVISORS:
            conn = libvirt.open(lab.libvirt_uri(host))
            try:
                conn.lookupByName("voff").undefine()
            except libvirt.libvirtError:
                pass
            finally:
                conn.close()


def _assert_refused(ret, lab, salt_run_cli, words):
    assert ret.returncode != 0, ret
    state = orch_state(ret)
    assert state["result"] is False and state["changes"] == {}
    for word in words:
        assert word in state["comment"], state["comment"]
    where = salt_run_cli.run("vmigrate.locate", "vdisk").data
    assert where["running"] == ["host1"] and where["defined"] == ["host1"]
    assert lab.running_on() == ["host1"]


def test_unknown_vm_is_refused(vdisk_on_host1, lab, salt_run_cli):
    ret = _orch(salt_run_cli, vm="nosuchvm", dest="host2")
    _assert_refused(ret, lab, salt_run_cli, ["nosuchvm", "not found on any hypervisor"])


def test_unknown_dest_is_refused_and_vm_keeps_running(vdisk_on_host1, lab, salt_run_cli):
    before = counter_before(lab, "host1")
    ret = _orch(salt_run_cli, vm="vdisk", dest="host9")
    _assert_refused(ret, lab, salt_run_cli, ["host9", "not an available hypervisor"])
    assert_guest_went_on(lab, "host1", before)


def test_dest_equal_to_current_host_is_refused(vdisk_on_host1, lab, salt_run_cli):
    ret = _orch(salt_run_cli, vm="vdisk", dest="host1")
    _assert_refused(ret, lab, salt_run_cli, ["already on host1"])


def test_bad_input_is_refused_before_anything(vdisk_on_host1, lab, salt_run_cli):
    ret = _orch(salt_run_cli, vm="vdisk\n--unsafe", dest="host2")
    _assert_refused(ret, lab, salt_run_cli, ["not a valid domain name"])
    ret = _orch(salt_run_cli, vm="vdisk", dest="host2", mode="teleport")
    _assert_refused(ret, lab, salt_run_cli, ["mode 'teleport'"])


def test_module_refuses_offline_of_running_vm(vdisk_on_host1, salt_cli, salt_run_cli):
    ret = salt_cli.run("vmigrate.migrate", "vdisk", "host2", "mode=offline", minion_tgt="host1")
    assert ret.returncode != 0
    assert "running on host1" in str(ret.data) and "mode=live" in str(ret.data)
    assert salt_run_cli.run("vmigrate.locate", "vdisk").data["running"] == ["host1"]


def test_timeout_aborts_and_the_guest_stays_on_the_source(vdisk_on_host1, lab, salt_run_cli):
    before = counter_before(lab, "host1")
    # 1 MiB/s cannot move 128 MiB in 3 s: vmigrate aborts the job, libvirt keeps the source.
    ret = _orch(salt_run_cli, vm="vdisk", dest="host2", bandwidth=1, timeout=3)
    assert ret.returncode != 0, ret
    comment = orch_state(ret)["comment"]
    assert "aborted after the 3s timeout" in comment, comment
    assert "now: host1: running" in comment, comment
    where = salt_run_cli.run("vmigrate.locate", "vdisk").data
    assert where["running"] == ["host1"] and where["defined"] == ["host1"]
    assert_guest_went_on(lab, "host1", before)


def test_dest_libvirtd_down_is_refused_and_named(vdisk_on_host1, lab, salt_run_cli):
    pid = int(lab.host_path("host2", "/run/libvirtd.pid").read_text())
    lab.host_run("host2", ["kill", str(pid)])
    vmlab.wait_for("host2 libvirtd to stop", lambda: not vmlab._alive(pid), 20)  # pylint: disable=protected-access
    try:
        ret = _orch(salt_run_cli, vm="vdisk", dest="host2")
        assert ret.returncode != 0, ret
        comment = orch_state(ret)["comment"]
        # Without host2's listing nothing is concluded about host2: the VM could run there.
        assert "could not verify host2" in comment and "nothing was moved" in comment
        assert "cannot connect to libvirt" in comment
    finally:
        lab.libvirtd_up("host2")
    where = salt_run_cli.run("vmigrate.locate", "vdisk").data
    assert where["running"] == ["host1"] and where["defined"] == ["host1"]


def test_destination_qemu_killed_mid_migration_leaves_guest_on_source(vdisk_on_host1, lab,
                                                                      salt_run_cli):
    before = counter_before(lab, "host1")
    outcome = {}
    # Capped at 2 MiB/s the copy takes tens of seconds: time to kill the incoming QEMU.
    worker = threading.Thread(target=lambda: outcome.update(
        ret=_orch(salt_run_cli, vm="vdisk", dest="host2", bandwidth=2)))
    worker.start()
    try:
        pid = lab.incoming_qemu("host2")
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
    finally:
        worker.join(120)
    ret = outcome["ret"]
    assert ret.returncode != 0, ret
    comment = orch_state(ret)["comment"]
    assert "migration of vdisk from host1 to host2 failed" in comment
    assert "libvirt error code" in comment and "now: host1: running" in comment
    where = salt_run_cli.run("vmigrate.locate", "vdisk").data
    assert where["running"] == ["host1"] and where["defined"] == ["host1"]
    assert_guest_went_on(lab, "host1", before)


def test_locate_asks_the_hosts_named_on_the_command_line(vdisk_on_host1, salt_run_cli):
    # One id, as the CLI passes it (a string), and a comma-separated pair.
    one = salt_run_cli.run("vmigrate.locate", "vdisk", "hosts=host1")
    assert one.returncode == 0 and one.data["hypervisors"] == ["host1"], one.data
    assert one.data["running"] == ["host1"]
    two = salt_run_cli.run("vmigrate.locate", "vdisk", "hosts=host1,host2")
    assert two.returncode == 0 and two.data["hypervisors"] == ["host1", "host2"], two.data
