"""The lab for the integration tests: real libvirtd per host, real QEMU guest, real salt.

Brought up once per session: namespaces and libvirtd (lab/vmlab.py), then a salt master and
one minion per host through pytest-salt-factories, then shared storage through the project's
own vmigrate.nfs.server / vmigrate.nfs.client states, then the guest ``vdisk`` on host1. A missing prerequisite
fails the session with a message naming it; nothing is skipped.
"""
import concurrent.futures
import os
import shutil
import sys

import pytest

from tests.support import labsalt

REPO = labsalt.REPO
sys.path.insert(0, str(REPO / "lab"))
import vmlab  # noqa: E402  pylint: disable=wrong-import-position

RUNNING = vmlab._quiet_libvirt().VIR_DOMAIN_RUNNING  # pylint: disable=protected-access
LAB_NAME = os.environ.get("VMLAB_NAME", "vmtest")
LAB_NET = os.environ.get("VMLAB_NET", "10.78.0")
# tests/integration/fleet runs in a session of its own on four hypervisors (lab/test.sh).
LAB_HOSTS = vmlab.hosts_from_env()


def _prerequisites(lab):
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the lab makes namespaces and mounts)")
    for tool in ("libvirtd", "qemu-system-x86_64", "qemu-img", "exportfs", "nsenter", "unshare",
                 "ip", "gcc", "sshd", "ssh", "ssh-keygen", "virt-ssh-helper", "certtool",
                 "virt-admin"):
        if not shutil.which(tool):
            missing.append(f"{tool} (run: make install)")
    if not (vmlab.CACHE / "vmlinuz").exists():
        missing.append(f"guest kernel {vmlab.CACHE / 'vmlinuz'} (run: make install)")
    try:
        here = os.stat("/proc/self/ns/net").st_ino
        ctl = os.stat(f"/run/netns/{lab.ctl_ns}").st_ino
        if here != ctl:
            missing.append(f"running inside network namespace {lab.ctl_ns} (use: make test)")
    except OSError:
        missing.append(f"network namespace {lab.ctl_ns} (use: make test)")
    return missing


@pytest.fixture(scope="session")
def lab():
    lab = vmlab.Lab(LAB_NAME, LAB_NET, hosts=LAB_HOSTS)
    missing = _prerequisites(lab)
    if missing:
        pytest.fail("integration prerequisites missing: " + "; ".join(missing), pytrace=False)
    # From nothing, as on a fresh machine: the lab directory is wiped (only lab/cache stays).
    lab.up(with_salt=False, ctl=False)
    yield lab
    lab.down(ctl=False)


@pytest.fixture(scope="session")
def pillar_dir(lab, tmp_path_factory):
    """The lab master's pillar directory (tests that change pillar restore it)."""
    path = tmp_path_factory.mktemp("pillar")
    labsalt.write_pillar(path, lab)
    return path


@pytest.fixture(scope="session")
def salt_master(salt_factories, lab, pillar_dir, tmp_path_factory):
    file_root = tmp_path_factory.mktemp("fileserver")
    factory = salt_factories.salt_master_daemon(
        f"{lab.name}-master", overrides=labsalt.master_overrides(lab, pillar_dir, file_root))
    with factory.started(start_timeout=120):
        yield factory


def _minion(salt_master, lab, host):
    return salt_master.salt_minion_daemon(
        host, factory_class=labsalt.LabMinion, ns_prefix=lab.host_argv(host, []),
        overrides=labsalt.minion_overrides(lab, host))


@pytest.fixture(scope="session")
def minions(salt_master, lab):
    """The minions (the hypervisors and nfs1), started and stopped side by side (one after
    another, each waiting for its key and its start event, took ~5 s apiece at both ends of
    the session)."""
    factories = [_minion(salt_master, lab, h) for h in lab.hosts]
    started = []

    def start(factory):
        factory.start(start_timeout=120)
        started.append(factory)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(factories)) as pool:
            for done in [pool.submit(start, f) for f in factories]:
                done.result()  # the first failure, after every start has ended
        yield {f.id: f for f in factories}
    finally:
        if started:
            with concurrent.futures.ThreadPoolExecutor(len(started)) as pool:
                list(pool.map(lambda f: f.terminate(), started))


@pytest.fixture(scope="session")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=180)


@pytest.fixture(scope="session")
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli(timeout=180)


@pytest.fixture(scope="session")
def synced(minions, salt_cli, salt_run_cli):
    ret = salt_run_cli.run("saltutil.sync_all")
    assert ret.returncode == 0, ret
    ret = salt_cli.run("saltutil.sync_all", minion_tgt="*")
    assert ret.returncode == 0, ret
    return minions


@pytest.fixture(scope="session")
def storage(synced, salt_cli, lab):
    """Shared storage set up by the project's own states; their first-run results kept."""
    server = salt_cli.run("state.apply", "vmigrate.nfs.server", minion_tgt=vmlab.NFS_HOST)
    assert server.returncode == 0, server
    clients = {h: salt_cli.run("state.apply", "vmigrate.nfs.client", minion_tgt=h)
               for h in lab.hypervisors}
    for host, ret in clients.items():
        assert ret.returncode == 0, (host, ret)
    return {"server": server.data, "clients": {h: r.data for h, r in clients.items()}}


@pytest.fixture(scope="session")
def guest(storage, lab):
    """vdisk running on host1, its disk and console on the shared storage."""
    lab.remove_guest_everywhere()
    lab.create_guest("host1")
    lab.wait_counter(timeout=90)
    return "vdisk"


@pytest.fixture
def vdisk_on_host1(guest, lab, salt_run_cli):
    """Each test starts with vdisk running (not paused) on host1 and defined there only, as
    libvirt reports it (asked directly: a salt-run locate here cost each test ~2.5 s); moved
    back live through vmigrate if a test left it elsewhere."""
    expected = {"host1": {"active": True, "state": RUNNING, "persistent": True}}
    if lab.domain_on(guest) != expected:
        ret = salt_run_cli.run("vmigrate.migrate", guest, "host1")
        assert ret.returncode == 0, ret
        assert lab.domain_on(guest) == expected, lab.domain_on(guest)
    return guest
