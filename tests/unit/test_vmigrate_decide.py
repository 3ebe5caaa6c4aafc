"""Where a domain is and what may be done about it (_utils/vmigrate_decide.py): the
locate broadcast, the decision, the repairs that bring it back to one copy."""
import pytest

from tests.support.master import OPTS, RUNNING, published, shared

decide_ = shared("vmigrate_decide")


def _where(**hosts):
    """A locate result from host=(state, persistent[, reason[, uuid]]) tuples."""
    def info(state, persistent, reason="migration", uuid="u"):
        return {"state": state, "reason": reason, "persistent": persistent, "uuid": uuid}
    return {"name": "vdisk", "hosts": {h: info(*v) for h, v in hosts.items()},
            "unaccounted": {}}


@pytest.mark.parametrize("where, prefer, actions, why", [
    # one running copy and a paused incoming one: the incoming copy goes
    (_where(host1=("running", True), host2=("paused", False)), None,
     [("host2", "destroy")], None),
    # the destination runs it after a failed report: dest persisted first (a failed persist
    # leaves the source's definition), then the source copy goes
    (_where(host1=("paused", True), host2=("running", False)), "host2",
     [("host2", "persist"), ("host1", "destroy"), ("host1", "undefine")], None),
    # paused by a failed migration on the source only: resume it
    (_where(host1=("paused", True)), None, [("host1", "resume")], None),
    # paused on both: keep the persistent source, drop the transient incoming copy
    # (the other copy stops before the kept one resumes: never two running)
    (_where(host1=("paused", True), host2=("paused", False)), None,
     [("host2", "destroy"), ("host1", "resume")], None),
    # a stale shut-off definition beside the running copy: undefine, never touch the disk
    (_where(host1=("shutoff", True), host2=("running", True)), None,
     [("host1", "undefine")], None),
    (_where(host1=("running", True)), None, [], None),
    (_where(host1=("shutoff", True)), None, [], None),
    (_where(host1=("running", True), host2=("running", True)), None, [], "two guests on one disk"),
    (_where(host1=("paused", True), host2=("paused", True)), None, [], "cannot tell which"),
    (_where(host1=("shutoff", True), host2=("shutoff", True)), None, [], "keep one definition"),
    # a user's pause (or an I/O error's) is not undone
    (_where(host1=("paused", True, "user")), None, [], None),
    (_where(host1=("paused", True, "ioerror"), host2=("paused", False)), None,
     [("host2", "destroy")], None),
    # same name, different UUIDs: two VMs, not two copies
    (_where(host1=("running", True), host2=("shutoff", True, "x", "other")), None, [],
     "different UUIDs"),
])
def test_repairs_end_with_one_running_copy_defined_once(env, where, prefer, actions, why):
    got, reason = decide_.repairs(where, prefer)
    assert got == actions
    assert (why is None and reason is None) or why in reason


def test_repairs_decide_nothing_while_a_host_is_unaccounted(env):
    where = _where(host1=("paused", True))
    where["unaccounted"] = {"host3": "did not answer within 10s"}
    assert decide_.repairs(where) == ([], "could not verify host3 (did not answer within "
                                              "10s): nothing changed")


@pytest.mark.parametrize("hosts, want", [
    ("host1", ["host1"]), ("host1,host2", ["host1", "host2"]), (["host2"], ["host2"]),
    (None, None),
])
def test_hosts_may_be_one_id_or_a_list(env, hosts, want):
    assert decide_.host_list(hosts) == want


def test_locate_with_one_host_as_a_string_asks_that_host(env):
    client = env["make"](hosts={"host1": {"vdisk": RUNNING}, "host2": {}})
    where = decide_.locate(OPTS, "vdisk", "host1")
    assert where["running"] == ["host1"] and where["hypervisors"] == ["host1"], where
    assert published(client, "vmigrate.domains")[0][1] == ["host1"]
