"""write_exports: atomic write, exportfs, and rollback to the byte when exportfs rejects."""
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.modload import load


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
        nfs.write_exports(str(path), "/srv/new 10.0.0.0/8(rw,bogus)\n")
    assert path.read_bytes() == old
    assert calls == [["exportfs", "-ra"], ["exportfs", "-ra"]]


def test_rejected_new_file_is_removed(nfs, tmp_path):
    path = tmp_path / "d" / "vmigrate.exports"
    run_all, _ = _exportfs([{"retcode": 0, "stdout": "", "stderr": "exportfs: warning"},
                            {"retcode": 0, "stdout": "", "stderr": ""}])
    nfs.__salt__ = {"cmd.run_all": run_all}
    with pytest.raises(CommandExecutionError, match="warning"):
        nfs.write_exports(str(path), "/srv/new 10.0.0.0/8(rw)\n")
    assert not path.exists()


def test_same_content_is_not_rewritten(nfs, tmp_path):
    path = tmp_path / "vmigrate.exports"
    path.write_text("x\n")
    nfs.__salt__ = {"cmd.run_all": None}
    assert nfs.write_exports(str(path), "x\n") == {"exports_file": str(path), "changed": False,
                                                   "output": ""}
