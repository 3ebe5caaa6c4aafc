"""The runner (_runners/vmigrate.py) over the master's shared code: its outcome on every
call, for salt-run and for the reactor's reused runner client."""
from tests.support.master import OPTS, RUNNING
from tests.support.modload import load


def test_runner_resets_retcode_between_jobs(env):
    # The runner's shared modules are those the fixture patched (one of each, for every plugin).
    runner = load("_runners", "vmigrate", opts=OPTS, context={})
    env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    assert runner.migrate("vdisk", "host1")["retcode"] == 1
    assert runner.__context__["retcode"] == 1
    # Reused runner client (the reactor): the next good call must not inherit the failure.
    where = runner.locate("vdisk")
    assert where["running"] == ["host1"] and where["retcode"] == 0
    assert runner.__context__["retcode"] == 0
    # An incomplete answer is not a clean one: salt-run exits with the returned retcode.
    env["make"](hosts={"host1": {"vdisk": RUNNING}}, dead=["host2"])
    assert runner.locate("vdisk")["retcode"] == 1
