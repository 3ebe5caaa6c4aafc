"""The fleet lab: four hypervisors (VMLAB_HOSTS=4, lab/test.sh), shared storage through the
project's states, and small guests (96 MiB, rewriting 1 MiB at 64 pages a second) laid out by
each test. The lab's placement rules (lab/saltconf.py, LAB_PLACEMENT) name anti1/anti2
(anti-affinity), aff1/aff2 (affinity) and pinned* (allowed on host1 and host2 only); each
hypervisor offers its guests 1 GiB (pillar vmigrate:capacity)."""
import pytest

import vmlab

SMALL = ("g1", "g2", "g3", "g4", "anti1", "anti2", "aff1", "aff2", "pinned1")


@pytest.fixture(scope="session")
def fleet(storage, lab):
    assert lab.hypervisors == ("host1", "host2", "host3", "host4"), lab.hypervisors
    return lab


def _out_of_maintenance(salt_run_cli):
    ret = salt_run_cli.run("vmigrate.maintenance")
    assert ret.returncode == 0, ret
    for host in ret.data["maintenance"]:
        off = salt_run_cli.run("vmigrate.maintenance", host, "off")
        assert off.returncode == 0, off


@pytest.fixture
def layout(fleet, salt_run_cli):
    """``layout({guest: host})``: exactly these small guests, each running on its host and
    defined there only (made afresh where one is elsewhere; the others removed), and no
    host in maintenance. Returns the lab."""
    _out_of_maintenance(salt_run_cli)

    def arrange(want):
        started = []
        for name in SMALL:
            where = fleet.domain_on(name)
            host = want.get(name)
            if host and set(where) == {host} and where[host]["active"]:
                continue
            fleet.remove_guest_everywhere(name)
            if host:
                fleet.create_guest(host, name, **vmlab.SMALL_GUEST)
                started.append(name)
        for name in started:
            fleet.wait_counter(name, timeout=90)
        assert {n: fleet.running_on(n) for n in want} == {n: [h] for n, h in want.items()}
        return fleet

    yield arrange
    _out_of_maintenance(salt_run_cli)


def hosts_of(lab, names):
    """{guest: [hosts it runs on]}, asked of libvirt directly."""
    return {n: lab.running_on(n) for n in names}
