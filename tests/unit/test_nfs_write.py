"""Writing exports: atomic write, exportfs, rollback to the byte when exportfs rejects; removal
restored when exportfs fails; the keywords the server's exportfs knows."""
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.modload import load


@pytest.fixture
def nfs():
    # Any path will do here: the module's view of vmigrate_exports takes it as it is.
    return load("_modules", "vmigrate_nfs",
                utils={"vmigrate_exports.check_exports_file": lambda p: p})


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
    assert not hasattr(mod.exports_, "write_exports")  # nor does the shared code


def test_the_installed_exportfs_is_asked_which_keywords_it_knows(monkeypatch, tmp_path):
    mod = load("_modules", "vmigrate_nfs")
    fake = tmp_path / "exportfs"
    fake.write_bytes(b"\x7fELF...sec=\x00xprtsec=\x00")
    monkeypatch.setattr(mod.salt.utils.path, "which", lambda name: str(fake))
    assert mod.exportfs_knows() == ("xprtsec",)
    fake.write_bytes(b"\x7fELF...sec=\x00")
    assert mod.exportfs_knows() == ()


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
