"""vmigrate_nfs states over a real renderer and a mocked filesystem/exportfs boundary.
Every case runs with test=False and test=True."""
from unittest.mock import MagicMock

import pytest
from hypothesis import given, settings, strategies as st
from salt.exceptions import CommandExecutionError

from tests.support.modload import load

EXPORTS = [{"path": "/srv/vm", "clients": [{"host": "192.0.2.0/24", "options": {"rw": True}}]}]
NAME = "/etc/exports.d/vmigrate.exports"


@pytest.fixture(params=[False, True], ids=["apply", "testmode"])
def testmode(request):
    return request.param


@pytest.fixture
def env(testmode, tmp_path, monkeypatch):
    mod = load("_modules", "vmigrate_nfs")
    mod.__salt__ = {"config.get": lambda key, default=None: default,
                    "file.file_exists": lambda p: False}
    writes = MagicMock(return_value={"changed": True, "output": ""})
    salt = {"vmigrate_nfs.render": mod.render, "vmigrate_nfs.apply_exports": writes,
            "vmigrate_nfs.mount_args": mod.mount_args,
            "vmigrate_nfs.removed_content": mod.removed_content}
    directory = MagicMock(return_value={"result": True, "changes": {}, "comment": ""})
    mounted = MagicMock(return_value={"result": True, "changes": {}, "comment": "mounted"})
    state = load("_states", "vmigrate_nfs", salt=salt, opts={"test": testmode},
                 states={"file.directory": directory, "mount.mounted": mounted}, grains={})
    exports_file = tmp_path / "vmigrate.exports"
    # The export's filesystem is mounted (a test below unmounts it).
    mounted_points = {"/srv/vm"}
    monkeypatch.setattr(mod.os.path, "ismount", lambda p: p in mounted_points)
    real_exists = state.os.path.exists
    monkeypatch.setattr(state.os.path, "exists",
                        lambda p: real_exists(exports_file) if p == NAME else real_exists(p))
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        exports_file if p == NAME else p, *a, **k))
    return {"state": state, "mod": mod, "writes": writes, "directory": directory, "mounted": mounted,
            "file": exports_file, "test": testmode, "mounted_points": mounted_points}


def test_new_exports_are_written_or_predicted(env):
    ret = env["state"].exports(NAME, exports=EXPORTS, dir_defaults={"mode": "0770"})
    assert "+/srv/vm 192.0.2.0/24(rw,sync,root_squash,no_subtree_check,secure,mp)" in \
        ret["changes"]["diff"]
    if env["test"]:
        assert ret["result"] is None and "would be updated" in ret["comment"]
        env["writes"].assert_not_called()
    else:
        assert ret["result"] is True
        env["writes"].assert_called_once()
    env["directory"].assert_called_once_with(name="/srv/vm", makedirs=True, user=None,
                                             group=None, dir_mode="0770")


def test_an_export_whose_filesystem_is_not_mounted_is_named(env):
    # mp (the default) keeps the server from exporting the empty directory beneath a failed
    # mount; the state says the export waits for its filesystem.
    env["mounted_points"].clear()
    ret = env["state"].exports(NAME, exports=EXPORTS)
    assert "(rw,sync,root_squash,no_subtree_check,secure,mp)" in ret["changes"]["diff"]
    assert "NOTE: /srv/vm: /srv/vm is not a mount point now" in ret["comment"], ret
    assert "warnings" not in ret  # not an unsafe option


def test_unchanged_exports_report_no_changes(env):
    content = env["state"].__salt__["vmigrate_nfs.render"](EXPORTS, [], NAME)["content"]
    env["file"].write_text(content)
    ret = env["state"].exports(NAME, exports=EXPORTS)
    assert ret == {"name": NAME, "result": True, "changes": {},
                   "comment": f"{NAME} is in the correct state"}
    env["writes"].assert_not_called()


@settings(max_examples=150, deadline=None)
@given(bad=st.text(min_size=1, max_size=30).filter(lambda s: not s.isalnum()))
def test_invalid_exports_fail_and_write_nothing(bad):
    mod = load("_modules", "vmigrate_nfs")
    mod.__salt__ = {"config.get": lambda key, default=None: default}
    writes = MagicMock()
    directory = MagicMock()
    for test in (False, True):
        state = load("_states", "vmigrate_nfs", opts={"test": test},
                     salt={"vmigrate_nfs.render": mod.render, "vmigrate_nfs.apply_exports": writes},
                     states={"file.directory": directory})
        exports = [{"path": "/srv/vm", "clients": [{"host": "10.0.0.0/8" + bad}]}]
        ret = state.exports(NAME, exports=exports)
        assert ret["result"] is False and ret["changes"] == {}
        assert "nothing written" in ret["comment"]
    writes.assert_not_called()
    directory.assert_not_called()


def test_exportfs_rejection_fails_the_state(env):
    env["writes"].side_effect = CommandExecutionError("exportfs -ra rejected ...; restored")
    ret = env["state"].exports(NAME, exports=EXPORTS)
    if env["test"]:
        # Test mode does not predict exportfs: it reports the diff and runs nothing.
        assert ret["result"] is None and "diff" in ret["changes"]
        env["writes"].assert_not_called()
    else:
        assert ret["result"] is False and "restored" in ret["comment"]
        assert "diff" not in ret["changes"]


def test_unsafe_exports_warn_in_the_comment(env):
    exports = [{"path": "/srv/vm", "clients": [{"host": "*", "options": {"rw": True}}]}]
    ret = env["state"].exports(NAME, exports=exports, allow_unsafe=["any_client"])
    assert "WARNING" in ret["comment"] and "every host" in ret["comment"]


def test_mounted_validates_then_delegates(env, tmp_path):
    point = tmp_path / "mnt"
    point.mkdir()
    ret = env["state"].mounted(str(point), "nfs1:/srv/vm", opts=["vers=4.2"])
    env["mounted"].assert_called_once_with(
        mkmnt=False, name=str(point), device="nfs1:/srv/vm", fstype="nfs",
        opts=["hard", "vers=4.2"], persist=True)
    assert ret["result"] is True


def test_mounted_refuses_nolock_without_switch(env, tmp_path):
    ret = env["state"].mounted(str(tmp_path / "new"), "nfs1:/srv/vm", opts=["nolock"])
    assert ret["result"] is False and "allow_unsafe: [nolock]" in ret["comment"]
    env["mounted"].assert_not_called()
    assert not (tmp_path / "new").exists()


def test_mounted_creates_missing_mountpoint_only_when_applying(env, tmp_path):
    point = tmp_path / "a" / "b"
    ret = env["state"].mounted(str(point), "nfs1:/srv/vm")
    assert "mountpoint" in ret["changes"]
    assert point.is_dir() is (not env["test"])
    # Test mode predicts what the real run does: the mount point is created, then mounted
    # (mount.mounted's own test mode would say "does not exist and would not be created").
    assert env["mounted"].call_args.kwargs["mkmnt"] is env["test"]
    if env["test"]:
        assert ret["result"] is None and "would be created" in ret["changes"]["mountpoint"]


def test_damaged_marker_block_fails_and_touches_nothing(env, tmp_path):
    # /etc/exports with our BEGIN marker and no END: where our block ends cannot be known.
    etc_exports = tmp_path / "exports"
    etc_exports.write_text(f"/srv/other 10.0.0.0/8(ro)\n{env['mod'].exports_.BEGIN_MARK}\n"
                           "/srv/vm 10.0.0.0/8(rw)\n")
    before = etc_exports.read_bytes()
    env["mod"].__salt__.update({"file.file_exists": lambda p: True,
                                "file.read": lambda p: etc_exports.read_text()})
    ret = env["state"].exports("/etc/exports", exports=EXPORTS)
    assert ret["result"] is False and "marked block is damaged" in ret["comment"]
    assert "1 BEGIN and 0 END" in ret["comment"] and ret["changes"] == {}
    env["writes"].assert_not_called()
    env["directory"].assert_not_called()
    assert etc_exports.read_bytes() == before


def test_exports_absent_validates_its_name(env):
    ret = env["state"].exports_absent("/etc/passwd")
    assert ret["result"] is False and "nothing removed" in ret["comment"]
    assert "/etc/exports.d/<name>.exports" in ret["comment"]


@pytest.mark.parametrize("grains, called", [
    ({"os_family": "RedHat", "selinux": {"enabled": True, "enforced": "Enforcing"}}, True),
    ({"os_family": "RedHat", "selinux": {"enabled": True, "enforced": "Permissive"}}, False),
    ({"os_family": "Debian"}, False),
])
def test_selinux_boolean_only_where_enforcing(env, grains, called):
    boolean = MagicMock(return_value={"name": "virt_use_nfs", "result": True, "changes": {},
                                      "comment": "set"})
    env["state"].__states__["selinux.boolean"] = boolean
    env["state"].__grains__ = grains
    ret = env["state"].selinux_virt_use_nfs()
    assert ret["result"] is True
    if called:
        boolean.assert_called_once_with(name="virt_use_nfs", value=True, persist=True)
    else:
        boolean.assert_not_called()
        assert "not needed" in ret["comment"]
