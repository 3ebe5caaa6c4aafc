"""The convergence forecast and policy auto (_utils/vmigrate_forecast.py), and how a live
migration takes it (vmigrate_precheck.convergence) against a fake domain."""
import pytest

from tests.support.modload import load

forecast_ = load("_utils", "vmigrate_forecast")


def test_a_quiet_guest_converges_by_downtime_alone():
    fc = forecast_.forecast(128, 0.25, 20)
    assert fc["converges"] is True and fc["needs"] is None
    assert fc["passes"] == 2 and fc["downtime_ms"] <= 500 and fc["seconds"] == pytest.approx(6.4, abs=0.2)


def test_the_lab_guest_under_a_cap_needs_auto_converge_with_the_throttle_named():
    # vdisk: 128 MiB, libvirt measured ~18-28 MiB/s over its 16 MiB working set.
    fc = forecast_.forecast(128, 18, 20)
    assert fc["converges"] is False and fc["needs"] == "auto_converge"
    assert fc["downtime_ms"] == 900  # a second's dirtying at 20 MiB/s: never under 500 ms
    assert fc["throttle"] == pytest.approx(1 - 10 / 18, abs=0.01)
    # The same guest over an uncapped 100 MiB/s link converges in two passes.
    assert forecast_.forecast(128, 18, 100)["converges"] is True


def test_a_pass_is_taken_to_dirty_at_least_a_seconds_worth():
    # 9 MiB/s over 20 MiB/s: a naive geometric model (0.45 per pass) says it converges; the
    # working set is rewritten faster than libvirt's one-second window shows, so the floor is
    # 9 MiB, 450 ms: it converges, but only just -- and at 11 MiB/s it does not.
    assert forecast_.forecast(128, 9, 20)["converges"] is True
    assert forecast_.forecast(128, 11, 20)["converges"] is False


def test_an_unknown_link_steers_nothing_and_an_unknown_rate_lets_qemu_decide():
    fc = forecast_.forecast(128, 18, None)
    assert fc["converges"] is None and "no bandwidth cap" in fc["why"]
    assert forecast_.steer({}, fc) == ({}, None)
    fc = forecast_.forecast(128, None, 20)
    assert fc["converges"] is None and "could not be measured" in fc["why"]
    assert forecast_.steer({}, fc) == ({"max_downtime": 500, "downtime_steps": 10,
                                        "auto_converge": True}, None)


def test_policy_auto_chooses_steps_and_keeps_out_when_the_caller_chose():
    fc = forecast_.forecast(128, 18, 20)
    opts, why = forecast_.steer({}, fc)
    assert why is None
    # The throttle starts above what the forecast needs (44 %), not at QEMU's 20 %.
    assert opts == {"max_downtime": 500, "downtime_steps": 10, "auto_converge": True,
                    "auto_converge_initial": 60, "auto_converge_increment": 20}
    assert forecast_.applies({}) and forecast_.applies({"policy": "auto", "compressed": True})
    assert not forecast_.applies({"policy": "manual"})
    assert not forecast_.applies({"max_downtime": 300})
    assert not forecast_.applies({"auto_converge": True})
    # Asked for by name, it applies beside the caller's own target downtime.
    assert forecast_.applies({"policy": "auto", "max_downtime": 50})
    opts, why = forecast_.steer({"max_downtime": 50}, forecast_.forecast(128, 18, 1, 50))
    assert opts["max_downtime"] == 50 and why and "cannot converge" in why


def test_a_guest_no_throttle_can_converge_is_refused_unless_postcopy_is_allowed():
    fc = forecast_.forecast(1024, 4000, 20)
    assert fc["needs"] == "postcopy"
    opts, why = forecast_.steer({}, fc)
    assert why and "4000 MiB/s" in why and "postcopy: true" in why
    opts, why = forecast_.steer({"postcopy": True}, fc)
    assert why is None and opts["postcopy_after_precopy"] is True and opts["auto_converge"]


class Dom:
    def __init__(self, rate_status=2, rate=18):
        self.calls, self.rate_status, self.rate = [], rate_status, rate

    def maxMemory(self):  # noqa: N802
        return 128 * 1024

    def name(self):
        return "vdisk"

    def startDirtyRateCalc(self, seconds, flags):  # noqa: N802
        self.calls.append(("calc", seconds, flags))


class Conn:
    def __init__(self, dom):
        self.dom = dom

    def domainListGetStats(self, doms, stats):  # noqa: N802
        return [(self.dom, {"dirtyrate.calc_status": self.dom.rate_status,
                            "dirtyrate.megabytes_per_second": self.dom.rate})]


@pytest.fixture
def precheck(monkeypatch):
    mod = load("_utils", "vmigrate_precheck")
    monkeypatch.setattr(mod.conn_.time, "sleep", lambda s: None)
    return mod


def test_a_capped_migration_is_measured_and_steered(precheck):
    dom = Dom()
    opts, fc, check = precheck.convergence(Conn(dom), dom, {}, 20)
    assert dom.calls == [("calc", 1, 0)]
    assert fc["dirty_mib_s"] == 18.0 and fc["applied"]["auto_converge"] is True
    assert opts["auto_converge"] and check["ok"] and "needs auto_converge" in check["detail"]


def test_an_uncapped_or_manual_migration_is_not_measured(precheck):
    dom = Dom()
    assert precheck.convergence(Conn(dom), dom, {}, None) == ({}, None, None)
    assert precheck.convergence(Conn(dom), dom, {"policy": "manual"}, 20)[1] is None
    assert precheck.convergence(Conn(dom), dom, {"max_downtime": 800}, 20)[1] is None
    assert dom.calls == []


def test_a_measurement_that_never_ends_leaves_the_throttle_to_qemu(precheck, monkeypatch):
    clock = iter(range(0, 100))
    monkeypatch.setattr(precheck.conn_.time, "monotonic", lambda: next(clock))
    dom = Dom(rate_status=1)  # still measuring
    opts, fc, check = precheck.convergence(Conn(dom), dom, {}, 20)
    assert fc["converges"] is None and opts["auto_converge"] is True and check["ok"]


def test_a_guest_that_cannot_converge_fails_the_check_with_the_numbers(precheck):
    dom = Dom(rate=5000)
    _opts, fc, check = precheck.convergence(Conn(dom), dom, {}, 20)
    assert not check["ok"] and "5000" in check["detail"] and fc["needs"] == "postcopy"
