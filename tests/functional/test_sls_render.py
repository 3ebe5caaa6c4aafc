"""The SLS files through Salt's real loader and renderer (no daemons): map.jinja merging,
per-os_family parameters, and thin states whose arguments come straight from pillar."""
import json

import pytest
import salt.config
import salt.loader
import salt.template
from saltfactories.utils.functional import Loaders

from tests.support.modload import REPO

PILLAR = {"vmigrate": {"nfs": {
    "server": {"exports": [{"path": "/srv/vmimages",
                            "clients": [{"host": "192.0.2.0/24", "options": {"rw": True}}]}]},
    "client": {"mounts": [{"name": "/srv/vmimages", "device": "nfs1:/srv/vmimages",
                           "opts": ["vers=4.2"]}]},
}}}


def _loaders(tmp_path, os_family):
    pillar_dir = tmp_path / "pillar"
    pillar_dir.mkdir()
    (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - vmigrate\n")
    (pillar_dir / "vmigrate.sls").write_text(json.dumps(PILLAR))
    opts = salt.config.minion_config(None)
    opts.update({
        "id": "fn-minion", "root_dir": str(tmp_path), "cachedir": str(tmp_path / "cache"),
        "file_client": "local", "file_roots": {"base": [str(REPO / "salt")]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "module_dirs": [str(REPO / "_modules")], "states_dirs": [str(REPO / "_states")],
    })
    loaders = Loaders(opts)
    # The loader's grains dict is shared by every module it loads: pretend another family.
    loaders.grains.update({"os_family": os_family, "selinux": {"enforced": "Enforcing"}})
    return loaders


def _by_id(low):
    return {chunk["__id__"]: chunk for chunk in low}


@pytest.mark.parametrize("os_family, server_pkgs, client_pkgs, user", [
    ("Debian", ["nfs-kernel-server"], ["nfs-common"], 64055),
    ("RedHat", ["nfs-utils"], ["nfs-utils"], 107),
])
def test_nfs_sls_render_per_os_family(tmp_path, os_family, server_pkgs, client_pkgs, user):
    loaders = _loaders(tmp_path, os_family)
    try:
        server = _by_id(loaders.modules.state.show_low_sls("vmigrate.nfs.server"))
        client = _by_id(loaders.modules.state.show_low_sls("vmigrate.nfs.client"))
    finally:
        loaders.reset_state()
    assert server["vmigrate-nfs-server-pkg-installed"]["pkgs"] == server_pkgs
    managed = server["vmigrate-nfs-server-exports-managed"]
    assert managed["name"] == "/etc/exports.d/vmigrate.exports"
    assert managed["dir_defaults"]["user"] == user
    assert managed["exports"] == PILLAR["vmigrate"]["nfs"]["server"]["exports"]
    # Validation is required by the package state, so bad pillar stops before any change.
    assert server["vmigrate-nfs-server-pkg-installed"]["require"] == [
        {"vmigrate_nfs": "vmigrate-nfs-server-exports-validated"}]
    assert client["vmigrate-nfs-client-pkg-installed"]["pkgs"] == client_pkgs
    mount = client["vmigrate-nfs-client-mount-1-mounted"]
    assert (mount["name"], mount["device"], mount["opts"]) == (
        "/srv/vmimages", "nfs1:/srv/vmimages", ["vers=4.2"])


def test_custom_module_and_state_load_through_the_real_loader(tmp_path):
    loaders = _loaders(tmp_path, "Debian")
    try:
        rendered = loaders.modules.vmigrate_nfs.render()
        assert rendered["content"].splitlines()[1] == (
            "/srv/vmimages 192.0.2.0/24(rw,sync,root_squash,no_subtree_check,secure,mp)")
        ret = loaders.states.vmigrate_nfs.exports_validated(
            "x", exports=[{"path": "rel", "clients": [{"host": "h"}]}])
        assert ret["result"] is False and "must be absolute" in ret["comment"]
        assert "vmigrate.migrate" in loaders.modules
    finally:
        loaders.reset_state()


HOSTILE = {"vm": "{{ salt['cmd.run']('id') }}\n- force: true", "dest": "host2'\"; {% raw %}",
           "mode": "live\n  unsafe: true", "id": "host1", "data": {"nested": "{{ 7 * 7 }}"}}


def _render(path, pillar=None, **context):
    opts = salt.config.master_config(None)
    opts["pillar"] = pillar or {}
    renderers = salt.loader.render(opts, {})
    return salt.template.compile_template(
        str(REPO / "salt" / path), renderers, "jinja|yaml", opts["renderer_blacklist"],
        opts["renderer_whitelist"], **context)


@pytest.mark.parametrize("path, sid", [("vmigrate/reactor/migrate.sls", "vmigrate-reactor-migrate"),
                                       ("vmigrate/reactor/evacuate.sls",
                                        "vmigrate-reactor-evacuate")])
def test_reactors_hand_hostile_event_data_over_as_data(path, sid):
    high = _render(path, tag="vmigrate/request", data=HOSTILE)
    args = high[sid]["runner.state.orchestrate"][0]["args"]
    assert args[0] == {"mods": "vmigrate.orch.request"}
    assert args[1]["pillar"]["vmigrate_event"] == {"tag": "vmigrate/request", "data": HOSTILE}


def test_request_orchestration_passes_the_event_whole_to_its_state():
    event = {"tag": "vmigrate/request", "data": HOSTILE}
    high = _render("vmigrate/orch/request.sls", pillar={"vmigrate_event": event})
    args = high["vmigrate-orch-request-vmigrate-requested"]["vmigrate.requested"]
    assert args == [{"name": "vmigrate/request"}, {"data": HOSTILE}]


def test_beacon_reactor_hands_the_event_to_the_record_as_data():
    high = _render("vmigrate/reactor/beacon.sls", tag="salt/beacon/host1/vmigrate/domain/started",
                   data=HOSTILE)
    args = high["vmigrate-reactor-beacon"]["runner.vmigrate.record"][0]["args"]
    assert args == [{"tag": "salt/beacon/host1/vmigrate/domain/started"}, {"data": HOSTILE}]


@pytest.mark.parametrize("os_family, build_pkgs", [
    ("Debian", ["libvirt-dev", "pkg-config", "gcc"]),
    ("RedHat", ["libvirt-devel", "pkgconf-pkg-config", "gcc", "python3-devel"]),
])
def test_hypervisor_sls_builds_libvirt_python_into_salts_python(tmp_path, os_family, build_pkgs):
    loaders = _loaders(tmp_path, os_family)
    try:
        # The version the installed libvirt has, read by vmigrate_host (no libvirt-python).
        low = _by_id(loaders.modules.state.show_low_sls(
            "vmigrate.hypervisor", pillar={"vmigrate": {"hypervisor_setup": {
                "libvirt_python_version": "11.3.0"}}}))
    finally:
        loaders.reset_state()
    assert low["vmigrate-hypervisor-build-pkgs-installed"]["pkgs"] == build_pkgs
    pip = low["vmigrate-hypervisor-libvirt-python-installed"]
    assert pip["state"] == "pip" and pip["name"] == "libvirt-python==11.3.0"
    assert "bin_env" not in pip  # Salt's own pip: the Python the minion runs on
    beacon = low["vmigrate-hypervisor-beacon-present"]
    assert beacon["state"] == "beacon" and beacon["uri"] == "qemu:///system"
