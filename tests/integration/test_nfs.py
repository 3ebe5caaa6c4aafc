"""vmigrate.nfs.server on nfs1 and vmigrate.nfs.client on the hypervisors, applied for real in the lab."""
import json
import os

import vmlab

from tests.support.labsalt import state_results


def _changes(data):
    return {r["__id__"]: r["changes"] for r in state_results(data) if r["changes"]}


def test_server_renders_safe_exports_and_exportfs_accepts_them(storage, lab):
    results = state_results(storage["server"])
    assert all(r["result"] is True for r in results), results
    exports = lab.host_path(vmlab.NFS_HOST, "/etc/exports.d/vmigrate.exports").read_text()
    line = f"{lab.export_dir} {lab.net}.0/24(rw,sync,root_squash,no_subtree_check,secure,mp)"
    assert line in exports.splitlines()
    # exportfs -ra really parsed it: the kernel-independent export table lists the path.
    etab = lab.host_path(vmlab.NFS_HOST, "/var/lib/nfs/etab").read_text()
    assert str(lab.export_dir) in etab and "root_squash" in etab
    # The real machine's exports were never touched.
    assert not os.path.exists("/etc/exports.d/vmigrate.exports")
    # The lab's export is a directory standing in for the image filesystem a real NFS server
    # mounts there (a same-filesystem bind mount is no mount point to nfs-utils either): the
    # state says the server would not export it (mp, the default) until one is mounted.
    assert any(f"NOTE: {lab.export_dir}: {lab.export_dir} is not a mount point now" in
               r["comment"] for r in results), results


def test_an_export_that_is_not_a_mount_point_is_named_before_it_is_written(storage, salt_cli,
                                                                          lab):
    """mp (the default): an NFS server whose image filesystem did not mount exports nothing,
    instead of the empty directory beneath it that every hypervisor would then share. The
    state says so, read on nfs1 itself; test=True writes nothing."""
    path = lab.host_path(vmlab.NFS_HOST, "/etc/exports.d/vmigrate.exports")
    before = path.read_bytes()
    unmounted = lab.export_dir.parent / "another"
    pillar = {"vmigrate": {"nfs": {"server": {"exports": [
        {"path": str(unmounted), "clients": [{"host": f"{lab.net}.0/24",
                                               "options": {"rw": True}}]}]}}}}
    ret = salt_cli.run("state.apply", "vmigrate.nfs.server", "test=True",
                       f"pillar={json.dumps(pillar)}", minion_tgt=vmlab.NFS_HOST)
    assert ret.returncode == 0, ret
    comments = " ".join(r["comment"] for r in state_results(ret.data))
    assert f"NOTE: {unmounted}: {unmounted} is not a mount point now" in comments, comments
    assert path.read_bytes() == before and not unmounted.exists()


def test_server_without_libvirt_users_owns_exports_by_number(storage, lab):
    # nfs1 is an NFS server, not a hypervisor: it has none of libvirt's users.
    ret = lab.host_run(vmlab.NFS_HOST, ["getent", "passwd", "libvirt-qemu"], check=False,
                       capture=True)
    assert ret.returncode == 2, ret.stdout
    assert all(r["result"] is True for r in state_results(storage["server"]))
    st = lab.export_dir.stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o777)) == (64055, 64055, "0o770")


def test_server_second_apply_and_test_mode_change_nothing(storage, salt_cli, lab):
    path = lab.host_path(vmlab.NFS_HOST, "/etc/exports.d/vmigrate.exports")
    before = path.read_bytes()
    for extra in ((), ("test=True",)):
        ret = salt_cli.run("state.apply", "vmigrate.nfs.server", *extra, minion_tgt=vmlab.NFS_HOST)
        assert ret.returncode == 0, ret
        assert _changes(ret.data) == {}
        assert all(r["result"] is True for r in state_results(ret.data))
    assert path.read_bytes() == before


def test_server_bad_pillar_fails_and_writes_nothing(storage, salt_cli, lab):
    path = lab.host_path(vmlab.NFS_HOST, "/etc/exports.d/vmigrate.exports")
    before = path.read_bytes()
    bad = {"vmigrate": {"nfs": {"server": {"exports": [
        {"path": str(lab.export_dir), "clients": [{"host": "10.0.0.0/8\n/ *(rw)"}]}]}}}}
    ret = salt_cli.run("state.apply", "vmigrate.nfs.server", f"pillar={json.dumps(bad)}",
                       minion_tgt=vmlab.NFS_HOST)
    assert ret.returncode != 0
    results = state_results(ret.data)
    validated = [r for r in results if r["__id__"] == "vmigrate-nfs-server-exports-validated"][0]
    assert validated["result"] is False
    assert "clients[0]" in validated["comment"] and "not an IP address" in validated["comment"]
    assert all(not r["changes"] for r in results)
    assert path.read_bytes() == before


def test_server_unsafe_option_needs_switch_and_warns(storage, salt_cli, lab):
    path = lab.host_path(vmlab.NFS_HOST, "/etc/exports.d/vmigrate.exports")
    before = path.read_bytes()
    export = {"path": str(lab.export_dir),
              "clients": [{"host": f"{lab.net}.0/24", "options": {"no_root_squash": True}}]}
    pillar = {"vmigrate": {"nfs": {"server": {"exports": [export]}}}}
    ret = salt_cli.run("state.apply", "vmigrate.nfs.server", "test=True",
                       f"pillar={json.dumps(pillar)}", minion_tgt=vmlab.NFS_HOST)
    assert ret.returncode != 0
    assert "allow_unsafe: [no_root_squash]" in str(ret.data)
    pillar["vmigrate"]["nfs"]["server"]["allow_unsafe"] = ["no_root_squash"]
    ret = salt_cli.run("state.apply", "vmigrate.nfs.server", "test=True",
                       f"pillar={json.dumps(pillar)}", minion_tgt=vmlab.NFS_HOST)
    managed = [r for r in state_results(ret.data)
               if r["__id__"] == "vmigrate-nfs-server-exports-managed"][0]
    assert managed["result"] is None and "WARNING" in managed["comment"]
    assert "no_root_squash" in managed["changes"]["diff"]
    assert path.read_bytes() == before


def test_clients_mount_the_same_path_and_second_apply_changes_nothing(storage, salt_cli, lab):
    for host in vmlab.HYPERVISORS:
        first = _changes(storage["clients"][host])
        assert "vmigrate-nfs-client-mount-1-mounted" in first, first
        assert lab.is_mounted(host, lab.mountpoint)
        fstab = lab.host_path(host, "/etc/fstab").read_text()
        assert f"{lab.export_dir}\t\t{lab.mountpoint}\tnone\tbind\t0 0" in fstab
        for extra in ((), ("test=True",)):
            ret = salt_cli.run("state.apply", "vmigrate.nfs.client", *extra, minion_tgt=host)
            assert ret.returncode == 0, ret
            assert _changes(ret.data) == {}, (host, extra)
    # Both hypervisors see one storage: a file written through host1 is visible on host2.
    marker = lab.host_path("host1", lab.mountpoint) / "shared-marker"
    marker.write_text("host1")
    assert (lab.host_path("host2", lab.mountpoint) / "shared-marker").read_text() == "host1"
    marker.unlink()


def test_clean_removes_our_exports_and_server_restores_them(storage, salt_cli, lab):
    exports = lab.host_path(vmlab.NFS_HOST, "/etc/exports.d/vmigrate.exports")
    etab = lab.host_path(vmlab.NFS_HOST, "/var/lib/nfs/etab")
    ret = salt_cli.run("state.apply", "vmigrate.nfs.clean", minion_tgt=vmlab.NFS_HOST)
    assert ret.returncode == 0, ret
    assert not exports.exists() and str(lab.export_dir) not in etab.read_text()
    ret = salt_cli.run("state.apply", "vmigrate.nfs.server", minion_tgt=vmlab.NFS_HOST)
    assert ret.returncode == 0, ret
    assert exports.exists() and str(lab.export_dir) in etab.read_text()


def test_the_hypervisor_sls_finds_libvirt_python_in_salts_own_python(synced, salt_cli):
    """vmigrate.hypervisor on a lab hypervisor, test=True: the build packages are there,
    libvirt-python matching host1's libvirtd is already in the Python the minion runs on
    (Salt's own pip answers), and the beacon is configured: nothing to change."""
    ret = salt_cli.run("state.apply", "vmigrate.hypervisor", "test=True", minion_tgt="host1")
    assert ret.returncode == 0, ret
    results = {r["__id__"]: r for r in state_results(ret.data)}
    pip = results["vmigrate-hypervisor-libvirt-python-installed"]
    assert pip["result"] is True and not pip["changes"], pip
    assert "libvirt-python==11." in pip["name"] and "already installed" in pip["comment"], pip
    assert all(r["result"] is True and not r["changes"] for r in results.values()), results
