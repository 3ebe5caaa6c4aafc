"""salt-run vmigrate.reconcile on real daemons: one running copy, defined on one host."""
import re

import vmlab

from .test_migrate import assert_guest_went_on, counter_before


def _libvirt(lab, host):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    return libvirt, libvirt.open(lab.libvirt_uri(host))


def test_reconcile_resumes_a_paused_guest_and_dry_run_changes_nothing(vdisk_on_host1, lab,
                                                                      salt_run_cli):
    before = counter_before(lab, "host1")
    libvirt, conn = _libvirt(lab, "host1")
    try:
        conn.lookupByName("vdisk").suspend()
        dry = salt_run_cli.run("vmigrate.reconcile", "vdisk", "dry_run=True")
        assert dry.returncode == 0, dry
        assert dry.data["result"] is None and "resume on host1" in dry.data["comment"]
        assert conn.lookupByName("vdisk").state()[0] == libvirt.VIR_DOMAIN_PAUSED
        ret = salt_run_cli.run("vmigrate.reconcile", "vdisk")
        assert ret.returncode == 0, ret
        assert [(a["host"], a["action"], a["done"]) for a in ret.data["actions"]] == [
            ("host1", "resume", True)]
        assert conn.lookupByName("vdisk").state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        conn.close()
    assert_guest_went_on(lab, "host1", before)


def test_reconcile_removes_a_stray_copy_and_keeps_the_running_one(vdisk_on_host1, lab,
                                                                  salt_run_cli):
    # A paused, transient "vdisk" on host2, as a failed incoming migration can leave behind.
    # Without the disk and console: it must not touch the running guest's files.
    xml = re.sub(r"<disk .*?</disk>|<serial .*?</serial>", "", lab.guest_xml("vdisk"),
                 flags=re.DOTALL)
    libvirt, conn = _libvirt(lab, "host2")
    try:
        conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
        where = salt_run_cli.run("vmigrate.locate", "vdisk").data
        assert where["running"] == ["host1"] and list(where["paused"]) == ["host2"], where
        # A migration refuses the ambiguous placement...
        ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2")
        assert ret.returncode != 0 and "on several hypervisors" in ret.data["comment"]
        # ...reconcile repairs it: the running copy stays, the stray copy goes.
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
