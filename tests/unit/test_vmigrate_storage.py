"""The storage precheck: libvirt's shared-storage rules as pure functions over facts."""
import os
import pathlib
import shutil
import tempfile

import pytest

from tests.support.modload import load
from tests.support.storage_facts import EXT4, MOUNTINFO, NFS, XML, facts as _facts

st = load("_utils", "vmigrate_storage")
dk = load("_utils", "vmigrate_disks")


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
    facts = st.disk_facts(dk.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: NFS,
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
    facts = st.disk_facts(dk.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: NFS)
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


def test_an_nvme_disk_is_not_called_empty_by_the_shared_storage_check():
    xml = XML.replace("</devices>", "<disk type='nvme' device='disk'><source type='pci' "
                                    "namespace='1'/><target dev='vdc'/></disk></devices>")
    checks = {c["name"]: c for c in st.assess(_facts_of(xml), "host1")}
    assert checks["shared_storage:vdc"]["ok"] is False
    assert "a nvme disk is not shared storage" in checks["shared_storage:vdc"]["detail"]


def _facts_of(xml):
    facts = st.disk_facts(dk.domain_disks(xml), "", MOUNTINFO, statfs=lambda p: NFS,
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
    facts = st.disk_facts(dk.domain_disks(VOLUME_XML, volumes), "", MOUNTINFO,
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
