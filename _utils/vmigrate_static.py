"""
The modes that stop the guest to move it: ``cold`` (the ACPI power button, the definition
moves, it starts there) and ``save`` (its memory saved beside its disk on the shared storage,
restored there). Each ends with the guest running on one host, or says exactly why not; after
lost contact the destination is read again before anything starts here, and an outcome that
reading does not settle is ``unknown``.

Plain Python, no Salt dunders (a ``vmigrate_monitor.Job`` carries what the module knows).
"""

import contextlib
import logging
import os
import runpy
import secrets
import time

from salt.exceptions import CommandExecutionError

conn_, monitor_, outcome_, precheck_, storage_ = runpy.run_path(os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_conn", "vmigrate_monitor", "vmigrate_outcome", "vmigrate_precheck",
    "vmigrate_storage")
libvirt = conn_.libvirt
log = logging.getLogger(__name__)
# Words for a person, in comments; the status decides.
REFUSED = outcome_.REFUSED

def cold(conn, dom, name, params, flags, timeout, job):
    """Shut the guest down (the ACPI power button; powered off after ``shutdown_timeout``
    only with ``force_off``), move its definition, start it there. Any failure after the
    shutdown starts it here again: it ends running on one host, or the error says how not."""
    source, dest, uris, conf, opts, send = job
    wait = opts.get("shutdown_timeout", conf["shutdown_timeout"])
    progress = monitor_.Progress(send, conf["progress_events"], f"vmigrate/{name}/progress",
                         {"name": name, "source": source, "dest": dest, "mode": "cold"})
    start = time.monotonic()
    progress.put("shutting down", 0.0, {})
    try:
        dom.shutdown()
        while dom.isActive() and time.monotonic() - start < wait:
            time.sleep(0.2)
        forced = bool(dom.isActive())
        if forced and opts.get("force_off"):
            dom.destroy()
    except libvirt.libvirtError as err:
        progress.put("failed", time.monotonic() - start, {})
        progress.close()
        return {"error": outcome_.Outcome(
            str(conn_.error(err, f"shutting {name!r} down on {source}")))}
    if forced and not opts.get("force_off"):
        progress.put("failed", time.monotonic() - start, {})
        progress.close()
        return {"error": outcome_.Outcome(
            f"vm {name!r} did not shut down within {wait:g}s of the ACPI power button, "
            f"{REFUSED}: it runs on {source} (a guest that honours the request later ends "
            "shut off there); shut it down from inside, or pass options {force_off: true} to "
            "power it off after the wait", "refused", "shutdown_timeout")}
    down_at = time.monotonic()
    progress.put("moving", down_at - start, {})
    progress.close()
    outcome = monitor_.run_job(conn, dom, name, "offline", params, flags, timeout, job)
    if "error" not in outcome:
        there = opts.get("dname", name)
        try:
            with conn_.dest_connection(uris["uri"], conf) as dconn:
                # By UUID: the definition that just moved, whatever option dname named it.
                dconn.lookupByUUIDString(dom.UUIDString()).create()
        except (libvirt.libvirtError, CommandExecutionError) as err:
            text = err.get_error_message() if isinstance(err, libvirt.libvirtError) else err
            outcome["error"] = outcome_.Outcome(
                f"cold migration of {name!r}: its definition moved to {dest} but it did not "
                f"start there: {text}. Fix: salt {dest} vmigrate.repair {there} start")
    else:
        try:
            dom.create()
            note = f"started again on {source}"
        except libvirt.libvirtError as err:
            note = (f"could not start it again on {source}: {err.get_error_message()}; "
                    f"salt {source} vmigrate.repair {name} start")
        outcome["error"] = outcome_.Outcome(f"{outcome['error']}; {note}",
                                    "failed", getattr(outcome["error"], "reason", None))
    end = time.monotonic()
    outcome.update(elapsed=end - start, downtime_ms=round((end - start) * 1000),
                   policy={"forced_off": forced, "shutdown_s": round(down_at - start, 3)})
    return outcome


def save(conn, dom, name, timeout, job):
    """Save the guest's memory beside its disk on the shared storage, define it there, restore
    it running there, undefine it here, remove the save file. The save is bounded by
    ``timeout`` (then libvirt aborts it and the guest runs on here). After a definite failure
    there it is restored here; after lost contact the destination is read again first, and
    when that reading does not settle it, nothing is started: the outcome is unknown and the
    save file is kept."""
    source, dest, uris, conf, _opts, send = job
    dirs = storage_.disk_dirs(precheck_.storage_facts(dom))
    if not dirs:
        return {"error": outcome_.Outcome(
            f"vm {name!r} has no file disk on shared storage to save its memory beside, "
            f"{REFUSED}: use mode=live", "refused", "no_shared_disk")}
    path = os.path.join(dirs[0], f".vmigrate-save-{name}-{secrets.token_hex(4)}.sav")
    progress = monitor_.Progress(send, conf["progress_events"], f"vmigrate/{name}/progress",
                         {"name": name, "source": source, "dest": dest, "mode": "save"})
    start = time.monotonic()
    grace = conf["abort_deadline"]
    progress.put("saving", 0.0, {})

    def fail(text, status="failed", reason="libvirt"):
        progress.put("failed", time.monotonic() - start, {})
        progress.close()
        return {"error": outcome_.Outcome(f"save migration of {name!r} to {dest}: {text}", status,
                                  reason)}

    try:
        uuid = dom.UUIDString()
        definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    except libvirt.libvirtError as err:
        return fail(f"reading it on {source}: {err.get_error_message()}, {REFUSED}",
                    "refused")
    call = conn_.Call(lambda: dom.save(path))
    timed_out = not call.wait(timeout)
    if timed_out:
        conn_.attempt(f"{name}: abort the save after {timeout:g}s", dom.abortJob)
        if not call.wait(grace):
            return fail(f"the save on {source} did not finish within {timeout:g}s and the "
                        f"abort did not take; its memory may go to {path}: check with salt-run "
                        f"vmigrate.locate {name} before acting", "unknown", "still_running")
    if call.error is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
        what = (f"the save on {source} did not finish within {timeout:g}s and was aborted"
                if timed_out else f"saving it on {source}")
        return fail(f"{what}: {call.error.get_error_message()}; it runs on {source}, "
                    f"{REFUSED}", "refused", "timeout" if timed_out else "libvirt")
    saved = time.monotonic()
    size = None
    with contextlib.suppress(OSError):  # a number for the report: never a reason to stop here
        size = os.path.getsize(path)
    progress.put("restoring", saved - start, {})
    there, text = restore_there(uris, conf, definition, path, uuid,
                                 max(grace, start + timeout - time.monotonic()))
    if there == "unclear":
        return fail(
            f"lost contact with {dest} during the restore ({text}) and no reading settled "
            f"what it holds: the guest may run there, so nothing was started; it is saved "
            f"on {source} (shut off, defined) and its memory kept in {path}. Check with "
            f"salt-run vmigrate.locate {name}: if it runs on {dest}, salt {source} vmigrate."
            f"repair {name} undefine; if not, virsh restore {path} on {source}",
            "unknown", "lost_contact")
    if there in ("absent", "defined"):
        # Lost contact, and the fresh reading found no copy running there. Fence the save
        # file (a restore that reaches the destination late can no longer open it), read
        # once more, and only then go on here.
        moved = path + ".source"
        try:
            os.rename(path, moved)
            path = moved
        except OSError as err:
            return fail(f"{text}; its save file {path} could not be fenced ({err.strerror}), "
                        f"so nothing was started: it is saved on {source}. Check with salt-run "
                        f"vmigrate.locate {name}, then virsh restore {path} on {source}",
                        "unknown", "lost_contact")
        there = read_dest(uris, conf, uuid, grace)
        text += f", after fencing: {there}"
        if there == "unclear":
            return fail(f"{text}: nothing was started; it is saved on {source}, its memory in "
                        f"{path}. Check with salt-run vmigrate.locate {name} before acting",
                        "unknown", "lost_contact")
        if there == "defined":
            left = undefine_dest(uris, conf, uuid)
            if left:
                return fail(f"{text}; the restore did not happen there, but its definition "
                            f"could not be dropped ({left}), so nothing was started: it is "
                            f"saved on {source}, its memory in {path}. Fix: salt {dest} "
                            f"vmigrate.repair {name} undefine, then virsh restore {path} on "
                            f"{source}", "failed", "lost_contact")
    if there != "running":
        note, _running = restore_here(conn, path, source)
        return fail(f"{text}; {note}")
    running = time.monotonic()
    warnings = []
    if text:
        warnings.append(text)
    try:
        dom.undefineFlags(conn_.UNDEFINE_KEEP)
    except libvirt.libvirtError as err:
        return fail(f"it runs on {dest} but its definition stays on {source} too: "
                    f"{err.get_error_message()}. Fix: salt-run vmigrate.reconcile {name}",
                    "failed", "undefine")
    finally:
        try:
            os.unlink(path)
        except OSError as err:
            warnings.append(f"its save file {path} could not be removed ({err.strerror}): "
                            "remove it by hand, it holds the guest's memory")
    elapsed = time.monotonic() - start
    progress.put("completed", elapsed, {}, True)
    progress.close()
    return {"elapsed": elapsed, "downtime_ms": round((running - start) * 1000), "bytes": size,
            "stats": {}, "final": True, "warnings": warnings,
            "policy": {"save_s": round(saved - start, 3), "restore_s": round(running - saved, 3)}}


def restore_there(uris, conf, definition, path, uuid, wait):
    """Define the saved guest on the destination and restore it there, for at most ``wait``
    seconds. Returns (where it is there, words): ``running`` (restored), ``failed`` (libvirt
    refused: nothing is there but maybe the definition, dropped here), ``defined`` or
    ``absent`` (lost contact, and a fresh reading shows it did not restore), ``unclear``.
    After lost contact it reads the destination again until the reading is definite, for what
    is left of ``wait`` (at least one abort deadline): a restore the destination's libvirtd
    took up again after a restart goes on there, paused, until it ends."""
    until = time.monotonic() + wait
    try:
        with conn_.dest_connection(uris["uri"], conf) as dconn:
            step = "defining it there"
            try:
                ddom = dconn.defineXML(definition)
                step = "restoring it there"
                call = conn_.Call(lambda: dconn.restore(path))
                if not call.wait(wait):
                    return "unclear", f"the restore did not return within {wait:g}s"
                if call.error is None:
                    return "running", None
                raise call.error
            except libvirt.libvirtError as err:
                words = f"{step}: {err.get_error_message()}"
                if not conn_.lost_contact(err, dconn):
                    if step == "restoring it there":
                        try:
                            ddom.undefineFlags(conn_.UNDEFINE_KEEP)
                        except libvirt.libvirtError as err2:
                            # Not restored, but still defined there: the caller fences and
                            # drops it before the guest goes on here.
                            return "defined", f"{words}; {err2.get_error_message()}"
                    return "failed", words
    except CommandExecutionError as err:  # no connection: nothing reached the destination
        return "failed", str(err)
    # Lost contact: the destination may have done it all the same. Read it again.
    within = max(float(conf["abort_deadline"]), until - time.monotonic())
    seen = read_dest(uris, conf, uuid, within)
    return seen, f"{words} (lost contact; read again for up to {within:.0f}s: {seen})"


def restore_here(conn, path, source):
    """Restore the saved guest on this host and remove its save file; what happened, in words
    for the error, and whether it runs here."""
    try:
        conn.restore(path)
    except libvirt.libvirtError as err:
        return (f"could not restore it on {source} either: {err.get_error_message()}; its "
                f"memory is kept in {path}: virsh restore {path} on {source}"), False
    try:
        os.unlink(path)
    except OSError as err:
        return (f"restored running on {source}; its save file {path} could not be removed "
                f"({err.strerror}): remove it by hand, it holds the guest's memory"), True
    return f"restored running on {source}", True


def read_dest(uris, conf, uuid, within):
    """Where the destination's libvirtd has domain ``uuid`` now, asked on a new connection for
    up to ``within`` seconds: ``absent``, ``defined`` (shut off, no job), ``running``, or
    ``unclear`` (active but not running, a job on it, or no answer, all that time). A reading
    that is not definite is asked again until it is: a libvirtd restarted mid-restore first
    reports the restore's QEMU, active and paused, then the domain shut off once it is gone."""
    give_up = time.monotonic() + within
    while True:
        try:
            with conn_.dest_connection(uris["uri"], conf) as dconn:
                seen = _dest_state(dconn, uuid)
            if seen != "unclear":
                return seen
            why = "the domain there is active but not running, or has a job"
        except (libvirt.libvirtError, CommandExecutionError) as err:
            why = str(err)
        if time.monotonic() >= give_up:
            log.warning("vmigrate: cannot read the destination again: %s", why)
            return "unclear"
        time.sleep(1.0)


def _dest_state(dconn, uuid):
    """``absent``, ``defined``, ``running`` or ``unclear``: one reading of domain ``uuid``."""
    try:
        ddom = dconn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return "absent"
        raise
    if ddom.isActive():
        return "running" if ddom.state()[0] == libvirt.VIR_DOMAIN_RUNNING else "unclear"
    try:
        busy = conn_.job_of(ddom)
    except libvirt.libvirtError as err:
        # libvirt's answer for a domain that is not running: no job it reports
        # (a restore makes the domain active as soon as its QEMU starts).
        if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise
        busy = None
    return "unclear" if busy else "defined"


def undefine_dest(uris, conf, uuid):
    """Drop the definition a failed save migration left on the destination (None when done,
    else why not)."""
    try:
        with conn_.dest_connection(uris["uri"], conf) as dconn:
            ddom = dconn.lookupByUUIDString(uuid)
            if not ddom.isActive():
                ddom.undefineFlags(conn_.UNDEFINE_KEEP)
            return None
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        return err.get_error_message()
    except CommandExecutionError as err:
        return str(err)
