"""Shared storage as libvirt sees it, on real daemons.

libvirtd takes qemu.conf ``shared_filesystems`` in once, when it starts, and drops a listed path
that does not exist yet. On a fresh machine the lab's shared mount point used to appear only
after libvirtd started (nfs.client made it), so the first migration failed as "unsafe". These
tests reproduce that order on a live hypervisor and check what the product says, and that a
disk on storage libvirt does not treat as shared is refused before anything moves.
"""
import json
import shutil

import pytest

import vmlab

from .test_migrate import orch_state


def _orch(salt_run_cli, *extra, **pillar):
    return salt_run_cli.run("state.orch", "migrate", f"pillar={json.dumps(pillar)}", *extra)


def _remove(lab, name):
    lab.remove_guest_everywhere(name)


def _where(lab, name):
    """{host: (active, persistent)} of ``name``, asked of libvirt directly."""
    return {h: (d["active"], d["persistent"]) for h, d in lab.domain_on(name).items()}


def test_the_lab_made_the_shared_mount_point_before_libvirtd(vdisk_on_host1, lab):
    """The ordering the lab depends on, checked where it happens: every hypervisor's libvirtd
    started after the shared mount point existed, and a live migration passes libvirt's check."""
    # In the root mount namespace the mount point is the bare directory (each host mounts onto
    # it in its own namespace, and nothing writes into it): its mtime is when it was created.
    created = lab.mountpoint.stat().st_mtime
    for host in vmlab.HYPERVISORS:
        pid = int(lab.host_path(host, "/run/libvirtd.pid").read_text())
        started = vmlab.process_start_time(pid)
        # Start times are a clock tick coarse. Reverted, the mount point appears when
        # nfs.client runs, over 10 s after libvirtd started.
        assert created <= started + 0.1, (host, created, started)


@pytest.fixture
def late_mount(lab, guest):
    """A second shared directory listed in host1's qemu.conf while it does not exist; host1's
    libvirtd restarted then (so it drops the entry); the directory created and bind-mounted
    on both hypervisors afterwards: the fresh-machine order."""
    late = lab.root / "late"
    backing = lab.export_dir / "late"
    conf = lab.host_dir("host1") / "etc" / "libvirt" / "qemu.conf"
    original = conf.read_text()
    # Listed last: a missing entry also hides every entry after it.
    conf.write_text(original.replace(f'"{lab.mountpoint}" ]', f'"{lab.mountpoint}", "{late}" ]'))
    assert str(late) in conf.read_text()
    lab.libvirtd_restart("host1")
    backing.mkdir()
    late.mkdir()
    for host in vmlab.HYPERVISORS:
        lab.host_run(host, ["mount", "--bind", backing, late])
    yield late
    _remove(lab, "vlate")
    for host in vmlab.HYPERVISORS:
        lab.host_run(host, ["umount", late], check=False)
    conf.write_text(original)
    lab.libvirtd_restart("host1")
    shutil.rmtree(late, ignore_errors=True)
    shutil.rmtree(backing, ignore_errors=True)


def test_mount_after_libvirtd_start_is_explained_then_fixed_by_a_restart(
        late_mount, lab, salt_run_cli):
    lab.create_guest("host1", "vlate", directory=late_mount, workset_mib=1)
    disk = f"{late_mount}/vlate.qcow2"
    assert _where(lab, "vlate") == {"host1": (True, True)}

    ret = _orch(salt_run_cli, vm="vlate", dest="host2")
    assert ret.returncode != 0, ret
    comment = orch_state(ret)["comment"]
    # libvirt's refusal, with what it saw and the fix.
    for words in ("Migration without shared storage is unsafe", "libvirt error code 81",
                  f"disk vda ({disk})", "on ext4 mounted at", "libvirtd on host1 (pid",
                  "did not take that entry in: the path did not exist yet when it started",
                  "Fix: restart libvirtd", "never migrate with unsafe=True"):
        assert words in comment, comment
    # Nothing moved: running and defined on host1 only.
    assert _where(lab, "vlate") == {"host1": (True, True)}

    # What the lab does on every lab-up, done here by hand: libvirtd restarted once the path
    # exists. Then the same request passes.
    lab.libvirtd_restart("host1")
    ret = _orch(salt_run_cli, vm="vlate", dest="host2")
    assert ret.returncode == 0, orch_state(ret)["comment"]
    assert _where(lab, "vlate") == {"host2": (True, True)}


@pytest.fixture
def local_disk_guest(lab, guest):
    """A guest on host1 whose disk is in a directory no shared_filesystems entry covers."""
    local = lab.root / "host1-local"
    local.mkdir()
    lab.create_guest("host1", "vlocal", directory=local, workset_mib=1)
    yield local
    _remove(lab, "vlocal")
    shutil.rmtree(local, ignore_errors=True)


def test_disk_on_unshared_storage_is_refused_before_anything_moves(
        local_disk_guest, lab, salt_run_cli):
    disk = f"{local_disk_guest}/vlocal.qcow2"
    # The dry run shows the blocker and its fix.
    ret = _orch(salt_run_cli, "test=True", vm="vlocal", dest="host2")
    assert ret.returncode != 0, ret
    state = orch_state(ret)
    assert state["result"] is False and state["changes"] == {}
    assert "[BLOCKER] shared_storage:vda" in state["comment"], state["comment"]

    ret = _orch(salt_run_cli, vm="vlocal", dest="host2")
    assert ret.returncode != 0, ret
    comment = orch_state(ret)["comment"]
    for words in ("precheck refused the migration of 'vlocal', nothing was moved",
                  f"disk vda ({disk})", "on ext4", "no qemu.conf shared_filesystems entry",
                  "mount the NFS export at the same path on both hosts",
                  "never migrate with unsafe=True"):
        assert words in comment, comment
    # Our precheck stopped it, not libvirt: host2's libvirtd never saw an incoming domain.
    log = lab.host_path("host2", "/var/log/libvirt/libvirtd.log")
    assert "vlocal" not in (log.read_text(errors="replace") if log.exists() else "")
    assert _where(lab, "vlocal") == {"host1": (True, True)}


def _libvirt(lab, host):
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    return libvirt, libvirt.open(lab.libvirt_uri(host))


def _with_disk(lab, name, disk):
    """Define ``name`` (made by lab.create_guest, not started) again with its file disk
    replaced by ``disk`` (the <disk ...> start tag, driver and source lines), and start it."""
    libvirt, conn = _libvirt(lab, "host1")
    try:
        xml = lab.guest_xml(name).replace(
            f"<disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' "
            f"cache='none'/>\n      <source file='{lab.mountpoint}/{name}.qcow2'/>", disk)
        assert disk in xml, xml
        uuid = conn.lookupByName(name).UUIDString()
        conn.defineXML(xml.replace(f"<name>{name}</name>",
                                   f"<name>{name}</name><uuid>{uuid}</uuid>")).create()
    finally:
        conn.close()


POOL = "vmtest-images"


@pytest.fixture
def volume_guest(lab, guest):
    """A guest whose disk is a storage-pool volume: a dir pool over the shared path on both
    hypervisors (libvirt resolves the volume on the destination too), as a netfs pool over
    the NFS export would be on real hosts. The pools are only stopped and undefined after:
    their directory is the shared storage, never deleted."""
    name = "vvol"
    lab.remove_guest_everywhere(name)
    lab.create_guest("host1", name=name, start=False)
    pools = {}
    try:
        for host in vmlab.HYPERVISORS:
            libvirt, conn = _libvirt(lab, host)
            pool = conn.storagePoolCreateXML(
                f"<pool type='dir'><name>{POOL}</name><target><path>{lab.mountpoint}</path>"
                "</target></pool>", 0)  # transient: gone with destroy
            pools[host] = (conn, pool)
        _with_disk(lab, name, "<disk type='volume' device='disk'>\n      <driver name='qemu' "
                              f"type='qcow2' cache='none'/>\n      <source pool='{POOL}' "
                              f"volume='{name}.qcow2'/>")
        yield name
    finally:
        lab.remove_guest_everywhere(name)
        for conn, pool in pools.values():
            pool.destroy()
            conn.close()


def test_a_guest_on_a_pool_volume_migrates_as_libvirt_allows(volume_guest, lab, salt_run_cli):
    """libvirt judges a volume disk as the file its pool makes it (qemuMigrationSrcIsSafe
    after virStorageSourceGetActualType): here a file on the shared path."""
    plan = salt_run_cli.run("vmigrate.plan", volume_guest, "host2")
    checks = {c["name"]: c for c in plan.data["checks"]}
    assert checks["shared_storage:vda"]["ok"] is True, checks["shared_storage:vda"]
    assert f"volume {POOL}/{volume_guest}.qcow2" in checks["shared_storage:vda"]["detail"]
    ret = salt_run_cli.run("vmigrate.migrate", volume_guest, "host2")
    assert ret.returncode == 0, ret.data
    assert _where(lab, volume_guest) == {"host2": (True, True)}


@pytest.fixture
def block_guest(lab, guest):
    """A guest whose disk is a block device both hypervisors see at one path: a loop device
    over a raw image on the shared storage (the lab's stand-in for a SAN LUN)."""
    name = "vblk"
    lab.remove_guest_everywhere(name)
    image = lab.export_dir / f"{name}.raw"
    vmlab.run(["truncate", "-s", "16M", image])
    loop = vmlab.run(["losetup", "-f", "--show", image], capture=True).stdout.strip()
    try:
        lab.create_guest("host1", name=name, start=False)
        _with_disk(lab, name, "<disk type='block' device='disk'>\n      <driver name='qemu' "
                              f"type='raw' cache='none'/>\n      <source dev='{loop}'/>")
        yield name
    finally:
        lab.remove_guest_everywhere(name)
        vmlab.run(["losetup", "-d", loop], check=False)
        image.unlink(missing_ok=True)


def test_a_guest_on_a_block_device_migrates_as_libvirt_allows(block_guest, lab, salt_run_cli):
    """libvirt treats a block disk as shared (it checks nothing); so does vmigrate, saying
    the destination must see the same device."""
    plan = salt_run_cli.run("vmigrate.plan", block_guest, "host2")
    checks = {c["name"]: c for c in plan.data["checks"]}
    assert checks["shared_storage:vda"]["ok"] is True, checks["shared_storage:vda"]
    assert "a block device" in checks["shared_storage:vda"]["detail"]
    ret = salt_run_cli.run("vmigrate.migrate", block_guest, "host2")
    assert ret.returncode == 0, ret.data
    assert _where(lab, block_guest) == {"host2": (True, True)}
