"""The storage precheck: libvirt's shared-storage rules as pure functions over facts."""
import os
import pathlib
import shutil
import tempfile

import pytest

from tests.support.modload import load

st = load("_utils", "vmigrate_storage")

XML = """<domain type='qemu'><name>vdisk</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
    <source file='/srv/vm/vdisk.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><source file='/iso/boot.iso'/><target dev='sda'/>
    <readonly/></disk>
  <disk type='network' device='disk'><source protocol='nfs' name='/export/x.img'/>
    <target dev='vdb'/></disk>
  <disk type='file' device='cdrom'><target dev='sdb'/><readonly/></disk>
</devices></domain>"""
MOUNTINFO = (
    "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "90 22 0:50 / /srv/vm rw,relatime - nfs4 nfs1:/srv/vmimages rw,vers=4.2\n"
    "91 22 254:1 /data/shared /srv/bind rw - ext4 /dev/vda1 rw\n"
    "92 22 0:51 / /srv/my\\040dir rw - ext4 /dev/vdb rw\n"
)
EXT4, NFS = 0xEF53, 0x6969


def _facts(disk_path, magic, conf="", exists=lambda p: True, mountinfo=MOUNTINFO, **daemon):
    xml = XML.replace("/srv/vm/vdisk.qcow2", disk_path)
    facts = st.disk_facts(st.domain_disks(xml), conf, mountinfo, statfs=lambda p: magic,
                          realpath=lambda p: p, exists=exists)
    facts["daemon"] = {"daemon": "libvirtd", "pid": 42, "started": 1000.0,
                       "conf": "/etc/libvirt/qemu.conf", "conf_mtime": 900.0, **daemon}
    return facts


def test_domain_disks_reads_every_kind():
    disks = {d["target"]: d for d in st.domain_disks(XML)}
    assert disks["vda"]["path"] == "/srv/vm/vdisk.qcow2" and disks["vda"]["cache"] == "none"
    assert disks["sda"]["readonly"] and disks["vdb"]["type"] == "network"
    assert disks["sdb"]["path"] is None


def test_mountinfo_longest_prefix_and_escapes():
    mounts = st.parse_mountinfo(MOUNTINFO)
    assert st.mount_of("/srv/vm/a.qcow2", mounts)[1:] == ("nfs4", "nfs1:/srv/vmimages")
    assert st.mount_of("/srv/vmx/a", mounts)[0] == "/"  # whole components only
    assert st.mount_of("/srv/my dir/a", mounts)[0] == "/srv/my dir"


def test_shared_filesystems_parsing_skips_comments_and_spans_lines():
    conf = ('#shared_filesystems = [ "/commented" ]\nuser = "root"\n'
            'shared_filesystems = [\n  "/a",   # first\n  "/b/c"\n]\n')
    assert st.shared_filesystems(conf) == ["/a", "/b/c"]
    assert st.shared_filesystems("user = 'x'\n") == []
    # virConf takes single quotes too
    assert st.shared_filesystems("shared_filesystems = [ '/a', \"/b\" ]\n") == ["/a", "/b"]


def test_a_missing_entry_ends_libvirts_list_there():
    exists = {"/a", "/c"}.__contains__
    assert st.effective_overrides(["/a", "/b", "/c"], lambda p: p, exists) == (["/a"],
                                                                              ["/b", "/c"])


def test_nfs_is_shared_by_type():
    checks = st.assess(_facts("/srv/vm/vdisk.qcow2", NFS), "host1")
    assert all(c["ok"] for c in checks), checks
    vda = checks[0]
    assert vda["name"] == "shared_storage:vda" and "nfs" in vda["detail"]


def test_local_disk_without_override_is_a_blocker_naming_disk_path_fs_and_fix():
    check = st.assess(_facts("/var/lib/libvirt/images/vdisk.qcow2", EXT4), "host1")[0]
    assert check["ok"] is False
    for words in ("vda", "/var/lib/libvirt/images/vdisk.qcow2", "ext4", "mounted at /",
                  "/dev/vda1"):
        assert words in check["detail"], check["detail"]
    assert "NFS export at the same path" in check["fix"] and "shared_filesystems" in check["fix"]
    assert "never migrate with unsafe=True" in check["fix"]


def test_override_counts_with_a_note_about_the_daemon_start():
    conf = 'shared_filesystems = [ "/srv/bind" ]\n'
    check = st.assess(_facts("/srv/bind/vdisk.qcow2", EXT4, conf), "host1")[0]
    assert check["ok"] is True and "shared_filesystems entry '/srv/bind'" in check["detail"]
    assert "existed when libvirtd started" in check["detail"]


def test_qemu_conf_changed_after_the_daemon_started_is_a_blocker():
    conf = 'shared_filesystems = [ "/srv/bind" ]\n'
    check = st.assess(_facts("/srv/bind/vdisk.qcow2", EXT4, conf, conf_mtime=2000.0),
                      "host1")[0]
    assert check["ok"] is False and "changed after the daemon started" in check["detail"]
    assert "restart libvirtd" in check["fix"]


def test_an_earlier_missing_entry_hides_the_one_covering_the_disk():
    conf = 'shared_filesystems = [ "/gone", "/srv/bind" ]\n'
    facts = _facts("/srv/bind/vdisk.qcow2", EXT4, conf, exists=lambda p: p != "/gone")
    check = st.assess(facts, "host1")[0]
    assert check["ok"] is False and "/gone" in check["detail"]


@pytest.mark.parametrize("magic, fstype, ok", [
    (0x65735546, "fuse.glusterfs", True), (0x65735546, "fuse.sshfs", False),
    (0x00C36400, "ceph", True), (0x01021994, "tmpfs", False),
])
def test_fuse_and_other_types_follow_libvirt(magic, fstype, ok):
    mountinfo = f"22 1 0:1 / / rw - {fstype} src rw\n"
    check = st.assess(_facts("/srv/vm/vdisk.qcow2", magic, mountinfo=mountinfo), "h")[0]
    assert check["ok"] is ok


def test_explain_unsafe_names_disk_fs_daemon_start_and_fix():
    conf = 'shared_filesystems = [ "/srv/bind" ]\n'
    text = st.explain_unsafe(_facts("/srv/bind/vdisk.qcow2", EXT4, conf), "host1")
    for words in ("disk vda (/srv/bind/vdisk.qcow2)", "ext4", "libvirtd on host1 (pid 42",
                  "did not take that entry in: the path did not exist yet", "Fix: restart libvirtd"):
        assert words in text, text


@pytest.mark.parametrize("cache, ok", [(None, True), ("none", True), ("directsync", True),
                                       ("writeback", True), ("writethrough", True),
                                       ("unsafe", False)])
def test_cache_mode(cache, ok):
    xml = XML.replace("cache='none'", f"cache='{cache}'" if cache else "")
    facts = st.disk_facts(st.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: NFS,
                          realpath=lambda p: p, exists=lambda p: True)
    facts["daemon"] = {}
    check = {c["name"]: c for c in st.assess(facts, "host1")}["disk_cache:vda"]
    assert check["ok"] is ok, check
    if not ok:
        assert "switchover" in check["detail"] and "cache mode to 'none'" in check["fix"]


def test_probe_writes_a_sentinel_and_removes_only_what_it_made(tmp_path):
    image = tmp_path / "vdisk.qcow2"
    image.write_bytes(b"QFI")
    probe = st.probe_write(str(tmp_path), "abc123")
    assert (tmp_path / ".vmigrate-probe-abc123" / "sentinel").read_text() == "abc123"
    assert probe["owner"] == 0 and probe["probe"].endswith(".vmigrate-probe-abc123")
    st.probe_remove(probe["probe"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vdisk.qcow2"]
    st.probe_remove(probe["probe"])  # twice is harmless


def test_image_owners_and_disk_dirs(tmp_path):
    image = tmp_path / "vdisk.qcow2"
    image.write_bytes(b"QFI")
    image.chmod(0o600)
    xml = XML.replace("/srv/vm/vdisk.qcow2", str(image))
    facts = st.disk_facts(st.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: NFS)
    assert st.disk_dirs(facts) == [str(tmp_path)]
    owners = st.image_owners(facts)
    assert owners["vda"] == {"path": str(image), "uid": 0, "gid": 0, "mode": 0o600}


@pytest.fixture
def open_tmp():
    """A directory every user can reach (pytest's own tmp_path is root's alone)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="vmigrate-probe-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_where_root_may_not_write_the_directorys_owner_writes_the_probe(open_tmp, monkeypatch):
    """Squashed root in a directory only its owner may write: root's own write fails (made
    to fail here: root is not squashed on this machine), and a child with the owner's ids
    writes and removes the probe for real."""
    shared = open_tmp / "shared"
    shared.mkdir(mode=0o700)
    os.chown(shared, 65534, 65534)
    real = st._write_sentinel  # pylint: disable=protected-access

    def root_denied(directory, token):
        if os.geteuid() == 0:
            raise PermissionError(13, "Permission denied", directory)
        return real(directory, token)

    monkeypatch.setattr(st, "_write_sentinel", root_denied)
    probe = st.probe_write(str(shared), "feed" * 4)
    assert probe["root_denied"] is True and (probe["owner"], probe["group"]) == (65534, 65534)
    assert (shared / f".vmigrate-probe-{'feed' * 4}" / "sentinel").stat().st_uid == 65534
    st.probe_remove(probe["probe"], root_denied=True)
    assert list(shared.iterdir()) == []


# ---- copy_storage ------------------------------------------------------------------------
def test_the_disks_copied_follow_libvirts_rule():
    disks = st.domain_disks(XML)
    assert st.copied_targets(disks, {}) is None
    # Not read-only, not empty, not <shareable/>: the network disk too, as libvirt would.
    assert st.copied_targets(disks, {"copy_storage": "all"}) == ["vda", "vdb"]
    assert st.copied_targets(disks, {"copy_storage": "all", "migrate_disks": ["vda"]}) == ["vda"]
    shared, local = st.split_copied({"disks": disks, "x": 1}, ["vda"])
    assert [d["target"] for d in local["disks"]] == ["vda"] and local["x"] == 1
    assert [d["target"] for d in shared["disks"]] == ["sda", "vdb", "sdb"]


def _copy_checks(path, magic, options, conf=""):
    return {c["name"]: c for c in st.assess_copy(_facts(path, magic, conf), options, "host1")}


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
    none = st.assess_copy({"disks": st.domain_disks(XML)[1:2]}, {"copy_storage": "all"}, "h")
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
    disks = st.domain_disks(xml)
    assert [d["target"] for d in disks if d["empty"]] == ["sdb"]
    assert st.copied_targets(disks, {"copy_storage": "all"}) == ["vda", "vdb", "vdc"]
    facts = st.disk_facts(disks, "", MOUNTINFO, statfs=lambda p: EXT4, realpath=lambda p: p,
                          exists=lambda p: True)
    check = {c["name"]: c for c in st.assess_copy(facts, {"copy_storage": "all"}, "h")}
    assert check["copy_storage:vdc"]["ok"] is False
    assert "copies file disks only" in check["copy_storage:vdc"]["detail"]


def test_backing_files_come_from_the_live_xml_and_volume_xml():
    live = """<domain><devices>
      <disk type='file'><source file='/l/top.qcow2' index='1'/>
        <backingStore type='file' index='2'><format type='qcow2'/>
          <source file='/s/base.qcow2'/><backingStore/></backingStore>
        <target dev='vda'/></disk>
      <disk type='file'><source file='/l/b.qcow2'/><backingStore/><target dev='vdb'/></disk>
    </devices></domain>"""
    base = {"path": "/s/base.qcow2", "format": "qcow2"}
    assert st.backing_files(live) == {"vda": base, "vdb": None}
    # A network backing store is a backing store too.
    rbd = live.replace("<source file='/s/base.qcow2'/>",
                       "<source protocol='rbd' name='pool/base'/>")
    assert st.backing_files(rbd)["vda"] == {"path": "rbd:pool/base", "format": "qcow2"}
    vol = ("<volume><target><path>/l/top.qcow2</path><format type='qcow2'/></target>"
           "<backingStore><path>/s/base.qcow2</path><format type='qcow2'/></backingStore>"
           "</volume>")
    assert st.volume_facts(vol) == {"format": "qcow2", "backing": base}
    assert st.volume_facts("<volume><target><path>/x</path></target></volume>") == {
        "format": None, "backing": None}
    # A path is in use on the destination as a disk or anywhere in a running guest's chain.
    assert st.disk_files(live) == {"/l/top.qcow2", "/s/base.qcow2", "/l/b.qcow2"}
    volumes = live.replace("</devices>", "<disk type='volume'><source pool='p' volume='v'/>"
                                         "<target dev='vdc'/></disk></devices>")
    assert st.disk_volumes(volumes) == [("p", "v")]
    assert st.pool_target("<pool type='dir'><name>p</name><target><path>/l</path></target>"
                          "</pool>") == "/l"


def test_a_shareable_disk_or_one_xml_moves_is_not_copied():
    xml = XML.replace("<target dev='vda' bus='virtio'/></disk>",
                      "<target dev='vda' bus='virtio'/><shareable/></disk>", 1)
    facts = st.disk_facts(st.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: EXT4,
                          realpath=lambda p: p, exists=lambda p: True)
    checks = {c["name"]: c for c in st.assess_copy(
        facts, {"copy_storage": "all", "migrate_disks": ["vda"]}, "h")}
    assert checks["copy_storage:vda"]["ok"] is False
    assert "a copy would split it in two" in checks["copy_storage:vda"]["detail"]
    # libvirt copies into the destination XML's paths: the one judged must be the one used.
    other = XML.replace("/srv/vm/vdisk.qcow2", "/elsewhere/vdisk.qcow2")
    checks = _copy_checks("/srv/vm/vdisk.qcow2", EXT4, {"copy_storage": "all",
                                                        "migrate_disks": ["vda"], "xml": other})
    assert checks["copy_storage:vda"]["ok"] is False
    assert "option xml gives disk vda the path /elsewhere" in checks["copy_storage:vda"]["detail"]


def test_an_nvme_disk_is_not_called_empty_by_the_shared_storage_check():
    xml = XML.replace("</devices>", "<disk type='nvme' device='disk'><source type='pci' "
                                    "namespace='1'/><target dev='vdc'/></disk></devices>")
    checks = {c["name"]: c for c in st.assess(_facts_of(xml), "host1")}
    assert checks["shared_storage:vdc"]["ok"] is False
    assert "a nvme disk is not shared storage" in checks["shared_storage:vdc"]["detail"]


def _facts_of(xml):
    facts = st.disk_facts(st.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: NFS,
                          realpath=lambda p: p, exists=lambda p: True)
    facts["daemon"] = {}
    return facts


VOLUME_XML = XML.replace(
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>\n"
    "    <source file='/srv/vm/vdisk.qcow2'/>",
    "<disk type='volume' device='disk'><driver name='qemu' type='qcow2' cache='none'/>\n"
    "    <source pool='images' volume='vdisk.qcow2'/>")


@pytest.mark.parametrize("resolved, magic, ok, words", [
    # a dir or netfs pool's volume is a file: judged by the file's rules (NFS: shared)
    (("file", "/srv/vm/vdisk.qcow2"), NFS, True, "shared storage by type"),
    (("file", "/var/lib/libvirt/images/vdisk.qcow2"), EXT4, False, "does not treat as shared"),
    # a logical or iSCSI pool's volume is a block device: libvirt checks nothing
    (("block", "/dev/vg/vdisk"), EXT4, True, "a block device"),
    (None, NFS, False, "could not be read"),
])
def test_a_volume_disk_is_judged_as_what_its_pool_makes_it(resolved, magic, ok, words):
    volumes = {"images/vdisk.qcow2": resolved} if resolved else {}
    facts = st.disk_facts(st.domain_disks(VOLUME_XML, volumes), "", MOUNTINFO,
                          statfs=lambda p: magic, realpath=lambda p: p, exists=lambda p: True)
    facts["daemon"] = {}
    check = {c["name"]: c for c in st.assess(facts, "host1")}["shared_storage:vda"]
    assert check["ok"] is ok and words in check["detail"], check
    assert "volume images/vdisk.qcow2" in check["detail"]


def test_a_block_disk_is_shared_to_libvirt():
    xml = XML.replace("<disk type='file' device='disk'>", "<disk type='block' device='disk'>"
                      ).replace("<source file='/srv/vm/vdisk.qcow2'/>", "<source dev='/dev/sdb'/>")
    checks = {c["name"]: c for c in st.assess(_facts_of(xml), "host1")}
    assert checks["shared_storage:vda"]["ok"] is True
    assert "same LUN" in checks["shared_storage:vda"]["fix"]
    assert checks["disk_cache:vda"]["ok"] is True
