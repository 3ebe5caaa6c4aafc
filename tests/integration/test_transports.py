"""Live migration over the transports production uses, through `salt-run state.orch migrate`.

The lab's pillar says `transport: tcp` with both lab-only switches; these tests take the switches
out and select `ssh` (the memory stream tunnelled through the ssh-protected libvirt connection)
or `tls` (libvirt's TLS connection, QEMU's own TLS for the memory stream). Each lab hypervisor
runs an sshd and a TLS-listening libvirtd with keys and certificates the lab made
(lab/labcreds.py). What crossed the wire is read where it happened: the destination's sshd log,
its libvirtd's TLS sessions, and the QMP commands its libvirtd sent the incoming QEMU.
"""
import contextlib
import json
import re
import time

import vmlab
from tests.support import labsalt

from .test_migrate import assert_guest_went_on, counter_before, orch_state

SWITCHES = ("allow_insecure_transport", "allow_plain_migration_stream")
QMP_SENT = re.compile(r"QEMU_MONITOR_SEND_MSG: mon=\S+ msg=(\{.*\})")
TLS_ALLOWED = "RPC_TLS_CONTEXT_SESSION_ALLOW"


def _orch(salt_run_cli, **pillar):
    return salt_run_cli.run("state.orch", "migrate", f"pillar={json.dumps(pillar)}")


@contextlib.contextmanager
def _transport(lab, pillar_dir, salt_cli, transport, drop=SWITCHES, minions=vmlab.HYPERVISORS,
               **settings):
    """The hypervisors' pillar with ``transport`` and without the keys in ``drop``."""
    with labsalt.lab_pillar_with(lab, pillar_dir, salt_cli, minions=minions,
                                 drop=drop, transport=transport, **settings) as pillar:
        assert not set(drop) & set(pillar["vmigrate"]), pillar
        yield


class _Tail:
    """What a file gains from now on."""

    def __init__(self, path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self):
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            fh.seek(self.offset)
            return fh.read()


@contextlib.contextmanager
def _dest_qmp(lab, host):
    """The QMP commands ``host``'s libvirtd sends its QEMUs while the block runs, and the TLS
    clients it lets in: yields a function returning ``(commands, tls_sessions)`` so far.
    libvirtd's own log filters get the QEMU monitor for the block (virt-admin, at run time)."""
    def admin(*args):
        return lab.host_run(host, ["virt-admin", *args], capture=True).stdout

    # virt-admin shows each filter as level:*match*; set back as the config wrote it.
    shown = admin("daemon-log-filters").split(":", 1)[1].split()
    before = " ".join(f.replace("*", "") for f in shown)
    log = _Tail(lab.host_path(host, "/var/log/libvirt/libvirtd.log"))
    admin("daemon-log-filters", f"{before} 2:qemu.qemu_monitor")
    try:
        def seen():
            text = log.new()
            commands = [json.loads(m.group(1)) for m in QMP_SENT.finditer(text)]
            return ([(c["execute"], c.get("arguments", {})) for c in commands],
                    text.count(TLS_ALLOWED))

        yield seen
    finally:
        admin("daemon-log-filters", before)


def _migrate(lab, salt_master, salt_run_cli, source, dest, data_stream):
    """One live migration by the orchestration; checks the result, where the guest runs and
    that it went on. Returns the migration's result."""
    before = counter_before(lab, source)
    started = time.time()
    ret = _orch(salt_run_cli, vm="vdisk", dest=dest)
    assert ret.returncode == 0, ret
    state = orch_state(ret)
    assert state["result"] is True, state
    assert state["changes"]["host"] == {"old": source, "new": dest}
    result = state["changes"]["migration"]
    # The memory stream as the source minion chose it, and no safety switch used.
    assert result["data_stream"] == data_stream, result
    # The result event names the safety switches used: none.
    events = vmlab.wait_for("the result event", lambda: salt_master.event_listener.get_events(
        [(salt_master.id, "vmigrate/vdisk/result")], after_time=started), 15, 0.2)
    assert [(e.data["data_stream"], e.data["switches"]) for e in events] == [(data_stream, [])]
    # The orchestration verified both sides through salt; here libvirt is asked directly.
    assert lab.running_on() == [dest]
    assert_guest_went_on(lab, dest, before)
    return result


def _incoming(commands):
    """The URI the destination QEMU was told to take the memory stream from."""
    uris = [args["uri"] for name, args in commands if name == "migrate-incoming"]
    assert len(uris) == 1, commands
    return uris[0]


def test_live_migration_over_ssh_tunnels_the_memory_stream(vdisk_on_host1, lab, pillar_dir,
                                                          salt_master, salt_cli, salt_run_cli):
    known = lab.host_path("host1", "/etc/ssh/ssh_known_hosts")
    known_text = known.read_text()
    with _transport(lab, pillar_dir, salt_cli, "ssh"):
        uris = salt_cli.run("vmigrate.dest_uris", "host2", minion_tgt="host1").data
        assert uris == {"uri": f"qemu+ssh://root@{lab.addr('host2')}/system",
                        "migrate_uri": None, "transport": "ssh", "data_stream": "tunnelled"}
        # Strict host-key checking: while host1 knows no key for host2, nothing moves.
        known.write_text("".join(line for line in known_text.splitlines(True)
                                 if not line.startswith("host2,")))
        try:
            ret = salt_cli.run("vmigrate.migrate", "vdisk", "host2", minion_tgt="host1")
        finally:
            known.write_text(known_text)
        assert ret.returncode != 0, ret
        assert "nothing was moved" in str(ret.data), ret
        assert "Host key verification failed" in str(ret.data), ret
        assert lab.running_on() == ["host1"]
        # With host2's key known, the migration goes through host2's sshd.
        sshd = _Tail(lab.sshd_log("host2"))
        with _dest_qmp(lab, "host2") as seen:
            _migrate(lab, salt_master, salt_run_cli, "host1", "host2", "tunnelled")
            commands, tls_sessions = seen()
    # host1 logged in to host2's sshd as root, by its key, from its own address.
    logins = re.findall(r"Accepted publickey for root from (\S+) port \d+ ssh2: ED25519",
                        sshd.new())
    assert logins and set(logins) == {lab.addr("host1")}, logins
    # The destination QEMU read the memory from libvirtd (the tunnel), not from the network,
    # and no TLS was involved.
    assert _incoming(commands).startswith("fd:"), commands
    assert tls_sessions == 0
    assert not [a for n, a in commands if n == "object-add"
                and a.get("qom-type") == "tls-creds-x509"], commands


def test_live_migration_over_tls(vdisk_on_host1, lab, pillar_dir, salt_master, salt_cli,
                                 salt_run_cli):
    with _transport(lab, pillar_dir, salt_cli, "tls"):
        uris = salt_cli.run("vmigrate.dest_uris", "host2", minion_tgt="host1").data
        assert uris == {"uri": f"qemu+tls://{lab.addr('host2')}/system",
                        "migrate_uri": f"tcp://{lab.addr('host2')}", "transport": "tls",
                        "data_stream": "tls"}
        # One way: the next test's fixture brings the guest back (CI time is counted).
        for source, dest in (("host1", "host2"),):
            with _dest_qmp(lab, dest) as seen:
                _migrate(lab, salt_master, salt_run_cli, source, dest, "tls")
                commands, tls_sessions = seen()
            # libvirt's control connection: the destination let a TLS client in.
            assert tls_sessions >= 1
            # QEMU's memory stream: the destination QEMU listened on TCP with x509
            # credentials from the lab's CA, as the TLS server, verifying the client.
            creds = [a for n, a in commands if n == "object-add"
                     and a.get("qom-type") == "tls-creds-x509"]
            assert creds and creds[-1]["endpoint"] == "server", commands
            assert creds[-1]["verify-peer"] is True and creds[-1]["dir"] == vmlab.QEMU_PKI
            assert any(n == "migrate-set-parameters" and a.get("tls-creds") == creds[-1]["id"]
                       for n, a in commands), commands
            assert _incoming(commands).startswith("tcp:"), commands


def test_tcp_is_refused_without_both_switches(vdisk_on_host1, lab, pillar_dir, salt_cli):
    """The source minion refuses, before it connects anywhere (the lab's libvirtds do listen on
    TCP): without allow_insecure_transport, and with it but without
    allow_plain_migration_stream."""
    cases = (
        ({}, SWITCHES, "transport tcp is unauthenticated and unencrypted"),
        ({"allow_insecure_transport": True}, ("allow_plain_migration_stream",),
         "transport tcp sends the guest's memory unencrypted"),
    )
    for settings, drop, words in cases:
        with _transport(lab, pillar_dir, salt_cli, "tcp", drop=drop, minions=("host1",),
                        **settings):
            ret = salt_cli.run("vmigrate.migrate", "vdisk", "host2", minion_tgt="host1")
        assert ret.returncode != 0, ret
        assert words in str(ret.data), ret
        assert lab.running_on() == ["host1"]
