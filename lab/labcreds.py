"""ssh and TLS for the lab's hypervisors: keys, certificates and daemon configs.

Made fresh by every lab-up (``ssh-keygen`` and ``certtool`` take milliseconds), written only into
the lab directory and each host's private copy of ``/etc``; the real machine's ``/etc/ssh``,
``/root/.ssh`` and sshd are never touched. Each hypervisor gets what a real one needs:

- ssh: its own host key and sshd (listening on its lab address only, keys only, no passwords,
  root by key); root's key pair, used by every ssh client on the host through
  ``/etc/ssh/ssh_config`` (``IdentityFile``), and authorized on every hypervisor for that
  host's address only; ``/etc/ssh/ssh_known_hosts`` with every hypervisor's host key under its
  name and address, and strict host-key checking. A source libvirtd (peer-to-peer migration)
  and the minion's precheck run ``ssh`` themselves; on the destination the session runs
  ``virt-ssh-helper`` to that host's libvirtd socket.
- TLS: a lab CA (its key stays in ``<lab>/pki``), and per host a server and a client
  certificate (name and address in the server's subjectAltName) in libvirt's default layout
  (``/etc/pki/CA/cacert.pem``, ``/etc/pki/libvirt/{server,client}cert.pem``,
  ``/etc/pki/libvirt/private/{server,client}key.pem``) and in QEMU's migration TLS directory
  (``/etc/pki/qemu``: ``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``,
  ``client-cert.pem``, ``client-key.pem``).
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

# Root's key pair on each lab hypervisor (a real host keeps it in /root/.ssh/id_ed25519; the lab
# never writes the real /root, so the host's own /etc/ssh/ssh_config names it).
SSH_IDENTITY = "/etc/ssh/vmigrate_lab_root_ed25519"
SSH_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
AUTHORIZED_KEYS = "/etc/ssh/authorized_keys"  # one file per user: AuthorizedKeysFile .../%u
QEMU_PKI = "/etc/pki/qemu"
DAYS = 30


def client_dn(lab, host):
    """The subject of ``host``'s client certificate as libvirtd's tls_allowed_dn_list matches
    it (``virt-pki-query-dn clientcert.pem`` prints it: O before CN)."""
    return f"O=vmigrate lab {lab.name},CN={host}"


def _run(argv):
    proc = subprocess.run([str(a) for a in argv], check=False, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _write(path, text, mode=0o644):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _keygen_ssh(path, comment):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def _tls_key(path):
    # RSA: libvirt and QEMU require keyEncipherment in a server or client certificate, which
    # certtool leaves out for an ECDSA key. ~60 ms each.
    _run(["certtool", "--generate-privkey", "--key-type=rsa", "--bits=2048", "--no-text",
          "--outfile", path])
    pathlib.Path(path).chmod(0o600)


def _tls_cert(out_dir, name, key, template, ca_dir=None):
    """Certificate ``out_dir/<name>.pem`` for ``key`` from ``template``: signed by the CA in
    ``ca_dir``, or self-signed (the CA itself) without one."""
    info = out_dir / f"{name}.info"
    info.write_text(template)
    out = out_dir / f"{name}.pem"
    if ca_dir:
        _run(["certtool", "--generate-certificate", "--no-text", "--load-privkey", key,
              "--load-ca-certificate", ca_dir / "cacert.pem",
              "--load-ca-privkey", ca_dir / "cakey.pem", "--template", info, "--outfile", out])
    else:
        _run(["certtool", "--generate-self-signed", "--no-text", "--load-privkey", key,
              "--template", info, "--outfile", out])
    return out


def make(lab):
    """Keys and certificates for every hypervisor of ``lab`` under ``<lab>/pki`` (0700), then
    each host's ssh, libvirt and QEMU files in its private /etc. Returns the pki directory."""
    pki = lab.root / "pki"
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    org = f"vmigrate lab {lab.name}"
    _tls_key(pki / "cakey.pem")
    _tls_cert(pki, "cacert", pki / "cakey.pem",
              f"cn = {org} CA\norganization = {org}\nca\ncert_signing_key\n"
              f"expiration_days = {DAYS}\n")
    host_keys, root_keys = {}, {}
    for host in lab.hypervisors:
        hpki = pki / host
        hpki.mkdir(mode=0o700, exist_ok=True)
        host_keys[host] = _keygen_ssh(hpki / "ssh_host_ed25519_key", f"{host} ({org})")
        root_keys[host] = _keygen_ssh(hpki / "root_ed25519", f"root@{host} ({org})")
        for role, purpose in (("server", "tls_www_server"), ("client", "tls_www_client")):
            _tls_key(hpki / f"{role}key.pem")
            names = (f"dns_name = {host}\nip_address = {lab.addr(host)}\n"
                     if role == "server" else "")
            _tls_cert(hpki, f"{role}cert", hpki / f"{role}key.pem",
                      f"cn = {host}\norganization = {org}\n{names}{purpose}\n"
                      f"encryption_key\nsigning_key\nexpiration_days = {DAYS}\n", ca_dir=pki)
    known_hosts = "".join(f"{h},{lab.addr(h)} {key}\n" for h, key in host_keys.items())
    # Every hypervisor's root may log in as root on every other, by key, from its own address.
    authorized = "".join(f'restrict,from="{lab.addr(h)}" {key} root@{h}\n'
                         for h, key in root_keys.items())
    for host in lab.hypervisors:
        _install_host(lab, host, pki, known_hosts, authorized)
    return pki


def _in(etc, path):
    """``path`` (under /etc) inside a host's copy of /etc."""
    return etc / pathlib.PurePosixPath(path).relative_to("/etc")


def _install_host(lab, host, pki, known_hosts, authorized):
    etc = lab.host_dir(host) / "etc"
    hpki = pki / host
    ssh = etc / "ssh"
    ssh.mkdir(exist_ok=True)
    # The copy of /etc holds the real machine's host keys and configs: none of them is used.
    for path in ssh.glob("ssh_host_*"):
        path.unlink()
    for sub in ("sshd_config.d", "ssh_config.d"):
        shutil.rmtree(ssh / sub, ignore_errors=True)
    for src, dst in (("ssh_host_ed25519_key", SSH_HOST_KEY), ("root_ed25519", SSH_IDENTITY)):
        shutil.copyfile(hpki / src, _in(etc, dst))
        _in(etc, dst).chmod(0o600)
        shutil.copyfile(hpki / f"{src}.pub", _in(etc, f"{dst}.pub"))
    _write(_in(etc, AUTHORIZED_KEYS) / "root", authorized)
    _in(etc, AUTHORIZED_KEYS).chmod(0o755)
    _write(ssh / "ssh_known_hosts", known_hosts)
    _write(ssh / "sshd_config", (
        f"# lab/labcreds.py: sshd of lab host {host}, in its namespaces only\n"
        f"ListenAddress {lab.addr(host)}:22\n"
        f"HostKey {SSH_HOST_KEY}\n"
        "PidFile /run/sshd.pid\n"
        f"AuthorizedKeysFile {AUTHORIZED_KEYS}/%u\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "X11Forwarding no\n"
        "AllowTcpForwarding no\n"
        "AllowAgentForwarding no\n"
        "LogLevel VERBOSE\n"
    ))
    _write(ssh / "ssh_config", (
        f"# lab/labcreds.py: root's ssh client on lab host {host} (libvirt's qemu+ssh)\n"
        "Host *\n"
        f"    IdentityFile {SSH_IDENTITY}\n"
        "    IdentitiesOnly yes\n"
        "    BatchMode yes\n"
        "    StrictHostKeyChecking yes\n"
        "    GlobalKnownHostsFile /etc/ssh/ssh_known_hosts\n"
        "    UserKnownHostsFile /dev/null\n"
        "    ConnectTimeout 10\n"
    ))
    # libvirt's PKI (client and server) and QEMU's migration TLS directory.
    pki_etc = etc / "pki"
    for sub in ("CA", "libvirt", "qemu"):
        shutil.rmtree(pki_etc / sub, ignore_errors=True)
    files = {
        "CA/cacert.pem": (pki / "cacert.pem", 0o644),
        "libvirt/servercert.pem": (hpki / "servercert.pem", 0o644),
        "libvirt/clientcert.pem": (hpki / "clientcert.pem", 0o644),
        "libvirt/private/serverkey.pem": (hpki / "serverkey.pem", 0o600),
        "libvirt/private/clientkey.pem": (hpki / "clientkey.pem", 0o600),
        "qemu/ca-cert.pem": (pki / "cacert.pem", 0o644),
        "qemu/server-cert.pem": (hpki / "servercert.pem", 0o644),
        "qemu/server-key.pem": (hpki / "serverkey.pem", 0o600),
        "qemu/client-cert.pem": (hpki / "clientcert.pem", 0o644),
        "qemu/client-key.pem": (hpki / "clientkey.pem", 0o600),
    }
    for rel, (src, mode) in files.items():
        dst = pki_etc / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(mode)
    (pki_etc / "libvirt" / "private").chmod(0o700)
