#!/usr/bin/env bash
# Install everything the lab and the tests need on a fresh Debian 12 or 13 machine (root).
# Idempotent: each step is skipped when its result is already there.
#  - Debian packages: libvirt 11 + QEMU 10 (bookworm-backports on Debian 12, main on 13),
#    nfs-kernel-server (for exportfs), busybox-static, build tools for libvirt-python,
#    openssh-server + gnutls-bin for the lab's ssh and TLS transports (the package's sshd is
#    never started on the real machine: each lab hypervisor runs its own, see lab/labcreds.py);
#    ovmf for a guest definition with UEFI firmware and an NVRAM file (tests/integration).
#  - The Python venv (.venv) with requirements.txt (the docs' Sphinx, MyST and theme too),
#    libvirt-python matching the installed libvirt.
#  - The guest kernel (extracted from linux-image-*-amd64, not installed) -> lab/cache/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/lab/cache"
mkdir -p "$cache"
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}
pkgs_base=(pkg-config gcc make libc6-dev busybox-static iproute2 util-linux nfs-kernel-server
           procps psmisc python3-venv python3-dev git ca-certificates xz-utils zstd
           openssh-client openssh-server gnutls-bin ovmf)
pkgs_virt=(libvirt-daemon-system libvirt-clients libvirt-dev qemu-system-x86 qemu-utils)

need_apt=0
for p in "${pkgs_base[@]}" "${pkgs_virt[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt=1
done
if ! command -v libvirtd >/dev/null || ! libvirtd --version | grep -Eq ' (1[1-9]|[2-9][0-9])\.'; then
  need_apt=1
fi

if [ "$need_apt" = 1 ]; then
  target=()
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
      cat > /etc/apt/sources.list.d/vmigrate-backports.sources <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    target=(-t bookworm-backports)
  fi
  # No init system here: keep package scripts from starting daemons on the real machine.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${pkgs_base[@]}"
  apt-get install -y -q --no-install-recommends "${target[@]}" "${pkgs_virt[@]}"
fi
libvirtd --version | grep -Eq ' (1[1-9]|[2-9][0-9])\.' || { echo "install: libvirt >= 11 is required, got: $(libvirtd --version)" >&2; exit 1; }

# Guest kernel: from Debian's kernel package, extracted, never installed. The modules: virtio for
# the disk; evdev and button so the guest sees the ACPI power button (mode cold shuts it down).
mods="virtio/virtio virtio/virtio_ring virtio/virtio_pci virtio/virtio_pci_modern_dev
virtio/virtio_pci_legacy_dev block/virtio_blk input/evdev acpi/button"
if [ ! -s "$cache/vmlinuz" ] || [ "$(cat "$cache/modules.list" 2>/dev/null)" != "$mods" ]; then
  tmp=$(mktemp -d)
  ( cd "$tmp"
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    apt-get download -q "$kpkg"
    dpkg-deb -x ./*.deb root
    kver=$(ls root/lib/modules)
    cp root/boot/vmlinuz-* "$cache/vmlinuz.tmp"
    mkdir -p "$cache/modules"
    for m in $mods; do
      f=$(find root/lib/modules/"$kver" -name "$(basename $m).ko*" | head -1)
      out="$cache/modules/$(basename $m).ko"
      case "$f" in
        "") ;;                                   # built into this kernel
        *.xz) xz -dc "$f" > "$out" ;;            # Debian 13 compresses modules
        *.zst) zstd -qdc "$f" > "$out" ;;
        *) cp "$f" "$out" ;;
      esac
    done
    echo "$kver" > "$cache/kernel-version"
    echo "$mods" > "$cache/modules.list" )
  mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
  rm -rf "$tmp"
fi

# Python venv
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
lv=$(pkg-config --modversion libvirt)
need="salt, libvirt, saltfactories, hypothesis, saltext.virt, pyflakes, sphinx, myst_parser, furo"
if ! "$venv/bin/python" -c "import $need" 2>/dev/null \
   || [ "$("$venv/bin/python" -c 'import libvirt; v=libvirt.getVersion(); print(f"{v//1000000}.{v//1000%1000}.{v%1000}")')" != "$lv" ]; then
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$here/requirements.txt" "libvirt-python==$lv"
fi
echo "install: ok (libvirt $lv, $("$venv/bin/python" -c 'import salt.version; print("salt", salt.version.__version__)'), kernel $(cat "$cache/kernel-version"))"
