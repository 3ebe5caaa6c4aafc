"""Writing exports: atomic write, exportfs, rollback to the byte when exportfs rejects; the marked
block in /etc/exports parsed strictly; removal restored when exportfs fails."""
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.modload import load

nfs_mod = load("_modules", "vmigrate_nfs")


@pytest.fixture
def nfs(monkeypatch):
    mod = load("_modules", "vmigrate_nfs")
    monkeypatch.setattr(mod, "check_exports_file", lambda p: p)
    return mod


def _exportfs(results):
    calls = []

    def run_all(argv, python_shell=False):
        calls.append(argv)
        return results.pop(0)

    return run_all, calls


def test_rejected_exports_restore_the_previous_file(nfs, tmp_path):
    path = tmp_path / "vmigrate.exports"
    old = b"/srv/old 10.0.0.0/8(rw,sync)\n"
    path.write_bytes(old)
    run_all, calls = _exportfs([{"retcode": 1, "stdout": "", "stderr": "unknown keyword"},
                                {"retcode": 0, "stdout": "", "stderr": ""}])
    nfs.__salt__ = {"cmd.run_all": run_all}
    with pytest.raises(CommandExecutionError, match="unknown keyword.*restored"):
        nfs._write_exports(str(path), "/srv/new 10.0.0.0/8(rw,bogus)\n")
    assert path.read_bytes() == old
    assert calls == [["exportfs", "-ra"], ["exportfs", "-ra"]]


def test_rejected_new_file_is_removed(nfs, tmp_path):
    path = tmp_path / "d" / "vmigrate.exports"
    run_all, _ = _exportfs([{"retcode": 0, "stdout": "", "stderr": "exportfs: warning"},
                            {"retcode": 0, "stdout": "", "stderr": ""}])
    nfs.__salt__ = {"cmd.run_all": run_all}
    with pytest.raises(CommandExecutionError, match="warning"):
        nfs._write_exports(str(path), "/srv/new 10.0.0.0/8(rw)\n")
    assert not path.exists()


def test_same_content_is_not_rewritten(nfs, tmp_path):
    path = tmp_path / "vmigrate.exports"
    path.write_text("x\n")
    nfs.__salt__ = {"cmd.run_all": None}
    assert nfs._write_exports(str(path), "x\n") == {"exports_file": str(path), "changed": False,
                                                   "output": ""}


def test_only_validated_renderings_are_written():
    mod = load("_modules", "vmigrate_nfs")
    assert not hasattr(mod, "write_exports")  # no public function writes raw text


@pytest.mark.parametrize("lines, words", [
    ([nfs_mod.BEGIN_MARK, "/srv/vm h(rw)"], "1 BEGIN and 0 END"),
    (["/srv/vm h(rw)", nfs_mod.END_MARK], "0 BEGIN and 1 END"),
    ([nfs_mod.BEGIN_MARK, nfs_mod.BEGIN_MARK, nfs_mod.END_MARK], "2 BEGIN and 1 END"),
    ([nfs_mod.END_MARK, "/x h(rw)", nfs_mod.BEGIN_MARK], "END first"),
])
def test_a_damaged_marker_block_is_refused(lines, words):
    with pytest.raises(CommandExecutionError, match=words):
        nfs_mod.marker_block(lines, "/etc/exports")
    with pytest.raises(CommandExecutionError, match="nothing was changed"):
        nfs_mod.render_file([], "\n".join(lines), "/etc/exports")


def test_foreign_lines_around_a_sound_block_are_kept():
    current = "\n".join(["/a h(ro)", nfs_mod.BEGIN_MARK, "/old h(rw)", nfs_mod.END_MARK, "/b h(ro)"])
    exports = [{"path": "/new", "clients": [{"host": "h", "options": ["rw"]}]}]
    new = nfs_mod.render_file(exports, current, "/etc/exports").splitlines()
    assert new == ["/a h(ro)", nfs_mod.BEGIN_MARK, "/new h(rw)", nfs_mod.END_MARK, "/b h(ro)"]


def test_removal_is_restored_when_exportfs_fails(nfs, tmp_path, monkeypatch):
    path = tmp_path / "vmigrate.exports"
    path.write_text("/srv/vm 10.0.0.0/8(rw)\n")
    monkeypatch.setattr(nfs, "removed_content", lambda p: None)
    run_all, calls = _exportfs([{"retcode": 1, "stdout": "", "stderr": "exportfs: boom"},
                                {"retcode": 0, "stdout": "", "stderr": ""}])
    nfs.__salt__ = {"cmd.run_all": run_all, "config.get": lambda k, d=None: d}
    with pytest.raises(CommandExecutionError, match="boom.*restored"):
        nfs.remove_exports(str(path))
    assert path.read_text() == "/srv/vm 10.0.0.0/8(rw)\n" and len(calls) == 2
