#!/usr/bin/env python3
"""The vmigrate lab: two hypervisors (or up to eight: ``HOSTS=4``), an NFS host and a salt
master on one machine.

Every lab address lives in network namespaces made here: a control namespace ``<name>-ctl``
holds the bridge and the salt master; each host (``host1``, ``host2``..., ``nfs1``) is a network
namespace joined to the bridge by a veth, plus a mount and UTS namespace of its own kept alive by
a holder process, with its own hostname, a private ``/run`` and a private copy of ``/etc``
(libvirt config, hosts, fstab, exports), ``/var/lib/libvirt``, ``/var/log/libvirt``,
``/var/cache/libvirt`` and ``/var/lib/nfs``. Nothing of the real machine's /etc, /run or
libvirt is touched, and the root namespace gets no address.

This file is both a library (the integration tests' fixtures use :class:`Lab`) and the CLI
behind ``make lab-up``, ``make lab-down`` and ``make demo``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

# lab/ is on sys.path: this script's directory, or inserted by the tests and benchmarks.
import labcreds
import saltconf
import vmguest

REPO = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
CACHE = REPO / "lab" / "cache"
GUEST_SRC = REPO / "lab" / "guest"
HYPERVISORS = ("host1", "host2")  # the default lab (make demo, make test)
MAX_HYPERVISORS = 8
NFS_HOST = "nfs1"
NFS_OCTET = 20


def hypervisor_names(count):
    """host1..host<count>."""
    return tuple(f"host{i}" for i in range(1, count + 1))


def host_octet(host):
    """The last octet of ``host``'s lab address: host<i> is .1<i>, nfs1 .20."""
    if host == NFS_HOST:
        return NFS_OCTET
    match = re.fullmatch(r"host([1-8])", host)
    if not match:
        raise ValueError(f"not a lab host: {host!r}")
    return 10 + int(match[1])
LAB_BASE = pathlib.Path("/var/lib/vmigrate-lab")
# Per-host libvirt state under the lab directory (wiped on every lab-up), and the one cache that
# survives: QEMU capabilities (~4 s per emulator probe), kept under lab/cache per lab and host.
LIBVIRT_DIRS = ("var/lib/libvirt", "var/log/libvirt")
# The fleet's small guests: six to eight fit beside vdisk on this 2-core machine (96 MiB is
# the least the guest kernel and its initramfs boot in here; 80 MiB hangs at boot).
SMALL_GUEST = {"memory_mib": 96, "workset_mib": 1, "rate": 64}
LIBVIRT_CACHE_DIR = "var/cache/libvirt"
QEMU_PKI = labcreds.QEMU_PKI


class LabError(RuntimeError):
    """A lab step failed; the message says which and why."""


def _quiet_libvirt():
    """libvirt-python prints every error to stderr unless a handler is registered."""
    import libvirt  # pylint: disable=import-outside-toplevel

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def run(argv, check=True, capture=False, **kwargs):
    proc = subprocess.run(
        [str(a) for a in argv],
        check=False,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        **kwargs,
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip() if capture else ""
        raise LabError(f"command failed ({proc.returncode}): {' '.join(map(str, argv))} {detail}")
    return proc


def wait_for(what, predicate, timeout=60.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Lab:
    """One lab instance. ``name`` prefixes every namespace; ``net`` is the /24 inside them."""

    def __init__(self, name="vmlab", net="10.77.0", root=None, hosts=2):
        if not re.fullmatch(r"[a-z][a-z0-9]{1,9}", name):
            raise LabError(f"lab name {name!r}: 2-10 lowercase letters/digits")
        if isinstance(hosts, bool) or not isinstance(hosts, int) \
                or not 2 <= hosts <= MAX_HYPERVISORS:
            raise LabError(f"lab hosts {hosts!r}: 2..{MAX_HYPERVISORS} hypervisors")
        self.name = name
        self.net = net
        self.root = pathlib.Path(root or LAB_BASE / name)
        self.hypervisors = hypervisor_names(hosts)
        self.hosts = (*self.hypervisors, NFS_HOST)
        self.ctl_ns = f"{name}-ctl"
        self.ctl_addr = f"{net}.1"
        # Shared storage: nfs1 exports EXPORT_DIR; every hypervisor mounts it at MOUNTPOINT.
        self.export_dir = self.root / "nfs1-export" / "vmimages"
        self.mountpoint = self.root / "vmimages"
        self.salt_dir = self.root / "salt"

    # ---- addressing and entering hosts -------------------------------------------------------
    @staticmethod
    def any_hosts():
        """Every host a lab of this name may have (down and wipe clean a bigger lab too)."""
        return (*hypervisor_names(MAX_HYPERVISORS), NFS_HOST)

    def addr(self, host):
        return f"{self.net}.{host_octet(host)}"

    def host_dir(self, host):
        return self.root / "hosts" / host

    def libvirt_cache(self, host):
        """``host``'s /var/cache/libvirt: the QEMU capabilities cache, kept across lab runs."""
        return CACHE / "libvirt" / f"{self.name}-{host}"

    def holder_pid(self, host):
        """The pid of ``host``'s holder, or None. A pid file outliving its holder may name a
        reused pid, maybe in another lab's namespaces, whose processes :meth:`down` would then
        kill: the process counts only if its /etc is this host's private copy."""
        try:
            pid = int((self.host_dir(host) / "holder.pid").read_text())
            ours = os.stat(self.host_dir(host) / "etc")
            theirs = os.stat(f"/proc/{pid}/root/etc")
            if _alive(pid) and (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
                return pid
        except (OSError, ValueError):
            pass
        return None

    def host_argv(self, host, argv):
        """The command line that runs ``argv`` inside ``host``'s namespaces."""
        pid = self.holder_pid(host)
        if pid is None:
            raise LabError(f"lab host {host} is not up (run: make lab-up)")
        return ["nsenter", "-t", str(pid), "-m", "-u", "-n", "--", *map(str, argv)]

    def ctl_argv(self, argv):
        return ["ip", "netns", "exec", self.ctl_ns, *map(str, argv)]

    def host_run(self, host, argv, **kwargs):
        return run(self.host_argv(host, argv), **kwargs)

    def host_path(self, host, path):
        """``path`` as ``host`` sees it, reachable from outside through /proc/<holder>/root."""
        return pathlib.Path(f"/proc/{self.holder_pid(host)}/root") / str(path).lstrip("/")

    def is_mounted(self, host, path):
        """Whether ``path`` is a mount point in ``host``'s mount namespace."""
        mountinfo = pathlib.Path(f"/proc/{self.holder_pid(host)}/mountinfo").read_text()
        return any(line.split()[4] == str(path) for line in mountinfo.splitlines())

    def host_pids(self, host, comm):
        """Processes named ``comm`` running inside ``host`` (same mount namespace)."""
        mntns = _mntns(self.holder_pid(host))
        found = []
        for pid in _pids():
            try:
                name = pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name == comm and _mntns(pid) == mntns and _alive(pid):
                found.append(pid)
        return found

    def libvirt_uri(self, host):
        """A libvirt URI for ``host``'s libvirtd usable from any namespace (its unix socket)."""
        sock = self.host_path(host, "/run/libvirt/libvirt-sock")
        return f"qemu:///system?socket={sock}"

    # ---- network ------------------------------------------------------------------------------
    def _netns_exists(self, ns):
        return (pathlib.Path("/run/netns") / ns).exists()

    def network_up(self):
        if not self._netns_exists(self.ctl_ns):
            run(["ip", "netns", "add", self.ctl_ns])
            ipc = ["ip", "-n", self.ctl_ns]
            run([*ipc, "link", "set", "lo", "up"])
            run([*ipc, "link", "add", "br0", "type", "bridge"])
            run([*ipc, "addr", "add", f"{self.ctl_addr}/24", "dev", "br0"])
            run([*ipc, "link", "set", "br0", "up"])
        for host in self.hosts:
            ns = f"{self.name}-{host}"
            if self._netns_exists(ns):
                continue
            run(["ip", "netns", "add", ns])
            ipc, iph = ["ip", "-n", self.ctl_ns], ["ip", "-n", ns]
            # A just-deleted host namespace frees its veth asynchronously: drop a stale end.
            run([*ipc, "link", "del", f"v-{host}"], check=False, capture=True)
            run([*ipc, "link", "add", f"v-{host}", "type", "veth", "peer", "name", "eth0", "netns", ns])
            run([*ipc, "link", "set", f"v-{host}", "master", "br0", "up"])
            run([*iph, "link", "set", "lo", "up"])
            run([*iph, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0"])
            run([*iph, "link", "set", "eth0", "up"])

    # ---- hosts --------------------------------------------------------------------------------
    def _prepare_host_dirs(self, host):
        hdir = self.host_dir(host)
        etc = hdir / "etc"
        if not etc.exists():
            tmp = hdir / "etc.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            hdir.mkdir(parents=True, exist_ok=True)
            run(["cp", "-a", "/etc", tmp])
            tmp.rename(etc)
        (etc / "hostname").write_text(f"{host}\n")
        hosts = ["127.0.0.1\tlocalhost\n", f"{self.ctl_addr}\tsalt {self.name}-master\n"]
        hosts += [f"{self.addr(h)}\t{h}\n" for h in self.hosts]
        (etc / "hosts").write_text("".join(hosts))
        # A host starts with no NFS mounts or exports of ours: states under test create them.
        (etc / "fstab").write_text("# lab host fstab\n")
        if host == NFS_HOST:
            # A real NFS server has no libvirt: drop the users this machine's libvirt packages
            # added, so nfs.server must work with numeric owners.
            for name in ("passwd", "shadow", "group", "gshadow"):
                path = etc / name
                if path.exists():
                    kept = [line for line in path.read_text().splitlines(True)
                            if not line.startswith(("libvirt", "kvm:"))]
                    path.write_text("".join(kept))
            (etc / "exports").write_text("# /etc/exports: the access control list for NFS\n")
            (etc / "exports.d").mkdir(exist_ok=True)
            for f in (etc / "exports.d").iterdir():
                f.unlink()
            (hdir / "var/lib/nfs").mkdir(parents=True, exist_ok=True)
        for d in LIBVIRT_DIRS:
            (hdir / d).mkdir(parents=True, exist_ok=True)
        self.libvirt_cache(host).mkdir(parents=True, exist_ok=True)
        if host in self.hypervisors:
            self._configure_libvirt(host)

    def _configure_libvirt(self, host):
        hdir = self.host_dir(host)
        etc_libvirt = hdir / "etc" / "libvirt"
        shutil.rmtree(etc_libvirt, ignore_errors=True)
        run(["cp", "-a", "/etc/libvirt", etc_libvirt])
        autostart = etc_libvirt / "qemu" / "networks" / "autostart"
        shutil.rmtree(autostart, ignore_errors=True)
        host_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.name}.{host}.vmigrate-lab")
        (etc_libvirt / "libvirtd.conf").write_text(
            # TLS (16514): libvirt's default PKI paths under /etc/pki, filled by labcreds
            # from the lab's CA; only the hypervisors' client certificates get in.
            "listen_tls = 1\n"
            "tls_allowed_dn_list = [ "
            + ", ".join(f'"{labcreds.client_dn(self, h)}"' for h in self.hypervisors) + " ]\n"
            "# lab only: unauthenticated TCP inside the lab's namespaces\n"
            "listen_tcp = 1\n"
            f'listen_addr = "{self.addr(host)}"\n'
            'auth_tcp = "none"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            f'host_uuid = "{host_uuid}"\n'
            # Warnings, plus a line per TLS client let in (RPC_TLS_CONTEXT_SESSION_ALLOW): the
            # transport tests read it.
            'log_filters = "2:rpc.nettlscontext"\n'
            'log_outputs = "2:file:/var/log/libvirt/libvirtd.log"\n'
        )
        (etc_libvirt / "qemu.conf").write_text(
            'user = "root"\n'
            'group = "root"\n'
            'security_driver = "none"\n'
            "cgroup_controllers = [ ]\n"
            "namespaces = [ ]\n"
            'stdio_handler = "file"\n'
            "remember_owner = 0\n"
            f'shared_filesystems = [ "{self.mountpoint}" ]\n'
            "# lab only: a silent peer ends a peer-to-peer migration in ~8 s, not ~30 s\n"
            "keepalive_interval = 2\n"
            "keepalive_count = 4\n"
            # VIR_MIGRATE_TLS: QEMU's own TLS for the memory stream, certificates from the
            # lab's CA (the directory must exist when libvirtd starts).
            f'default_tls_x509_cert_dir = "{QEMU_PKI}"\n'
            f'migrate_tls_x509_cert_dir = "{QEMU_PKI}"\n'
            "migrate_tls_x509_verify = 1\n"
        )

    def _start_holder(self, host):
        if self.holder_pid(host):
            return
        hdir = self.host_dir(host)
        binds = [(hdir / "etc", "/etc")]
        binds += [(hdir / d, f"/{d}") for d in LIBVIRT_DIRS]
        binds.append((self.libvirt_cache(host), f"/{LIBVIRT_CACHE_DIR}"))
        if host == NFS_HOST:
            binds.append((hdir / "var/lib/nfs", "/var/lib/nfs"))
        ready = hdir / "holder.ready"
        ready.unlink(missing_ok=True)
        script = ["set -e", f"hostname {host}", "mount -t tmpfs -o mode=755 tmpfs /run",
                  "mkdir -p /run/lock"]
        script += [f"mount --bind '{src}' '{dst}'" for src, dst in binds]
        script += [f"echo ready > '{ready}'", "exec sleep infinity"]
        log = open(hdir / "holder.log", "w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", f"{self.name}-{host}", "unshare", "--mount", "--uts",
             "--propagation", "private", "sh", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        (hdir / "holder.pid").write_text(str(proc.pid))
        wait_for(f"{host} namespaces", lambda: ready.exists() or proc.poll() is not None, 10)
        if proc.poll() is not None:
            raise LabError(f"{host} holder exited: {(hdir / 'holder.log').read_text()}")

    def libvirtd_up(self, host):
        """Start ``host``'s libvirtd unless one runs there (a killed one's socket is removed)."""
        sock = self.host_path(host, "/run/libvirt/libvirt-sock")
        if not self.host_pids(host, "libvirtd"):
            sock.unlink(missing_ok=True)
            self.host_run(host, ["libvirtd", "--listen", "-d"])
            wait_for(f"libvirtd on {host}", sock.exists, 20)
        return sock

    def libvirtd_restart(self, host):
        """Stop ``host``'s libvirtd and start it again (running guests keep running). Returns
        once its QEMU driver answers: libvirtd listens on its socket before the driver has
        read qemu.conf (driver init runs in a thread of its own)."""
        pid = int(self.host_path(host, "/run/libvirtd.pid").read_text())
        # As systemd stops it: SIGTERM, then SIGKILL if it is still there (a libvirtd with a
        # migration job under way can take long to stop).
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(f"{host} libvirtd to stop", lambda: not _alive(pid), 30)
        except LabError:
            os.kill(pid, signal.SIGKILL)
            wait_for(f"{host} libvirtd to die", lambda: not _alive(pid), 10)
        self.libvirtd_up(host)
        self.wait_hypervisors_ready([host])

    @contextlib.contextmanager
    def tcg_cpu_without(self, host, feature):
        """``host``'s hypervisor without one CPU feature, for as long as the block runs.

        The lab's hosts run the same QEMU on the same machine, so their hypervisor CPUs are
        identical; a destination that cannot run a guest's CPU needs one that differs. libvirt
        builds the TCG host CPU model from its capabilities cache
        (/var/cache/libvirt/qemu/capabilities, the ``<hostCPU type='tcg'>`` properties), which
        it trusts while the QEMU binary and libvirt are unchanged; this turns ``feature`` off
        there and restarts that libvirtd, then puts the cache back and restarts it again. The
        comparison and every refusal stay libvirt's own. A cache left edited by a crashed run
        is restored by the next ``up()``."""
        files = sorted((self.libvirt_cache(host) / "qemu" / "capabilities").glob("*.xml"))
        edited = []
        try:
            for path in files:
                text = path.read_text()
                start = text.find("<hostCPU type='tcg'")
                end = text.find("</hostCPU>", start)
                prop = f"<property name='{feature}' type='boolean' value='true'"
                if start < 0 or prop not in text[start:end]:
                    continue
                shutil.copy2(path, f"{path}{DOCTORED}")
                block = text[start:end].replace(prop, prop.replace("'true'", "'false'"))
                path.write_text(text[:start] + block + text[end:])
                edited.append(path)
            if not edited:
                raise LabError(f"no TCG host CPU with {feature} in {host}'s capabilities cache")
            self.libvirtd_restart(host)
            yield
        finally:
            if _restore_doctored(self.libvirt_cache(host)):
                self.libvirtd_restart(host)

    def hosts_up(self):
        for host in self.hosts:
            self._prepare_host_dirs(host)
        # ssh keys and the TLS PKI go into the hosts' /etc copies before any daemon reads them.
        try:
            labcreds.make(self)
        except (OSError, RuntimeError) as err:
            raise LabError(f"ssh keys / TLS certificates: {err}") from err
        for host in self.hosts:
            self._start_holder(host)
        # libvirtd resolves each qemu.conf `shared_filesystems` entry with realpath() once, when
        # it starts (libvirt 11.3 src/qemu/qemu_conf.c); a path that does not exist then is
        # dropped, with every entry after it, until the daemon restarts. So the shared mount
        # point exists before any libvirtd starts, as a real host's mount points do at boot;
        # nfs.client mounts onto it later.
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        for host in self.hypervisors:
            self.libvirtd_up(host)
            self.sshd_up(host)

    def sshd_log(self, host):
        """``host``'s sshd log (LogLevel VERBOSE: every key login, with the client address)."""
        return self.host_dir(host) / "sshd.log"

    def sshd_up(self, host):
        """Start ``host``'s sshd (its own config, keys and address; see labcreds) unless one runs
        there. Returns once it accepts connections on the host's address."""
        if not self.host_pids(host, "sshd"):
            self.host_path(host, "/run/sshd").mkdir(mode=0o755, exist_ok=True)
            # sshd re-executes itself: it wants its absolute path.
            self.host_run(host, [shutil.which("sshd") or "/usr/sbin/sshd",
                                 "-E", self.sshd_log(host)], capture=True)
        addr = self.addr(host)

        def listening():
            out = self.host_run(host, ["ss", "-Hltn", f"src = {addr}:22"], capture=True).stdout
            return bool(out.strip())

        wait_for(f"sshd on {host}", listening, 10, 0.05)

    def wait_hypervisors_ready(self, hosts=None, timeout=120):
        """Wait until each libvirtd answers capabilities (the first QEMU probe takes seconds)."""
        libvirt = _quiet_libvirt()

        for host in hosts or self.hypervisors:
            def ready(host=host):
                try:
                    conn = libvirt.open(self.libvirt_uri(host))
                except libvirt.libvirtError:
                    return False
                try:
                    return bool(conn.getCapabilities())
                finally:
                    conn.close()

            wait_for(f"libvirtd capabilities on {host}", ready, timeout, 0.3)

    # ---- guest --------------------------------------------------------------------------------
    def guest_artifacts(self):
        """Build (once) the guest initramfs; returns (kernel, initrd) paths."""
        try:
            return vmguest.artifacts(CACHE, GUEST_SRC, run)
        except FileNotFoundError as err:
            raise LabError(str(err)) from err

    def guest_xml(self, name="vdisk", directory=None, workset_mib=vmguest.GUEST_WORKSET_MIB,
                  memory_mib=vmguest.GUEST_MEMORY_MIB, power_button=True, disk_dir=None, rate=0):
        return vmguest.domain_xml(name, directory or self.mountpoint, workset_mib, memory_mib,
                                  power_button, disk_dir, rate)

    def console_log(self, name="vdisk"):
        """The guest's console log on the shared storage (read through the NFS host's export)."""
        return self.export_dir / f"{name}.console.log"

    def create_guest(self, host="host1", name="vdisk", start=True, directory=None,
                     workset_mib=vmguest.GUEST_WORKSET_MIB, memory_mib=vmguest.GUEST_MEMORY_MIB,
                     power_button=True, disk_dir=None, rate=0):
        """Put the guest's files in ``directory`` as ``host`` sees it (default: the shared
        mount, which must be mounted), its disk in ``disk_dir`` when given (made if missing),
        and define the guest there."""
        libvirt = _quiet_libvirt()

        kernel, initrd = self.guest_artifacts()
        if directory is None:
            directory = self.mountpoint
            if not self.is_mounted(host, self.mountpoint):
                raise LabError(f"{self.mountpoint} is not mounted on {host}: apply vmigrate.nfs.client"
                               " first")
        shared = self.host_path(host, directory)
        shutil.copyfile(kernel, shared / f"{name}.kernel")
        shutil.copyfile(initrd, shared / f"{name}.initrd")
        disk = shared / f"{name}.qcow2"
        if disk_dir is not None:
            disk = self.host_path(host, disk_dir) / f"{name}.qcow2"
            disk.parent.mkdir(parents=True, exist_ok=True)
        if not disk.exists():
            run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"])
        (shared / f"{name}.console.log").write_text("")
        conn = libvirt.open(self.libvirt_uri(host))
        try:
            dom = conn.defineXML(self.guest_xml(name, directory, workset_mib, memory_mib,
                                                power_button, disk_dir, rate))
            if start:
                dom.create()
        finally:
            conn.close()

    def remove_guest_everywhere(self, name="vdisk"):
        """Destroy and undefine ``name`` on every hypervisor (lab reset, never used by vmigrate)."""
        libvirt = _quiet_libvirt()

        for host in self.hypervisors:
            if not self.holder_pid(host):
                continue
            conn = libvirt.open(self.libvirt_uri(host))
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                conn.close()
                continue
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            finally:
                conn.close()

    def counter_lines(self, name="vdisk"):
        """Parsed ``memtick n=.. bad=..`` lines of the guest console: a list of (n, bad)."""
        try:
            text = self.console_log(name).read_text(errors="replace")
        except OSError:
            return []
        return [(n, bad) for n, bad, _ in vmguest.counters(text)]

    def domain_on(self, name="vdisk"):
        """{hypervisor: {"active", "state", "persistent"}} for each hypervisor whose libvirtd
        has ``name`` (``state``: libvirt's state code), asked directly over each host's
        socket, not through salt or vmigrate."""
        libvirt = _quiet_libvirt()
        found = {}
        for host in self.hypervisors:
            conn = libvirt.open(self.libvirt_uri(host))
            try:
                dom = conn.lookupByName(name)
                found[host] = {"active": bool(dom.isActive()), "state": dom.state()[0],
                               "persistent": bool(dom.isPersistent())}
            except libvirt.libvirtError:
                pass
            finally:
                conn.close()
        return found

    def running_on(self, name="vdisk"):
        """The hypervisors whose libvirtd reports ``name`` active (running or paused)."""
        return [host for host, d in self.domain_on(name).items() if d["active"]]

    def placement(self, name="vdisk"):
        """(hypervisors where ``name`` is active, hypervisors where it is defined)."""
        found = self.domain_on(name)
        return ([h for h, d in found.items() if d["active"]],
                [h for h, d in found.items() if d["persistent"]])

    def incoming_qemu(self, host, name="vdisk", timeout=60):
        """Wait until ``host``'s libvirtd has ``name`` active (an incoming migration starts it
        paused) and return the pid libvirt recorded for its QEMU. A QEMU that is still exiting
        on ``host`` from an earlier migration does not count."""
        pidfile = self.host_path(host, f"/run/libvirt/qemu/{name}.pid")

        def started():
            if host not in self.running_on(name):
                return None
            try:
                pid = int(pidfile.read_text())
            except (OSError, ValueError):
                return None
            return pid if _alive(pid) else None

        return wait_for(f"an incoming {name} on {host}", started, timeout, 0.05)

    def _runs_only_on(self, host, name):
        state = self.running_on(name)
        if state != [host]:
            return f"libvirt reports {name} active on {', '.join(state) or 'no host'}"
        if not self.host_pids(host, "qemu-system-x86"):
            return f"no QEMU process in {host}'s namespaces"
        return None

    def counter_lines_on(self, host, name="vdisk", count=2, timeout=30, console=None):
        """Counter lines that ``host`` verifiably wrote: the guest is checked to run on ``host``
        and on no other hypervisor (libvirt on every host, and a QEMU in ``host``'s mount
        namespace), then the console log's length is taken, then ``count`` new lines are
        awaited, then the check is repeated. Raises LabError, naming where the guest runs, when
        it does not run on ``host`` alone. Returns the new lines as (n, bad). ``console``: the
        name its console log was created under (a migration may have renamed it)."""
        why = self._runs_only_on(host, name)
        if why:
            raise LabError(f"cannot attribute {name}'s counter to {host}: {why}")
        log = self.console_log(console or name)
        offset = len(log.read_text(errors="replace"))

        def new_lines():
            text = log.read_text(errors="replace")
            seen = [(n, bad) for n, bad, pos in vmguest.counters(text) if pos >= offset]
            return seen if len(seen) >= count else None

        lines = wait_for(f"{count} counter lines from {name} on {host}", new_lines, timeout, 0.2)
        why = self._runs_only_on(host, name)
        if why:
            raise LabError(f"{name} left {host} while its counter was read: {why}")
        return lines

    def wait_counter(self, name="vdisk", timeout=60):
        """Wait until the guest printed a counter line; return the last (n, bad)."""
        def seen():
            lines = self.counter_lines(name)
            return lines[-1] if lines else None

        return wait_for(f"guest {name}'s counter", seen, timeout, 0.2)

    # ---- salt (plain daemons, for lab-up/demo; the tests use pytest-salt-factories) -----------
    def pillar(self):
        """The lab's pillar: hypervisors, transport, shared storage. Lab-only switches explicit."""
        return saltconf.lab_pillar(self)

    def salt_up(self):
        etc = self.salt_dir / "etc"
        pillar_dir = self.salt_dir / "pillar"
        etc.mkdir(parents=True, exist_ok=True)
        pillar_dir.mkdir(parents=True, exist_ok=True)
        saltconf.write_pillar(pillar_dir, self)
        file_root = saltconf.install_plugin(self.salt_dir / "fileserver")
        (etc / "master").write_text(json.dumps(saltconf.master_config(
            self, self.salt_dir / "master", pillar_dir, file_root), indent=2))
        if not self._pid_alive(self.salt_dir / "master" / "var" / "run" / "salt-master.pid"):
            run(self.ctl_argv([VENV_BIN / "salt-master", "-c", etc, "-d"]))
        for host in self.hosts:
            mdir = self.salt_dir / host
            mdir.mkdir(parents=True, exist_ok=True)
            (mdir / "minion").write_text(json.dumps(saltconf.minion_config(self, host, mdir), indent=2))
            if not self._pid_alive(mdir / "var" / "run" / "salt-minion.pid"):
                self.host_run(host, [VENV_BIN / "salt-minion", "-c", mdir, "-d"])
        want = set(self.hosts)

        def answered():
            out = run(self.salt_cli("salt", "*", "test.ping", "--out=json", "--static",
                                    "--timeout=5"), check=False, capture=True)
            try:
                return want <= set(json.loads(out.stdout or "{}"))
            except json.JSONDecodeError:
                return False

        wait_for("salt minions to answer", answered, 90, 1)
        run(self.salt_cli("salt-run", "saltutil.sync_all", "--out=json"), capture=True)
        run(self.salt_cli("salt", "*", "saltutil.sync_all", "--out=json"), capture=True)

    @staticmethod
    def _pid_alive(pidfile):
        """A salt daemon named by ``pidfile`` is running (not a stale file, not a reused pid)."""
        try:
            pid = int(pathlib.Path(pidfile).read_text())
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return False
        return _alive(pid) and b"salt-" in cmdline

    def salt_cli(self, cli, *args):
        return self.ctl_argv([VENV_BIN / cli, "-c", self.salt_dir / "etc", *args])

    # ---- the whole lab ------------------------------------------------------------------------
    def up(self, with_salt=True, ctl=True):
        """Bring the lab up from nothing: whatever an earlier run left is removed first, so every
        run sees what a fresh machine sees (only the caches under lab/cache survive).

        ``ctl=False`` keeps the control namespace (a test session runs inside it)."""
        self.down(ctl=ctl)
        self.wipe()
        for host in self.hypervisors:
            _restore_doctored(self.libvirt_cache(host))
        self.root.mkdir(parents=True)
        self.network_up()
        self.hosts_up()
        self.wait_hypervisors_ready()
        if with_salt:
            self.salt_up()

    def down(self, ctl=True):
        """Remove every process, mount and namespace this lab made. Keeps caches on disk.

        ``ctl=False`` leaves the control namespace and what runs in it (a test session that
        lives there removes it itself when it ends).
        """
        for host in self.any_hosts():
            pid = self.holder_pid(host)
            if pid is None:
                continue
            # Everything started inside this host shares the holder's mount namespace.
            mntns = os.readlink(f"/proc/{pid}/ns/mnt")
            for attempt in range(50):
                victims = [p for p in _pids() if p != pid and _mntns(p) == mntns]
                if not victims:
                    break
                sig = signal.SIGTERM if attempt < 20 else signal.SIGKILL
                for p in victims:
                    with contextlib.suppress(OSError):
                        os.kill(p, sig)
                time.sleep(0.1)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            wait_for(f"{host} holder to exit", lambda pid=pid: not _alive(pid), 10)
            (self.host_dir(host) / "holder.pid").unlink(missing_ok=True)
        present = set(run(["ip", "netns", "list"], capture=True).stdout.split())
        for host in self.any_hosts():
            if f"{self.name}-{host}" in present:
                run(["ip", "netns", "delete", f"{self.name}-{host}"], check=False, capture=True)
        if not ctl:
            return
        # Everything inside the control namespace: the salt master, a test session's leftovers.
        ctl_path = pathlib.Path("/run/netns") / self.ctl_ns
        if ctl_path.exists():
            ino = os.stat(ctl_path).st_ino
            for p in _pids():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{p}/ns/net").st_ino == ino and p != os.getpid():
                        os.kill(p, signal.SIGKILL)
        run(["ip", "netns", "delete", self.ctl_ns], check=False, capture=True)

    def wipe(self):
        """Remove the lab directory. Only after :meth:`down`: no host namespace may hold a
        mount below it (they are private to the hosts' mount namespaces, gone with them)."""
        if any(self.holder_pid(h) for h in self.any_hosts()):
            raise LabError(f"lab {self.name} is still up: run down before wiping {self.root}")
        if self.root.parent != LAB_BASE:
            raise LabError(f"refusing to wipe {self.root}: not a lab directory under {LAB_BASE}")
        if self.root.exists():
            shutil.rmtree(self.root)


DOCTORED = ".vmlab-orig"


def _restore_doctored(cache):
    """Put back every capabilities file ``tcg_cpu_without`` edited under ``cache``."""
    restored = False
    for orig in pathlib.Path(cache).glob(f"qemu/capabilities/*.xml{DOCTORED}"):
        os.replace(orig, str(orig)[: -len(DOCTORED)])
        restored = True
    return restored


def _alive(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def process_start_time(pid):
    """When process ``pid`` started, in epoch seconds (the product's own reading of /proc)."""
    return _storage_utils().process_started(pid)


def _storage_utils():
    """_utils/vmigrate_storage.py, imported as plain Python."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    name = "vmigrate_lab_storage_utils"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "_utils" / "vmigrate_storage.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _mntns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


# ---- CLI ------------------------------------------------------------------------------------
def hosts_from_env():
    """VMLAB_HOSTS (make lab-up HOSTS=4): how many hypervisors, 2 by default."""
    value = os.environ.get("VMLAB_HOSTS") or "2"
    if not value.isdigit():
        raise LabError(f"VMLAB_HOSTS {value!r}: a number of hypervisors, 2..{MAX_HYPERVISORS}")
    return int(value)


def _lab_from_env():
    return Lab(os.environ.get("VMLAB_NAME", "vmlab"), os.environ.get("VMLAB_NET", "10.77.0"),
               hosts=hosts_from_env())


def cmd_up(lab, _args):
    t0 = time.monotonic()
    lab.up()
    t_lab = time.monotonic() - t0
    setup_storage_and_guest(lab)
    print(f"lab up in {t_lab:.1f}s (+ storage and guest in {time.monotonic() - t0 - t_lab:.1f}s):"
          f" vdisk runs on host1; try: lab/bin/salt-run vmigrate.locate vdisk")


def setup_storage_and_guest(lab):
    """Shared storage through the project's own states, then the guest on host1."""
    for tgt, sls in ((NFS_HOST, "vmigrate.nfs.server"), ("host*", "vmigrate.nfs.client")):
        run(lab.salt_cli("salt", tgt, "state.apply", sls, "--out=json"), capture=True)
    lab.remove_guest_everywhere()
    lab.create_guest("host1")
    lab.wait_counter(timeout=60)


def cmd_guest(lab, args):
    """A small guest (make lab-guest NAME=g1 HOST=host3): 96 MiB, rewriting 1 MiB slowly."""
    lab.create_guest(args.host, args.name, workset_mib=args.workset_mib,
                     memory_mib=args.memory_mib, rate=args.rate)
    lab.wait_counter(args.name, timeout=90)
    print(f"{args.name} runs on {args.host} ({args.memory_mib} MiB, rewriting "
          f"{args.workset_mib} MiB at {args.rate or 'full'} pages/s)")


def cmd_down(lab, _args):
    lab.down()
    print("lab down")


def cmd_exec(lab, args):
    argv = lab.ctl_argv(args.argv) if args.host == "ctl" else lab.host_argv(args.host, args.argv)
    os.execvp(argv[0], argv)


def cmd_salt(lab, args):
    argv = lab.salt_cli(args.cli, *args.argv)
    os.execvp(argv[0], argv)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="bring the lab up (vdisk running on host1)")
    sub.add_parser("down", help="remove the lab's processes, mounts and namespaces")
    sub.add_parser("net-up", help="create the lab's namespaces only (make test enters ctl)")
    p = sub.add_parser("exec", help="run a command inside a lab host (or ctl)")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("salt", help="run a salt CLI against the lab master")
    p.add_argument("cli", choices=["salt", "salt-run", "salt-key", "salt-call"])
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("guest", help="add a small guest on a hypervisor of a running lab")
    p.add_argument("name")
    p.add_argument("host")
    p.add_argument("--memory-mib", type=int, default=SMALL_GUEST["memory_mib"])
    p.add_argument("--workset-mib", type=int, default=SMALL_GUEST["workset_mib"])
    p.add_argument("--rate", type=int, default=SMALL_GUEST["rate"],
                   help="pages the guest rewrites per second (0: as fast as it can)")
    args = parser.parse_args(argv)
    try:
        lab = _lab_from_env()
        {"up": cmd_up, "down": cmd_down, "exec": cmd_exec, "salt": cmd_salt, "guest": cmd_guest,
         "net-up": lambda lab, _a: lab.network_up()}[args.cmd](lab, args)
    except LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
