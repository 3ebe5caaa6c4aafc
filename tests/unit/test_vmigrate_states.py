"""vmigrate.migrated: every case with test=False and test=True, the shared code faked."""
import pytest

from tests.support.modload import load

CHECK = {"name": "shared_storage:vda", "ok": False, "detail": "disk vda on ext4",
         "fix": "mount the NFS export"}


@pytest.fixture(params=[False, True], ids=["apply", "testmode"])
def testmode(request):
    return request.param


def _state(testmode, where, migrate_result=None):
    """``where``: the host vdisk runs on now; ``migrate_result``: what the migration
    (vmigrate_move.migrate) returns."""
    calls = []

    def plan(opts, vm, dest, mode="live", force=False, already_ok=False, options=None,
             bandwidth=None):
        if where == dest:
            if already_ok:
                return {"result": None, "comment": "already", "checks": []}
            return {"result": False, "comment": f"vm {vm} is already on {dest}", "checks": []}
        if where is None:
            return {"result": False, "comment": f"vm {vm} was not found", "checks": []}
        if where == "blocked":
            return {"result": False, "comment": "disk vda on ext4", "checks": [CHECK]}
        return {"result": True, "source": where, "checks": [dict(CHECK, ok=True)],
                "comment": f"would migrate {vm} {mode} from {where} to {dest}"}

    def migrate(opts, vm, dest, mode, bandwidth, timeout, force, already_ok, trigger,
                options=None, report=None):
        calls.append((vm, dest, mode, already_ok, trigger))
        return migrate_result

    mod = load("_states", "vmigrate", opts={"test": testmode},
               utils={"vmigrate_move.plan": plan, "vmigrate_move.migrate": migrate,
                      "vmigrate_jobs.terminal_report": lambda opts: None})
    return mod, calls


def test_moves_and_reports_old_and_new_host(testmode):
    done = {"result": True, "status": "migrated", "source": "host1", "comment": "vdisk migrated",
            "elapsed": 1.5, "downtime_ms": 20}
    mod, calls = _state(testmode, "host1", done)
    ret = mod.migrated("vdisk", "host2")
    assert ret["changes"]["host"] == {"old": "host1", "new": "host2"}
    if testmode:
        assert ret["result"] is None and not calls
        assert "would migrate vdisk live from host1 to host2" in ret["comment"]
        assert "[ok] shared_storage:vda" in ret["comment"]
    else:
        assert ret["result"] is True and calls == [("vdisk", "host2", "live", True, "state")]
        assert ret["changes"]["migration"]["downtime_ms"] == 20


def test_already_there_is_no_change(testmode):
    mod, calls = _state(testmode, "host2", {"result": True, "status": "unchanged",
                                            "comment": "vdisk already runs on host2"})
    ret = mod.migrated("vdisk", "host2")
    assert ret["result"] is True and ret["changes"] == {} and "already runs" in ret["comment"]
    assert bool(calls) is not testmode


def test_require_move_makes_already_there_an_error(testmode):
    mod, _ = _state(testmode, "host2", {"result": False, "status": "refused",
                                        "comment": "vm vdisk is already on host2"})
    ret = mod.migrated("vdisk", "host2", require_move=True)
    assert ret["result"] is False and "already on host2" in ret["comment"]
    assert ret["changes"] == {}


def test_blockers_fail_with_the_fix(testmode):
    mod, _ = _state(testmode, "blocked", {"result": False, "status": "refused",
                                          "comment": "precheck refused: disk vda on ext4. Fix: "
                                                     "mount the NFS export"})
    ret = mod.migrated("vdisk", "host2")
    assert ret["result"] is False and ret["changes"] == {}
    assert "disk vda on ext4" in ret["comment"]
    assert ("BLOCKER" in ret["comment"]) is testmode


def test_not_found_fails(testmode):
    mod, _ = _state(testmode, None, {"result": False, "status": "refused",
                                     "comment": "vm vdisk was not found"})
    ret = mod.migrated("vdisk", "host2")
    assert ret["result"] is False and "not found" in ret["comment"]


def _evac_state(testmode, out):
    calls = []

    def evacuate(opts, host, targets, concurrency, bandwidth, timeout, trigger, dry_run,
                 force=False):
        calls.append((host, concurrency, trigger, dry_run))
        return out(dry_run)

    def request(opts, tag, data):
        calls.append(("request", tag, data))
        return out(False)

    mod = load("_states", "vmigrate", opts={"test": testmode},
               utils={"vmigrate_evacuate.evacuate": evacuate,
                      "vmigrate_intake.request": request})
    return mod, calls


def test_evacuated_moves_everything_or_lists_the_moves(testmode):
    def out(dry_run):
        if dry_run:
            return {"result": None, "host": "host1",
                    "moves": [["a", "live", "host2"], ["c", "offline", "host3"]],
                    "comment": "host1: would move 2 domain(s) to host2, 2 at a time"}
        return {"result": True, "host": "host1", "comment": "host1: 2 of 2 domain(s) moved",
                "vms": {"a": {"result": True, "dest": "host2"},
                        "c": {"result": True, "dest": "host2"}}}

    mod, calls = _evac_state(testmode, out)
    ret = mod.evacuated("host1")
    assert calls == [("host1", 2, "state", testmode)]
    if testmode:
        assert ret["result"] is None and ret["changes"] == {"moves": {
            "a": {"mode": "live", "dest": "host2"}, "c": {"mode": "offline", "dest": "host3"}}}
    else:
        assert ret["result"] is True
        assert ret["changes"] == {"a": {"old": "host1", "new": "host2"},
                                  "c": {"old": "host1", "new": "host2"}}


def test_evacuated_with_nothing_to_move_is_no_change(testmode):
    mod, _ = _evac_state(testmode, lambda dry: {"result": True, "host": "host1", "vms": {},
                                                "moves": [], "comment": "host1: 0 of 0"})
    ret = mod.evacuated("host1")
    assert ret["result"] is True and ret["changes"] == {} and "no domain" in ret["comment"]


def test_evacuated_fails_naming_what_did_not_move(testmode):
    mod, _ = _evac_state(testmode, lambda dry: {
        "result": False, "host": "host1", "comment": "host1: 1 of 2 domain(s) moved; not "
        "moved: b", "vms": {"a": {"result": True, "dest": "host2"}, "b": {"result": False}}})
    ret = mod.evacuated("host1")
    assert ret["result"] is False and "not moved: b" in ret["comment"]
    assert ret["changes"] == {"a": {"old": "host1", "new": "host2"}}


def test_requested_authorizes_only_when_applied(testmode):
    mod, calls = _evac_state(testmode, lambda dry: {"result": False, "status": "refused",
                                                    "comment": "refused: unsigned request"})
    ret = mod.requested("vmigrate/request", {"vm": "vdisk"})
    if testmode:
        assert ret["result"] is None and calls == []
    else:
        assert ret["result"] is False and "unsigned" in ret["comment"]
        assert calls == [("request", "vmigrate/request", {"vm": "vdisk"})]
