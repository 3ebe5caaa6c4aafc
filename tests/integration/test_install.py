"""The master serves the plugin and nothing else (make install-master into file_roots)."""
import pathlib

from tests.support.labsalt import REPO


def _plugin_files():
    files = {f"{d}/{p.name}" for d in ("_modules", "_states", "_runners", "_utils", "_beacons")
             for p in (REPO / d).glob("vmigrate*.py")}
    salt_dir = REPO / "salt"
    files |= {str(p.relative_to(salt_dir)) for p in salt_dir.rglob("*") if p.is_file()}
    return files


def test_master_serves_only_the_plugin(synced, salt_cli):
    ret = salt_cli.run("cp.list_master", minion_tgt="host1")
    assert ret.returncode == 0, ret
    served = set(ret.data)
    assert served == _plugin_files(), sorted(served ^ _plugin_files())
    for forbidden in (".git", ".venv", "lab", "tests", "bench", "docs", "Makefile", "README.md",
                      "CHANGELOG.md"):
        assert not any(pathlib.PurePath(f).parts[0] == forbidden for f in served), forbidden
    # The SLS other than the orchestration entry point live under the vmigrate/ namespace.
    assert {f for f in served if f.endswith(".sls") and "/" not in f} == {"migrate.sls",
                                                                          "evacuate.sls"}
