"""The lab's guest: a TCG domain booting Debian's kernel with a busybox initramfs whose
program (memtick) prints ``memtick n=<counter> bad=<corrupted pages>`` every second on the
serial console, logged to the shared storage so both hosts append to one file."""
import lzma
import pathlib
import re
import struct
import subprocess
import zlib

GUEST_MEMORY_MIB = 128
# The workload keeps rewriting (and checking) this many MiB of guest memory.
GUEST_WORKSET_MIB = 16
_COUNTER_RE = re.compile(r"memtick n=(\d+) bad=(\d+)")


def _has_pvh_entry(elf):
    """Whether ``elf`` (bytes) is an ELF64 kernel with a PVH entry point (a Xen note of type
    18, XEN_ELFNOTE_PHYS32_ENTRY): QEMU then starts it directly."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, _paddr, size = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize)
        pos, end = offset, offset + size
        while p_type == 4 and pos + 12 <= end:  # PT_NOTE
            namesz, descsz, kind = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz]
            if name == b"Xen\0" and kind == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def pvh_kernel(cache):
    """The guest kernel as the uncompressed ELF inside Debian's bzImage, made once: with its
    PVH entry QEMU starts it directly, without the firmware's disk boot and the decompression
    under TCG (about 6 s less per guest boot here). None when it cannot be had (the bzImage
    then boots, slower)."""
    bzimage, elf = cache / "vmlinuz", cache / "vmlinux"
    if elf.exists() and elf.stat().st_mtime >= bzimage.stat().st_mtime:
        return elf
    data = bzimage.read_bytes()
    for magic, unpack in ((b"\xfd7zXZ\x00", lambda d: lzma.LZMADecompressor().decompress(d)),
                          (b"\x28\xb5\x2f\xfd", lambda d: subprocess.run(
                              ["zstd", "-qdc"], input=d, capture_output=True,
                              check=False).stdout),
                          (b"\x1f\x8b\x08\x00",
                           lambda d: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(d))):
        at = data.find(magic)
        if at < 0:
            continue
        try:
            out = unpack(data[at:])
        except (OSError, EOFError, lzma.LZMAError, zlib.error):
            continue
        if _has_pvh_entry(out):
            tmp = elf.with_suffix(".tmp")
            tmp.write_bytes(out)
            tmp.rename(elf)
            return elf
    return None


def artifacts(cache, guest_src, run):
    """Build (once, again when a source changes) the initramfs: busybox + memtick + virtio
    modules. Returns (kernel, initrd) paths: the kernel is :func:`pvh_kernel`'s when it can
    be had. ``run`` runs a command (the lab's runner)."""
    bzimage = cache / "vmlinuz"
    initrd = cache / "initrd.cpio"
    if not bzimage.exists():
        raise FileNotFoundError(f"guest kernel missing: {bzimage} (run: make install)")
    kernel = pvh_kernel(cache) or bzimage
    sources = [guest_src / "init", guest_src / "memtick.c", pathlib.Path(__file__)]
    sources += [p for p in (cache / "modules.list",) if p.exists()]
    if initrd.exists() and initrd.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return kernel, initrd
    memtick = cache / "memtick"
    run(["gcc", "-O2", "-static", "-o", memtick, guest_src / "memtick.c"])
    entries = [("dir", "bin"), ("dir", "proc"), ("dir", "sys"), ("dir", "dev"),
               ("dir", "lib"), ("dir", "lib/modules"), ("chr", "dev/console", 5, 1),
               ("file", "init", (guest_src / "init").read_bytes(), 0o755),
               ("file", "bin/busybox", pathlib.Path("/bin/busybox").read_bytes(), 0o755),
               ("file", "bin/memtick", memtick.read_bytes(), 0o755),
               ("link", "bin/sh", "busybox")]
    for ko in sorted((cache / "modules").glob("*.ko")):
        entries.append(("file", f"lib/modules/{ko.name}", ko.read_bytes(), 0o644))
    tmp = initrd.with_suffix(".tmp")
    tmp.write_bytes(newc_archive(entries))
    tmp.rename(initrd)
    return kernel, initrd


def domain_xml(name, shared, workset_mib=GUEST_WORKSET_MIB, memory_mib=GUEST_MEMORY_MIB,
               power_button=True, disk_dir=None, rate=0):
    """The domain: direct kernel boot, qcow2 disk (cache=none) and console on ``shared``
    (the disk in ``disk_dir`` instead when given); ``memory_mib`` of RAM, of which the guest
    keeps rewriting ``workset_mib`` MiB (``rate`` pages a second; 0: as fast as it can). With
    ``power_button`` False the guest ignores the ACPI power button."""
    extra = "" if power_button else " vmguest_power_button=ignore"
    if rate:
        extra += f" memtick_rate={int(rate)}"
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{shared}/{name}.kernel</kernel>
    <initrd>{shared}/{name}.initrd</initrd>
    <cmdline>console=ttyS0 quiet memtick_mib={workset_mib}{extra}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{disk_dir or shared}/{name}.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='{shared}/{name}.console.log' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def continuous(numbers):
    """True when the counters run n, n+1, n+2, ... with no gap and no repeat."""
    return bool(numbers) and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def counters(text):
    """The console's counter lines: a list of (n, bad, offset in the text)."""
    return [(int(m[1]), int(m[2]), m.start()) for m in _COUNTER_RE.finditer(text)]


def newc_archive(entries):
    """A cpio ``newc`` archive (what the kernel unpacks as an initramfs), built in Python."""
    out = bytearray()
    ino = 1

    def add(name, mode, data=b"", rdev=(0, 0)):
        nonlocal ino
        namez = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0))
        ino += 1
        out.extend(hdr.encode() + namez)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for entry in entries:
        kind, name = entry[0], entry[1]
        if kind == "dir":
            add(name, 0o040755)
        elif kind == "chr":
            add(name, 0o020600, rdev=(entry[2], entry[3]))
        elif kind == "file":
            add(name, 0o100000 | entry[3], entry[2])
        elif kind == "link":
            add(name, 0o120777, entry[2].encode())
    add("TRAILER!!!", 0)
    return bytes(out)
