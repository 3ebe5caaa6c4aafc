"""vmigrate_imports: the shared code loaded as plain Python, and loaded afresh after a sync."""
import os
import runpy
import shutil
import sys

import pytest

from tests.support.modload import REPO


@pytest.fixture(autouse=True)
def _own_modules():
    """These tests load the shared code from a copy under the same sys.modules names: put the
    repository's back afterwards, so no later test meets a mixed set."""
    kept = {k: v for k, v in sys.modules.items() if k.startswith("vmigrate_utils_")}
    yield
    for name in [k for k in sys.modules if k.startswith("vmigrate_utils_")]:
        del sys.modules[name]
    sys.modules.update(kept)


def test_a_sync_that_changes_one_shared_file_reloads_those_that_import_it(tmp_path):
    """A minion process keeps the shared modules it loaded. When a sync changes only
    vmigrate_outcome, vmigrate_precheck (unchanged) must not go on raising the older Outcome
    class: every shared module loads afresh, together."""
    utils = tmp_path / "utils"
    shutil.copytree(REPO / "_utils", utils)
    load = runpy.run_path(str(utils / "vmigrate_imports.py"))["load"]
    precheck = load("vmigrate_precheck", str(utils))
    assert precheck.outcome_ is load("vmigrate_outcome", str(utils))  # kept while unchanged
    outcome = utils / "vmigrate_outcome.py"
    outcome.write_text(outcome.read_text(encoding="utf-8") + "\nSYNCED = True\n",
                       encoding="utf-8")
    os.utime(outcome, ns=(1, 1))
    again = load("vmigrate_precheck", str(utils))
    assert again is not precheck
    assert again.outcome_.SYNCED is True
    assert again.outcome_ is load("vmigrate_outcome", str(utils))
