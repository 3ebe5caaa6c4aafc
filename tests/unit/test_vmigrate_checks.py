"""Destination prechecks: pure verdicts over the facts read through the migration's URI."""
import pytest
from salt.exceptions import SaltInvocationError

from tests.support.modload import load

ck = load("_utils", "vmigrate_checks")

FACTS = {"uri": "qemu+ssh://root@h2/system", "source_uuid": "a", "dest_uuid": "b",
         "source_libvirt": 11003000, "dest_libvirt": 11003000, "source_qemu": 10000002,
         "dest_qemu": 10000002, "memory_kib": 131072, "reserve_mib": 256,
         "dest_free_bytes": 8 << 30, "networks": {}, "bridges": [], "cpu_compare": None,
         "uuid_clash": None}


def _check(facts, name):
    return {c["name"]: c for c in ck.assess_dest(facts, "host1", "host2")}[name]


def test_all_good():
    checks = ck.assess_dest(FACTS, "host1", "host2")
    assert all(c["ok"] for c in checks), checks
    assert {c["name"] for c in checks} >= {"dest_reachable", "distinct_hosts",
                                           "dest_libvirt_version", "dest_qemu_version",
                                           "dest_memory", "dest_cpu", "dest_no_clash"}


@pytest.mark.parametrize("change, name, words, fix", [
    ({"dest_uuid": "a"}, "distinct_hosts", "libvirt refuses to migrate to the same host",
     "host_uuid"),
    ({"dest_libvirt": 10000000}, "dest_libvirt_version", "libvirt 10.0.0 on host2, 11.3.0",
     "upgrade libvirt on host2"),
    ({"dest_qemu": 9002000}, "dest_qemu_version", "QEMU 9.2.0 on host2", "upgrade QEMU"),
    ({"dest_free_bytes": 300 << 20}, "dest_memory", "host2 has 300 MiB free; the guest needs "
     "128 MiB plus a reserve of 256 MiB", "memory_reserve_mib"),
    ({"cpu_compare": {"ok": False, "detail": "guest CPU doesn't match: avx512f"}}, "dest_cpu",
     "cannot provide the guest's CPU: guest CPU doesn't match: avx512f",
     "hypervisor-cpu-baseline"),
    ({"networks": {"prod": False}}, "dest_network:prod", "missing or inactive", "net-start"),
    ({"uuid_clash": "'other' with this guest's UUID"}, "dest_no_clash", "already has domain 'other' with this guest's UUID", "remove or rename"),
])
def test_each_check_fails_with_its_fix(change, name, words, fix):
    check = _check(dict(FACTS, **change), name)
    assert check["ok"] is False and words in check["detail"], check
    assert fix in check["fix"]


def test_an_unreachable_destination_is_one_blocker_naming_the_uri():
    checks = ck.assess_dest({"uri": FACTS["uri"], "error": "Cannot recv data: Connection "
                             "reset by peer (libvirt error code 38)"}, "host1", "host2")
    assert [c["name"] for c in checks] == ["dest_reachable"]
    assert not checks[0]["ok"] and "qemu+ssh://root@h2/system" in checks[0]["detail"]
    assert "authorized_keys" in checks[0]["fix"]


def test_domain_needs_reads_cpu_networks_and_bridges():
    xml = """<domain type='kvm'><os><type arch='x86_64' machine='pc-q35-10.0'>hvm</type></os>
      <cpu mode='custom' match='exact'><model>Skylake-Server</model></cpu>
      <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
        <interface type='network'><source network='prod'/></interface>
        <interface type='bridge'><source bridge='br0'/></interface></devices></domain>"""
    needs = ck.domain_needs(xml)
    assert "Skylake-Server" in needs["cpu"] and needs["type"] == "kvm"
    assert needs["machine"] == "pc-q35-10.0" and needs["networks"] == ["prod"]
    assert needs["bridges"] == ["br0"]
    assert ck.domain_needs("<domain type='qemu'><os><type>hvm</type></os></domain>")["cpu"] is None


CAPS = """<capabilities><host><uuid>b</uuid>
  <secmodel><model>selinux</model><doi>0</doi></secmodel>
  <secmodel><model>dac</model><doi>0</doi>
    <baselabel type='kvm'>+64055:+994</baselabel><baselabel type='qemu'>+64055:+995</baselabel>
  </secmodel></host></capabilities>"""
IMAGE = "/srv/vm/vdisk.qcow2"
PROBE = {"dir": "/srv/vm", "probe": "/srv/vm/.vmigrate-probe-1", "owner": 0, "group": 0,
         "seen": True, "detail": None}


def _storage(probe=None, image=None, security=None):
    return dict(FACTS, probes=[dict(PROBE, **(probe or {}))],
                images={"vda": dict({"path": IMAGE, "uid": 64055, "gid": 994, "mode": 0o600},
                                    **(image or {}))},
                dest_security=security or {"models": ["dac"], "uid": 64055, "gid": 994})


def test_security_models_reads_qemus_user_for_the_virt_type():
    assert ck.security_models(CAPS, "kvm") == {"models": ["selinux", "dac"], "uid": 64055,
                                               "gid": 994}
    assert ck.security_models(CAPS, "qemu")["gid"] == 995
    none = ck.security_models("<capabilities><host/></capabilities>")
    assert none == {"models": [], "uid": None, "gid": None}


def test_shared_storage_seen_from_the_destination_and_an_image_qemu_can_open():
    checks = {c["name"]: c for c in ck.assess_dest(_storage(), "host1", "host2")}
    assert checks["shared_path:/srv/vm"]["ok"], checks
    assert "seen by host2's libvirtd at the same path" in checks["shared_path:/srv/vm"]["detail"]
    assert checks["image_access:vda"]["ok"]
    assert "runs as 64055:994 and can read and write it" in checks["image_access:vda"]["detail"]


def test_a_sentinel_the_destination_does_not_see_blocks_naming_the_mount():
    check = _check(_storage({"seen": False, "detail": "cannot open directory"}),
                   "shared_path:/srv/vm")
    assert not check["ok"] and "does not see the sentinel host1 wrote in /srv/vm" in check["detail"]
    assert "state.apply vmigrate.nfs.client on host2" in check["fix"]


def test_a_sentinel_that_cannot_be_written_blocks():
    check = _check(_storage({"error": "Read-only file system (/srv/vm)"}), "shared_path:/srv/vm")
    assert not check["ok"] and "Read-only file system" in check["detail"]


def test_no_storage_driver_on_the_destination_is_reported_not_proven():
    check = _check(_storage({"seen": None, "detail": "no storage driver"}), "shared_path:/srv/vm")
    assert check["ok"] and check["detail"].startswith("not proven")


def test_root_squash_with_an_image_qemu_cannot_open_blocks_with_the_seed_recipes_pitfall():
    facts = _storage(probe={"owner": 65534, "group": 65534},
                     image={"uid": 0, "gid": 0, "mode": 0o600})
    check = _check(facts, "image_access:vda")
    assert not check["ok"]
    assert ("squashes root (a file root wrote became uid 65534 (nobody: the export maps no "
            "anonuid" in check["detail"])
    assert "Permission denied" in check["detail"]
    assert "chown the image to 64055:994" in check["fix"] and "no_root_squash" in check["fix"]


def test_root_squash_with_root_qemu_counts_as_the_anonymous_user():
    security = {"models": ["dac"], "uid": 0, "gid": 0}
    squashed = {"owner": 65534, "group": 65534}
    assert not _check(_storage(squashed, {"uid": 0, "gid": 0, "mode": 0o600}, security),
                      "image_access:vda")["ok"]
    assert _check(_storage(squashed, {"uid": 0, "gid": 0, "mode": 0o666}, security),
                  "image_access:vda")["ok"]
    assert _check(_storage(None, {"uid": 5, "gid": 5, "mode": 0o600}, security),
                  "image_access:vda")["ok"]


def test_root_qemu_on_squashed_storage_is_told_to_map_anonuid():
    security = {"models": ["dac"], "uid": 0, "gid": 0}
    check = _check(_storage({"owner": 65534, "group": 65534},
                            {"uid": 64055, "gid": 64055, "mode": 0o600}, security),
                   "image_access:vda")
    assert not check["ok"] and "the export maps no anonuid" in check["detail"], check
    assert "anonuid/anongid" in check["fix"] and "QEMU on host2 runs as root" in check["fix"]
    mapped = _check(_storage({"owner": 107, "group": 107},
                             {"uid": 64055, "gid": 64055, "mode": 0o600}, security),
                    "image_access:vda")
    assert "became uid 107 (the export's anonuid)" in mapped["detail"], mapped


def test_without_squash_libvirt_hands_the_image_over_and_selinux_is_named():
    facts = _storage(image={"uid": 0, "gid": 0, "mode": 0o600},
                     security={"models": ["selinux", "dac"], "uid": 64055, "gid": 994})
    check = _check(facts, "image_access:vda")
    assert check["ok"] and "dynamic_ownership" in check["detail"]
    assert "virt_use_nfs" in check["detail"]


def test_group_access_counts():
    facts = _storage(probe={"owner": 65534, "group": 65534},
                     image={"uid": 1, "gid": 994, "mode": 0o660})
    assert _check(facts, "image_access:vda")["ok"]


def test_root_denied_counts_as_squashed_and_qemus_own_access_decides():
    denied = {"owner": 64055, "group": 994, "root_denied": True}
    assert _check(_storage(denied), "image_access:vda")["ok"]  # owned 64055:994, 0600
    check = _check(_storage(denied, {"uid": 0, "gid": 0, "mode": 0o600}), "image_access:vda")
    assert not check["ok"] and "root may not even write in /srv/vm" in check["detail"]


def test_identity_passes_only_for_the_machine_the_dests_minion_runs_on():
    checks = ck.identity
    uri = "qemu+ssh://root@192.0.2.12/system"
    ok = checks("host2", uri, "6f1e4b9a-0000-4000-8000-000000000002",
                "6f1e4b9a-0000-4000-8000-000000000002")
    assert ok["ok"] is True and ok["fix"] is None
    for seen in ("6f1e4b9a-0000-4000-8000-000000000001", None):
        bad = checks("host2", uri, seen, "6f1e4b9a-0000-4000-8000-000000000002")
        assert bad["ok"] is False and "another machine than the one asked for" in bad["detail"]
        assert "vmigrate:hypervisors:host2:address" in bad["fix"]


@pytest.mark.parametrize("value", ["6F1E4B9A-0000-4000-8000-000000000002", "x", 7,
                                   "6f1e4b9a-0000-4000-8000-00000000000&"])
def test_a_host_uuid_argument_is_a_uuid_or_nothing(value):
    check = load("_utils", "vmigrate_validate").host_uuid
    assert check(None) is None
    with pytest.raises(SaltInvocationError, match="dest_host_uuid"):
        check(value)


# ---- copy_storage: the destination's side ------------------------------------------------
COPIED = {"target": "vda", "path": "/var/lib/libvirt/images/v.qcow2", "seen": False,
         "exists": False, "pool": "images", "in_use_by": None, "error": None}


@pytest.mark.parametrize("change, ok, words", [
    ({}, True, "libvirt creates it in storage pool 'images'"),
    ({"exists": True}, True, "libvirt copies the whole disk into it (its content is replaced)"),
    ({"seen": True}, False, "that directory is shared with host2"),
    ({"seen": None, "seen_detail": "no storage driver"}, False, "cannot tell whether host2"),
    ({"in_use_by": "other"}, False, "is a disk of domain 'other' there"),
    ({"pool": None}, False, "no active storage pool there has /var/lib/libvirt/images"),
    ({"error": "cannot open directory"}, False, "cannot look into /var/lib/libvirt/images"),
])
def test_the_destination_must_be_other_storage_with_a_place_to_copy_into(change, ok, words):
    check, = ck.assess_copy_dest([dict(COPIED, **change)], "host1", "host2")
    assert check["name"] == "dest_disk:vda" and check["ok"] is ok, check
    assert words in check["detail"], check["detail"]
    assert (check["fix"] is None) is ok


B = {"path": "/b.qcow2", "format": "qcow2"}


@pytest.mark.parametrize("change, ok, words", [
    ({"exists": False}, False, "does not exist on host2: copy_storage inc copies only the top"),
    ({"backing": None}, False,
     "has no backing file, the guest's image here is over /b.qcow2 (qcow2)"),
    ({"backing": {"path": "/other.qcow2", "format": "qcow2"}}, False, "is over /other.qcow2"),
    ({"backing": {"path": "/b.qcow2", "format": "raw"}}, False, "is over /b.qcow2 (raw)"),
    ({"physical": 327680}, False, "already holds data (a qcow2 file of 320 KiB)"),
    ({"physical": None}, False, "already holds data"),
    ({"format": "raw", "allocation": 4096}, False, "already holds data (4 KiB allocated)"),
    ({"format": "raw", "allocation": 0}, True, "is empty"),
    ({}, True, "is empty and is over /b.qcow2 (qcow2), like the guest's image here"),
])
def test_incremental_copy_needs_an_empty_image_over_the_same_backing_file(change, ok, words):
    """QEMU's sync=top writes only what the top image holds: whatever else the destination's
    image holds, or reads through another backing file, would show through. One 64 KiB data
    cluster makes a new qcow2 file 320 KiB (the cluster and an L2 table)."""
    image = dict(COPIED, **{"exists": True, "backing": B, "format": "qcow2",
                            "physical": 196616, "allocation": 200704, "source_backing": B,
                            **change})
    check, = ck.assess_copy_dest([image], "host1", "host2", incremental=True)
    assert check["ok"] is ok and words in check["detail"], check
    if not ok:
        assert "qemu-img create -f qcow2 -F qcow2 -b /b.qcow2" in check["fix"]
