"""Guests on local storage: option ``copy_storage``, on real daemons.

The one case without shared storage: libvirt copies the disk to the destination (NBD) while
the guest runs. The guest here keeps its kernel, initrd and console on the shared storage, but
its disk in each hypervisor's own ``/var/lib/libvirt/images`` (the lab gives every host a
private /var/lib/libvirt). Before it boots, a pattern is written into the disk; after a move, the
destination's image is read back for it, so a migration that did not copy the disk fails here.
"""
import contextlib
import json

import pytest

import vmlab

from .test_migrate import assert_guest_went_on, counter_before, orch_state
from .test_shared_storage import _orch, _where
from .test_transports import _dest_qmp, _transport

LOCAL = "/var/lib/libvirt/images"
NAME = "vcopy"
DISK = f"{LOCAL}/{NAME}.qcow2"
MIB = 1 << 20
PATTERN = ("0x5a", 1 * MIB, 1 * MIB)  # byte, offset, length (bytes)
DISKS_PORT = 49300
DISKS_URI_PORT = 49301


def _image(lab, host, name=NAME):
    return lab.host_path(host, f"{LOCAL}/{name}.qcow2")


def _in_image(lab, host, path, pattern=PATTERN, chain=True):
    """Whether ``host`` reads ``pattern`` (byte, offset, length) in the qcow2 image ``path``
    (read-only, sharing the running QEMU's lock): through its backing chain (opened inside
    ``host``, where the chain's paths resolve), or from the image's own clusters only
    (``chain=False``: no backing file opened)."""
    byte, offset, length = pattern
    image = (path if chain else "json:" + json.dumps(
        {"driver": "qcow2", "backing": None, "file": {"driver": "file", "filename": path}}))
    out = lab.host_run(host, ["qemu-io", "-r", "-U", *(["-f", "qcow2"] if chain else []),
                              "-c", f"read -P {byte} {offset} {length}", image],
                       check=False, capture=True)
    return out.returncode == 0 and f"read {length}/{length} bytes" in out.stdout \
        and "Pattern verification failed" not in out.stdout


def _write(lab, host, path, pattern):
    lab.host_run(host, ["qemu-io", "-f", "qcow2", "-c", "write -P {} {} {}".format(*pattern),
                        path], capture=True)


@contextlib.contextmanager
def _libvirt(lab, host):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    conn = libvirt.open(lab.libvirt_uri(host))
    try:
        yield libvirt, conn
    finally:
        conn.close()


def _pool_up(lab, host):
    """The operator's step on a destination: a ``dir`` storage pool over its image directory
    (libvirt then creates the image as it copies)."""
    with _libvirt(lab, host) as (_, conn):
        conn.storagePoolDefineXML(f"<pool type='dir'><name>images</name><target><path>{LOCAL}"
                                  "</path></target></pool>").create()


def _pool_gone(lab, host):
    with _libvirt(lab, host) as (libvirt, conn):
        try:
            pool = conn.storagePoolLookupByName("images")
        except libvirt.libvirtError:
            return
        if pool.isActive():
            pool.destroy()
        pool.undefine()


def _no_transient_pools(lab):
    """The prechecks' transient pools (probe and image look-ups) are gone on both hosts."""
    for host in vmlab.HYPERVISORS:
        with _libvirt(lab, host) as (_, conn):
            left = [p.name() for p in conn.listAllStoragePools(0)
                    if p.name().startswith("vmigrate-")]
        assert left == [], (host, left)


@pytest.fixture
def vcopy(lab, guest):
    """``vcopy`` running on host1, its disk (with the pattern) in host1's own LOCAL; host2 has
    the directory but no storage pool and no image."""
    lab.remove_guest_everywhere(NAME)
    for host in vmlab.HYPERVISORS:
        _pool_gone(lab, host)
        lab.host_path(host, LOCAL).mkdir(parents=True, exist_ok=True)
        _image(lab, host).unlink(missing_ok=True)
    lab.host_run("host1", ["qemu-img", "create", "-q", "-f", "qcow2", DISK, "64M"])
    _write(lab, "host1", DISK, PATTERN)
    assert _in_image(lab, "host1", DISK)
    lab.create_guest("host1", NAME, workset_mib=1, disk_dir=LOCAL)
    yield
    lab.remove_guest_everywhere(NAME)
    for host in vmlab.HYPERVISORS:
        _pool_gone(lab, host)
        _image(lab, host).unlink(missing_ok=True)


def test_a_guest_on_local_storage_moves_with_its_disk_and_back(vcopy, lab, pillar_dir, salt_cli,
                                                              salt_run_cli):
    options = {"copy_storage": "all"}
    # host2 has the directory but no image and no pool: libvirt could not create the image
    # there. Refused before anything moves, naming the fix.
    ret = _orch(salt_run_cli, vm=NAME, dest="host2", options=options)
    assert ret.returncode != 0, ret
    comment = orch_state(ret)["comment"]
    for words in ("precheck refused the migration of 'vcopy', nothing was moved",
                  f"{LOCAL}/vcopy.qcow2 does not exist on host2 and no active storage pool "
                  f"there has {LOCAL} as its target", "virsh pool-define-as"):
        assert words in comment, comment
    assert _where(lab, NAME) == {"host1": (True, True)}
    assert not _image(lab, "host2").exists()

    # The operator's step; then the same request moves the guest and its disk.
    _pool_up(lab, "host2")
    ret = _orch(salt_run_cli, "test=True", vm=NAME, dest="host2", options=options)
    comment = orch_state(ret)["comment"]
    assert "[ok] copy_storage:vda" in comment and "local to host1" in comment, comment
    assert "[ok] dest_disk:vda" in comment and "creates it in storage pool 'images'" in comment
    assert "shared_storage:vda" not in comment, comment
    before = counter_before(lab, "host1", NAME)
    with _dest_qmp(lab, "host1") as sent, _dest_qmp(lab, "host2") as received:
        ret = _orch(salt_run_cli, vm=NAME, dest="host2", options=dict(
            options, disks_port=DISKS_PORT, copy_storage_synchronous_writes=True,
            migrate_disks=["vda"], migrate_disks_detect_zeroes=["vda"]))
        source, dest = sent()[0], received()[0]
    assert ret.returncode == 0, orch_state(ret)["comment"]
    state = orch_state(ret)
    assert state["changes"]["host"] == {"old": "host1", "new": "host2"}
    # Each option reached QEMU as virsh's would: the destination served the disk on the port
    # asked for (--disks-port; QMP's legacy socket address nests the port under "data")...
    served = [a["addr"] for n, a in dest if n == "nbd-server-start"]
    assert [str(a.get("data", a).get("port")) for a in served] == [str(DISKS_PORT)], dest
    # ...and the source mirrored the whole of vda (--copy-storage-all) with synchronous writes
    # (--copy-storage-synchronous-writes) into a target that skips zeroes
    # (--migrate-disks-detect-zeroes).
    mirrors = [a for n, a in source if n == "blockdev-mirror"]
    assert [(m["sync"], m.get("copy-mode")) for m in mirrors] == [("full", "write-blocking")]
    targets = [a for n, a in source if n == "blockdev-add" and a.get("driver") == "nbd"]
    assert [t.get("detect-zeroes") for t in targets] == ["unmap"], targets
    assert _where(lab, NAME) == {"host2": (True, True)}
    assert_guest_went_on(lab, "host2", before, NAME)
    # The disk came along: host2's own image holds what was written before the guest booted;
    # host1's image is kept (vmigrate never deletes one).
    assert _in_image(lab, "host2", DISK)
    assert _in_image(lab, "host1", DISK)

    # Back over TLS with copy_storage inc (only the top image: this one has no backing file).
    # host1 kept the image it ran from, which holds data that would show through: refused.
    options = {"copy_storage": "inc"}
    with _transport(lab, pillar_dir, salt_cli, "tls"):
        ret = _orch(salt_run_cli, "test=True", vm=NAME, dest="host1", options=options)
        comment = orch_state(ret)["comment"]
        assert "[BLOCKER] dest_disk:vda" in comment and "on host1 already holds" in comment
        # The operator's step: an empty image in its place. Then it moves.
        lab.host_run("host1", ["qemu-img", "create", "-q", "-f", "qcow2", DISK, "64M"])
        assert not _in_image(lab, "host1", DISK)
        before = counter_before(lab, "host2", NAME)
        # Where host1 serves the disk, as a URI this time (--disks-uri).
        disks_uri = f"tcp://{lab.addr('host1')}:{DISKS_URI_PORT}"
        with _dest_qmp(lab, "host2") as sent, _dest_qmp(lab, "host1") as received:
            ret = _orch(salt_run_cli, vm=NAME, dest="host1",
                        options=dict(options, disks_uri=disks_uri))
            source, dest = sent()[0], received()[0]
    assert ret.returncode == 0, orch_state(ret)["comment"]
    assert orch_state(ret)["changes"]["migration"]["data_stream"] == "tls"
    assert [a["sync"] for n, a in source if n == "blockdev-mirror"] == ["top"], source
    # The destination QEMU's NBD server took the disk with the x509 credentials.
    creds = {a["id"] for n, a in dest if n == "object-add"
             and a.get("qom-type") == "tls-creds-x509" and a.get("endpoint") == "server"}
    assert any(n == "nbd-server-start" and a.get("tls-creds") in creds
               for n, a in dest), dest
    served = [a["addr"] for n, a in dest if n == "nbd-server-start"]
    assert [(str(a.get("data", a).get("host")), str(a.get("data", a).get("port")))
             for a in served] == [(lab.addr("host1"), str(DISKS_URI_PORT))], served
    assert _where(lab, NAME) == {"host1": (True, True)}
    assert_guest_went_on(lab, "host1", before, NAME)
    # The empty image now holds the pattern: the copy wrote it.
    assert _in_image(lab, "host1", DISK)
    _no_transient_pools(lab)


def test_copying_a_disk_on_storage_the_destination_shares_is_refused(lab, guest, salt_run_cli):
    """A directory host1 does not treat as shared (ext4, no shared_filesystems entry) that
    host2 sees all the same (in the lab, one filesystem): only the sentinel host2 finds tells
    that copying would write the image onto itself. Refused; nothing moves."""
    local = lab.root / "host1-notshared"
    local.mkdir(exist_ok=True)
    try:
        lab.create_guest("host1", "vnotshared", directory=local, workset_mib=1)
        ret = _orch(salt_run_cli, vm="vnotshared", dest="host2",
                    options={"copy_storage": "all"})
        assert ret.returncode != 0, ret
        comment = orch_state(ret)["comment"]
        for words in ("precheck refused the migration of 'vnotshared', nothing was moved",
                      f"host2's libvirtd sees a sentinel host1 wrote beside {local}/vnotshared.qcow2",
                      "copying the image would overwrite it with itself"):
            assert words in comment, comment
        # host1's own check passed it as local: the destination's sentinel is what refused.
        ret = _orch(salt_run_cli, "test=True", vm="vnotshared", dest="host2",
                    options={"copy_storage": "all"})
        assert "[ok] copy_storage:vda" in orch_state(ret)["comment"]
        assert _where(lab, "vnotshared") == {"host1": (True, True)}
        assert not list(local.glob(".vmigrate-*")), list(local.iterdir())
        _no_transient_pools(lab)
    finally:
        lab.remove_guest_everywhere("vnotshared")
        for path in local.iterdir():
            path.unlink()
        local.rmdir()


def test_copy_storage_inc_copies_the_top_image_onto_one_over_the_same_backing_file(
        lab, guest, salt_run_cli):
    """A guest whose local disk is an overlay over a base image each host has a copy of:
    ``inc`` mirrors only the overlay. Refused while host2's overlay sits over another backing
    file, naming the fix; once it sits over the same one the guest moves, and on host2 it reads
    the base's data from host2's base and the overlay's from what was copied."""
    name, base, top = "vchain", f"{LOCAL}/vchain-base.qcow2", f"{LOCAL}/vchain.qcow2"
    in_base, in_top = ("0x5a", 1 * MIB, 1 * MIB), ("0xa5", 2 * MIB, 1 * MIB)

    def overlay(host, backing):
        lab.host_run(host, ["rm", "-f", top])
        lab.host_run(host, ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                            backing, top, "64M"])

    lab.remove_guest_everywhere(name)
    try:
        for host in vmlab.HYPERVISORS:
            _pool_gone(lab, host)
            lab.host_path(host, LOCAL).mkdir(parents=True, exist_ok=True)
            lab.host_run(host, ["rm", "-f", base, top, f"{LOCAL}/other-base.qcow2"])
            lab.host_run(host, ["qemu-img", "create", "-q", "-f", "qcow2", base, "64M"])
            _write(lab, host, base, in_base)
        overlay("host1", base)
        _write(lab, "host1", top, in_top)
        assert _in_image(lab, "host1", top, in_top, chain=False)
        assert not _in_image(lab, "host1", top, in_base, chain=False)
        lab.create_guest("host1", name, workset_mib=1, disk_dir=LOCAL)
        options = {"copy_storage": "inc"}

        # host2's overlay sits over another base (same content, other file): refused.
        lab.host_run("host2", ["cp", base, f"{LOCAL}/other-base.qcow2"])
        overlay("host2", f"{LOCAL}/other-base.qcow2")
        ret = _orch(salt_run_cli, vm=name, dest="host2", options=options)
        assert ret.returncode != 0, ret
        comment = orch_state(ret)["comment"]
        for words in ("precheck refused the migration of 'vchain', nothing was moved",
                      f"{top} on host2 is over {LOCAL}/other-base.qcow2",
                      f"qemu-img create -f qcow2 -F qcow2 -b {base}"):
            assert words in comment, comment
        assert _where(lab, name) == {"host1": (True, True)}

        # The operator's step: an empty overlay over the same base. Then it moves.
        overlay("host2", base)
        before = counter_before(lab, "host1", name)
        with _dest_qmp(lab, "host1") as sent:
            ret = _orch(salt_run_cli, vm=name, dest="host2", options=options)
            source = sent()[0]
        assert ret.returncode == 0, orch_state(ret)["comment"]
        assert [a["sync"] for n, a in source if n == "blockdev-mirror"] == ["top"], source
        assert _where(lab, name) == {"host2": (True, True)}
        assert_guest_went_on(lab, "host2", before, name)
        # The overlay's data came over into host2's overlay; the base's did not (it was there).
        assert _in_image(lab, "host2", top, in_top, chain=False)
        assert not _in_image(lab, "host2", top, in_base, chain=False)
        assert _in_image(lab, "host2", top, in_base)
        _no_transient_pools(lab)
    finally:
        try:
            lab.remove_guest_everywhere(name)
        finally:
            for host in vmlab.HYPERVISORS:
                lab.host_run(host, ["rm", "-f", base, top, f"{LOCAL}/other-base.qcow2"],
                             check=False)
