"""The extension install: a wheel built from this repository, installed beside salt with
nothing synced, gives Salt's real loader every execution function, state, runner and the
beacon, and the SLS tree as package data (``salt-run vmigrate.version`` names it)."""
import json
import subprocess
import sys
import textwrap
import zipfile

import pytest

from tests.support.extension import build_and_install

PROBE = textwrap.dedent("""
    import json, os, sys
    import salt.config, salt.loader
    root = sys.argv[1]
    opts = salt.config.minion_config(None)
    opts.update(id="hv1", file_client="local", cachedir=os.path.join(root, "cache"),
                extension_modules=os.path.join(root, "extmods"), pki_dir=os.path.join(root, "pki"),
                pillar={})
    os.makedirs(opts["extension_modules"], exist_ok=True)
    utils = salt.loader.utils(opts)
    funcs = salt.loader.minion_mods(opts, utils=utils)
    states = salt.loader.states(opts, funcs, utils, {})
    beacons = salt.loader.beacons(opts, funcs)
    mopts = salt.config.master_config(None)
    mopts.update(cachedir=os.path.join(root, "mcache"),
                 extension_modules=os.path.join(root, "mextmods"), pki_dir=os.path.join(root, "mpki"))
    runners = salt.loader.runner(mopts, utils=salt.loader.utils(mopts))
    print(json.dumps({
        "modules": sorted(f for f in funcs if f.startswith("vmigrate")),
        "states": sorted(f for f in states if f.startswith("vmigrate")),
        "beacons": sorted(f for f in beacons if f.startswith("vmigrate")),
        "runners": sorted(f for f in runners if f.startswith("vmigrate")),
        "version": funcs["vmigrate.version"](),
        "runner_version": runners["vmigrate.version"](),
        "extmods": os.listdir(opts["extension_modules"]),
    }))
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_and_install(tmp_path_factory.mktemp("ext"))


@pytest.fixture(scope="module")
def wheel(built):
    return built[0]


def test_the_wheel_holds_the_plugin_and_the_sls_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("saltext/vmigrate/modules/vmigrate.py", "saltext/vmigrate/states/vmigrate.py",
                 "saltext/vmigrate/runners/vmigrate.py", "saltext/vmigrate/beacons/vmigrate.py",
                 "saltext/vmigrate/utils/vmigrate_imports.py",
                 "saltext/vmigrate/utils/vmigrate_move.py", "saltext/vmigrate/sls/migrate.sls",
                 "saltext/vmigrate/sls/vmigrate/nfs/server.sls",
                 "saltext/vmigrate/sls/vmigrate/map.jinja",
                 "saltext/vmigrate/sls/vmigrate/parameters/os_family/Debian.yaml"):
        assert must in names, must
    assert not [n for n in names if n.startswith(("tests/", "lab/", "bench/"))], names
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "[salt.loader]" in text and "saltext.vmigrate = saltext.vmigrate" in text, text


def test_installed_with_nothing_synced_the_loader_finds_everything(built, tmp_path):
    site = built[1]
    probe = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True,
                           text=True, check=False, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    for fun in ("vmigrate.migrate", "vmigrate.precheck", "vmigrate.abort", "vmigrate.version",
                "vmigrate_nfs.render", "vmigrate_request.migrate"):
        assert fun in found["modules"], found["modules"]
    for fun in ("vmigrate.migrated", "vmigrate_nfs.exports", "vmigrate_nfs.mounted"):
        assert fun in found["states"], found["states"]
    assert "vmigrate.beacon" in found["beacons"], found["beacons"]
    for fun in ("vmigrate.migrate", "vmigrate.locate", "vmigrate.reconcile", "vmigrate.version"):
        assert fun in found["runners"], found["runners"]
    assert found["extmods"] == []  # nothing synced
    for ver in (found["version"], found["runner_version"]):
        assert ver["install"] == "extension" and ver["shadowed"] is None, ver
        assert ver["sls_path"] == str(site / "saltext" / "vmigrate" / "sls"), ver
    assert (site / "saltext" / "vmigrate" / "sls" / "migrate.sls").exists()
