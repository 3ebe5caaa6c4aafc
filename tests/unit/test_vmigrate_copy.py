"""Copying disks (option copy_storage): the disks libvirt copies, and this host's side of the
check that each may be copied."""
from tests.support.modload import load
from tests.support.storage_facts import EXT4, MOUNTINFO, NFS, XML, facts as _facts

cp = load("_utils", "vmigrate_copy")
dk = load("_utils", "vmigrate_disks")
st = load("_utils", "vmigrate_storage")


def test_the_disks_copied_follow_libvirts_rule():
    disks = dk.domain_disks(XML)
    assert cp.copied_targets(disks, {}) is None
    # Not read-only, not empty, not <shareable/>: the network disk too, as libvirt would.
    assert cp.copied_targets(disks, {"copy_storage": "all"}) == ["vda", "vdb"]
    assert cp.copied_targets(disks, {"copy_storage": "all", "migrate_disks": ["vda"]}) == ["vda"]
    shared, local = cp.split_copied({"disks": disks, "x": 1}, ["vda"])
    assert [d["target"] for d in local["disks"]] == ["vda"] and local["x"] == 1
    assert [d["target"] for d in shared["disks"]] == ["sda", "vdb", "sdb"]


def _copy_checks(path, magic, options, conf=""):
    return {c["name"]: c for c in cp.assess_copy(_facts(path, magic, conf), options, "host1")}


def test_a_local_disk_is_copied_and_a_shared_or_network_one_is_refused():
    local = _copy_checks("/var/lib/libvirt/images/v.qcow2", EXT4,
                         {"copy_storage": "all", "migrate_disks": ["vda"]})
    assert local["copy_storage:vda"]["ok"] is True, local
    assert "local to host1" in local["copy_storage:vda"]["detail"]
    # Copying a disk on NFS would have the destination write the image onto itself.
    on_nfs = _copy_checks("/srv/vm/vdisk.qcow2", NFS, {"copy_storage": "all"})
    assert on_nfs["copy_storage:vda"]["ok"] is False
    assert "overwrite it with itself" in on_nfs["copy_storage:vda"]["detail"]
    assert "migrate_disks" in on_nfs["copy_storage:vda"]["fix"]
    # ... and so would copying the network disk libvirt picks without migrate_disks.
    assert on_nfs["copy_storage:vdb"]["ok"] is False
    assert "a network disk" in on_nfs["copy_storage:vdb"]["detail"]
    # Shared by qemu.conf shared_filesystems counts as shared too.
    listed = _copy_checks("/srv/bind/v.qcow2", EXT4, {"copy_storage": "all",
                                                       "migrate_disks": ["vda"]},
                          conf='shared_filesystems = [ "/srv/bind" ]')
    assert listed["copy_storage:vda"]["ok"] is False


def test_named_disks_must_be_disks_the_guest_has_and_can_copy():
    checks = _copy_checks("/var/lib/libvirt/images/v.qcow2", EXT4,
                          {"copy_storage": "all", "migrate_disks": ["vdz", "sda"]})
    assert checks["copy_storage:vdz"]["ok"] is False
    assert "does not have (its disks: sda, sdb, vda, vdb)" in checks["copy_storage:vdz"]["detail"]
    assert checks["copy_storage:sda"]["ok"] is False
    assert "empty or read-only" in checks["copy_storage:sda"]["detail"]
    none = cp.assess_copy({"disks": dk.domain_disks(XML)[1:2]}, {"copy_storage": "all"}, "h")
    assert [(c["name"], c["ok"]) for c in none] == [("copy_storage:none", False)]
    # Zero detection only for disks this migration copies (sda is read-only).
    checks = _copy_checks("/var/lib/libvirt/images/v.qcow2", EXT4,
                          {"copy_storage": "all", "migrate_disks_detect_zeroes": ["sda"]})
    assert checks["copy_storage:sda"]["ok"] is False
    assert "which this migration does not copy" in checks["copy_storage:sda"]["detail"]


def test_an_nvme_disk_is_not_empty_to_libvirt_so_it_would_be_copied_and_is_refused():
    xml = XML.replace("</devices>", "<disk type='nvme' device='disk'><source type='pci' "
                                    "managed='yes' namespace='1'><address domain='0x0000' "
                                    "bus='0x01' slot='0x00' function='0x0'/></source>"
                                    "<target dev='vdc'/></disk></devices>")
    disks = dk.domain_disks(xml)
    assert [d["target"] for d in disks if d["empty"]] == ["sdb"]
    assert cp.copied_targets(disks, {"copy_storage": "all"}) == ["vda", "vdb", "vdc"]
    facts = st.disk_facts(disks, "", MOUNTINFO, statfs=lambda p: EXT4, realpath=lambda p: p,
                          exists=lambda p: True)
    check = {c["name"]: c for c in cp.assess_copy(facts, {"copy_storage": "all"}, "h")}
    assert check["copy_storage:vdc"]["ok"] is False
    assert "copies file disks only" in check["copy_storage:vdc"]["detail"]


def test_a_shareable_disk_or_one_xml_moves_is_not_copied():
    xml = XML.replace("<target dev='vda' bus='virtio'/></disk>",
                      "<target dev='vda' bus='virtio'/><shareable/></disk>", 1)
    facts = st.disk_facts(dk.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: EXT4,
                          realpath=lambda p: p, exists=lambda p: True)
    checks = {c["name"]: c for c in cp.assess_copy(
        facts, {"copy_storage": "all", "migrate_disks": ["vda"]}, "h")}
    assert checks["copy_storage:vda"]["ok"] is False
    assert "a copy would split it in two" in checks["copy_storage:vda"]["detail"]
    # libvirt copies into the destination XML's paths: the one judged must be the one used.
    other = XML.replace("/srv/vm/vdisk.qcow2", "/elsewhere/vdisk.qcow2")
    checks = _copy_checks("/srv/vm/vdisk.qcow2", EXT4, {"copy_storage": "all",
                                                        "migrate_disks": ["vda"], "xml": other})
    assert checks["copy_storage:vda"]["ok"] is False
    assert "option xml gives disk vda the path /elsewhere" in checks["copy_storage:vda"]["detail"]
