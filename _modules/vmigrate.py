"""
Move libvirt/KVM domains between hypervisors: the minion side of vmigrate.

Runs on a hypervisor minion and talks to its libvirtd through libvirt-python (never ``virsh``).
The master side (``_runners/vmigrate.py``, ``_states/vmigrate.py``, ``salt/migrate.sls``) decides
where a domain lives and calls :py:func:`migrate` on the source minion.

Configuration is read from pillar ``vmigrate`` only (see ``pillar.example``): a grain or a key in
the minion's config cannot change where a VM goes or switch a safety check off.

.. code-block:: yaml

    vmigrate:
      transport: ssh              # ssh | tls | tcp; tcp needs allow_insecure_transport
      hypervisors:
        host1: {address: 192.0.2.11}
        host2: {address: 192.0.2.12, migration_address: 198.51.100.12}

CLI Example:

.. code-block:: bash

    salt host1 vmigrate.domains
    salt host1 vmigrate.precheck vdisk host2
    salt host1 vmigrate.migrate vdisk host2
    salt host1 vmigrate.migrate vdisk host2 mode=offline
"""

import contextlib
import logging
import os
import runpy

from salt.exceptions import CommandExecutionError, SaltInvocationError

# The shared code (``_utils``) as plain Python in every install: _utils/vmigrate_imports.py.
_shared = runpy.run_path(next(p for p in (os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), d, "vmigrate_imports.py") for d in ("utils", "_utils"))
    if os.path.isfile(p)))["load"]
(conf_, conn_, install_, migration_, monitor_, options_, outcome_, precheck_,
 validate_) = map(_shared, (
    "vmigrate_conf", "vmigrate_conn", "vmigrate_install", "vmigrate_migration",
    "vmigrate_monitor", "vmigrate_options", "vmigrate_outcome", "vmigrate_precheck",
    "vmigrate_validate"))

# libvirt-python is imported once, by vmigrate_conn (None where it is not installed).
libvirt = conn_.libvirt
HAS_LIBVIRT = libvirt is not None

log = logging.getLogger(__name__)

__virtualname__ = "vmigrate"


def __virtual__():
    if not HAS_LIBVIRT:
        return (False, "vmigrate: libvirt-python is not installed (pip install libvirt-python)")
    return __virtualname__


def _check(rule, *args, **kwargs):
    """Run input rule ``rule`` of _utils/vmigrate_validate.py (raises SaltInvocationError)."""
    return getattr(validate_, rule)(*args, **kwargs)


def _config():
    """This minion's configuration: pillar ``vmigrate`` (_utils/vmigrate_conf.py)."""
    return conf_.config(__pillar__.get("vmigrate"))


def _send_event(tag, data):
    """event.send, resolved when a progress event goes (from the progress thread, which runs
    in a copy of this call's context: Salt's dunders resolve through it)."""
    return __salt__["event.send"](tag, data)


def dest_uris(dest, mode="live"):
    """
    Resolve how to reach hypervisor ``dest``, from pillar.

    Returns a dict: ``uri`` (the libvirt connection the source libvirtd opens to the
    destination), ``migrate_uri`` (where QEMU sends the memory stream, None when it is
    tunnelled), ``transport`` and ``data_stream`` (``tls``, ``tunnelled`` or ``plain tcp``).

    :param dest: the destination's minion id, a key of pillar ``vmigrate:hypervisors``
    :param mode: ``live`` (default) or ``offline`` (no memory moves: no data stream)

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.dest_uris host2
    """
    return conf_.dest_uris(_config(), dest, mode)


def domains():
    """
    List the domains on this hypervisor.

    Returns a dict: ``host`` (this minion's id), ``host_uuid`` (its libvirt host UUID: the
    master checks that a migration's URI reaches this machine), ``timeout``,
    ``abort_deadline`` and ``shutdown_timeout`` (this host's, seconds) and ``options`` (pillar
    ``vmigrate:options``, the defaults it applies to every migration): the master waits for a
    migration from here exactly as long as these make it, and verifies it as they make it
    (``suspend``: it arrives paused); and ``domains``, keyed by domain name, each with
    ``uuid``, ``state`` (running, paused, shutoff, ...), ``reason`` (libvirt's reason for that
    state, e.g. paused by ``migration``), ``persistent``, and what it takes of a host:
    ``memory_mib`` (its maximum memory) and ``vcpus``; and ``capacity``, what this host offers
    its guests (pillar ``vmigrate:capacity``: ``memory_mib``, ``vcpus``, and the host's own
    ``host_memory_mib`` and ``cpus``), by which the master's planner places guests. A domain
    that vanishes while it is being read (an incoming migration that failed) is left out.

    CLI Example:

    .. code-block:: bash

        salt -G 'virtual:physical' vmigrate.domains
    """
    conf = _config()
    found = {}
    with conn_.connect(conf) as conn:
        try:
            doms = conn.listAllDomains()
        except libvirt.libvirtError as err:
            raise conn_.error(err, "listing domains") from err
        for dom in doms:
            try:
                info = dict(conn_.describe(dom), **conn_.sizes(dom))
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise conn_.error(err, "reading a domain") from err
            found[info.pop("name")] = info
        host_uuid = conn_.host_uuid_of(conn)
        node = conn_.node_info(conn)
    return {"host": __opts__["id"], "host_uuid": host_uuid, "timeout": conf["timeout"],
            "abort_deadline": conf["abort_deadline"],
            "shutdown_timeout": conf["shutdown_timeout"],
            "options": options_.merge(conf["options"], None),
            "capacity": conf_.capacity(conf, node["memory_mib"], node["cpus"]),
            "domains": found}


def version():
    """
    Which vmigrate this minion runs and how it is installed: the ``saltext-vmigrate``
    extension package, or synced from the master's file_roots; and whether both are there
    (the synced copy then shadows the extension).

    Returns a dict: ``version``, ``install`` (extension, synced or repository), ``path``,
    ``sls_path``, ``shadowed`` and ``comment``.

    CLI Example:

    .. code-block:: bash

        salt '*' vmigrate.version
    """
    return install_.describe(__file__, __opts__.get("extension_modules"))


def domain(name):
    """
    Describe one domain on this hypervisor: ``name``, ``uuid``, ``state``, ``reason``,
    ``persistent``.

    :param name: the domain name

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.domain vdisk
    """
    _check("vm_name", name)
    with conn_.connect(_config()) as conn:
        dom = conn_.lookup(conn, name, __opts__["id"])
        try:
            return conn_.describe(dom)
        except libvirt.libvirtError as err:
            raise conn_.error(err, f"reading vm {name!r}") from err


def precheck(name, dest=None, mode="live", dest_host_uuid=None, options=None, bandwidth=None):
    """
    What this source hypervisor can check before a migration moves anything.

    For a live migration: every writable disk must be on storage libvirt treats as shared
    (NFS and the other network filesystems by type, or a qemu.conf ``shared_filesystems``
    entry the running daemon took in), with the filesystem it saw and the fix; and, with
    ``dest``, the destination as the migration will meet it, through the same libvirt URI:
    it answers, it is another host (libvirt host UUID), its libvirt and QEMU are not older,
    it has the memory (plus pillar ``vmigrate:memory_reserve_mib``), its hypervisor can
    provide the CPU the guest runs with, the guest's libvirt networks are active there, no
    other domain there has this guest's UUID or the name it will have (option dname's), its
    libvirtd sees a sentinel written here beside each disk at the same path, and QEMU's user
    there can open each image (root squashed or not). A disk with ``cache='unsafe'`` is
    refused. The sentinel's directory is the only thing a precheck writes, and it is removed
    before this returns.

    :param name: the domain
    :param dest: the destination minion id (validated when given)
    :param mode: ``live`` (default), ``cold`` or ``save`` (the same checks; cold leaves out
        the CPU, as the guest boots afresh), or ``offline`` (none but the next)
    :param dest_host_uuid: the libvirt host UUID ``dest``'s minion reports (``vmigrate.domains``;
        the master passes it): check ``dest_identity`` then verifies that the URI reaches it
    :param options: the migration's options (over pillar ``vmigrate:options``), validated;
        with ``copy_storage`` the disks to copy are checked as such (``copy_storage:<disk>``,
        ``dest_disk:<disk>``) instead of as shared storage
    :param bandwidth: the migration's cap (MiB/s): a live one is then forecast (option
        ``policy: auto``): the guest's dirty rate measured by libvirt for a second, check
        ``convergence`` saying whether it converges and which steps it would run under

    Returns a dict: ``name``, ``host``, ``mode``, ``checks`` (each with ``name``, ``ok``,
    ``detail`` and ``fix``), ``blockers`` (the names of the checks that failed) and
    ``forecast`` (None unless forecast).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.precheck vdisk host2
    """
    _check("vm_name", name)
    _check("mode", mode)
    if dest is not None:
        _check("minion_id", dest)
    _check("host_uuid", dest_host_uuid)
    _check("mib_per_s", bandwidth)
    conf = _config()
    opts = options_.merge(conf["options"], options, mode)
    uris = conf_.dest_uris(conf, dest, mode) if dest is not None else None
    options_.check(opts, mode, name, None,
                                        uris["data_stream"] if uris else None)
    with conn_.connect(conf) as conn:
        dom = conn_.lookup(conn, name, __opts__["id"])
        checks = precheck_.xml_checks(dom, opts, conf)
        if uris is None:
            if mode != "offline":
                storage = precheck_.storage_facts(dom, opts.get("xml"))
                checks += (precheck_.shared_checks(dom, storage, opts, __opts__["id"])[0]
                           + precheck_.copy_checks(dom, storage, None, (None, None), opts,
                                                   __opts__["id"]))
        else:
            with conn_.dest_link(uris, conf) as link:
                if mode != "offline":
                    checks += precheck_.live_checks(conn, dom, dest, uris, conf, mode, link, opts,
                                                    __opts__["id"])
                identity = precheck_.identity_check(link, uris, dest, dest_host_uuid)
                checks += [identity] if identity else []
        forecast = None
        try:
            active = bool(dom.isActive())
        except libvirt.libvirtError as err:
            raise conn_.error(err, f"reading vm {name!r}") from err
        if mode == "live" and active:
            _opts, forecast, check = precheck_.convergence(conn, dom, opts, bandwidth)
            checks += [check] if check else []
    return {"name": name, "host": __opts__["id"], "mode": mode, "checks": checks,
            "blockers": [c["name"] for c in checks if not c["ok"]], "forecast": forecast}


REPAIRS = ("resume", "start", "destroy", "undefine", "persist")


def repair(name, action, uuid=None):
    """
    One step of the master's reconciliation (``salt-run vmigrate.reconcile``) on this host's
    copy of domain ``name``. Never touches a disk image.

    :param name: the domain
    :param action: ``resume`` (a paused copy), ``start`` (a shut-off persistent copy),
        ``destroy`` (stop this copy; its definition and disk stay), ``undefine`` (drop this
        host's definition of a copy that is not running here), ``persist`` (define a running
        transient copy persistently here)
    :param uuid: refuse unless the domain has this UUID (the master passes the one it read:
        a domain redefined under that name since is another guest)

    Returns a dict: ``name``, ``host``, ``action``, ``before`` and ``after`` (state, reason,
    persistent).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.repair vdisk resume
    """
    _check("vm_name", name)
    if action not in REPAIRS:
        raise SaltInvocationError(f"action {action!r}: one of {', '.join(REPAIRS)}")
    with conn_.connect(_config()) as conn:
        dom = conn_.lookup(conn, name, __opts__["id"])
        try:
            before = conn_.describe(dom)
            if uuid is not None and before["uuid"] != str(uuid):
                raise CommandExecutionError(
                    f"vm {name!r} on {__opts__['id']} has UUID {before['uuid']}, not {uuid}: "
                    f"{action} refused, it is not the domain the master read")
            if before["reason"] in ("postcopy", "postcopy_failed") and action != "persist":
                # Its memory is split with the other host: stopping or resuming loses the guest.
                raise CommandExecutionError(
                    f"vm {name!r} on {__opts__['id']} is {before['state']} in a post-copy "
                    f"migration ({before['reason']}): {action} refused, it would lose the "
                    "guest (docs, 'When the network breaks in post-copy')")
            if action == "resume":
                dom.resume()
            elif action == "start":
                dom.create()
            elif action == "destroy":
                dom.destroy()
            elif action == "undefine":
                if dom.isActive():
                    raise CommandExecutionError(
                        f"vm {name!r} runs on {__opts__['id']}: destroy it before undefining")
                dom.undefineFlags(conn_.UNDEFINE_KEEP)
            else:
                conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
            try:
                after = conn_.describe(dom)
            except libvirt.libvirtError:
                after = None  # an undefined, inactive domain is gone
        except libvirt.libvirtError as err:
            raise conn_.error(err, f"{action} of vm {name!r}") from err
    for info in (before, after):
        if info:
            info.pop("name")
    return {"name": name, "host": __opts__["id"], "action": action, "before": before,
            "after": after}


def migrate(name, dest, mode="live", bandwidth=None, timeout=None, unsafe=False, options=None,
            dest_host_uuid=None):
    """
    Migrate domain ``name`` from this hypervisor to hypervisor ``dest``.

    Peer-to-peer (``migrateToURI3``): this host's libvirtd connects to the destination's. The
    domain is persisted on the destination and undefined here, so it ends defined on exactly
    one host. Except offline, the prechecks run first (nothing moves if a disk is not on
    shared storage, the destination lacks memory, ...); if the migration then fails, the
    domain stays here, running as it was.

    :param name: the domain to move
    :param dest: the destination's minion id (a key of pillar ``vmigrate:hypervisors``)
    :param mode: ``live`` (default; the domain keeps running), ``offline`` (a shut-off
        domain's definition moves; refused for a running domain), ``cold`` (the ACPI power
        button, a bounded wait, the definition moves, the domain starts there: a reboot) or
        ``save`` (its memory is saved beside its disk on the shared storage, the definition
        moves, and it is restored running there: it resumes where it stopped)
    :param bandwidth: cap in MiB/s for the memory transfer (default: unlimited)
    :param timeout: a live migration still running after this many seconds gets option
        ``timeout_action`` (default: abort; the domain stays here) (default: pillar
        ``vmigrate:timeout``, 600). An offline migration still running then is reported as
        not finished.
    :param unsafe: skip libvirt's storage safety checks; refused unless pillar
        ``vmigrate:allow_unsafe`` is true
    :param options: more of ``virsh migrate``'s options, over pillar ``vmigrate:options``:
        ``auto_converge``, ``max_downtime`` with ``downtime_steps``, ``timeout_action``
        (``abort``, ``pause``, ``postcopy``), ``compressed``, ``parallel_connections``, ...;
        cold's ``shutdown_timeout`` and ``force_off``; ``dname`` (its name on ``dest``);
        ``copy_storage`` (``all``/``inc``) with
        ``migrate_disks`` for a guest on local storage (docs, "Every virsh migrate option")
    :param dest_host_uuid: the libvirt host UUID ``dest``'s minion reports (the master passes
        it from its locate): refused unless the URI reaches that machine (check
        ``dest_identity``, in every mode)

    Returns a dict: ``name``, ``source``, ``dest``, ``mode``, ``data_stream``, ``elapsed``
    (seconds of the call), ``downtime_ms`` (for cold and save: from the shutdown or save to
    running there), ``bytes`` (memory transferred or saved), ``iterations``, ``stats``
    (libvirt's job statistics), ``final`` (whether those are the completed job's, not the last
    poll's), ``options`` (those used), ``policy`` (what the convergence policy did),
    ``switches`` (safety switches that were used), ``copies`` (where the domain is now,
    read from both hosts' libvirtd after the move: the master's verification) and
    ``warnings`` (what a person must do after a move that worked, e.g. a save file left).

    When it does not move as asked it returns (retcode 1) ``result: False``, ``status``
    (``refused``: nothing was moved; ``failed``; ``aborted``: stopped on request;
    ``unknown``: the outcome could not be read, nothing may be repaired until a fresh reading
    says more), ``reason`` (a short code), ``comment`` and ``name``, ``source``, ``dest``,
    ``mode``. The master decides on ``status``, never on the words.

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.migrate vdisk host2
        salt host1 vmigrate.migrate vdisk host2 mode=offline
        salt host1 vmigrate.migrate vdisk host2 mode=cold options='{force_off: true}'
        salt host1 vmigrate.migrate vdisk host2 bandwidth=100 timeout=300
        salt host1 vmigrate.migrate vdisk host2 options='{auto_converge: true, max_downtime: 500}'
    """
    try:
        return migration_.run(_config(), __opts__["id"], _send_event, name, dest, mode,
                              bandwidth, timeout, unsafe, options, dest_host_uuid)
    except SaltInvocationError as err:
        status, reason, text = "refused", "invalid", str(err)
    except CommandExecutionError as err:
        # An outcome carries its code (read as data: a process that kept an older copy of the
        # shared code raises an older class); anything else was raised before any job began
        # (lookups, connections): nothing moved.
        status, reason, text = outcome_.code_of(err) or ("refused", "error", str(err))
    __context__["retcode"] = 1
    return {"result": False, "status": status, "reason": reason, "comment": text,
            "name": name, "source": __opts__["id"], "dest": dest, "mode": mode}


def job(name):
    """
    The job libvirt runs for domain ``name`` on this hypervisor now (None when there is none).

    :param name: the domain

    Returns a dict: ``name``, ``host`` and ``job`` (``operation``, ``elapsed_ms``, ``percent``,
    ``memory_remaining``, ``memory_bps``, ``iteration``, ``dirty_rate``; or None).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.job vdisk
    """
    _check("vm_name", name)
    with conn_.connect(_config()) as conn:
        dom = conn_.lookup(conn, name, __opts__["id"])
        try:
            info = conn_.job_of(dom)
        except libvirt.libvirtError as err:
            raise conn_.error(err, f"reading the job of {name!r}") from err
    return {"name": name, "host": __opts__["id"], "job": info}


def jobs():
    """
    The jobs libvirt runs on this hypervisor now (migrations out and in, saves, ...).

    Returns a dict: ``host`` and ``jobs`` ({domain: ``operation``, ``elapsed_ms``,
    ``percent``, ``memory_remaining``, ``memory_bps``, ``iteration``, ``dirty_rate``}).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.jobs
    """
    conf = _config()
    out = {}
    with conn_.connect(conf) as conn:
        try:
            doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as err:
            raise conn_.error(err, "listing domains") from err
        for dom in doms:
            with contextlib.suppress(libvirt.libvirtError):  # gone meanwhile
                info = conn_.job_of(dom)
                if info:
                    out[dom.name()] = info
    return {"host": __opts__["id"], "jobs": out}


def abort(name):
    """
    Abort the migration of ``name`` going out of this hypervisor: the domain stays here, as it
    was (libvirt ends the job; the ``vmigrate.migrate`` call reports it aborted on request).
    Nothing is done when no migration of it goes out from here. A migration in post-copy
    cannot be aborted (the guest already runs on the destination): that is said, and nothing
    is done. A migration counts as stopped only when a fresh reading shows no job left.

    :param name: the domain

    Returns a dict: ``name``, ``host``, ``aborted`` (True when a migration was stopped),
    ``outcome`` (``aborted``; ``none``: no migration goes out from here; ``ended``: it ended
    before the abort; ``postcopy``: in post-copy, not abortable; ``running``: libvirt took the
    abort but the job still runs), ``comment`` and ``state`` (the domain's state here
    afterwards).

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate.abort vdisk
    """
    _check("vm_name", name)
    conf = _config()
    with conn_.connect(conf) as conn:
        dom = conn_.lookup(conn, name, __opts__["id"])
        return monitor_.abort_outgoing(dom, name, __opts__["id"], conf["abort_deadline"])
