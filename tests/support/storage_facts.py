"""Storage facts for the unit tests of vmigrate_storage and vmigrate_copy: a guest's XML with
every kind of disk, this host's mounts, and the facts gathered over them with the host's
readings (statfs, realpath, the daemon) stood in."""
from tests.support.modload import load

storage_ = load("_utils", "vmigrate_storage")
disks_ = load("_utils", "vmigrate_disks")

XML = """<domain type='qemu'><name>vdisk</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
    <source file='/srv/vm/vdisk.qcow2'/><target dev='vda' bus='virtio'/></disk>
  <disk type='file' device='cdrom'><source file='/iso/boot.iso'/><target dev='sda'/>
    <readonly/></disk>
  <disk type='network' device='disk'><source protocol='nfs' name='/export/x.img'/>
    <target dev='vdb'/></disk>
  <disk type='file' device='cdrom'><target dev='sdb'/><readonly/></disk>
</devices></domain>"""
MOUNTINFO = (
    "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "90 22 0:50 / /srv/vm rw,relatime - nfs4 nfs1:/srv/vmimages rw,vers=4.2\n"
    "91 22 254:1 /data/shared /srv/bind rw - ext4 /dev/vda1 rw\n"
    "92 22 0:51 / /srv/my\\040dir rw - ext4 /dev/vdb rw\n"
)
EXT4, NFS = 0xEF53, 0x6969


def facts(disk_path, magic, conf="", exists=lambda p: True, mountinfo=MOUNTINFO, **daemon):
    """The facts of :data:`XML` with its first disk at ``disk_path`` on a filesystem of statfs
    type ``magic``; ``daemon``: what to change of the daemon's facts."""
    xml = XML.replace("/srv/vm/vdisk.qcow2", disk_path)
    out = storage_.disk_facts(disks_.domain_disks(xml), conf, mountinfo, statfs=lambda p: magic,
                              realpath=lambda p: p, exists=exists)
    out["daemon"] = {"daemon": "libvirtd", "pid": 42, "started": 1000.0,
                     "conf": "/etc/libvirt/qemu.conf", "conf_mtime": 900.0, **daemon}
    return out
