"""
What the source hypervisor checks before a migration moves anything: the guest's storage
here, the destination as the migration's own URI reaches it (identity, versions, memory, CPU,
networks, clashes, sentinels beside each disk), the disks option ``copy_storage`` copies, and
options ``xml``/``persistent_xml`` against the definition. Facts are read here; the judgement
of each is a pure function of ``vmigrate_checks``, ``vmigrate_storage`` and
``vmigrate_xmlguard``.

Plain Python, no Salt dunders: the host's minion id is passed in.
"""

import contextlib
import errno
import logging
import os
import runpy
import secrets
from xml.sax.saxutils import escape as xml_escape

(checks_, conn_, copy_, disks_, forecast_, outcome_, storage_,
 xmlguard_) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_checks", "vmigrate_conn", "vmigrate_copy", "vmigrate_disks",
    "vmigrate_forecast", "vmigrate_outcome", "vmigrate_storage", "vmigrate_xmlguard")
libvirt = conn_.libvirt
REFUSED = outcome_.REFUSED  # words for a person: the status decides

log = logging.getLogger(__name__)

def resolve_volumes(conn, xml):
    """{"pool/volume": (type, path)} of a domain's volume disks, as this host's libvirt resolves
    them (a dir or netfs pool's volume is a file, a logical or iSCSI pool's a block device);
    one it cannot read is left out (and refused as such)."""
    kinds = {libvirt.VIR_STORAGE_VOL_FILE: "file", libvirt.VIR_STORAGE_VOL_BLOCK: "block",
             libvirt.VIR_STORAGE_VOL_NETWORK: "network", libvirt.VIR_STORAGE_VOL_NETDIR: "network"}
    out = {}
    for pool, volume in disks_.disk_volumes(xml):
        with contextlib.suppress(libvirt.libvirtError):
            vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
            kind = kinds.get(vol.info()[0])
            if kind:
                out[f"{pool}/{volume}"] = (kind, vol.path())
    return out


def storage_facts(dom, xml=None):
    """The domain's disks as storage facts (``vmigrate_storage.gather``), volumes resolved."""
    xml = xml or conn_.migratable_xml(dom)
    try:
        volumes = resolve_volumes(dom.connect(), xml)
    except libvirt.libvirtError:
        volumes = {}
    return storage_.gather(xml, volumes=volumes)


def storage_checks(dom, host, xml=None, facts=None):
    """This host's (``host``) checks of the domain's disks as shared storage."""
    return storage_.assess(facts or storage_facts(dom, xml), host)


def destroy_transient(pool):
    try:
        pool.destroy()
    except libvirt.libvirtError as err:  # it goes when that libvirtd restarts
        log.warning("vmigrate: could not destroy transient storage pool %s: %s",
                    pool.name(), err.get_error_message())


def probe_seen(dconn, probe, strict=False):
    """Does the destination's libvirtd see the probe directory, and its sentinel, at the same
    path? Asked through a transient ``dir`` storage pool over the probe directory alone (a
    fresh path no other pool can claim; libvirt only lists it, and the pool goes when
    destroyed). None when the destination has no storage driver to ask. ``strict`` (before
    copying a disk, where seeing it is the danger): the random directory being there at all
    counts as seen, and only "No such file or directory" as not seen; any other answer is
    None."""
    name = os.path.basename(probe).lstrip(".")
    xml = (f"<pool type='dir'><name>{name}</name>"
           f"<target><path>{xml_escape(probe)}</path></target></pool>")
    try:
        pool = dconn.storagePoolCreateXML(xml, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_NO_CONNECT):
            return None, err.get_error_message()
        missing = (err.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR
                   and err.get_int1() == errno.ENOENT)
        return (False if missing or not strict else None), err.get_error_message()
    try:
        if strict:
            return True, None
        names = pool.listVolumes()
        if "sentinel" in names:
            return True, None
        return False, f"{probe} is there but holds no sentinel"
    finally:
        destroy_transient(pool)


def probe_dirs(dconn, facts, dirs=None, strict=False):
    """One sentinel per disk directory (``dirs``, default the resolved ones), written here and
    looked for from the destination; every probe directory is removed before this returns."""
    results = []
    if dirs is None:
        dirs = storage_.disk_dirs(facts)
    for directory in dirs:
        result = {"dir": directory}
        try:
            result.update(storage_.probe_write(directory, secrets.token_hex(8)))
        except OSError as err:
            result["error"] = f"{err.strerror} ({err.filename or directory})"
            results.append(result)
            continue
        try:
            result["seen"], result["detail"] = probe_seen(dconn, result["probe"], strict)
        finally:
            storage_.probe_remove(result["probe"], result.get("root_denied", False))
        results.append(result)
    return results


def available_bytes(dconn):
    """Memory the destination can give: free plus reclaimable page cache and buffers."""
    try:
        stats = dconn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
        return 1024 * sum(stats.get(k, 0) for k in ("free", "buffers", "cached"))
    except libvirt.libvirtError:
        return dconn.getFreeMemory()


def cpu_compare(dconn, needs):
    if not needs["cpu"]:
        return None
    if "host-passthrough" in needs["cpu"]:
        return {"ok": True, "detail": "host-passthrough needs identical host CPUs (not verified)"}
    try:
        # FAIL_INCOMPATIBLE: libvirt then says which features the destination lacks.
        res = dconn.compareHypervisorCPU(needs["emulator"], needs["arch"], needs["machine"],
                                         needs["type"], needs["cpu"],
                                         libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE)
    except libvirt.libvirtError as err:
        return {"ok": False, "detail": err.get_error_message()}
    return {"ok": res != libvirt.VIR_CPU_COMPARE_INCOMPATIBLE, "detail": None}


def network_active(dconn, name):
    try:
        return bool(dconn.networkLookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def clash(dconn, dom, name=None):
    """A domain on the destination with this guest's UUID, or with the name it will have
    there (``name``, option dname; else its own), if any: which, in words."""
    name = name or dom.name()
    for lookup, key, what in ((dconn.lookupByUUIDString, dom.UUIDString(), "this guest's UUID"),
                              (dconn.lookupByName, name, "the name it would have there")):
        try:
            return f"{lookup(key).name()!r} with {what}"
        except libvirt.libvirtError:
            continue
    return None


def dest_facts(conn, dom, uris, conf, link, xml=None, storage=None, dname=None):
    """What the destination offers, read through the URI the migration will use (``link``:
    the open (connection, error) from :func:`vmigrate_conn.dest_link`; ``dname``: the guest's
    name there, when option dname renames it)."""
    facts = {"uri": uris["uri"]}
    dconn, why = link
    if dconn is None:
        return dict(facts, error=why)
    try:
        needs = checks_.domain_needs(xml or conn_.migratable_xml(dom))
        if dom.isActive():
            # The CPU the guest runs with, as QEMU gave it (features it could not have are
            # listed as disabled), is what the destination must provide, not the definition.
            needs["cpu"] = checks_.domain_needs(dom.XMLDesc(0))["cpu"]
        dest_caps = dconn.getCapabilities()
        facts.update(
            source_uuid=checks_.host_uuid(conn.getCapabilities()),
            dest_uuid=checks_.host_uuid(dest_caps),
            source_libvirt=conn.getLibVersion(), dest_libvirt=dconn.getLibVersion(),
            source_qemu=conn.getVersion(), dest_qemu=dconn.getVersion(),
            memory_kib=dom.maxMemory(), reserve_mib=int(conf["memory_reserve_mib"]),
            dest_free_bytes=available_bytes(dconn),
            networks={n: network_active(dconn, n) for n in needs["networks"]},
            bridges=needs["bridges"], cpu_compare=cpu_compare(dconn, needs),
            uuid_clash=clash(dconn, dom, dname))
        if storage is not None:
            facts.update(
                dest_security=checks_.security_models(
                    dest_caps, needs["type"] or "qemu"),
                images=storage_.image_owners(storage),
                probes=probe_dirs(dconn, storage))
    except libvirt.libvirtError as err:
        facts["error"] = f"reading it failed: {err.get_error_message()}"
    return facts


def disk_user(dconn, path):
    """The name of a domain on the destination with ``path`` as a disk (a file, or a storage
    pool's volume) or in a disk's backing chain (a running domain's XML shows its chains; an
    inactive one's is not read), or None."""
    for other in dconn.listAllDomains(0):
        try:
            xml = other.XMLDesc(0)
        except libvirt.libvirtError:
            continue
        files = disks_.disk_files(xml)
        for pool, volume in disks_.disk_volumes(xml):
            with contextlib.suppress(libvirt.libvirtError):
                files.add(dconn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
                          .path())
        if path in files:
            return other.name()
    return None


def dest_image(dconn, path):
    """What the destination's libvirtd has at ``path``: ``exists`` (then its ``allocation``
    and ``physical`` length in bytes, ``format`` and ``backing`` file), ``pool`` (the active
    storage pool whose target is its directory, in which libvirt would create it), ``error``
    and ``in_use_by``. Looked at through that pool, or else a transient ``dir`` pool over the
    directory, destroyed before this returns; nothing is created or removed in it."""
    directory, base = os.path.split(path)
    info = {"exists": None, "pool": None, "error": None, "allocation": None, "physical": None,
            "format": None, "backing": None}
    transient = None
    try:
        try:
            pool = dconn.storagePoolLookupByTargetPath(directory)  # active pools only
        except libvirt.libvirtError:
            pool = inactive_pool(dconn, directory)
        if pool is not None and pool.name().startswith("vmigrate-"):
            info["error"] = ("another vmigrate precheck is looking into it right now (its "
                             f"transient pool {pool.name()}): run this again")
        elif pool is not None and not pool.isActive():
            info["error"] = (f"storage pool {pool.name()!r} there has it as its target but is "
                             f"not active (virsh pool-start {pool.name()})")
        else:
            if pool is None:
                name = f"vmigrate-look-{secrets.token_hex(6)}"
                transient = pool = dconn.storagePoolCreateXML(
                    f"<pool type='dir'><name>{name}</name><target><path>"
                    f"{xml_escape(directory)}</path></target></pool>", 0)
            else:
                info["pool"] = pool.name()
                pool.refresh(0)
            info["exists"] = base in pool.listVolumes()
            if info["exists"]:
                vol = pool.storageVolLookupByName(base)
                info["allocation"] = vol.info()[2]
                info["physical"] = vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
                info.update(disks_.volume_facts(vol.XMLDesc(0)))
        info["in_use_by"] = disk_user(dconn, path)
    except libvirt.libvirtError as err:
        info["error"] = err.get_error_message()
    finally:
        if transient is not None:
            destroy_transient(transient)
    return info


def inactive_pool(dconn, directory):
    """A defined, inactive storage pool on the destination whose target is ``directory``."""
    for pool in dconn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_INACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            if disks_.pool_target(pool.XMLDesc(0)) == directory:
                return pool
    return None


def shared_checks(dom, storage, opts, host):
    """This host's checks of the disks that stay on the shared storage (all of them without
    option ``copy_storage``), and those disks' facts."""
    copied = copy_.copied_targets(storage["disks"], opts)
    shared = copy_.split_copied(storage, copied)[0]
    return storage_checks(dom, host, facts=shared), shared


def copy_checks(dom, storage, dest, link, opts, source):
    """With option ``copy_storage``: this host's side of each disk to copy, then (through
    ``link``, when open) the destination's: not the same storage as here, a place libvirt can
    copy into, no other guest's disk there. Nothing without it."""
    copied = copy_.copied_targets(storage["disks"], opts)
    if copied is None:
        return []
    checks = copy_.assess_copy(storage, opts, source)
    dconn = link[0]
    if dconn is None:
        return checks  # no destination asked, or dest_reachable says why
    local = [d for d in copy_.split_copied(storage, copied)[1]["disks"]
             if d.get("resolved")]  # the others are not writable file disks: refused above
    incremental = opts["copy_storage"] == "inc"
    images = []
    try:
        # The chain is in the live XML only; inc needs the destination's image over the same.
        backing = disks_.backing_files(dom.XMLDesc(0)) if incremental else {}
        # Probed where the destination will open the image (the directory as the XML names
        # it) and where the image really lives here (a symlink may lead from one to the other,
        # and that place may be what the destination mounts): seen in either refuses.
        dirs = {d["target"]: sorted({os.path.dirname(d["path"]),
                                     os.path.dirname(d["resolved"])}) for d in local}
        probes = {p["dir"]: p for p in probe_dirs(
            dconn, None, sorted({x for ds in dirs.values() for x in ds}), strict=True)}
        for disk in local:
            image = {"target": disk["target"], "path": disk["path"], "seen": False}
            for directory in dirs[disk["target"]]:
                probe = probes.get(directory, {})
                if probe.get("seen") is not False:  # True, or None: cannot tell
                    image.update(seen=probe.get("seen"), seen_detail=(
                        f"could not write a sentinel in {directory} on {source}: "
                        f"{probe['error']}" if probe.get("error") else probe.get("detail")))
                    break
            if image["seen"] is False:
                image.update(dest_image(dconn, disk["path"]),
                             source_backing=backing.get(disk["target"]))
            images.append(image)
    except (libvirt.libvirtError, OSError) as err:
        why = err.get_error_message() if isinstance(err, libvirt.libvirtError) else str(err)
        images = [{"target": d["target"], "path": d["path"], "seen": None,
                   "seen_detail": f"asking its libvirtd failed: {why}"} for d in local]
    return checks + checks_.assess_copy_dest(images, source, dest, incremental)


def xml_checks(dom, opts, conf):
    """Options ``xml`` and ``persistent_xml`` against the definition libvirt holds (the live
    one, and the persistent one for ``persistent_xml``): one check each, refused for every
    class of host resource they change that pillar ``vmigrate:allow_xml_changes`` does not
    allow (_utils/vmigrate_xmlguard.py)."""
    checks = []
    for key in ("xml", "persistent_xml"):
        if key not in opts:
            continue
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE
        try:
            if key == "persistent_xml" and dom.isPersistent():
                flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
            current = dom.XMLDesc(flags)
        except libvirt.libvirtError as err:
            raise conn_.error(err, "reading the domain's XML") from err
        checks.append(xmlguard_.check(key, xmlguard_.changes(current, opts[key]),
                                      conf["allow_xml_changes"]))
    return checks


def live_checks(conn, dom, dest, uris, conf, mode, link, opts, source):
    """Storage on this host, then the destination, as libvirt will meet them (``link``: the
    open (connection, error) from :func:`vmigrate_conn.dest_link`). A cold migration boots
    the guest afresh there: the CPU it runs with here does not bind it. With option ``xml``
    its disks are judged (they are the guest's own unless pillar allows ``disk_sources``
    changes)."""
    xml = opts.get("xml") or conn_.migratable_xml(dom)  # read once for both
    storage = storage_facts(dom, xml)
    checks, shared = shared_checks(dom, storage, opts, source)
    facts = dest_facts(conn, dom, uris, conf, link, xml, shared, opts.get("dname"))
    checks += checks_.assess_dest(facts, source, dest)
    checks += copy_checks(dom, storage, dest, link, opts, source)
    return [c for c in checks if mode != "cold" or c["name"] != "dest_cpu"]


def identity_check(link, uris, dest, expected):
    """Whether the migration's URI reaches the machine minion ``dest`` runs on (``expected``:
    the libvirt host UUID that minion reported to the master); None when not asked."""
    if expected is None or link[0] is None:
        return None  # unreachable: dest_reachable already says so
    return checks_.identity(dest, uris["uri"], conn_.host_uuid_of(link[0]), expected)


def blocked(name, checks):
    """The refusal of a migration whose ``checks`` did not all pass: each failed check's
    detail and fix, in words; status ``refused``, reason ``precheck``."""
    failed = [c for c in checks if not c["ok"]]
    return outcome_.Outcome(
        f"precheck refused the migration of {name!r}, {REFUSED}: "
        + "; ".join(f"{c['detail']}. Fix: {c['fix']}" for c in failed), "refused", "precheck")


def convergence(conn, dom, opts, bandwidth):
    """Policy auto for a live migration capped at ``bandwidth`` MiB/s whose options choose no
    convergence step (``vmigrate_forecast.applies``): the guest's dirty rate measured (1 s),
    the forecast, and the options it runs under. Returns (options, forecast, check): the
    forecast and the check are None when policy auto does not apply (no cap: nothing is
    measured); the check fails when nothing can make it converge."""
    if not bandwidth or not forecast_.applies(opts):
        return opts, None, None
    try:
        memory_mib = int(dom.maxMemory()) // 1024
    except libvirt.libvirtError as err:
        raise conn_.error(err, "reading the guest's memory size") from err
    fc = forecast_.forecast(memory_mib, conn_.dirty_rate(conn, dom), bandwidth,
                            opts.get("max_downtime", forecast_.MAX_DOWNTIME_MS))
    steered, why = forecast_.steer(opts, fc)
    fc["applied"] = {k: v for k, v in steered.items() if k not in opts}
    check = {"name": "convergence", "ok": why is None, "detail": why or forecast_.describe(fc),
             "fix": None if why is None else "raise bandwidth, or options postcopy: true, or "
                                               "options policy: manual with your own steps"}
    return steered, fc, check
