"""The runner's decisions (refuse, where is it, verify) with a fake LocalClient."""
import pytest

from tests.support.modload import load


class FakeClient:
    def __init__(self, domains):
        self.domains = domains
        self.calls = []

    def cmd(self, tgt, fun, arg=(), timeout=None, tgt_type="glob", full_return=False,
            kwarg=None):
        self.calls.append((tgt, fun, list(arg)))
        if fun == "vmigrate.domains":
            hosts = tgt if tgt_type == "list" else list(self.domains)
            return {h: {"ret": {"host": h, "domains": self.domains[h]}, "retcode": 0}
                    for h in hosts if h in self.domains}
        raise AssertionError(f"unexpected call {fun}")


def _runner(monkeypatch, domains):
    client = FakeClient(domains)
    mod = load("_runners", "vmigrate", opts={"vmigrate": {}}, context={})
    monkeypatch.setattr(mod, "_client", lambda: client)
    monkeypatch.setattr(mod, "_fire", lambda tag, data: None)
    return mod, client


RUNNING = {"uuid": "u", "state": "running", "persistent": True}


@pytest.mark.parametrize("domains, vm, dest, words", [
    ({"host1": {}, "host2": {}}, "vdisk", "host2", "not found on any hypervisor"),
    ({"host1": {"vdisk": RUNNING}, "host2": {"vdisk": RUNNING}}, "vdisk", "host2",
     "on several hypervisors (host1, host2)"),
    ({"host1": {"vdisk": RUNNING}, "host2": {}}, "vdisk", "host1", "already on host1"),
    ({"host1": {"vdisk": RUNNING}, "host2": {}}, "vdisk", "host3", "not an available hypervisor"),
    ({"host1": {"vdisk": RUNNING}}, "vdisk\n", "host2", "not a valid domain name"),
    ({"host1": {"vdisk": RUNNING}}, "vdisk", None, "dest is required"),
])
def test_refusals_change_nothing_and_fail(monkeypatch, domains, vm, dest, words):
    mod, client = _runner(monkeypatch, domains)
    ret = mod.migrate(vm, dest)
    assert ret["result"] is False and words in ret["comment"]
    assert ret["retcode"] == 1 and mod.__context__["retcode"] == 1
    assert all(fun == "vmigrate.domains" for _, fun, _ in client.calls)


def test_locate_reports_running_and_defined(monkeypatch):
    mod, _ = _runner(monkeypatch, {"host1": {"vdisk": RUNNING},
                                   "host2": {"vdisk": {"uuid": "u", "state": "shutoff",
                                                       "persistent": False}}})
    where = mod.locate("vdisk")
    assert where["running"] == ["host1"] and where["defined"] == ["host1"]
    assert sorted(where["hosts"]) == ["host1", "host2"]
