"""Mode save after a failed restore on the destination, against fake libvirt connections: a
definite refusal restores the guest here; lost contact reads the destination again first (on a
new connection), fences the save file, and when nothing settles it starts nothing (unknown)."""
import contextlib
import os

import libvirt
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.modload import load

UUID = "6f1e4b9a-0000-4000-8000-0000000000aa"


def _error(code, domain, text):
    err = libvirt.libvirtError(text)
    err.err = (code, domain, text, 2, None, None, None, 0, 0)
    return err


LOST = _error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC,
              "End of file while reading data: Input/output error")
REFUSED = _error(libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU,
                 "operation failed: job 'restore' failed")


class Source:
    """The source domain and its connection: save writes the file, restore records it."""

    def __init__(self, tmp_path):
        self.saved_to = self.restored_from = None
        self.undefined = False
        self.tmp_path = tmp_path

    # domain
    def UUIDString(self):  # noqa: N802
        return UUID

    def XMLDesc(self, flags=0):  # noqa: N802
        return f"<domain><name>vdisk</name><uuid>{UUID}</uuid></domain>"

    def save(self, path):
        self.saved_to = path
        with open(path, "w", encoding="ascii") as fh:
            fh.write("memory")

    def undefineFlags(self, flags):  # noqa: N802
        self.undefined = True

    # connection
    def restore(self, path):
        self.restored_from = path


class DestDomain:
    def __init__(self, state):
        self.state_ = state  # "running", "defined"
        self.undefined = False

    def isActive(self):  # noqa: N802
        return self.state_ in ("running", "paused")

    def state(self):
        return [{"running": libvirt.VIR_DOMAIN_RUNNING, "paused": libvirt.VIR_DOMAIN_PAUSED}.get(
            self.state_, libvirt.VIR_DOMAIN_SHUTOFF), 0]

    def jobStats(self):  # noqa: N802
        raise _error(libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU,
                     "domain is not running")

    def undefineFlags(self, flags):  # noqa: N802
        self.undefined = True


class Dest:
    """One connection to the destination's libvirtd. ``restore_error``: what restore raises;
    ``after``: the domain's state libvirt has when read again; ``alive``: isAlive()."""

    def __init__(self, world):
        self.world = world

    def defineXML(self, xml):  # noqa: N802
        self.world["domain"] = DestDomain("defined")
        return self.world["domain"]

    def restore(self, path):
        self.world["restore_calls"] += 1
        if self.world["restore_error"] is not None:
            if self.world["after"] == "running":
                self.world["domain"].state_ = "running"  # it did it, then the link broke
            raise self.world["restore_error"]
        self.world["domain"].state_ = "running"

    def isAlive(self):  # noqa: N802
        return 0 if self.world["restore_error"] is LOST else 1

    def lookupByUUIDString(self, uuid):  # noqa: N802
        if self.world.get("domain") is None:
            raise _error(libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU, "no domain")
        settling = self.world.get("settling")
        if settling:  # readings of the restore's QEMU, still there after libvirtd restarted
            self.world["settling"] -= 1
            self.world["domain"].state_ = "paused" if self.world["settling"] else "defined"
        return self.world["domain"]


@pytest.fixture
def mod():
    return load("_modules", "vmigrate")


@pytest.fixture
def configure_loader_modules(mod):
    """pytest-salt-factories' loader mocking gives the module its dunders."""
    return {mod: {"__opts__": {"id": "host1"}, "__pillar__": {"vmigrate": {}}}}


@pytest.fixture
def env(mod, tmp_path, monkeypatch):
    monkeypatch.setattr(mod.precheck_.storage_, "disk_dirs", lambda facts: [str(tmp_path)])
    monkeypatch.setattr(mod.precheck_, "storage_facts", lambda dom, xml=None: {})
    world = {"restore_error": None, "after": None, "domain": None, "restore_calls": 0,
             "reachable": True, "connects": 0}

    @contextlib.contextmanager
    def dest_connection(uri, conf):
        world["connects"] += 1
        if world["connects"] > 1 and not world["reachable"]:
            raise CommandExecutionError("cannot connect to the destination")
        yield Dest(world)

    monkeypatch.setattr(mod.conn_, "dest_connection", dest_connection)
    source = Source(tmp_path)
    conf = {"progress_events": False, "abort_deadline": 1.5}
    job = mod.monitor_.Job("host1", "host2", {"uri": "qemu+tcp://h2/system"}, conf, {},
                           mod._send_event)

    def run():
        return mod.migration_.static_.save(source, source, "vdisk", 3, job)

    return {"mod": mod, "world": world, "source": source, "run": run, "dir": tmp_path}


def _files(env):
    return sorted(p.name for p in env["dir"].iterdir())


def test_a_restore_libvirt_refused_is_restored_here_and_the_definition_there_dropped(env):
    env["world"]["restore_error"] = REFUSED
    out = env["run"]()
    assert out["error"].status == "failed", out
    assert env["world"]["domain"].undefined is True
    assert env["source"].restored_from and not env["source"].undefined
    assert _files(env) == []  # the save file is gone
    assert env["world"]["connects"] == 1  # a definite answer: nothing read again


def test_lost_contact_after_the_restore_took_reads_it_running_there(env):
    env["world"].update(restore_error=LOST, after="running")
    out = env["run"]()
    assert "error" not in out, out["error"]
    assert env["source"].restored_from is None and env["source"].undefined is True
    assert env["world"]["connects"] == 2  # read again on a new connection
    assert "lost contact; read again for up to" in out["warnings"][0]
    assert out["warnings"][0].endswith(": running)")
    assert _files(env) == []


def test_lost_contact_before_the_restore_fences_the_file_then_restores_here(env):
    env["world"].update(restore_error=LOST, after="defined")
    out = env["run"]()
    assert out["error"].status == "failed" and "after fencing: defined" in str(out["error"])
    # Restored here from the fenced file (a late restore there can no longer open the old
    # path), the definition there dropped, and the file removed.
    assert env["source"].restored_from.endswith(".sav.source")
    assert env["world"]["domain"].undefined is True
    assert _files(env) == []


def test_lost_contact_that_no_reading_settles_starts_nothing_and_keeps_the_file(env):
    env["world"].update(restore_error=LOST, after="defined", reachable=False)
    out = env["run"]()
    assert out["error"].status == "unknown" and out["error"].reason == "lost_contact"
    assert env["source"].restored_from is None and not env["source"].undefined
    kept = _files(env)
    assert len(kept) == 1 and kept[0].startswith(".vmigrate-save-vdisk-"), kept
    assert os.path.join(str(env["dir"]), kept[0]) in str(out["error"])  # named for the person


def test_lost_contact_reads_again_until_a_paused_restore_settles(env):
    # host2's libvirtd killed mid-restore and restarted: its first reading shows the restore's
    # QEMU (active, paused), the next the domain shut off once that QEMU is gone. Read until
    # it says more, then fence the file and go on here (the first reading alone gave up).
    env["world"].update(restore_error=LOST, after="defined", settling=2)
    out = env["run"]()
    assert out["error"].status == "failed" and "after fencing: defined" in str(out["error"])
    assert env["source"].restored_from.endswith(".sav.source")
    assert _files(env) == []
