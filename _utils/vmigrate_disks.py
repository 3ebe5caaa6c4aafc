"""
What libvirt's XML says about a domain's disks, and which filesystems libvirt counts as shared
by their type: the facts under both verdicts, shared storage (``vmigrate_storage``) and copied
disks (``vmigrate_copy``).

- :func:`domain_disks`: a domain's ``<disk>`` devices, a volume disk as this host's libvirt
  resolves it;
- :func:`backing_files`, :func:`disk_files`, :func:`disk_volumes`, :func:`pool_target`,
  :func:`volume_facts`: backing chains, the paths and volumes a domain uses, a pool's target, a
  volume's format and backing file;
- :func:`shared_by_type`: libvirt's ``virFileIsSharedFS`` by filesystem type (libvirt 11.3,
  src/util/virfile.c), and :func:`location`, a disk's filesystem named for a message.

Pure functions of XML text and of the facts ``vmigrate_storage`` gathers. No Salt dunders:
callers import this as plain Python (``vmigrate_imports.py``).
"""

import xml.etree.ElementTree as ET


# ---- a domain's disks, as its XML gives them -----------------------------------------------
def domain_disks(xml_text, volumes=None):
    """The ``<disk>`` devices of a domain's XML: a list of dicts with ``target``, ``device``,
    ``type``, ``path`` (file or block path, ``pool/volume``, ``protocol:name``, or None),
    ``empty``, ``readonly``, ``shareable`` and ``cache``. ``volumes``: {"pool/volume": (type,
    path)} as the host's libvirt resolves them (file, block, network); such a disk then has
    that ``type`` and ``path``, and ``volume`` its name."""
    disks = []
    for disk in ET.fromstring(xml_text).findall("./devices/disk"):
        dtype = disk.get("type", "file")
        source = disk.find("source")
        path = None
        volume = None
        if source is not None:
            if dtype == "file":
                path = source.get("file")
            elif dtype == "block":
                path = source.get("dev")
            elif dtype == "dir":
                path = source.get("dir")
            elif dtype == "volume":
                path = volume = f"{source.get('pool')}/{source.get('volume')}"
                if volumes and volume in volumes:
                    dtype, path = volumes[volume]
            elif dtype == "network":
                path = f"{source.get('protocol')}:{source.get('name')}"
        target = disk.find("target")
        driver = disk.find("driver")
        disks.append({
            **({"volume": volume} if volume else {}),
            "target": target.get("dev") if target is not None else None,
            "device": disk.get("device", "disk"),
            "type": dtype,
            "path": path,
            # libvirt's virStorageSourceIsEmpty: no source, or a local one without a path
            # (an NVMe, vhost-user or vDPA disk has no path but is not empty).
            "empty": source is None or (path is None and dtype in ("file", "block", "dir")),
            "readonly": disk.find("readonly") is not None,
            "shareable": disk.find("shareable") is not None,
            "cache": driver.get("cache") if driver is not None else None,
        })
    return disks


def _backing(path, fmt):
    return {"path": path, "format": fmt}


def backing_files(xml_text):
    """Each disk's backing file (the first in its chain) as ``{"path", "format"}``, by target,
    from a running domain's live XML (the migratable XML leaves the chain out); a network
    backing store's path is ``<protocol>:<name>``; None for a disk without one."""
    out = {}
    for disk in ET.fromstring(xml_text).findall("./devices/disk"):
        target, store = disk.find("target"), disk.find("backingStore")
        if target is None:
            continue
        source = store.find("source") if store is not None else None
        if source is None:
            out[target.get("dev")] = None
            continue
        path = (source.get("file") or source.get("dev")
                or f"{source.get('protocol')}:{source.get('name')}")
        fmt = store.find("format")
        out[target.get("dev")] = _backing(path, fmt.get("type") if fmt is not None else None)
    return out


def disk_files(xml_text):
    """Every file or block path a domain's disks use, their backing chains included."""
    return {source.get("file") or source.get("dev")
            for disk in ET.fromstring(xml_text).findall("./devices/disk")
            for source in disk.iter("source")
            if source.get("file") or source.get("dev")}


def disk_volumes(xml_text):
    """The (pool, volume) pairs of a domain's ``type='volume'`` disks."""
    return [(source.get("pool"), source.get("volume"))
            for source in ET.fromstring(xml_text).findall("./devices/disk[@type='volume']/source")
            if source.get("pool") and source.get("volume")]


def pool_target(pool_xml):
    """A storage pool's target directory, from its XML, or None."""
    return ET.fromstring(pool_xml).findtext("./target/path")


def volume_facts(volume_xml):
    """A storage volume's ``format`` and ``backing`` file (as :func:`backing_files` gives it,
    or None), from libvirt's volume XML."""
    root = ET.fromstring(volume_xml)
    store, fmt = root.find("backingStore"), root.find("./target/format")
    backing = None
    if store is not None and store.findtext("path"):
        bfmt = store.find("format")
        backing = _backing(store.findtext("path"), bfmt.get("type") if bfmt is not None else None)
    return {"format": fmt.get("type") if fmt is not None else None, "backing": backing}


# ---- filesystems libvirt shares by type ----------------------------------------------------
# statfs() f_type values libvirt counts as shared (src/util/virfile.c).
SHARED_MAGIC = {
    0x6969: "nfs",
    0x01161970: "gfs2",
    0x7461636F: "ocfs2",
    0x6B414653: "afs",
    0x517B: "smb",
    0xFF534D42: "cifs",
    0x00C36400: "ceph",
    0x47504653: "gpfs",
    0x61636673: "acfs",
    0x19830326: "beegfs",
}
FUSE_MAGIC = 0x65735546
SHARED_FUSE = ("fuse.glusterfs", "fuse.quobyte")


def shared_by_type(disk):
    """libvirt's virFileIsSharedFS by filesystem type: a shared magic, or a shared FUSE mount."""
    magic = disk.get("magic")
    return magic in SHARED_MAGIC or (magic == FUSE_MAGIC and disk.get("fstype") in SHARED_FUSE)


def _fs_name(disk):
    magic = disk.get("magic")
    if magic in SHARED_MAGIC:
        return SHARED_MAGIC[magic]
    return disk.get("fstype") or (f"statfs type {magic:#x}" if magic is not None else "unknown")


def location(disk):
    """Where a disk's image lies, for a message: its filesystem, and the mount holding it."""
    where = f"{_fs_name(disk)}"
    if disk.get("mountpoint"):
        where += f" mounted at {disk['mountpoint']} from {disk.get('fssource') or '?'}"
    return where
