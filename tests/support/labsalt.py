"""Salt daemons in the lab for the integration tests (pytest-salt-factories).

The test session runs inside the lab's control namespace (``lab/test.sh`` re-enters it with
``ip netns exec``), so the master and the factories' log server and event listener live there.
Each minion is started inside its host's namespaces: :class:`LabMinion` prefixes the minion's
command line with ``nsenter`` into the host's holder process, so ``qemu:///system``,
``/etc/exports`` and the mounts it sees are that host's own.
"""
import contextlib
import copy
import pathlib

import attr
from saltfactories.daemons.minion import SaltMinion

REPO = pathlib.Path(__file__).resolve().parents[2]


@attr.s(kw_only=True, slots=True)
class LabMinion(SaltMinion):
    """A salt-minion whose process runs inside a lab host's namespaces."""

    ns_prefix = attr.ib(factory=list)

    def cmdline(self, *args):
        return [*self.ns_prefix, *super().cmdline(*args)]


def master_overrides(lab, pillar_dir, file_root):
    import saltconf  # pylint: disable=import-outside-toplevel  (lab/ is on sys.path by now)

    return {
        # The control namespace holds only the lab bridge and loopback.
        "interface": "0.0.0.0",
        # Only the plugin, installed as users install it (make install-master).
        "file_roots": {"base": [saltconf.install_plugin(file_root)]},
        "pillar_roots": {"base": [str(pillar_dir)]},
        "vmigrate": saltconf.master_vmigrate(lab),
        "reactor": saltconf.REACTOR,
        "user": "root",
        **saltconf.MASTER_TUNING,
    }


def minion_overrides(lab, host):
    import saltconf  # pylint: disable=import-outside-toplevel

    pytest_addr = {"host": lab.ctl_addr}
    return {
        **saltconf.minion_beacons(lab, host),
        "master": lab.ctl_addr,
        "user": "root",
        "pytest-minion": {"log": dict(pytest_addr), "returner_address": dict(pytest_addr)},
    }


def write_pillar(pillar_dir, lab, pillar=None):
    """The lab master's pillar (``pillar`` replaces the shared part; per-minion keys stay)."""
    import saltconf  # pylint: disable=import-outside-toplevel

    saltconf.write_pillar(pillar_dir, lab, pillar)


@contextlib.contextmanager
def lab_pillar_with(lab, pillar_dir, salt_cli, minions=("host1",), drop=(), **settings):
    """The lab's ``vmigrate`` pillar with ``settings`` set and the keys in ``drop`` removed, for
    the block, refreshed on ``minions``; the lab's pillar back (refreshed there) afterwards."""
    pillar = copy.deepcopy(lab.pillar())
    pillar["vmigrate"].update(settings)
    for key in drop:
        pillar["vmigrate"].pop(key, None)

    def refresh():
        ret = salt_cli.run("-L", "saltutil.refresh_pillar", "wait=True",
                           minion_tgt=",".join(minions))
        assert ret.returncode == 0, ret
        data = ret.data if len(minions) > 1 else {minions[0]: ret.data}
        assert data == {m: True for m in minions}, ret

    write_pillar(pillar_dir, lab, pillar)
    try:
        refresh()
        yield pillar
    finally:
        write_pillar(pillar_dir, lab)
        refresh()


@contextlib.contextmanager
def host1_pillar(lab, pillar_dir, salt_cli, **settings):
    """host1's ``vmigrate`` pillar with ``settings`` for the block, refreshed there; the lab's
    pillar back afterwards."""
    with lab_pillar_with(lab, pillar_dir, salt_cli, ("host1",), **settings):
        yield


def state_results(ret):
    """The list of state results of one minion's state.apply return (a dict of dicts)."""
    assert isinstance(ret, dict), f"state run did not return states: {ret!r}"
    return sorted(ret.values(), key=lambda r: r.get("__run_num__", 0))
