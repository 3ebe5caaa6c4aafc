"""The master's placement record, from the beacons' lifecycle events."""
import pytest

from tests.support.modload import load

pl = load("_utils", "vmigrate_placement")
bc = load("_beacons", "vmigrate")


@pytest.fixture
def opts(tmp_path):
    return {"cachedir": str(tmp_path)}


def _ev(opts, host, event, vm="vdisk", detail=None, when=1.0, **extra):
    data = dict({"vm": vm, "uuid": "u", "event": event, "detail": detail, "host": host,
                 "time": when, "id": host}, **extra)
    return pl.record(opts, f"salt/beacon/{host}/vmigrate/domain/{event}", data)


def test_a_live_migration_leaves_one_running_persistent_entry(opts):
    _ev(opts, "host1", "started", detail="booted", when=1)
    _ev(opts, "host1", "defined", detail="added", when=1.5)
    for host, event, detail, when in (("host2", "defined", "added", 10),
                                      ("host2", "started", "migrated", 11),
                                      ("host2", "resumed", "migrated", 12),
                                      ("host1", "suspended", "migrated", 12.2),
                                      # libvirt sends no "undefined" for UNDEFINE_SOURCE
                                      ("host1", "stopped", "migrated", 12.5)):
        assert _ev(opts, host, event, detail=detail, when=when)["recorded"]
    rec = pl.placement(opts, "vdisk")
    assert list(rec["hosts"]) == ["host2"]
    entry = rec["hosts"]["host2"]
    assert (entry["state"], entry["persistent"], entry["event"], entry["detail"]) == (
        "running", True, "resumed", "migrated")


def test_resync_replaces_what_a_host_had(opts):
    _ev(opts, "host1", "started", vm="old")
    pl.record(opts, "salt/beacon/host1/vmigrate/resync",
              {"host": "host1", "time": 5, "domains": {"vdisk": {"state": 3, "reason": 1,
                                                                 "persistent": True}}})
    rec = pl.placement(opts)
    assert rec["vms"] == {"vdisk": {"host1": {"state": "paused", "persistent": True,
                                              "uuid": None, "event": "resync", "detail": None,
                                              "since": 5}}}
    pl.record(opts, "salt/beacon/host1/vmigrate/connection/lost", {"host": "host1", "time": 6})
    assert pl.placement(opts)["hosts"]["host1"] == {"seen": 6, "connected": False}


def test_events_that_contradict_their_tag_or_arrive_late_change_nothing(opts):
    assert not pl.record(opts, "salt/beacon/host1/vmigrate/domain/started",
                         {"vm": "vdisk", "host": "host2", "time": 1})["recorded"]
    assert not pl.record(opts, "vmigrate/domain/started", {"host": "host1"})["recorded"]
    _ev(opts, "host1", "resumed", when=10)
    _ev(opts, "host1", "suspended", when=5)  # older, arriving late
    assert pl.placement(opts, "vdisk")["hosts"]["host1"]["state"] == "running"


def test_a_transient_domain_that_stops_is_gone(opts):
    _ev(opts, "host1", "started", vm="t", when=1)
    _ev(opts, "host1", "stopped", vm="t", when=2)
    assert pl.placement(opts)["vms"] == {}


def test_beacon_event_names_and_config():
    ev = bc._event("host1", {"kind": "event", "vm": "vdisk", "uuid": "u", "event": 2,  # pylint: disable=protected-access
                             "detail": 1})
    assert (ev["tag"], ev["event"], ev["detail"], ev["host"]) == ("domain/started", "started",
                                                                  "migrated", "host1")
    assert bc._event("h", {"kind": "event", "event": 5, "detail": 3})["detail"] == "migrated"  # pylint: disable=protected-access
    assert bc._event("h", {"kind": "lost", "reason": 1})["tag"] == "connection/lost"  # pylint: disable=protected-access
    assert bc._event("h", {"kind": "error", "error": "x"}) is None  # pylint: disable=protected-access
    assert bc.validate([{"uri": "qemu:///system"}])[0]
    assert not bc.validate({"uri": "x"})[0] and not bc.validate([{"poll": 1}])[0]
