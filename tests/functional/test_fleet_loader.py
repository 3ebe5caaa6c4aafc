"""The fleet's runner and state through Salt's real loader (no daemons): the master's
``vmigrate`` runner and ``vmigrate`` state modules loaded from the plugin directories as a
master loads them, their shared code imported as plain Python, the maintenance set kept in the
master's cachedir."""
import salt.config
import salt.loader

from tests.support.modload import REPO


def _master_opts(tmp_path):
    opts = salt.config.master_config(None)
    opts.update({"id": "fn-master", "root_dir": str(tmp_path), "cachedir": str(tmp_path / "cache"),
                 "runner_dirs": [str(REPO / "_runners")], "states_dirs": [str(REPO / "_states")],
                 "module_dirs": [str(REPO / "_modules")],
                 "vmigrate": {"hypervisors_target": ["host1", "host2"]}})
    return opts


def test_the_runner_keeps_maintenance_across_loaders(tmp_path):
    opts = _master_opts(tmp_path)
    runners = salt.loader.runner(opts, utils=salt.loader.utils(opts))
    assert "vmigrate.maintenance" in runners and "vmigrate.balance" in runners
    on = runners["vmigrate.maintenance"]("host2", True, reason="bios")
    assert on["retcode"] == 0 and on["maintenance"] is True, on
    # A fresh loader (another salt-run, a restarted master) reads the same set.
    again = salt.loader.runner(_master_opts(tmp_path), utils=salt.loader.utils(opts))
    listed = again["vmigrate.maintenance"]()
    assert list(listed["maintenance"]) == ["host2"] and listed["maintenance"]["host2"]["by"] == "runner"
    off = again["vmigrate.maintenance"]("host2", "off")
    assert off["maintenance"] is False and off["changed"] is True
    bad = again["vmigrate.balance"](max_moves=-1)
    assert bad["retcode"] == 1 and "max_moves -1" in bad["comment"]


def test_the_state_in_test_mode_changes_nothing_and_then_applies(tmp_path):
    opts = _master_opts(tmp_path)
    utils = salt.loader.utils(opts)
    funcs = salt.loader.minion_mods(opts, utils=utils)
    states = salt.loader.states(dict(opts, test=True), funcs, utils, {})
    ret = states["vmigrate.maintenance"]("host3", enabled=True, reason="window")
    assert ret["result"] is None and ret["changes"] == {"maintenance": {"old": False, "new": True}}
    runners = salt.loader.runner(opts, utils=utils)
    assert runners["vmigrate.maintenance"]()["maintenance"] == {}
    states = salt.loader.states(dict(opts, test=False), funcs, utils, {})
    ret = states["vmigrate.maintenance"]("host3", enabled=True)
    assert ret["result"] is True and ret["changes"]["maintenance"]["new"] is True
    assert list(runners["vmigrate.maintenance"]()["maintenance"]) == ["host3"]
