"""Static checks the unit layer cannot miss: every name a plugin file uses is defined (Salt's
dunders aside). A lookup left over from a refactor (``checks[...]`` after ``__utils__`` went)
otherwise fails only on a real hypervisor, mid-migration."""
import re
import subprocess
import sys
import tokenize

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


PLUGIN_DIRS = ("_modules", "_states", "_runners", "_utils", "_beacons")
SALT_DUNDER = re.compile(r"__(opts|salt|pillar|context|grains|states|utils|runner|"
                         r"jid_event|low|env)__")


def _names(path):
    """The names a Python file uses in code (not in its strings or comments)."""
    with open(path, "rb") as fh:
        return {t.string for t in tokenize.tokenize(fh.readline) if t.type == tokenize.NAME}


def _plugin_files():
    return sorted(p for d in PLUGIN_DIRS for p in (REPO / d).glob("*.py"))


def test_every_plugin_file_holds_one_concern_in_at_most_600_lines():
    """Issue 21's house rule: split by concern, no file of a thousand lines."""
    long = {str(p.relative_to(REPO)): n for p in _plugin_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert _plugin_files() and not long, long


def test_the_shared_code_has_no_salt_dunders():
    """``_utils`` is plain Python, the same in a synced and an extension install: Salt's
    dunders are the plugin files' alone (they pass what the shared code needs)."""
    used = {str(p.relative_to(REPO)): sorted(n for n in _names(p) if SALT_DUNDER.fullmatch(n))
            for p in (REPO / "_utils").glob("*.py")}
    assert used and not {k: v for k, v in used.items() if v}, used
