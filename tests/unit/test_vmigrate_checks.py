"""Destination prechecks: pure verdicts over the facts read through the migration's URI."""
import pytest

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
    ({"uuid_clash": "other"}, "dest_no_clash", "already has domain 'other'", "remove or rename"),
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
