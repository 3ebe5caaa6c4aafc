"""
The minion's migration, as ``vmigrate.migrate`` runs it on the source: refuse bad input and
impossible requests before anything moves, run the prechecks through the migration's own
link, hand the job to the live/offline monitor (``vmigrate_monitor``) or a static mode
(``vmigrate_static``), and read where the guest is afterwards on both hosts.

Plain Python, no Salt dunders: the module passes its configuration, its minion id and
event.send.
"""

import logging
import os
import runpy

from salt.exceptions import CommandExecutionError, SaltInvocationError

(checks_, conf_, conn_, monitor_, options_, outcome_, precheck_, static_,
 validate_) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_checks", "vmigrate_conf", "vmigrate_conn", "vmigrate_monitor",
    "vmigrate_options", "vmigrate_outcome", "vmigrate_precheck", "vmigrate_static",
    "vmigrate_validate")
libvirt = conn_.libvirt
log = logging.getLogger(__name__)
REFUSED = outcome_.REFUSED  # words for a person: the status decides


def validate(conf, source, name, dest, mode, bandwidth, timeout, unsafe):
    """Refuse bad arguments (SaltInvocationError) before anything is read or touched."""
    validate_.vm_name(name)
    validate_.minion_id(dest)
    validate_.mode(mode)
    if dest == source:
        raise SaltInvocationError(f"vm {name!r}: dest {dest} is this host already")
    validate_.mib_per_s(bandwidth)
    validate_.seconds(timeout, "timeout")
    if not isinstance(unsafe, bool):
        raise SaltInvocationError(f"unsafe {unsafe!r}: true or false")
    if unsafe and not conf["allow_unsafe"]:
        raise SaltInvocationError(
            "unsafe=True skips libvirt's shared-storage and cache safety checks and can corrupt "
            "the disk: set pillar vmigrate:allow_unsafe: true to permit it"
        )


def run(conf, source, send, name, dest, mode, bandwidth, timeout, unsafe, options,
        dest_host_uuid):
    """The module's ``vmigrate.migrate`` on this host (``source``; ``send``: event.send, for
    progress events); a failure raises: SaltInvocationError or CommandExecutionError before
    anything moved, an :class:`vmigrate_outcome.Outcome` once anything may have."""
    validate(conf, source, name, dest, mode, bandwidth, timeout, unsafe)
    validate_.host_uuid(dest_host_uuid)
    opts = options_.merge(conf["options"], options, mode)
    if "dname" in opts:
        validate_.vm_name(opts["dname"], "option dname")
    uris = conf_.dest_uris(conf, dest, mode)
    timeout = float(timeout or conf["timeout"])
    params = {}
    if mode == "live":
        if uris["migrate_uri"]:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = uris["migrate_uri"]
        if bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth)
    flags = monitor_.flags("live" if mode == "live" else "offline", unsafe, uris["data_stream"])
    switches = [s for s, used in (("allow_unsafe", unsafe),
                                  ("allow_insecure_transport", uris["transport"] == "tcp"),
                                  ("allow_plain_migration_stream",
                                   mode == "live" and uris["data_stream"] == "plain tcp"))
                if used]

    with conn_.connect(conf) as conn:
        dom = conn_.lookup(conn, name, source)
        try:
            active = bool(dom.isActive())
            persistent = bool(dom.isPersistent())
            uuid = dom.UUIDString()
        except libvirt.libvirtError as err:
            raise conn_.error(err, f"reading vm {name!r}") from err
        options_.check(opts, mode, name, uuid, uris["data_stream"])
        forecast = convergence = None
        if mode == "live" and active:
            # Policy auto: measured and forecast before the job, the steps chosen from it.
            opts, forecast, convergence = precheck_.convergence(conn, dom, opts, bandwidth)
            if convergence is not None:
                log.info("vmigrate: %s: %s; applied %s", name, convergence["detail"],
                         forecast.get("applied"))
                options_.check(opts, mode, name, uuid, uris["data_stream"])
        more_flags, more_params = options_.to_libvirt(
            libvirt, opts, mode, uris["data_stream"])
        flags |= more_flags
        params.update(more_params)
        if mode != "offline" and not active:
            raise CommandExecutionError(
                f"vm {name!r} is not running on {source}, {REFUSED}: use mode=offline to "
                "move its definition")
        if mode == "offline" and active:
            raise CommandExecutionError(
                f"vm {name!r} is running on {source}, {REFUSED}: an offline migration would "
                "leave it running here; shut it down first or use mode=live")
        if mode != "live" and not persistent:
            raise CommandExecutionError(
                f"vm {name!r} is transient, {REFUSED}: there is no definition to move "
                f"({'use mode=live' if active else 'nothing to migrate'})")
        with conn_.dest_link(uris, conf) as link:
            checks = precheck_.xml_checks(dom, opts, conf)
            if mode != "offline":
                # unsafe=True (explicitly allowed) skips libvirt's storage check, not ours of
                # the destination.
                checks += (precheck_.live_checks(conn, dom, dest, uris, conf, mode, link, opts,
                                                 source)
                           if not unsafe else checks_.assess_dest(
                               precheck_.dest_facts(conn, dom, uris, conf, link,
                                                    dname=opts.get("dname")), source, dest)
                           + precheck_.copy_checks(dom, precheck_.storage_facts(dom), dest, link,
                                                   opts, source))
            identity = precheck_.identity_check(link, uris, dest, dest_host_uuid)
            checks += [identity] if identity else []
            checks += [convergence] if convergence else []
            if any(not c["ok"] for c in checks):
                raise precheck_.blocked(name, checks)
            job = monitor_.Job(source, dest, uris, conf, opts, send)
            try:
                if mode in ("live", "offline"):
                    outcome = monitor_.run_job(conn, dom, name, mode, params, flags, timeout,
                                               job)
                elif mode == "cold":
                    outcome = static_.cold(conn, dom, name, params, flags, timeout, job)
                else:
                    outcome = static_.save(conn, dom, name, timeout, job)
            except (CommandExecutionError, libvirt.libvirtError, OSError) as err:
                if outcome_.code_of(err):
                    raise
                # Anything may have moved by now: only a fresh reading can tell.
                raise outcome_.Outcome(
                    f"{mode} migration of {name!r} from {source} to {dest}: {err}; check with "
                    f"salt-run vmigrate.locate {name} before acting", "unknown", "error") from err
            if "error" not in outcome:
                outcome["copies"] = conn_.copies(name, uuid, ((source, conn), (dest, link[0])))
                # Read through the connection whose identity was checked (or not).
                outcome["copies"]["dest_host_uuid"] = dest_host_uuid if identity else None

    if "error" in outcome:
        raise outcome["error"]
    stats = outcome["stats"]
    return {
        "name": name,
        "source": source,
        "dest": dest,
        "mode": mode,
        "data_stream": uris["data_stream"] if mode == "live" else None,
        "switches": switches,
        "elapsed": round(outcome["elapsed"], 3),
        "downtime_ms": outcome.get("downtime_ms", stats.get("downtime")),
        "bytes": outcome.get("bytes",
                             stats.get("memory_processed", stats.get("data_processed"))),
        "iterations": stats.get("memory_iteration"),
        "final": outcome["final"],
        "options": opts,
        "policy": outcome.get("policy", {}),
        "forecast": forecast,
        "stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
        "copies": outcome["copies"],
        "warnings": outcome.get("warnings", []),
        "deadline": round(options_.job_deadline(
            mode, timeout, conf["abort_deadline"], opts, conf["shutdown_timeout"]), 3),
    }
