"""
Destination prechecks for a live migration: pure verdicts over facts the source minion reads
through the very libvirt connection the migration will use (so reaching the destination's
libvirtd over the configured transport is itself the first check).

Each check is a dict ``name``, ``ok``, ``detail``, ``fix``. No Salt dunders; callers reach
these as plain Python (``vmigrate_imports.py``).
"""

import os
import re
import xml.etree.ElementTree as ET

FIX_REACH = ("check the transport from this host: for ssh, root's key in the destination's "
             "authorized_keys and its host key known here; for tls, the CA and client "
             "certificates; that libvirtd listens there; and the firewall")


def _version(number):
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}" if number else "?"


def domain_needs(xml_text):
    """What the destination must provide for a domain: ``cpu`` (the <cpu> element as XML, or
    None for the hypervisor's default model), ``type`` (qemu/kvm), ``arch``, ``machine``,
    ``emulator``, ``networks`` (libvirt network names) and ``bridges``."""
    root = ET.fromstring(xml_text)
    ostype = root.find("./os/type")
    cpu = root.find("./cpu")
    emulator = root.find("./devices/emulator")
    has_model = cpu is not None and (cpu.find("model") is not None or cpu.get("mode") in (
        "host-passthrough", "host-model", "maximum"))
    return {
        "cpu": ET.tostring(cpu, encoding="unicode") if has_model else None,
        "type": root.get("type"),
        "arch": ostype.get("arch") if ostype is not None else None,
        "machine": ostype.get("machine") if ostype is not None else None,
        "emulator": emulator.text if emulator is not None else None,
        "networks": sorted({i.find("source").get("network")
                            for i in root.findall("./devices/interface[@type='network']")
                            if i.find("source") is not None}),
        "bridges": sorted({i.find("source").get("bridge")
                           for i in root.findall("./devices/interface[@type='bridge']")
                           if i.find("source") is not None}),
    }


def host_uuid(capabilities_xml):
    match = re.search(r"<host>\s*<uuid>([^<]+)</uuid>", capabilities_xml or "")
    return match[1] if match else None


def security_models(capabilities_xml, virt_type="qemu"):
    """The destination's security drivers from its capabilities, and the user and group its
    QEMU processes run as (the DAC driver's base label for ``virt_type``, e.g. ``+64055:+994``),
    as ``{"models": [...], "uid": int|None, "gid": int|None}``."""
    root = ET.fromstring(capabilities_xml)
    models, uid, gid = [], None, None
    for sec in root.findall("./host/secmodel"):
        model = sec.findtext("model")
        models.append(model)
        if model != "dac":
            continue
        for label in sec.findall("baselabel"):
            if label.get("type") == virt_type:
                match = re.fullmatch(r"\+?(\d+):\+?(\d+)", (label.text or "").strip())
                if match:
                    uid, gid = int(match[1]), int(match[2])
    return {"models": models, "uid": uid, "gid": gid}


def _can_rw(image, uid, gid):
    """Read and write for ``uid``:``gid``, as the kernel decides: the first class that
    matches (owner, then group, then other) is the only one that counts."""
    mode = image["mode"]
    if image["uid"] == uid:
        return mode & 0o600 == 0o600
    if image["gid"] == gid:
        return mode & 0o060 == 0o060
    return mode & 0o006 == 0o006


FIX_PROBE = ("mount the shared storage on {dest} at the same path as on {source} "
             "(state.apply vmigrate.nfs.client on {dest}) and check that both mount the same "
             "export; the destination opens the image at the very path the source uses")
FIX_ACCESS = ("make the image readable and writable by QEMU's user on {dest}: give "
              "libvirt-qemu the same uid and gid on every hypervisor, and on the NFS server "
              "chown the image to {uid}:{gid} (mode 0600); root_squash stops libvirt from "
              "fixing ownership itself. Never export with no_root_squash to work around it")


FIX_SQUASHED_ROOT = ("QEMU on {dest} runs as root, which this storage squashes: map the "
                     "squashed root to the images' owner on the NFS server (export options "
                     "anonuid/anongid, e.g. 64055 for libvirt-qemu), or run QEMU as that owner "
                     "(qemu.conf user/group on every hypervisor). Never export with "
                     "no_root_squash to work around it")
# The anonymous uid an NFS server gives squashed root when the export maps none (exports(5)).
NOBODY = 65534


def _squashed_words(squash, directory):
    if squash[0] is None:
        return (f"root may not even write in {directory}: squashed root becomes the export's "
                f"anonymous user ({NOBODY}, nobody, unless the export maps anonuid), who has "
                "no write permission there")
    if squash[0] == NOBODY:
        return (f"a file root wrote became uid {NOBODY} (nobody: the export maps no anonuid, "
                "so squashed root is the anonymous user)")
    return f"a file root wrote became uid {squash[0]} (the export's anonuid)"


def assess_dest_storage(facts, source, dest):
    """Shared storage as the destination meets it: each disk directory's sentinel (written on
    ``source``, looked for by ``dest``'s libvirtd), then each image's access for QEMU's user
    on ``dest`` (from the image's owner and mode, the destination's DAC label, and whether the
    storage squashes root, read from the owner the sentinel got)."""
    checks = []

    def add(name, ok, detail, fix=None):
        checks.append({"name": name, "ok": ok, "detail": detail, "fix": None if ok else fix})

    squashed = {}
    for probe in facts.get("probes", []):
        directory = probe["dir"]
        if probe.get("error"):
            add(f"shared_path:{directory}", False,
                f"could not write a sentinel in {directory} on {source}: {probe['error']}",
                FIX_PROBE.format(source=source, dest=dest))
            continue
        if probe.get("root_denied"):
            squashed[directory] = (None, None)  # squashed; the anonymous uid is not known
        elif probe["owner"] != 0:
            squashed[directory] = (probe["owner"], probe["group"])
        seen = probe.get("seen")
        if seen is None:
            add(f"shared_path:{directory}", True,
                f"not proven: {dest}'s libvirtd cannot list files ({probe.get('detail')}); "
                "libvirt's own check on the source still applies")
        elif seen:
            add(f"shared_path:{directory}", True,
                f"a sentinel {source} wrote in {directory} is seen by {dest}'s libvirtd at the "
                "same path")
        else:
            add(f"shared_path:{directory}", False,
                f"{dest}'s libvirtd does not see the sentinel {source} wrote in {directory}: "
                f"{probe.get('detail') or 'not there'}; {dest} does not have this storage at "
                "that path", FIX_PROBE.format(source=source, dest=dest))
    sec = facts.get("dest_security") or {}
    selinux = "selinux" in sec.get("models", [])
    for target, image in sorted(facts.get("images", {}).items()):
        name = f"image_access:{target}"
        if image.get("error"):
            add(name, False, f"{image['path']}: {image['error']} on {source}",
                "check the image path")
            continue
        squash = squashed.get(os.path.dirname(image["path"]))
        uid, gid = sec.get("uid"), sec.get("gid")
        owner = f"owner {image['uid']}:{image['gid']}, mode {image['mode']:04o}"
        note = (f"; {dest} enforces SELinux: its boolean virt_use_nfs must be on for images "
                "on NFS (setsebool -P virt_use_nfs 1)" if selinux else "")
        if uid is None:
            add(name, True, f"{image['path']} ({owner}): not checked, {dest} reports no DAC "
                            "security driver, so QEMU's user there is unknown" + note)
            continue
        runs_as = f"QEMU on {dest} runs as {uid}:{gid}"
        if uid == 0 and squash is None:
            add(name, True, f"{image['path']} ({owner}): {runs_as} (root)" + note)
        elif _can_rw(image, squash[0] if uid == 0 and squash else uid,
                     squash[1] if gid == 0 and squash else gid):
            add(name, True, f"{image['path']} ({owner}): {runs_as} and can read and write it"
                + note)
        elif squash is None:
            add(name, True, f"{image['path']} ({owner}): {runs_as}; root is not squashed on "
                            f"this storage, so libvirt on {dest} gives the image to that user "
                            "as the guest arrives (qemu.conf dynamic_ownership)" + note)
        else:
            fix = (FIX_SQUASHED_ROOT if uid == 0 else FIX_ACCESS).format(dest=dest, uid=uid,
                                                                         gid=gid)
            add(name, False,
                f"{image['path']} ({owner}): {runs_as}, and this storage squashes root ("
                + _squashed_words(squash, os.path.dirname(image["path"]))
                + f"), so libvirt on {dest} cannot give the image "
                "to that user: QEMU there would fail to open it (Permission denied)" + note,
                fix)
    return checks


# A new qcow2 file is its header, L1 and refcount clusters (196 KiB for 64 MiB, 256 KiB up to
# tens of TiB at 64 KiB clusters); the first data cluster written adds it and an L2 table.
QCOW2_FRESH_BYTES = 256 * 1024


def _holds_data(image):
    """Whether the destination's image may hold data: a qcow2 file longer than a new one's
    metadata, any other format with any block allocated. Unknown counts as holding data."""
    if image.get("format") == "qcow2":
        return image.get("physical") is None or image["physical"] > QCOW2_FRESH_BYTES
    return image.get("allocation") is None or image["allocation"] > 0


def _incremental(image, dest, add):
    """``copy_storage: inc`` mirrors only the clusters the guest's top image holds (QEMU's
    sync=top) and leaves the rest of the destination's image as it is: that image must be
    there, over the same backing file, and still empty, or the guest reads other data there."""
    path, backing = image["path"], image.get("source_backing")
    fix = (f"create an empty image there over the same backing file (qemu-img create -f qcow2"
           + (f" -F {backing['format'] or '<format>'} -b {backing['path']}" if backing else "")
           + f" {path} <size>), or use copy_storage: all")

    def over(b):
        return (f"is over {b['path']} ({b['format'] or 'format unknown'})" if b
                else "has no backing file")

    if not image.get("exists"):
        add(False, f"{path} does not exist on {dest}: copy_storage inc copies only the top "
                   "image, into one that is already there over the same backing file", fix)
    elif image.get("backing") != backing:
        add(False, f"{path} on {dest} {over(image.get('backing'))}, the guest's image here "
                   f"{over(backing)}: copying only the top image would give the guest another "
                   "disk", fix)
    elif _holds_data(image):
        size = (f"a {image.get('format')} file of {image['physical'] // 1024} KiB"
                if image.get("format") == "qcow2" and image.get("physical") is not None else
                f"{(image.get('allocation') or 0) // 1024} KiB allocated")
        add(False, f"{path} on {dest} already holds data ({size}): copy_storage inc writes "
                   "only what the guest's top image holds, so the rest of what is there would "
                   "show through", fix)
    else:
        add(True, f"{path} on {dest} is empty and {over(backing)}, like the guest's image here: "
                  "libvirt copies the top image into it")


def assess_copy_dest(images, source, dest, incremental=False):
    """The destination's side of copying disks, one ``dest_disk:<target>`` check per copied
    disk, from what its libvirtd reports (``images``: each with ``target``, ``path``, ``seen``
    (whether it sees a sentinel written beside the image on ``source``), ``exists``, ``pool``
    (an active storage pool there whose target is the image's directory), ``in_use_by`` (a
    domain there with this path as a disk), ``error``, and for ``incremental`` the image's
    ``backing`` file, ``format``, ``physical`` length and ``allocation`` there and the
    guest's ``source_backing``). libvirt
    copies into an image that exists, else creates it in that pool
    (``qemuMigrationDstPrecreateStorage``), and creates nothing for ``copy_storage: inc``."""
    checks = []
    for image in images:
        path, directory = image["path"], os.path.dirname(image["path"])
        name = f"dest_disk:{image['target']}"
        pool_fix = (f"on {dest}: create {directory} and a storage pool for it (virsh "
                    f"pool-define-as <name> dir --target {directory}; virsh pool-start <name>; "
                    "virsh pool-autostart <name>), and libvirt creates the image as it copies; "
                    "or create the image there yourself")

        def add(ok, detail, fix=None, name=name):
            checks.append({"name": name, "ok": ok, "detail": detail, "fix": None if ok else fix})

        if image.get("seen"):
            add(False, f"{dest}'s libvirtd sees a sentinel {source} wrote beside {path}: that "
                       f"directory is shared with {dest}, and copying the image would "
                       "overwrite it with itself",
                "leave copy_storage off for disks on the shared storage, or name only the local "
                "disks in option migrate_disks")
        elif image.get("seen") is None:
            add(False, f"cannot tell whether {dest} shares {directory} with {source}: "
                       f"{image.get('seen_detail') or 'its libvirtd has no storage driver'}",
                f"make sure {dest}'s libvirtd can look into {directory} (its storage driver, "
                f"the directory's permissions) and {source} can write a sentinel there")
        elif image.get("in_use_by"):
            add(False, f"{path} on {dest} is a disk of domain {image['in_use_by']!r} there: "
                       "the copy would overwrite it",
                f"give this guest's disk another path, or remove that domain from {dest}")
        elif image.get("error"):
            add(False, f"{dest}'s libvirtd cannot look into {directory}: {image['error']}",
                pool_fix)
        elif incremental:
            _incremental(image, dest, add)
        elif image.get("exists"):
            add(True, f"{path} exists on {dest}: libvirt copies the whole disk into it (its "
                      "content is replaced)")
        elif image.get("pool"):
            add(True, f"{path} does not exist on {dest}: libvirt creates it in storage pool "
                      f"{image['pool']!r} there (target {directory}) and copies into it")
        else:
            add(False, f"{path} does not exist on {dest} and no active storage pool there has "
                       f"{directory} as its target: libvirt could not create it", pool_fix)
    return checks


def identity(dest, uri, seen, expected):
    """The check that ``uri`` (the migration's) reaches the machine minion ``dest`` runs on:
    the libvirt host UUID read through it (``seen``) against the one ``dest``'s minion
    reported to the master (``expected``)."""
    ok = bool(seen) and seen == expected
    return {"name": "dest_identity", "ok": ok,
            "detail": (f"{uri} reaches libvirt host {seen}, the host minion {dest} runs on"
                       if ok else
                       f"{uri} reaches libvirt host {seen or '(unreadable)'}, but minion {dest} "
                       f"runs on libvirt host {expected}: the migration would go to another "
                       "machine than the one asked for"),
            "fix": None if ok else (
                f"correct pillar vmigrate:hypervisors:{dest}:address (and migration_address) "
                f"so they name {dest}'s own host, then run salt '*' saltutil.refresh_pillar")}


def assess_dest(facts, source, dest):
    """Checks from the destination facts (see the module's ``_dest_facts``)."""
    checks = []

    def add(name, ok, detail, fix=None):
        checks.append({"name": name, "ok": ok, "detail": detail, "fix": None if ok else fix})

    if facts.get("error"):
        add("dest_reachable", False,
            f"cannot reach {dest}'s libvirtd at {facts['uri']} from {source}: {facts['error']}",
            FIX_REACH)
        return checks
    add("dest_reachable", True, f"{dest}'s libvirtd answers at {facts['uri']} from {source}")
    same = facts["source_uuid"] and facts["source_uuid"] == facts["dest_uuid"]
    add("distinct_hosts", not same,
        f"{source} and {dest} report libvirt host UUID {facts['dest_uuid']}"
        + (": libvirt refuses to migrate to the same host" if same else ", distinct"),
        "give each host its own host_uuid in libvirtd.conf (or a distinct SMBIOS/machine id) "
        "and restart libvirtd")
    for what, src, dst in (("libvirt", facts["source_libvirt"], facts["dest_libvirt"]),
                           ("QEMU", facts["source_qemu"], facts["dest_qemu"])):
        older = bool(src and dst and dst < src)
        add(f"dest_{what.lower()}_version", not older,
            f"{what} {_version(dst)} on {dest}, {_version(src)} on {source}"
            + (f": migrating to an older {what} is not supported" if older else ""),
            f"upgrade {what} on {dest} to at least {_version(src)}, or migrate to a host that "
            "has it")
    need = facts["memory_kib"] * 1024 + facts["reserve_mib"] * 1048576
    free = facts["dest_free_bytes"]
    add("dest_memory", free >= need,
        f"{dest} has {free // 1048576} MiB free; the guest needs {facts['memory_kib'] // 1024} "
        f"MiB plus a reserve of {facts['reserve_mib']} MiB",
        f"free memory on {dest} or pick another destination (pillar "
        "vmigrate:memory_reserve_mib sets the reserve)")
    cpu = facts.get("cpu_compare")
    if cpu is None:
        add("dest_cpu", True, "the guest uses the hypervisor's default CPU model")
    else:
        add("dest_cpu", cpu["ok"],
            f"{dest}'s hypervisor {'can' if cpu['ok'] else 'cannot'} provide the guest's CPU"
            + (f": {cpu['detail']}" if cpu.get("detail") else ""),
            "give the guest a CPU model both hosts provide (virsh hypervisor-cpu-baseline on "
            "the hosts' virsh domcapabilities output), or migrate to a host with that CPU")
    for net, active in sorted(facts["networks"].items()):
        add(f"dest_network:{net}", active,
            f"libvirt network {net!r} is {'active' if active else 'missing or inactive'} on "
            f"{dest}", f"define and start network {net!r} on {dest} (virsh net-define, "
                       "net-start, net-autostart)")
    for bridge in facts.get("bridges", []):
        add(f"dest_bridge:{bridge}", True,
            f"bridge {bridge!r}: not checked through libvirt; it must exist on {dest}")
    clash = facts.get("uuid_clash")
    add("dest_no_clash", not clash,
        f"{dest} already has domain {clash}" if clash
        else f"no domain of this name or UUID on {dest}",
        f"remove or rename the other domain on {dest} (it is not this guest)")
    return checks + assess_dest_storage(facts, source, dest)
