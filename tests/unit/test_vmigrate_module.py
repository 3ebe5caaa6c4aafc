"""The vmigrate execution module's input checks, URIs and flags: all before any libvirt I/O."""
import re
from unittest.mock import MagicMock

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.modload import load, utils

HYPERVISORS = {"host1": {"address": "192.0.2.11"},
               "host2": {"address": "192.0.2.12", "migration_address": "198.51.100.12"}}


def _module(monkeypatch, config_get=None, **pillar):
    conf = {"hypervisors": HYPERVISORS, **pillar}
    mod = load("_modules", "vmigrate", opts={"id": "host1"}, pillar={"vmigrate": conf},
               context={},
               utils=utils("vmigrate_validate", "vmigrate_storage", "vmigrate_checks",
                             "vmigrate_options", "vmigrate_xmlguard"),
               salt={"config.get": config_get or (lambda key, default=None: default)})
    opened = MagicMock(side_effect=AssertionError("libvirt must not be opened"))
    monkeypatch.setattr(mod.libvirt, "open", opened)
    return mod


def test_ssh_is_the_default_transport_and_tunnels_the_memory(monkeypatch):
    mod = _module(monkeypatch)
    assert mod.dest_uris("host2") == {"uri": "qemu+ssh://root@192.0.2.12/system",
                                      "migrate_uri": None, "transport": "ssh",
                                      "data_stream": "tunnelled"}


def test_tls_protects_the_memory_stream_with_qemu_tls(monkeypatch):
    uris = _module(monkeypatch, transport="tls").dest_uris("host2")
    assert uris["uri"] == "qemu+tls://192.0.2.12/system"
    assert uris["migrate_uri"] == "tcp://198.51.100.12" and uris["data_stream"] == "tls"


def test_keyfile_is_url_encoded_into_the_uri(monkeypatch):
    mod = _module(monkeypatch, ssh_keyfile="/root/.ssh/migrate")
    assert mod.dest_uris("host2")["uri"].endswith("?keyfile=/root/.ssh/migrate")


@pytest.mark.parametrize("pillar, words", [
    # libvirt's ssh transport honours command= and netcat= in the URI query.
    ({"ssh_keyfile": "/k&command=/x"}, "ssh_keyfile"),
    ({"ssh_keyfile": "/k?netcat=/bin/sh"}, "ssh_keyfile"),
    ({"ssh_keyfile": "relative/key"}, "ssh_keyfile"),
    ({"ssh_keyfile": "/root/../etc/shadow"}, "ssh_keyfile"),
    ({"ssh_keyfile": "/k\n"}, "ssh_keyfile"),
    ({"ssh_user": "root@evil"}, "ssh_user"),
    ({"ssh_user": "root?command=x"}, "ssh_user"),
    ({"ssh_user": "Root"}, "ssh_user"),
    ({"hypervisors": {"host2": {"address": "a b"}}}, "vmigrate:hypervisors:host2:address"),
    ({"hypervisors": {"host2": {"address": "h", "migration_address": "x/y"}}},
     "migration_address"),
])
def test_uri_parts_are_allowlisted(monkeypatch, pillar, words):
    with pytest.raises(SaltInvocationError, match=words):
        _module(monkeypatch, **pillar).dest_uris("host2")


def test_tcp_needs_both_explicit_switches(monkeypatch):
    with pytest.raises(SaltInvocationError, match="allow_insecure_transport"):
        _module(monkeypatch, transport="tcp").dest_uris("host2")
    with pytest.raises(SaltInvocationError, match="allow_plain_migration_stream"):
        _module(monkeypatch, transport="tcp", allow_insecure_transport=True).dest_uris("host2")
    mod = _module(monkeypatch, transport="tcp", allow_insecure_transport=True,
                  allow_plain_migration_stream=True)
    assert mod.dest_uris("host2") == {"uri": "qemu+tcp://192.0.2.12/system",
                                      "migrate_uri": "tcp://198.51.100.12", "transport": "tcp",
                                      "data_stream": "plain tcp"}


def test_safety_switches_come_from_pillar_only(monkeypatch):
    # A grain or minion-config key reached through config.get must not switch a check off.
    sneaky = {"transport": "tcp", "allow_insecure_transport": True,
              "allow_plain_migration_stream": True, "allow_unsafe": True}
    mod = _module(monkeypatch, config_get=lambda key, default=None: sneaky if key == "vmigrate"
                  else default)
    assert mod.dest_uris("host2")["transport"] == "ssh"
    out = mod.migrate("vdisk", "host2", unsafe=True)
    assert (out["status"], out["reason"]) == ("refused", "invalid") and "allow_unsafe" in \
        out["comment"]
    with pytest.raises(SaltInvocationError, match="true or false"):
        _module(monkeypatch, allow_unsafe="yes").dest_uris("host2")


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "vdisk", "dest": "host9"}, "not a hypervisor: add it to pillar"),
    ({"name": "vdisk", "dest": "host1"}, "this host already"),
    ({"name": "vd isk", "dest": "host2"}, "not a valid domain name"),
    ({"name": "vdisk", "dest": "host2;rm"}, "not a valid minion id"),
    ({"name": "vdisk", "dest": "host2", "mode": "warp"}, "mode 'warp'"),
    ({"name": "vdisk", "dest": "host2", "bandwidth": -1}, "bandwidth"),
    ({"name": "vdisk", "dest": "host2", "bandwidth": True}, "bandwidth"),
    ({"name": "vdisk", "dest": "host2", "timeout": 0}, "timeout"),
    ({"name": "vdisk", "dest": "host2", "timeout": True}, "timeout"),
    ({"name": "vdisk", "dest": "host2", "timeout": float("nan")}, "timeout"),
    ({"name": "vdisk", "dest": "host2", "timeout": float("inf")}, "timeout"),
    ({"name": "vdisk", "dest": "host2", "unsafe": True}, "allow_unsafe"),
    ({"name": "vdisk", "dest": "host2", "unsafe": "no"}, "unsafe"),
])
def test_migrate_refuses_bad_input_before_touching_libvirt(monkeypatch, kwargs, words):
    mod = _module(monkeypatch)
    out = mod.migrate(**kwargs)
    # A typed refusal (retcode 1) the master decides on, its words for the person.
    assert out["result"] is False and (out["status"], out["reason"]) == ("refused", "invalid")
    assert re.search(words, out["comment"]), out
    assert mod.__context__["retcode"] == 1
    mod.libvirt.open.assert_not_called()


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), 0, "600"])
def test_bad_pillar_timeout_is_refused(monkeypatch, value):
    with pytest.raises(SaltInvocationError, match="pillar vmigrate:timeout"):
        _module(monkeypatch, timeout=value).dest_uris("host2")


def test_flags_never_include_unsafe_by_default(monkeypatch):
    mod = _module(monkeypatch)
    lv = mod.libvirt
    live = mod.monitor_.flags("live", False)
    assert live & lv.VIR_MIGRATE_LIVE and live & lv.VIR_MIGRATE_PEER2PEER
    assert live & lv.VIR_MIGRATE_PERSIST_DEST and live & lv.VIR_MIGRATE_UNDEFINE_SOURCE
    assert not live & lv.VIR_MIGRATE_UNSAFE
    offline = mod.monitor_.flags("offline", False)
    assert offline & lv.VIR_MIGRATE_OFFLINE and not offline & lv.VIR_MIGRATE_LIVE


def test_flags_protect_the_data_stream(monkeypatch):
    mod = _module(monkeypatch)
    lv = mod.libvirt
    tls = mod.monitor_.flags("live", False, "tls")
    ssh = mod.monitor_.flags("live", False, "tunnelled")
    plain = mod.monitor_.flags("live", False, "plain tcp")
    assert tls & lv.VIR_MIGRATE_TLS and not tls & lv.VIR_MIGRATE_TUNNELLED
    assert ssh & lv.VIR_MIGRATE_TUNNELLED and not ssh & lv.VIR_MIGRATE_TLS
    assert not plain & (lv.VIR_MIGRATE_TLS | lv.VIR_MIGRATE_TUNNELLED)


class _Dom:
    def __init__(self, name, state=1, persistent=True):
        self._name, self._state, self._persistent = name, state, persistent

    def name(self):
        return self._name

    def UUIDString(self):  # pylint: disable=invalid-name
        return "u"

    def state(self):
        return self._state, 2 if self._state == 1 else 0

    def isPersistent(self):  # pylint: disable=invalid-name
        return self._persistent


class _Conn:
    def __init__(self, libvirt, dom=None, code=None):
        self.libvirt, self.dom, self.code = libvirt, dom, code

    def lookupByName(self, name):  # pylint: disable=invalid-name
        if self.dom is not None and self.dom.name() == name:
            return self.dom
        return self._missing()

    def lookupByUUIDString(self, uuid):  # pylint: disable=invalid-name
        if self.dom is not None and self.dom.UUIDString() == uuid:
            return self.dom
        return self._missing()

    def _missing(self):
        err = self.libvirt.libvirtError("no")
        err.get_error_code = lambda: self.code or self.libvirt.VIR_ERR_NO_DOMAIN
        err.get_error_message = lambda: "cannot read: connection closed"
        raise err


def test_copies_read_after_a_move_never_take_an_unreadable_host_for_absent(monkeypatch):
    mod = _module(monkeypatch)
    lv = mod.libvirt
    out = mod.conn_.copies("vdisk", "u", (
        ("host1", _Conn(lv, code=lv.VIR_ERR_NO_DOMAIN)),
        ("host2", _Conn(lv, _Dom("vdisk"))),
        ("host3", _Conn(lv, code=lv.VIR_ERR_RPC)),
        ("host4", None)))
    assert out["hosts"] == {"host2": {"uuid": "u", "state": "running", "reason": "migrated",
                                      "persistent": True}}
    assert set(out["unaccounted"]) == {"host3", "host4"}
    assert "connection closed" in out["unaccounted"]["host3"]


def test_copies_are_found_by_uuid_and_a_renamed_one_says_its_name(monkeypatch):
    """Option dname renames the guest on the destination: looked up by name it would read as
    gone; by UUID it is found, and named."""
    mod = _module(monkeypatch)
    lv = mod.libvirt
    out = mod.conn_.copies("vdisk", "u", (
        ("host1", _Conn(lv, _Dom("vdisk"))), ("host2", _Conn(lv, _Dom("vdisk-new")))))
    assert out["hosts"]["host2"]["name"] == "vdisk-new"
    assert "name" not in out["hosts"]["host1"]
    assert mod.conn_.copies("vdisk", "other", (
        ("host2", _Conn(lv, _Dom("vdisk"))),)) == {"hosts": {}, "unaccounted": {}}


@pytest.mark.parametrize("state, action", [((1, 11), "destroy"), ((3, 13), "resume"),
                                           ((1, 10), "destroy"), ((3, 13), "undefine")])
def test_repair_never_stops_or_resumes_a_half_of_a_post_copy(monkeypatch, state, action):
    """(running, postcopy_failed) on the destination, (paused, postcopy_failed) on the source:
    the guest's memory is split between them."""
    import contextlib  # pylint: disable=import-outside-toplevel
    from salt.exceptions import CommandExecutionError  # pylint: disable=import-outside-toplevel

    mod = _module(monkeypatch)
    dom = _Dom("vdisk")
    dom.state = lambda: state
    calls = []
    for name in ("destroy", "resume", "undefine", "create"):
        setattr(dom, name, lambda name=name: calls.append(name))

    @contextlib.contextmanager
    def connect(_conf):
        yield _Conn(mod.libvirt, dom)

    monkeypatch.setattr(mod.conn_, "connect", connect)
    with pytest.raises(CommandExecutionError, match="post-copy migration .* refused"):
        mod.repair("vdisk", action)
    assert calls == []


def test_repair_acts_only_on_the_domain_the_master_read(monkeypatch):
    """The master passes the UUID it read: a domain redefined under that name since is
    another guest, and is left alone."""
    import contextlib  # pylint: disable=import-outside-toplevel
    from salt.exceptions import CommandExecutionError  # pylint: disable=import-outside-toplevel

    mod = _module(monkeypatch)
    dom = _Dom("vdisk")
    calls = []
    dom.destroy = lambda: calls.append("destroy")

    @contextlib.contextmanager
    def connect(_conf):
        yield _Conn(mod.libvirt, dom)

    monkeypatch.setattr(mod.conn_, "connect", connect)
    with pytest.raises(CommandExecutionError, match="has UUID u, not u-2: destroy refused"):
        mod.repair("vdisk", "destroy", uuid="u-2")
    assert calls == []
    assert mod.repair("vdisk", "destroy", uuid="u")["action"] == "destroy"
    assert calls == ["destroy"]


# ---- copy_storage: what the destination's libvirtd is asked ---------------------------------
def _libvirt_error(mod, code, errno_=0, message="boom"):
    err = mod.libvirt.libvirtError(message)
    err.err = (code, 0, message, 0, "", None, None, errno_, 0)
    return err


@pytest.mark.parametrize("raised, strict, seen", [
    # Only a plain "no such directory" is "not the same storage" before a copy.
    (("SYSTEM_ERROR", 2), True, False),
    (("SYSTEM_ERROR", 13), True, None),   # EACCES: the directory may well be there
    (("INTERNAL_ERROR", 0), True, None),
    (("NO_SUPPORT", 0), True, None),
    (("SYSTEM_ERROR", 13), False, False),  # shared-storage mode: not seen is the failure
    (None, True, True),                    # the random directory is there: shared
])
def test_a_copy_is_allowed_only_when_the_destination_surely_lacks_the_probe(
        monkeypatch, raised, strict, seen):
    mod = _module(monkeypatch)
    dconn, pool = MagicMock(), MagicMock()
    pool.listVolumes.return_value = []
    if raised:
        code = getattr(mod.libvirt, f"VIR_ERR_{raised[0]}")
        dconn.storagePoolCreateXML.side_effect = _libvirt_error(mod, code, raised[1])
    else:
        dconn.storagePoolCreateXML.return_value = pool
    assert mod.precheck_.probe_seen(dconn, "/l/.vmigrate-probe-ab", strict)[0] is seen
    assert pool.destroy.called is (raised is None)


def test_the_destination_image_is_looked_at_and_the_transient_pool_goes(monkeypatch):
    mod = _module(monkeypatch)
    dconn, pool, vol = MagicMock(), MagicMock(), MagicMock()
    dconn.storagePoolLookupByTargetPath.side_effect = _libvirt_error(
        mod, mod.libvirt.VIR_ERR_NO_STORAGE_POOL)
    dconn.listAllStoragePools.return_value = []
    dconn.storagePoolCreateXML.return_value = pool
    pool.listVolumes.return_value = ["v.qcow2"]
    pool.storageVolLookupByName.return_value = vol
    vol.info.return_value = [0, 64 << 20, 196608]
    vol.infoFlags.return_value = [0, 64 << 20, 196616]
    vol.XMLDesc.return_value = ("<volume><target><format type='qcow2'/></target><backingStore>"
                                "<path>/s/b.qcow2</path><format type='qcow2'/></backingStore>"
                                "</volume>")
    other = MagicMock()
    other.XMLDesc.return_value = ("<domain><devices><disk type='file'><source file='/x.qcow2'/>"
                                  "<backingStore type='file'><source file='/l/v.qcow2'/>"
                                  "</backingStore><target dev='vda'/></disk></devices></domain>")
    other.name.return_value = "clone"
    dconn.listAllDomains.return_value = [other]
    info = mod.precheck_.dest_image(dconn, "/l/v.qcow2")
    assert info == {"exists": True, "pool": None, "error": None, "allocation": 196608,
                    "physical": 196616, "format": "qcow2", "in_use_by": "clone",
                    "backing": {"path": "/s/b.qcow2", "format": "qcow2"}}
    assert "<path>/l</path>" in dconn.storagePoolCreateXML.call_args[0][0]
    pool.destroy.assert_called_once_with()


def test_an_inactive_pool_over_the_directory_is_named(monkeypatch):
    mod = _module(monkeypatch)
    dconn, inactive = MagicMock(), MagicMock()
    dconn.storagePoolLookupByTargetPath.side_effect = _libvirt_error(
        mod, mod.libvirt.VIR_ERR_NO_STORAGE_POOL)
    inactive.XMLDesc.return_value = "<pool><target><path>/l</path></target></pool>"
    inactive.isActive.return_value = False
    inactive.name.return_value = "images"
    dconn.listAllStoragePools.return_value = [inactive]
    dconn.listAllDomains.return_value = []
    info = mod.precheck_.dest_image(dconn, "/l/v.qcow2")
    assert "'images' there has it as its target but is not active" in info["error"]
    assert "virsh pool-start images" in info["error"]
    dconn.storagePoolCreateXML.assert_not_called()


def _copy_storage_facts(path, resolved):
    return {"disks": [{"target": "vda", "type": "file", "path": path, "resolved": resolved,
                       "readonly": False, "shareable": False, "empty": False, "magic": 0xEF53,
                       "fstype": "ext4", "mountpoint": "/", "fssource": "/dev/vda1"}]}


@pytest.mark.parametrize("seen_in, seen, words", [
    (None, False, "creates it in storage pool 'images'"),
    ("/export", True, "sees a sentinel host1 wrote beside /images/v.qcow2"),
    ("/images", True, "sees a sentinel host1 wrote beside /images/v.qcow2"),
    ("/export", None, "cannot tell whether host2 shares /images"),
])
def test_a_symlinked_image_is_probed_where_the_xml_names_it_and_where_it_lives(
        monkeypatch, seen_in, seen, words):
    """/images/v.qcow2 is a symlink to /export/v.qcow2 here: the destination may mount either
    place, so a sentinel seen (or not surely unseen) in either refuses the copy."""
    mod = _module(monkeypatch)
    asked = {}

    def probes(_dconn, _facts, dirs, strict):
        asked.update(dirs=dirs, strict=strict)
        return [{"dir": d, "seen": seen if d == seen_in else False, "detail": "x"}
                for d in dirs]

    monkeypatch.setattr(mod.precheck_, "probe_dirs", probes)
    monkeypatch.setattr(mod.precheck_, "dest_image",
                        lambda _c, _p: {"exists": False, "pool": "images"})
    checks = mod.precheck_.copy_checks(
        MagicMock(), _copy_storage_facts("/images/v.qcow2", "/export/v.qcow2"), "host2",
        (MagicMock(), None), {"copy_storage": "all"}, "host1")
    assert asked == {"dirs": ["/export", "/images"], "strict": True}
    dest = {c["name"]: c for c in checks}["dest_disk:vda"]
    assert dest["ok"] is (seen_in is None) and words in dest["detail"], dest


@pytest.mark.parametrize("error", ["libvirt", "os"])
def test_an_error_while_asking_the_destination_refuses_the_copy(monkeypatch, error):
    mod = _module(monkeypatch)

    def probes(*_args, **_kwargs):
        raise (_libvirt_error(mod, mod.libvirt.VIR_ERR_INTERNAL_ERROR, message="gone")
               if error == "libvirt" else OSError(5, "Input/output error"))

    monkeypatch.setattr(mod.precheck_, "probe_dirs", probes)
    checks = mod.precheck_.copy_checks(
        MagicMock(), _copy_storage_facts("/l/v.qcow2", "/l/v.qcow2"), "host2",
        (MagicMock(), None), {"copy_storage": "all"}, "host1")
    dest = {c["name"]: c for c in checks}["dest_disk:vda"]
    assert dest["ok"] is False and "asking its libvirtd failed" in dest["detail"], dest


def test_another_prechecks_transient_pool_is_not_taken_for_a_pool(monkeypatch):
    mod = _module(monkeypatch)
    dconn, busy = MagicMock(), MagicMock()
    busy.name.return_value = "vmigrate-look-0a1b2c"
    dconn.storagePoolLookupByTargetPath.return_value = busy
    dconn.listAllDomains.return_value = []
    info = mod.precheck_.dest_image(dconn, "/l/v.qcow2")
    assert "another vmigrate precheck is looking into it right now" in info["error"]
    assert info["pool"] is None
    busy.listVolumes.assert_not_called()


def test_a_close_the_peer_does_not_answer_is_not_waited_for(monkeypatch, caplog):
    """A migration that failed because the destination was cut off: closing the link to it
    waits for keepalive (10 s and more); the job's answer must not."""
    import threading
    import time

    mod = _module(monkeypatch)
    released = threading.Event()

    class Hung:
        closed = False

        def close(self):
            released.wait(30)
            self.closed = True

    conn = Hung()
    started = time.monotonic()
    closers = []
    real_thread = threading.Thread

    def thread(*args, **kwargs):
        closers.append(real_thread(*args, **kwargs))
        return closers[-1]

    monkeypatch.setattr(threading, "Thread", thread)
    mod.conn_.close_soon(conn, "link to qemu+ssh://host2/system", wait=0.2)
    assert time.monotonic() - started < 2
    assert "no answer to close within 0.2s" in caplog.text
    # Keepalive bounds the close: the process's exit waits for it (libvirt's own teardown
    # ends the transport, an ssh child with it), so the thread is not a daemon.
    assert [t.daemon for t in closers] == [False]
    released.set()
    closers[0].join(5)
    assert conn.closed  # the close still happens, in its own thread


def test_a_close_that_answers_is_waited_for(monkeypatch, caplog):
    import threading
    import time

    mod = _module(monkeypatch)
    closed, uncaught = [], []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)

    class Slow:
        def close(self):
            time.sleep(0.2)
            closed.append(True)
            raise mod.libvirt.libvirtError("already closed")

    mod.conn_.close_soon(Slow(), "link", wait=5)
    assert closed == [True] and "no answer" not in caplog.text
    assert uncaught == []  # libvirt's error on close is not the caller's business


def test_a_precheck_refusal_is_typed_refused_precheck(monkeypatch):
    """A failed precheck is an outcome with its own reason (the master and an evacuation see
    ``refused``: nothing moved, try another destination), not the catch-all ``error``."""
    mod = _module(monkeypatch)
    err = mod.precheck_.blocked("vdisk", [
        {"name": "dest_memory", "ok": False, "detail": "host2 lacks memory", "fix": "free some"},
        {"name": "dest_cpu", "ok": True, "detail": "ok", "fix": None}])
    assert isinstance(err, mod.outcome_.Outcome)
    assert (err.status, err.reason) == ("refused", "precheck")
    assert "host2 lacks memory. Fix: free some" in str(err) and "dest_cpu" not in str(err)


def test_an_outcome_is_read_by_its_code_not_its_class(monkeypatch):
    """A minion process may hold an older copy of vmigrate_outcome (a sync changed it, not the
    files that raise): its Outcome is another class, and must still not read as 'refused'."""
    mod = _module(monkeypatch)

    class OlderOutcome(mod.CommandExecutionError):
        status, reason = "unknown", "still_running"

    def run(*_args):
        raise OlderOutcome("it may yet complete")

    monkeypatch.setattr(mod.migration_, "run", run)
    out = mod.migrate("vdisk", "host2")
    assert (out["status"], out["reason"]) == ("unknown", "still_running"), out
    assert mod.__context__["retcode"] == 1
