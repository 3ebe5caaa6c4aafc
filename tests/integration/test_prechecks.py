"""Destination prechecks on real daemons: read through the migration's own libvirt URI,
each blocker stops the migration before anything moves and names its fix."""
import contextlib
import json
import re

import pytest

import vmlab
from tests.support import labsalt

from .test_migrate import orch_state


def test_plan_lists_every_check_and_changes_nothing(vdisk_on_host1, lab, salt_run_cli):
    ret = salt_run_cli.run("vmigrate.plan", "vdisk", "host2")
    assert ret.returncode == 0, ret
    checks = {c["name"]: c for c in ret.data["checks"]}
    for name in ("shared_storage:vda", "disk_cache:vda", "dest_reachable", "distinct_hosts",
                 "dest_libvirt_version", "dest_qemu_version", "dest_memory", "dest_cpu",
                 "dest_no_clash", f"shared_path:{lab.mountpoint}", "image_access:vda",
                 "dest_identity"):
        assert checks[name]["ok"] is True, checks.get(name)
    assert f"qemu+tcp://{lab.addr('host2')}/system" in checks["dest_reachable"]["detail"]
    assert "seen by host2's libvirtd at the same path" in (
        checks[f"shared_path:{lab.mountpoint}"]["detail"])
    # The sentinel's directory is gone again: nothing is left on the shared storage.
    assert not list(lab.export_dir.glob(".vmigrate-probe-*"))
    assert ret.data["blockers"] == [] and ret.data["source"] == "host1"
    assert lab.running_on() == ["host1"]


@pytest.fixture
def clash(lab, vdisk_on_host1):
    """A shut-off domain on host2 under another name but with vdisk's UUID."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    src = libvirt.open(lab.libvirt_uri("host1"))
    uuid = src.lookupByName("vdisk").UUIDString()
    src.close()
    xml = lab.guest_xml("vclash").replace("<name>vclash</name>",
                                          f"<name>vclash</name><uuid>{uuid}</uuid>")
    conn = libvirt.open(lab.libvirt_uri("host2"))
    conn.defineXML(xml)
    yield
    conn.lookupByName("vclash").undefine()
    conn.close()


def test_a_domain_with_the_guests_uuid_on_the_destination_blocks(clash, lab, salt_cli,
                                                                 salt_run_cli):
    # The master sees it as a copy of vdisk (same UUID, under another name) and moves nothing.
    ret = salt_run_cli.run("state.orch", "migrate", "pillar={\"vm\": \"vdisk\", \"dest\": \"host2\"}")
    assert ret.returncode != 0, ret
    comment = orch_state(ret)["comment"]
    assert ("vm vdisk is on several hypervisors (host1: running; host2: shutoff (as vclash))"
            in comment), comment
    # Nor would the source, asked directly: its precheck reads host2 through the URI.
    ret = salt_cli.run("vmigrate.migrate", "vdisk", "host2", minion_tgt="host1")
    assert ret.returncode != 0, ret
    comment = str(ret.data)
    assert "precheck refused the migration of 'vdisk', nothing was moved" in comment
    assert "host2 already has domain 'vclash' with this guest's UUID" in comment
    assert "Fix: remove or rename the other domain on host2" in comment
    # A reconcile does not take it for a copy to drop: it names it and changes nothing.
    ret = salt_run_cli.run("vmigrate.reconcile", "vdisk")
    assert ret.returncode != 0 and "is named vclash on host2" in ret.data["comment"], ret.data
    assert lab.running_on() == ["host1"] and lab.running_on("vclash") == []


def test_a_new_name_another_domain_has_is_refused(vdisk_on_host1, lab, salt_run_cli):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    conn = libvirt.open(lab.libvirt_uri("host2"))
    conn.defineXML(lab.guest_xml("vtaken"))  # its own UUID: another VM
    try:
        pillar = json.dumps({"vm": "vdisk", "dest": "host2", "options": {"dname": "vtaken"}})
        ret = salt_run_cli.run("state.orch", "migrate", f"pillar={pillar}")
        assert ret.returncode != 0, ret
        comment = orch_state(ret)["comment"]
        assert "option dname vtaken: host2 already has another domain of that name" in comment
        assert lab.running_on() == ["host1"]
    finally:
        conn.lookupByName("vtaken").undefine()
        conn.close()


def test_an_address_that_leads_to_another_machine_is_refused(vdisk_on_host1, lab, pillar_dir,
                                                            salt_cli, salt_run_cli):
    """host1's pillar gives host2 the address of host1 itself: the URI reaches another libvirt
    host than the one host2's minion reported to the master, and nothing moves."""
    hypervisors = json.loads(json.dumps(lab.pillar()["vmigrate"]["hypervisors"]))
    hypervisors["host2"]["address"] = lab.addr("host1")
    hypervisors["host2"].pop("migration_address", None)
    with labsalt.host1_pillar(lab, pillar_dir, salt_cli, hypervisors=hypervisors):
        plan = salt_run_cli.run("vmigrate.plan", "vdisk", "host2")
        assert plan.returncode != 0
        assert "dest_identity" in plan.data["blockers"], plan.data
        ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2")
    assert ret.returncode != 0
    assert ret.data["status"] == "refused", ret.data
    assert "but minion host2 runs on libvirt host" in ret.data["comment"]
    assert "Fix: correct pillar vmigrate:hypervisors:host2:address" in ret.data["comment"]
    assert lab.running_on() == ["host1"]


@pytest.fixture
def huge_reserve(lab, pillar_dir, salt_cli):
    with labsalt.host1_pillar(lab, pillar_dir, salt_cli, memory_reserve_mib=100_000_000):
        yield


def test_not_enough_memory_on_the_destination_blocks(vdisk_on_host1, huge_reserve, lab,
                                                     salt_run_cli):
    ret = salt_run_cli.run("state.orch", "migrate", "test=True",
                           f"pillar={json.dumps({'vm': 'vdisk', 'dest': 'host2'})}")
    assert ret.returncode != 0
    assert "[BLOCKER] dest_memory: host2 has" in orch_state(ret)["comment"]
    ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2")
    assert ret.returncode != 0
    assert "plus a reserve of 100000000 MiB" in ret.data["comment"]
    assert "Fix: free memory on host2 or pick another destination" in ret.data["comment"]
    assert lab.running_on() == ["host1"]


@contextlib.contextmanager
def _variant(lab, name, edit):
    """A second guest ``name`` running on host1, its definition changed by ``edit``."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    lab.remove_guest_everywhere(name)
    lab.create_guest("host1", name, start=False)
    conn = libvirt.open(lab.libvirt_uri("host1"))
    try:
        dom = conn.lookupByName(name)
        dom = conn.defineXML(edit(dom.XMLDesc(0)))
        dom.create()
        yield dom
    finally:
        conn.close()
        lab.remove_guest_everywhere(name)


def _plan(salt_run_cli, name):
    ret = salt_run_cli.run("vmigrate.plan", name, "host2")
    return ret, {c["name"]: c for c in ret.data["checks"]}


AVX2 = ("<cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
        "<feature policy='require' name='avx2'/></cpu>")


def test_a_guest_cpu_the_destination_cannot_run_blocks(guest, lab, salt_run_cli):
    """host2's hypervisor without avx2 (see vmlab.tcg_cpu_without); the guest needs it."""
    with _variant(lab, "vavx", lambda xml: re.sub("(</vcpu>)", r"\1" + AVX2, xml, count=1)):
        with lab.tcg_cpu_without("host2", "avx2"):
            ret, checks = _plan(salt_run_cli, "vavx")
            assert ret.returncode != 0 and ret.data["blockers"] == ["dest_cpu"], ret.data
            assert "Host CPU does not provide required features: avx2" in (
                checks["dest_cpu"]["detail"])
            assert "hypervisor-cpu-baseline" in checks["dest_cpu"]["fix"]
            ret = salt_run_cli.run("state.orch", "migrate",
                                   'pillar={"vm": "vavx", "dest": "host2"}')
            assert ret.returncode != 0
            comment = orch_state(ret)["comment"]
            assert "nothing was moved" in comment and "avx2" in comment, comment
            assert salt_run_cli.run("vmigrate.locate", "vavx").data["running"] == ["host1"]
        # The same host with avx2 again: the same request moves the guest.
        ret = salt_run_cli.run("state.orch", "migrate", 'pillar={"vm": "vavx", "dest": "host2"}')
        assert ret.returncode == 0, orch_state(ret)["comment"]
        where = salt_run_cli.run("vmigrate.locate", "vavx").data
        assert where["running"] == ["host2"] and where["defined"] == ["host2"]


def test_cache_unsafe_blocks_with_its_fix(guest, lab, salt_run_cli):
    with _variant(lab, "vunsafe", lambda xml: xml.replace("cache='none'", "cache='unsafe'")):
        ret, checks = _plan(salt_run_cli, "vunsafe")
        assert ret.returncode != 0 and ret.data["blockers"] == ["disk_cache:vda"], ret.data
        assert "cache='unsafe' ignores flushes" in checks["disk_cache:vda"]["detail"]
        assert "cache mode to 'none'" in checks["disk_cache:vda"]["fix"]
        assert salt_run_cli.run("vmigrate.locate", "vunsafe").data["running"] == ["host1"]


def _live_xml(lab, host="host1", name="vdisk"):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    conn = libvirt.open(lab.libvirt_uri(host))
    try:
        return conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    finally:
        conn.close()


@pytest.mark.parametrize("edit, cls", [
    # /etc/shadow as the guest's disk: the guest reads the host's password hashes
    (lambda x: re.sub(r"<source file='[^']*vdisk\.qcow2'", "<source file='/etc/shadow'", x),
     "disk_sources"),
    # the console log on a host file: QEMU (root) appends to it
    (lambda x: x.replace("vdisk.console.log", "../../etc/cron.d/vmigrate"), "host_files"),
    # raw QEMU arguments
    (lambda x: x.replace("<domain type='qemu'>", "<domain type='qemu' xmlns:qemu='http://libvirt"
                         ".org/schemas/domain/qemu/1.0'>").replace(
        "</devices>", "</devices><qemu:commandline><qemu:arg value='-name'/><qemu:arg value="
                      "'x'/></qemu:commandline>"), "qemu_namespace"),
])
def test_a_hostile_xml_option_is_refused_before_anything_moves(vdisk_on_host1, lab, salt_cli,
                                                               edit, cls):
    xml = edit(_live_xml(lab))
    ret = salt_cli.run("vmigrate.migrate", "vdisk", "host2",
                       "options=" + json.dumps({"xml": xml}), minion_tgt="host1")
    assert ret.returncode != 0, ret
    assert ret.data["status"] == "refused", ret.data
    assert "option xml changes what the guest may use on the host" in ret.data["comment"]
    assert f"{cls} (" in ret.data["comment"], ret.data
    assert f"vmigrate:allow_xml_changes: [{cls}]" in ret.data["comment"], ret.data
    assert lab.placement() == (["host1"], ["host1"])


def test_the_guests_own_xml_passes_the_guard_and_migrates(vdisk_on_host1, lab, salt_cli):
    """The guard against libvirt's own formatting: the live migratable XML, handed back as
    option xml (what --xml is normally made from), changes nothing and moves."""
    xml = _live_xml(lab)
    ret = salt_cli.run("vmigrate.precheck", "vdisk", "host2",
                       "options=" + json.dumps({"xml": xml}), minion_tgt="host1")
    assert ret.returncode == 0, ret
    checks = {c["name"]: c for c in ret.data["checks"]}
    assert checks["xml_changes:xml"]["ok"] is True, checks["xml_changes:xml"]
    assert ret.data["blockers"] == [], ret.data
    ret = salt_cli.run("vmigrate.migrate", "vdisk", "host2",
                       "options=" + json.dumps({"xml": xml}), minion_tgt="host1")
    assert ret.returncode == 0, ret
    assert lab.placement() == (["host2"], ["host2"])
