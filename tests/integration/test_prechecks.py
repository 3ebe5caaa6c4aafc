"""Destination prechecks on real daemons: read through the migration's own libvirt URI,
each blocker stops the migration before anything moves and names its fix."""
import copy
import json

import pytest

import vmlab
from tests.support import labsalt

from .test_migrate import orch_state


def test_plan_lists_every_check_and_changes_nothing(vdisk_on_host1, lab, salt_run_cli):
    ret = salt_run_cli.run("vmigrate.plan", "vdisk", "host2")
    assert ret.returncode == 0, ret
    checks = {c["name"]: c for c in ret.data["checks"]}
    for name in ("shared_storage:vda", "dest_reachable", "distinct_hosts", "dest_libvirt_version",
                 "dest_qemu_version", "dest_memory", "dest_cpu", "dest_no_clash"):
        assert checks[name]["ok"] is True, checks.get(name)
    assert f"qemu+tcp://{lab.addr('host2')}/system" in checks["dest_reachable"]["detail"]
    assert ret.data["blockers"] == [] and ret.data["source"] == "host1"
    assert lab.running_on() == ["host1"]


@pytest.fixture
def clash(lab, vdisk_on_host1):
    """A shut-off domain on host2 under another name but with vdisk's UUID."""
    libvirt = vmlab._quiet_libvirt()  # pylint: disable=protected-access
    src = libvirt.open(lab.libvirt_uri("host1"))
    uuid = src.lookupByName("vdisk").UUIDString()
    src.close()
    xml = lab.guest_xml("vclash").replace("<name>vclash</name>",
                                          f"<name>vclash</name><uuid>{uuid}</uuid>")
    conn = libvirt.open(lab.libvirt_uri("host2"))
    conn.defineXML(xml)
    yield
    conn.lookupByName("vclash").undefine()
    conn.close()


def test_a_domain_with_the_guests_uuid_on_the_destination_blocks(clash, lab, salt_run_cli):
    ret = salt_run_cli.run("state.orch", "migrate", "pillar={\"vm\": \"vdisk\", \"dest\": \"host2\"}")
    assert ret.returncode != 0, ret
    comment = orch_state(ret)["comment"]
    assert "precheck refused the migration of 'vdisk', nothing was moved" in comment
    assert "host2 already has domain 'vclash' with this guest's UUID" in comment
    assert "Fix: remove or rename the other domain on host2" in comment
    assert lab.running_on() == ["host1"]


@pytest.fixture
def huge_reserve(lab, pillar_dir, salt_cli):
    pillar = copy.deepcopy(lab.pillar())
    pillar["vmigrate"]["memory_reserve_mib"] = 100_000_000
    labsalt.write_pillar(pillar_dir, pillar)
    assert salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt="host1").returncode == 0
    yield
    labsalt.write_pillar(pillar_dir, lab.pillar())
    assert salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt="host1").returncode == 0


def test_not_enough_memory_on_the_destination_blocks(vdisk_on_host1, huge_reserve, lab,
                                                     salt_run_cli):
    ret = salt_run_cli.run("state.orch", "migrate", "test=True",
                           f"pillar={json.dumps({'vm': 'vdisk', 'dest': 'host2'})}")
    assert ret.returncode != 0
    assert "[BLOCKER] dest_memory: host2 has" in orch_state(ret)["comment"]
    ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2")
    assert ret.returncode != 0
    assert "plus a reserve of 100000000 MiB" in ret.data["comment"]
    assert "Fix: free memory on host2 or pick another destination" in ret.data["comment"]
    assert lab.running_on() == ["host1"]
