"""salt-run vmigrate.reconcile on real daemons: one running copy, defined on one host."""
import pathlib
import re

import vmlab

from .test_migrate import assert_guest_went_on, counter_before


def _libvirt(lab, host):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    return libvirt, libvirt.open(lab.libvirt_uri(host))


def test_reconcile_leaves_a_users_pause_alone(vdisk_on_host1, lab, salt_run_cli):
    """One paused copy, paused by a person: consistent. Only a pause a migration made is undone
    (unit-tested); a reconcile that resumed any paused guest would undo an operator's pause."""
    before = counter_before(lab, "host1")
    libvirt, conn = _libvirt(lab, "host1")
    try:
        conn.lookupByName("vdisk").suspend()
        ret = salt_run_cli.run("vmigrate.reconcile", "vdisk")
        assert ret.returncode == 0, ret
        assert ret.data["actions"] == [] and "is consistent" in ret.data["comment"]
        assert "host1: paused (user)" in ret.data["comment"]
        assert conn.lookupByName("vdisk").state()[0] == libvirt.VIR_DOMAIN_PAUSED
    finally:
        conn.lookupByName("vdisk").resume()
        conn.close()
    assert_guest_went_on(lab, "host1", before)


def test_reconcile_removes_a_stray_copy_and_keeps_the_running_one(vdisk_on_host1, lab,
                                                                  salt_run_cli):
    # A paused, transient "vdisk" on host2, as a failed incoming migration can leave behind.
    # Without the disk and console: it must not touch the running guest's files.
    # A leftover incoming copy carries the guest's own UUID (a migration keeps it).
    libvirt, src = _libvirt(lab, "host1")
    uuid = src.lookupByName("vdisk").UUIDString()
    src.close()
    xml = re.sub(r"<disk .*?</disk>|<serial .*?</serial>", "", lab.guest_xml("vdisk"),
                 flags=re.DOTALL).replace("<name>vdisk</name>",
                                          f"<name>vdisk</name><uuid>{uuid}</uuid>")
    libvirt, conn = _libvirt(lab, "host2")
    try:
        conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
        where = salt_run_cli.run("vmigrate.locate", "vdisk").data
        assert where["running"] == ["host1"] and list(where["paused"]) == ["host2"], where
        # A migration refuses the ambiguous placement...
        ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2")
        assert ret.returncode != 0 and "on several hypervisors" in ret.data["comment"]
        # ...reconcile repairs it: the running copy stays, the stray copy goes. The dry run
        # says so and changes nothing.
        dry = salt_run_cli.run("vmigrate.reconcile", "vdisk", "dry_run=True")
        assert dry.data["result"] is None and "destroy on host2" in dry.data["comment"]
        assert len(conn.listAllDomains()) == 1
        ret = salt_run_cli.run("vmigrate.reconcile", "vdisk")
        assert ret.returncode == 0, ret
        assert [(a["host"], a["action"], a["done"]) for a in ret.data["actions"]] == [
            ("host2", "destroy", True)]
        assert conn.listAllDomains() == []
    finally:
        for dom in conn.listAllDomains():
            dom.destroy()
        conn.close()
    where = salt_run_cli.run("vmigrate.locate", "vdisk").data
    assert where["running"] == ["host1"] and where["defined"] == ["host1"]
    assert lab.running_on() == ["host1"]


OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def test_reconcile_drops_a_definition_with_nvram_and_keeps_its_file(vdisk_on_host1, lab,
                                                                     salt_run_cli):
    """A stale shut-off definition of vdisk on host2 whose firmware keeps an NVRAM file
    (Debian's ovmf): libvirt refuses a plain undefine of it ("cannot undefine domain with
    nvram"); the repair undefines it keeping the file, deliberately (it is never vmigrate's to
    delete), and the VM ends defined on one host."""
    libvirt, src = _libvirt(lab, "host1")
    uuid = src.lookupByName("vdisk").UUIDString()
    src.close()
    nvram = "/var/lib/libvirt/qemu/nvram/vdisk_VARS.fd"
    xml = lab.guest_xml("vdisk").replace("<name>vdisk</name>",
                                         f"<name>vdisk</name><uuid>{uuid}</uuid>").replace(
        "<os>", f"<os><loader readonly='yes' type='pflash'>{OVMF_CODE}</loader>"
                f"<nvram>{nvram}</nvram>")
    local = lab.host_path("host2", nvram)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(pathlib.Path(OVMF_VARS).read_bytes())
    libvirt, conn = _libvirt(lab, "host2")
    try:
        conn.defineXML(xml)
        ret = salt_run_cli.run("vmigrate.reconcile", "vdisk")
        assert ret.returncode == 0, ret
        assert [(a["host"], a["action"], a["done"]) for a in ret.data["actions"]] == [
            ("host2", "undefine", True)], ret.data
        assert [d.name() for d in conn.listAllDomains()] == []
        assert local.exists()  # kept: undefining a copy deletes no file
    finally:
        for dom in conn.listAllDomains():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
        conn.close()
        local.unlink(missing_ok=True)
    assert lab.placement() == (["host1"], ["host1"])
