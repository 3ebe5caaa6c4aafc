"""The extension install on the lab: a second salt master and a second minion per host, whose
Python has the saltext-vmigrate wheel built from this tree and nothing synced (their
extension_modules stay empty), serving only the package's SLS directory. Through them: the
NFS states, a live migration by the orchestration, an offline one by the runner, and a request
the master signs, through the reactor."""
import json
import os
import time

import pytest

import vmlab
from tests.support import labsalt
from tests.support.extension import build_and_install

from .test_migrate import assert_guest_went_on, counter_before, orch_state


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_and_install(tmp_path_factory.mktemp("ext"))[1]


@pytest.fixture(scope="module")
def ext_master(salt_factories, lab, pillar_dir, site, tmp_path_factory, synced):
    overrides = labsalt.master_overrides(lab, pillar_dir, tmp_path_factory.mktemp("unused"))
    # The SLS come from the package (what salt-run vmigrate.version names), nothing else.
    overrides["file_roots"] = {"base": [str(site / "saltext" / "vmigrate" / "sls")]}
    factory = salt_factories.salt_master_daemon(f"{lab.name}-extmaster", overrides=overrides)
    factory.environ["PYTHONPATH"] = str(site)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def ext_minions(ext_master, lab, site):
    factories = [ext_master.salt_minion_daemon(
        host, factory_class=labsalt.LabMinion, ns_prefix=lab.host_argv(host, []),
        overrides=labsalt.minion_overrides(lab, host))
        for host in (*vmlab.HYPERVISORS, vmlab.NFS_HOST)]
    for factory in factories:
        factory.environ["PYTHONPATH"] = str(site)
    started = []
    try:
        for factory in factories:
            factory.start(start_timeout=120)
            started.append(factory)
        yield {f.id: f for f in factories}
    finally:
        for factory in started:
            factory.terminate()


@pytest.fixture(scope="module")
def ext_cli(ext_master, ext_minions):
    return ext_master.salt_cli(timeout=180)


@pytest.fixture(scope="module")
def ext_run(ext_master, ext_minions, site):
    # salt-run runs the runner (and state.orch) in its own process: its Python has the
    # extension as the master's does.
    cli = ext_master.salt_run_cli(timeout=180)
    cli.environ["PYTHONPATH"] = str(site)
    return cli


def test_every_node_runs_the_extension_with_nothing_synced(ext_cli, ext_run, ext_minions, site):
    ret = ext_cli.run("vmigrate.version", minion_tgt="*")
    assert ret.returncode == 0, ret
    assert set(ret.data) == {*vmlab.HYPERVISORS, vmlab.NFS_HOST}, ret.data
    for minion, ver in ret.data.items():
        assert ver["install"] == "extension" and ver["shadowed"] is None, (minion, ver)
        extmods = ext_minions[minion].config["extension_modules"]
        assert not os.path.exists(extmods) or not any(os.scandir(extmods)), (minion, extmods)
    ver = ext_run.run("vmigrate.version").data
    assert ver["install"] == "extension", ver
    assert ver["sls_path"] == str(site / "saltext" / "vmigrate" / "sls"), ver


def test_the_nfs_states_apply_from_the_package(storage, ext_cli):
    # Applied already by the formula install (the storage fixture): the same pillar through
    # the extension changes nothing, and says so truthfully.
    for host, sls in ((vmlab.NFS_HOST, "vmigrate.nfs.server"), ("host1", "vmigrate.nfs.client")):
        ret = ext_cli.run("state.apply", sls, minion_tgt=host)
        assert ret.returncode == 0, ret
        results = labsalt.state_results(ret.data)
        assert results and all(r["result"] is True for r in results), results
        assert all(not r["changes"] for r in results), results


def test_a_live_migration_by_the_orchestration_and_back_by_the_runner(vdisk_on_host1, lab,
                                                                      ext_run):
    before = counter_before(lab, "host1")
    ret = ext_run.run("state.orch", "migrate", 'pillar={"vm": "vdisk", "dest": "host2"}')
    assert ret.returncode == 0, orch_state(ret)["comment"]
    assert lab.placement() == (["host2"], ["host2"])
    assert_guest_went_on(lab, "host2", before)
    back = ext_run.run("vmigrate.migrate", "vdisk", "host1")
    assert back.returncode == 0 and back.data["status"] == "migrated", back.data
    assert lab.placement() == (["host1"], ["host1"])


def test_an_offline_migration_by_the_runner(guest, lab, ext_run):
    name = "vextoff"
    lab.remove_guest_everywhere(name)
    lab.create_guest("host1", name=name, start=False)
    try:
        ret = ext_run.run("vmigrate.migrate", name, "host2", "mode=offline")
        assert ret.returncode == 0 and ret.data["status"] == "migrated", ret.data
        assert lab.domain_on(name) == {"host2": {"active": False, "state": 5,
                                                 "persistent": True}}
    finally:
        lab.remove_guest_everywhere(name)


def test_a_request_the_master_signs_goes_through_the_reactor(vdisk_on_host1, lab, ext_master,
                                                             ext_run):
    since = time.time()
    ret = ext_run.run("vmigrate.request", "vdisk", "host2")
    assert ret.returncode == 0 and ret.data["sent"] == "vmigrate/request", ret.data

    def result():
        events = ext_master.event_listener.get_events(
            [(ext_master.id, "vmigrate/vdisk/result")], after_time=since)
        return sorted(events, key=lambda e: e.stamp) or None

    event = vmlab.wait_for("the request's result", result, 90, 0.3)[0]
    assert event.data["status"] == "migrated" and event.data["trigger"] == "reactor:master", \
        json.dumps(event.data)[:2000]
    assert lab.placement() == (["host2"], ["host2"])
