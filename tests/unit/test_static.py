"""Static checks the unit layer cannot miss: every name a plugin file uses is defined (Salt's
dunders aside). A lookup left over from a refactor (``checks[...]`` after ``__utils__`` went)
otherwise fails only on a real hypervisor, mid-migration."""
import subprocess
import sys

from tests.support.modload import REPO

DUNDERS = ("__opts__", "__salt__", "__pillar__", "__context__", "__grains__", "__states__",
           "__utils__", "__jid_event__", "__low__", "__env__")


def test_no_undefined_name_in_the_plugin():
    out = subprocess.run([sys.executable, "-m", "pyflakes", "_modules", "_states", "_runners",
                          "_utils", "_beacons", "saltext_vmigrate"], cwd=REPO,
                         capture_output=True, text=True, check=False)
    problems = [line for line in out.stdout.splitlines()
                if ("undefined name" in line and not any(d in line for d in DUNDERS))
                or "imported but unused" in line or "redefinition of unused" in line]
    assert not problems and not out.stderr.strip(), "\n".join(problems) + out.stderr
