"""
One VM moved, the master's use case behind ``salt-run vmigrate.migrate`` and the
``vmigrate.migrated`` state: locate it, decide, migrate it through its source minion's
``vmigrate.migrate``, verify both hosts, and settle what a definite failure left. Also its
plan: the same decision and the source's prechecks, changing nothing.

Every Salt client opened here is closed here, and every request fires exactly one
``vmigrate/<vm>/result`` event, refusals included. No Salt dunders: the runner and the state
pass the master's ``opts``.
"""

import logging
import os
import runpy
import time

from salt.exceptions import SaltException, SaltInvocationError

log = logging.getLogger(__name__)
(bus_, decide_, fleet_, jobs_, locks_, options_, outcome_, reconcile_, settings_,
 validate_) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "vmigrate_imports.py"))["siblings"](__file__,
    "vmigrate_bus", "vmigrate_decide", "vmigrate_fleet", "vmigrate_jobs", "vmigrate_locks",
    "vmigrate_options", "vmigrate_outcome", "vmigrate_reconcile", "vmigrate_settings",
    "vmigrate_validate")
REFUSED = outcome_.REFUSED  # words for a person: the status decides


def migrate(opts, vm, dest, mode="live", bandwidth=None, timeout=None, force=False,
            already_ok=False, trigger="cli", owner=None, options=None, report=None):
    """Locate, decide, migrate on the source minion, verify. Returns the result dict
    (``result``, ``status``: migrated | unchanged | refused | aborted | failed | unknown,
    ``comment`` and the numbers). ``owner``: refuse unless the VM runs on that minion (a
    requester allowed only its own VMs). ``options``: more of virsh's (vmigrate_options.py).
    ``report(line)`` is called with a line for each progress event of the migration, as it
    happens (the runner prints them)."""
    start = time.monotonic()
    dname = options.get("dname") if isinstance(options, dict) else None
    ask = f"{vm} dname={dname}" if isinstance(dname, str) and dname != vm else vm
    ret = {"result": False, "status": "refused", "name": vm, "dest": dest, "mode": mode,
           "trigger": trigger, "comment": "",
           "options": {"bandwidth": bandwidth, "timeout": timeout, "force": force,
                       **(options if isinstance(options, dict) else {})}}
    try:
        _migrate(opts, ret, vm, dest, mode, bandwidth, timeout, force, already_ok, trigger,
                 owner, options, report)
    except (SaltException, OSError) as err:
        ret["result"] = False
        if isinstance(err, locks_.Busy):
            ret["reason"] = "slots" if isinstance(err, locks_.SlotsBusy) else "busy"
        elif isinstance(err, SaltInvocationError):
            ret["reason"] = "invalid"
        if ret.get("jid") and ret["status"] != "refused":
            # Sent, and then the master lost track: what the minion did is not known here.
            ret["status"] = "unknown"
        ret["comment"] = "; ".join(x for x in (ret["comment"], str(err)) if x)
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C or SIGTERM on salt-run: Salt's handler raises SystemExit wherever the process
        # is. The request ends here, reported like any other (the state or runner returns it,
        # salt-run exits non-zero), instead of a traceback from inside the state engine.
        ret["result"] = False
        if ret.get("jid") and ret["status"] != "refused":
            # The job had returned; the verification or repair after it was cut short.
            ret["status"] = "unknown"
            ret["comment"] = "; ".join(x for x in (ret["comment"], (
                f"interrupted on the master while checking the outcome: run salt-run "
                f"vmigrate.reconcile {ask}")) if x)
        elif ret.get("jid"):
            ret["status"] = "unknown"
            ret["comment"] = (
                f"interrupted on the master while {vm} migrates from {ret.get('source')} to "
                f"{dest} (job {ret['jid']}): the migration goes on there under its own timeout "
                f"and ends with the guest on one host; until its end is seen there, a new "
                f"request or a reconcile of {vm} is refused. Follow it with salt-run "
                f"vmigrate.watch {vm} or salt-run vmigrate.jobs")
        else:
            ret["status"] = "refused"
            ret["comment"] = f"interrupted on the master before anything was sent: {REFUSED}"
    finally:
        ret["wall"] = round(time.monotonic() - start, 3)
        named = vm if validate_.valid(validate_.vm_name, vm) else "-"
        bus_.fire(opts, f"vmigrate/{named}/result", ret)
    return ret


def _migrate(opts, ret, vm, dest, mode, bandwidth, timeout, force, already_ok, trigger,
             owner=None, options=None, report=None):
    validate_.vm_name(vm)
    if dest is None:
        raise SaltInvocationError("dest is required: pass pillar='{vm: <name>, dest: <minion>}'")
    validate_.minion_id(dest)
    validate_.mode(mode)
    validate_.mib_per_s(bandwidth)
    validate_.seconds(timeout, "timeout")
    if not isinstance(force, bool):
        raise SaltInvocationError(f"force {force!r}: true or false")
    # Names, values and the rules between them; the minion checks again, with the domain.
    options = options_.check(options_.merge(None, options), mode, vm)
    if "dname" in options:
        validate_.vm_name(options["dname"], "option dname")
    conf = settings_.settings(opts)
    rules = settings_.placement(opts)
    # A host in maintenance receives nothing, whoever asks: checked before any lock, unless
    # a VM already there is fine (the declarative state), which only locating can tell.
    if not already_ok and _in_maintenance(opts, ret, dest):
        return
    # One request per VM at a time (and per name it is given), held from before it is
    # located (Busy names the other); one client for every publish it makes.
    with locks_.hold(opts, vm, trigger, dname=options.get("dname")) as held, \
            bus_.local_client(opts) as client:
        _migrate_locked(opts, client, ret, conf, held, vm, dest, mode, bandwidth, timeout,
                        force, already_ok, owner, options, report, rules)


def _in_maintenance(opts, ret, dest):
    """Refuse (in ``ret``) a destination in maintenance; True when it is."""
    why = fleet_.maintenance_refusal(opts, dest)
    if why:
        ret.update(reason="maintenance", comment=f"{why}: {REFUSED}")
    return bool(why)


def _migrate_locked(opts, client, ret, conf, held, vm, dest, mode, bandwidth, timeout, force,
                    already_ok, owner=None, options=None, report=None, rules=None):
    dname = (options or {}).get("dname")
    cleared = jobs_.check_in_flight(opts, client, [vm, dname] if dname else [vm],
                                    conf["query_timeout"])
    if cleared:
        ret["in_flight_ended"] = cleared
    where, source, why, there = decide_.choose(opts, vm, dest, force, already_ok, mode, dname,
                                               client)
    ret["located"] = decide_.summary(where)
    if force and where["unaccounted"]:
        ret["forced"] = sorted(where["unaccounted"])
    if there:
        named = where["hosts"][dest].get("name")
        ret.update(result=True, status="unchanged", source=dest,
                   comment=f"{vm} already runs on {dest}" + (f" as {named}" if named else ""))
        return
    if source:
        ret["source"] = source
    if why:
        ret["comment"] = why
        return
    if already_ok and _in_maintenance(opts, ret, dest):
        return
    if owner is not None and source != owner:
        ret["reason"] = "owner"
        ret["comment"] = (f"only VMs running on {owner} may move here (a requester's own, or "
                          f"the host being evacuated); {vm} runs on {source}: {REFUSED}")
        return
    why = fleet_.rules_refusal(opts, where, vm, dest, rules)
    if why:
        ret.update(reason="rules", comment=f"{why}: {REFUSED}")
        return
    # Again, last before anything is reserved: an evacuation may have begun meanwhile.
    if _in_maintenance(opts, ret, dest):
        return
    held.take_slots(source, dest)
    if held.recovered:
        # An earlier request died holding these locks; the placement above was read after
        # taking them, so the decision stands, and the record is reported, not ignored.
        ret["recovered"] = held.recovered
        log.warning("vmigrate: %s: recovered locks of a request that died: %s", vm,
                    held.recovered)

    source_timeout, abort_deadline = where["timeouts"].get(source) or (None, 30)
    wait = float(timeout or source_timeout or conf["timeout"])
    kwarg = {"mode": mode, "bandwidth": bandwidth, "timeout": wait}
    if options:
        kwarg["options"] = options
    # The source refuses unless the migration's URI reaches the machine dest's minion runs on.
    dest_host_uuid = where["host_uuids"].get(dest)
    if validate_.valid(validate_.host_uuid, dest_host_uuid) and dest_host_uuid:
        kwarg["dest_host_uuid"] = dest_host_uuid
    else:
        dest_host_uuid = None
    # The options the source applies: its pillar defaults (as it reported them), then the
    # call's, merged as the minion merges them. The master waits exactly as long as the
    # minion's job may run with them (vmigrate_options.job_deadline), and a margin.
    policy = where.get("policies", {}).get(source) or {}
    try:
        applied = options_.merge(policy.get("options") or None, options, mode)
    except SaltInvocationError:
        applied = dict(options)  # the source refuses it itself, with the reason
    wait_all = options_.job_deadline(mode, wait, float(abort_deadline or 30), applied,
                                     policy.get("shutdown_timeout", 120)) + conf["return_margin"]
    ret["deadline"] = round(wait_all, 3)
    was_paused = where["hosts"][source]["state"] == "paused"
    # A live or save migration keeps a paused guest paused; option suspend pauses it there.
    if mode == "offline":
        want = "shutoff"
    elif mode == "cold":
        want = "running"
    else:
        want = "paused" if was_paused or applied.get("suspend") else "running"
    _move_and_verify(opts, client, ret, vm, source, dest, mode, kwarg, wait_all, want,
                     dest_host_uuid, was_paused, report, where["hosts"][source].get("uuid"),
                     held)


def _move_and_verify(opts, client, ret, vm, source, dest, mode, kwarg, wait_all, want,
                     dest_host_uuid, was_paused, report, uuid=None, held=None):
    """Run vmigrate.migrate on the source minion, then verify that the domain is ``want`` on
    ``dest`` only (named as option dname says, with ``uuid``) -- or report where it is and
    repair what a definite failure left (see :func:`_settle`). Fills ``ret``. From the
    publish until the job's end is seen, the VM is recorded in flight (it outlives the locks
    ``held`` when the master gives up, is interrupted or dies)."""
    dname = (kwarg.get("options") or {}).get("dname")
    names = [vm, dname] if dname and dname != vm else [vm]

    def published(jid):
        ret.update(jid=jid)
        locks_.mark_in_flight(opts, names, {"vm": vm, "jid": jid, "source": source,
                                            "dest": dest, "mode": mode,
                                            "trigger": ret.get("trigger"),
                                            "since": time.time(), "master_pid": os.getpid()})
        if held is not None:
            held.note(jid=jid)

    with bus_.Relay(opts, vm, source, report):
        jid, got, _ = bus_.gather(client, [source], "list", "vmigrate.migrate", [vm, dest],
                                  kwarg, wait_all, published=published)
    ret.update(jid=jid, status="failed")
    # Where it is now, whatever the call said: the report on failure, the check on success.
    # A move that succeeded returns what the source then read from both hosts' libvirtd;
    # when that is as it should be it is the verification, else both are asked from here.
    out = got.get(source) or {}
    value = out.get("return")
    if source in got and not (isinstance(value, dict)
                              and value.get("reason") == "still_running"):
        # The job's end is seen: its return came (a job that outlived its deadlines stays
        # in flight until a later request sees it ended on the source).
        locks_.clear_in_flight(opts, names, jid)
    after = (decide_.seen_by_source(vm, value, source, dest, dest_host_uuid)
             if out.get("retcode", 0) == 0 and isinstance(value, dict) else None)
    ret["verified_by"] = source
    if after is None or decide_.misplaced(after, source, dest, want, dname, uuid):
        after = decide_.locate(opts, vm, [source, dest], client, dname)
        ret["verified_by"] = "master"
    ret["after"] = decide_.summary(after)
    now = decide_.placement(after, (source, dest))
    if source not in got:
        ret.update(status="unknown", comment=(
            f"no return from {source} within {wait_all:g}s: the migration "
            f"of {vm} to {dest} may still be running (job {jid}); check with "
            f"salt-run vmigrate.locate {vm}{f' dname={dname}' if dname else ''} and "
            f"salt-run jobs.lookup_jid {jid} before acting. "
            f"Now: {now}"))
        return
    if out.get("retcode", 0) != 0 or not isinstance(value, dict) or "status" in value:
        # The minion's outcome code decides (vmigrate.migrate's failure return); anything
        # else from it (a traceback, a minion without vmigrate) is a failure to repair from.
        status, text = outcome_.failure(value)
        ret["reason"] = value.get("reason") if isinstance(value, dict) else None
        if status == "unknown":
            # The job's end was not seen (it outlived its deadlines, or contact was lost): it
            # may still switch over. Repair nothing now.
            ret.update(status="unknown", comment=f"migration of {vm} from {source} to {dest}: "
                                                 f"{text}; now: {now}")
            return
        if status == "refused":
            ret.update(status="refused", comment=f"{text}; now: {now}")
            return
        ret["status"] = status
        ret["comment"] = (f"migration of {vm} from {source} to {dest} "
                          f"{'stopped' if status == 'aborted' else 'failed'}: {text}; "
                          f"now: {now}")
        _settle(opts, ret, vm, source, dest, mode, after, was_paused, dname)
        return
    if value.get("warnings"):
        ret["warnings"] = value["warnings"]
    for key in ("elapsed", "downtime_ms", "bytes", "iterations", "data_stream", "switches",
                "final", "policy"):
        ret[key] = value.get(key)
    ret["job_ms"] = (value.get("stats") or {}).get("time_elapsed")

    problems = decide_.misplaced(after, source, dest, want, dname, uuid)
    if problems and after["unaccounted"]:
        # A host that did not answer is not a wrong placement: not known until it answers.
        ret.update(status="unknown", comment=(
            f"migration of {vm} reported success but could not be verified: "
            + "; ".join(problems) + f"; check with salt-run vmigrate.locate {vm} before acting"))
        return
    if problems:
        ret["comment"] = (f"migration of {vm} reported success but verification failed: "
                          + "; ".join(problems))
        _settle(opts, ret, vm, source, dest, mode, after, was_paused, dname)
        return
    ret.update(result=True, status="migrated", comment=(
        f"{vm} migrated {mode} from {source} to {dest}"
        + (f" as {dname}" if dname and dname != vm else "") + f" in {ret['elapsed']}s"
        + (f", downtime {ret['downtime_ms']} ms" if ret["downtime_ms"] is not None else "")))


def _settle(opts, ret, vm, source, dest, mode, after, was_paused=False, dname=None):
    """After a definite failure (the source returned an error), repair anything but the state
    the migration started from -- one copy, on the source, as it was (live) or defined
    (offline) -- toward one running copy defined on one host (the destination's if it runs).
    ``after``: the master's own reading of both hosts, taken just before (never the source's
    report, which a failure must not be trusted for). ``dname``: the migration's new name (a
    copy under it is this domain's too)."""
    if mode in decide_.RUNNING_MODES:
        want = ("paused", "running") if was_paused else ("running",)
    else:
        want = ("shutoff", "shutdown")
    on_source = after["hosts"].get(source, {})
    if (not after["unaccounted"] and set(after["hosts"]) == {source}
            and on_source.get("state") in want and on_source.get("persistent")):
        return
    try:
        # A host missing from the master's reading just taken means no repair is decided
        # (repairs): asking again would only wait out a silent host a second time. With
        # every host read, they are asked again, so a copy libvirt is still cleaning up is
        # seen gone rather than repaired.
        fixed = reconcile_.reconcile_held(opts, vm, [source, dest], prefer=dest,
                                          where=after if after["unaccounted"] else None,
                                          dname=dname)
    except (SaltException, OSError) as err:
        fixed = {"result": False, "comment": f"could not reconcile: {err}"}
    ret["reconciled"] = fixed
    ret["comment"] += f"; reconciled: {fixed['comment']}"


def plan(opts, vm, dest, mode="live", force=False, already_ok=False, options=None,
         bandwidth=None):
    """What a migration would do, changing nothing: where the domain is, the decision, the
    destination's maintenance and the placement rules, and the source's prechecks (with a
    ``bandwidth`` cap, a live one's convergence forecast). Returns ``result`` (True: it would
    go ahead; None: nothing to do; False: refused), ``comment``, ``source``, ``checks``,
    ``blockers`` and ``forecast``."""
    validate_.vm_name(vm)
    validate_.minion_id(dest)
    validate_.mode(mode)
    validate_.mib_per_s(bandwidth)
    dname = options_.check(options_.merge(None, options), mode, vm).get("dname")
    if dname is not None:
        validate_.vm_name(dname, "option dname")
    where, source, why, there = decide_.choose(opts, vm, dest, force, already_ok, mode, dname)
    out = {"name": vm, "dest": dest, "mode": mode, "located": decide_.summary(where),
           "checks": [], "blockers": []}
    if there:
        return dict(out, result=None, source=dest, comment=f"{vm} already runs on {dest}")
    out["source"] = source
    if why:
        return dict(out, result=False, comment=why, blockers=["placement"])
    for blocker, why in (("maintenance", fleet_.maintenance_refusal(opts, dest)),
                         ("rules", fleet_.rules_refusal(opts, where, vm, dest))):
        if why:
            return dict(out, result=False, comment=why, blockers=[blocker])
    kwarg = {"mode": mode}
    if bandwidth:
        kwarg["bandwidth"] = bandwidth
    if where["host_uuids"].get(dest) and validate_.valid(validate_.host_uuid,
                                                          where["host_uuids"][dest]):
        kwarg["dest_host_uuid"] = where["host_uuids"][dest]
    if options:
        kwarg["options"] = options  # copy_storage changes which storage checks apply
    with bus_.local_client(opts) as client:
        _jid, got, _ = bus_.gather(client, [source], "list", "vmigrate.precheck", [vm, dest],
                                   kwarg, settings_.settings(opts)["query_timeout"])
    data = got.get(source) or {}
    value = data.get("return")
    if data.get("retcode", 1) != 0 or not isinstance(value, dict):
        return dict(out, result=False, blockers=["precheck"],
                    comment=f"precheck on {source} did not complete: {value or 'no answer'}")
    out.update(checks=value["checks"], blockers=value["blockers"],
               forecast=value.get("forecast"))
    if value["blockers"]:
        failed = [c for c in value["checks"] if not c["ok"]]
        return dict(out, result=False, comment="; ".join(
            f"{c['detail']}. Fix: {c['fix']}" for c in failed))
    said = next((c["detail"] for c in value["checks"] if c["name"] == "convergence"), None)
    return dict(out, result=True,
                comment=f"would migrate {vm} {mode} from {source} to {dest}"
                        + (f"; {said}" if said else ""))
