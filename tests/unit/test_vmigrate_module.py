"""The vmigrate execution module's input checks and URI resolution: all before any libvirt I/O."""
from unittest.mock import MagicMock

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.modload import load

HYPERVISORS = {"host1": {"address": "192.0.2.11"},
               "host2": {"address": "192.0.2.12", "migration_address": "198.51.100.12"}}


def _module(monkeypatch, **pillar):
    conf = {"hypervisors": HYPERVISORS, **pillar}
    mod = load("_modules", "vmigrate", opts={"id": "host1"},
               salt={"config.get": lambda key, default=None: conf})
    opened = MagicMock(side_effect=AssertionError("libvirt must not be opened"))
    monkeypatch.setattr(mod.libvirt, "open", opened)
    return mod


def test_ssh_is_the_default_transport(monkeypatch):
    mod = _module(monkeypatch)
    assert mod.dest_uris("host2") == {"uri": "qemu+ssh://root@192.0.2.12/system",
                                      "migrate_uri": "tcp://198.51.100.12", "transport": "ssh"}


def test_tls_and_keyfile(monkeypatch):
    assert _module(monkeypatch, transport="tls").dest_uris("host2")["uri"] == \
        "qemu+tls://192.0.2.12/system"
    mod = _module(monkeypatch, ssh_keyfile="/root/.ssh/migrate")
    assert mod.dest_uris("host2")["uri"].endswith("?keyfile=/root/.ssh/migrate")


def test_tcp_needs_the_explicit_switch(monkeypatch):
    with pytest.raises(SaltInvocationError, match="allow_insecure_transport"):
        _module(monkeypatch, transport="tcp").dest_uris("host2")
    mod = _module(monkeypatch, transport="tcp", allow_insecure_transport=True)
    assert mod.dest_uris("host2")["uri"] == "qemu+tcp://192.0.2.12/system"


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "vdisk", "dest": "host9"}, "not a hypervisor: add it to pillar"),
    ({"name": "vdisk", "dest": "host1"}, "this host already"),
    ({"name": "vd isk", "dest": "host2"}, "not a valid domain name"),
    ({"name": "vdisk", "dest": "host2;rm"}, "not a valid minion id"),
    ({"name": "vdisk", "dest": "host2", "mode": "warp"}, "mode 'warp'"),
    ({"name": "vdisk", "dest": "host2", "bandwidth": -1}, "bandwidth"),
    ({"name": "vdisk", "dest": "host2", "timeout": 0}, "timeout"),
    ({"name": "vdisk", "dest": "host2", "unsafe": True}, "allow_unsafe"),
])
def test_migrate_refuses_bad_input_before_touching_libvirt(monkeypatch, kwargs, words):
    mod = _module(monkeypatch)
    with pytest.raises(SaltInvocationError, match=words):
        mod.migrate(**kwargs)
    mod.libvirt.open.assert_not_called()


def test_bad_pillar_address_is_named(monkeypatch):
    mod = _module(monkeypatch, hypervisors={"host2": {"address": "a b"}})
    with pytest.raises(SaltInvocationError, match=r"vmigrate:hypervisors:host2:address"):
        mod.dest_uris("host2")


def test_flags_never_include_unsafe_by_default(monkeypatch):
    mod = _module(monkeypatch)
    lv = mod.libvirt
    live = mod._flags("live", False)  # pylint: disable=protected-access
    assert live & lv.VIR_MIGRATE_LIVE and live & lv.VIR_MIGRATE_PEER2PEER
    assert live & lv.VIR_MIGRATE_PERSIST_DEST and live & lv.VIR_MIGRATE_UNDEFINE_SOURCE
    assert not live & lv.VIR_MIGRATE_UNSAFE
    offline = mod._flags("offline", False)  # pylint: disable=protected-access
    assert offline & lv.VIR_MIGRATE_OFFLINE and not offline & lv.VIR_MIGRATE_LIVE
