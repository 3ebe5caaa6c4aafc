"""The convergence forecast and policy auto on real daemons: the lab guest (128 MiB, rewriting
16 MiB as fast as its TCG vCPU runs) under a 20 MiB/s cap. Plain pre-copy never converges
there (a pass sends less than the guest dirties in a second); with no option given, the
forecast measures the guest's dirty rate through libvirt, says it needs auto-converge, and
the migration completes within its timeout."""
import json

from .test_migrate import assert_guest_went_on, counter_before, orch_state

CAP = 20


def test_the_plan_forecasts_a_capped_migration_with_libvirts_dirty_rate(vdisk_on_host1,
                                                                        salt_run_cli, lab):
    ret = salt_run_cli.run("vmigrate.plan", "vdisk", "host2", f"bandwidth={CAP}")
    assert ret.returncode == 0 and ret.data["result"] is True, ret
    fc = ret.data["forecast"]
    print(f"forecast: {fc}")
    assert fc["memory_mib"] == 128 and fc["bandwidth_mib_s"] == CAP
    assert fc["dirty_mib_s"] and fc["dirty_mib_s"] > 0  # measured by libvirt, not guessed
    assert fc["converges"] is False and fc["needs"] == "auto_converge", fc
    applied = fc["applied"]
    assert applied["auto_converge"] is True and applied["max_downtime"] == 500, applied
    assert applied["auto_converge_initial"] > fc["throttle"] * 100, applied  # above the need
    assert "needs auto_converge" in ret.data["comment"]
    assert lab.placement() == (["host1"], ["host1"])  # a plan moves nothing


def test_plain_precopy_under_the_cap_does_not_converge(vdisk_on_host1, salt_run_cli, lab):
    ret = salt_run_cli.run("vmigrate.migrate", "vdisk", "host2", f"bandwidth={CAP}", "timeout=25",
                           "options={policy: manual}")
    assert ret.returncode != 0 and ret.data["status"] == "failed", ret
    assert ret.data.get("reason") == "timeout", ret.data
    assert lab.placement() == (["host1"], ["host1"])


def test_with_no_option_a_capped_migration_converges_by_the_forecast(vdisk_on_host1, lab,
                                                                    salt_run_cli):
    before = counter_before(lab, "host1")
    pillar = json.dumps({"vm": "vdisk", "dest": "host2", "bandwidth": CAP, "timeout": 240})
    ret = salt_run_cli.run("state.orch", "migrate", f"pillar={pillar}")
    state = orch_state(ret)
    assert ret.returncode == 0 and state["result"] is True, state
    numbers = state["changes"]["migration"]
    print(f"policy auto under {CAP} MiB/s: {numbers}")
    # The downtime allowed rises in 10 steps to 500 ms; the job may end on an earlier step.
    assert 0 < numbers["policy"]["max_downtime_ms"] <= 500, numbers
    assert numbers["downtime_ms"] is not None and numbers["elapsed"] < 240, numbers
    assert lab.placement() == (["host2"], ["host2"])
    assert_guest_went_on(lab, "host2", before)


def test_a_migration_no_throttle_can_converge_is_refused_with_the_numbers(vdisk_on_host1, lab,
                                                                         salt_run_cli):
    # 1 MiB/s and 50 ms allow 0.05 MiB in the last pass: even a 99 % throttle of a guest
    # dirtying more than 5 MiB/s leaves more, and post-copy is not allowed.
    args = ("vdisk", "host2", "bandwidth=1", "options={policy: auto, max_downtime: 50}")
    plan = salt_run_cli.run("vmigrate.plan", *args)
    assert plan.returncode != 0 and plan.data["blockers"] == ["convergence"], plan
    assert plan.data["forecast"]["needs"] == "postcopy", plan.data["forecast"]
    ret = salt_run_cli.run("vmigrate.migrate", *args)
    assert ret.returncode != 0 and ret.data["status"] == "refused", ret
    assert ret.data["reason"] == "precheck" and "cannot converge" in ret.data["comment"], ret
    assert lab.placement() == (["host1"], ["host1"])  # nothing moved
