"""Reconcile (_utils/vmigrate_reconcile.py): one running copy, defined on one host, found
by its name or by the name a migration gave it."""
from tests.support.master import OPTS, RUNNING, published, shared

reconcile_ = shared("vmigrate_reconcile")


def test_reconcile_with_dname_finds_the_renamed_copy(env):
    client = env["make"](hosts={"host1": {"vdisk": dict(RUNNING, state="paused",
                                                        reason="migration")},
                                "host2": {"vdisk-new": dict(RUNNING)}})
    # Without the new name the renamed copy is seen (same UUID) but not trusted: the paused
    # source is not resumed beside it.
    out = reconcile_.reconcile(OPTS, "vdisk")
    assert out["result"] is False and "is named vdisk-new on host2: if a migration renamed " \
        "it (option dname), reconcile with dname=<that name>" in out["comment"], out
    assert not published(client, "vmigrate.repair")
    out = reconcile_.reconcile(OPTS, "vdisk", dname="vdisk-new")
    assert out["result"] is True, out
    assert [(c[1], c[2]) for c in published(client, "vmigrate.repair")] == [
        (["host1"], ["vdisk", "destroy"]), (["host1"], ["vdisk", "undefine"])]
    assert "now host2: running (as vdisk-new)" in out["comment"]
    # The old name gone, only the new one left: nothing of vdisk, and how to find it is said.
    out = reconcile_.reconcile(OPTS, "vdisk")
    assert "found with dname=<its new name>" in out["comment"], out
