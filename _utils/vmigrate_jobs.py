"""
What runs now, for the master: the migrations libvirt runs on each hypervisor beside the
requests the master holds; a job an earlier request left in flight (nothing may act on its VM
until its end is seen on the source); aborting a migration wherever it goes out from;
following one started elsewhere; and where a person at ``salt-run`` sees progress lines.

Only :func:`abort` changes a domain; :func:`check_in_flight` drops the in-flight records whose
job it sees ended. No Salt dunders.
"""

import contextlib
import json
import logging
import os
import runpy
import sys

bus_, locks_, outcome_, settings_, validate_ = runpy.run_path(os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](__file__, "vmigrate_bus",
    "vmigrate_locks", "vmigrate_outcome", "vmigrate_settings", "vmigrate_validate")
REFUSED = outcome_.REFUSED  # words for a person: the status decides

log = logging.getLogger(__name__)


def _job_runs(client, record, wait):
    """Whether the job of in-flight ``record`` may still run on its source, and why: Salt's
    job there (``saltutil.find_job``) or libvirt's job for the VM (``vmigrate.jobs``); a source
    that does not answer may still run it."""
    source, jid, vm = record.get("source"), record.get("jid"), record.get("vm")
    _jid, got, _ = bus_.gather(client, [source], "list", "saltutil.find_job", [jid], {}, wait)
    data = got.get(source)
    if not data or data.get("retcode", 0) != 0 or not isinstance(data.get("return"), dict):
        return True, f"{source} did not answer whether it still runs"
    if data["return"]:
        return True, f"Salt's job {jid} still runs on {source}"
    _jid, got, _ = bus_.gather(client, [source], "list", "vmigrate.jobs", [], {}, wait)
    data = got.get(source) or {}
    value = data.get("return")
    if data.get("retcode", 1) != 0 or not isinstance(value, dict) \
            or not isinstance(value.get("jobs"), dict):
        return True, f"{source} did not answer which libvirt jobs it runs"
    if vm in value["jobs"]:
        return True, (f"libvirt on {source} still runs a {value['jobs'][vm].get('operation')} "
                      f"job for {vm}")
    return False, None


def check_in_flight(opts, client, names, wait):
    """Refuse (Busy) while a job an earlier request sent for ``names`` (a VM, and the name
    option dname gives it) may still run on its source; a record whose job is seen ended
    there is dropped. Returns the records dropped."""
    cleared = []
    for name in names:
        record = locks_.in_flight(opts, name)
        if not record:
            continue
        if "unreadable" in record:
            raise locks_.Busy(
                f"vm {name}: its in-flight record cannot be read ({record['unreadable']}): "
                f"nothing may act on it until salt-run vmigrate.jobs shows no job of it; then "
                f"remove inflight-{name}.json in the master's vmigrate lock directory")
        runs, why = _job_runs(client, record, wait)
        if runs:
            vm = record.get("vm", name)
            raise locks_.Busy(
                f"vm {name} is in flight: {locks_.describe_in_flight(record)}, and its end is "
                f"not seen yet ({why}), {REFUSED}: acting now could stop or drop a copy that "
                f"migration still uses; follow it with salt-run vmigrate.watch {vm}, or stop "
                f"it with salt-run vmigrate.abort {vm}")
        locks_.clear_in_flight(opts, [name], record.get("jid"))
        log.warning("vmigrate: %s: the in-flight %s has ended on its source", name,
                    locks_.describe_in_flight(record))
        cleared.append(record)
    return cleared


def terminal_report(opts):
    """Where progress lines go for the person who typed ``salt-run ...``: standard error, so
    ``--out json`` stays clean. None when not run from that CLI (the reactor's and salt-api's
    runs: there the minion's progress events on the bus are the record)."""
    if opts.get("__cli") != "salt-run" or opts.get("quiet"):
        return None

    def report(line):
        sys.stderr.write(f"[vmigrate] {line}\n")
        sys.stderr.flush()

    return report


def _held_inodes():
    """Inodes with a flock held now, from /proc/locks (read: nothing is taken)."""
    held = set()
    with contextlib.suppress(OSError):
        with open("/proc/locks", encoding="ascii") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK":
                    held.add(int(fields[5].rsplit(":", 1)[-1]))
    return held


def requests(opts):
    """The migration requests master processes hold now: {vm: record (route, trigger, pid,
    since)}, read from the lock files without taking any."""
    directory = locks_.lock_dir(opts)
    held = _held_inodes()
    out = {}
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        with contextlib.suppress(OSError, ValueError):
            if not entry.startswith("vm-") or os.stat(path).st_ino not in held:
                continue
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            record = json.loads(text) if text.strip() else {}
            if record.get("vm", entry[3:]) == entry[3:]:  # not a new name's (option dname)
                out[entry[3:]] = record
    return out


def jobs(opts):
    """What migrates now: libvirt's jobs on every hypervisor that answered (one broadcast of
    ``vmigrate.jobs``) beside the requests the master holds. Returns ``jobs`` (a list of
    {vm, host, operation, percent, ...; route and trigger when a request holds the VM}),
    ``requests``, ``unaccounted`` and ``comment`` (a line per job)."""
    conf = settings_.settings(opts)
    with bus_.local_client(opts) as client:
        _jid, got, expected = bus_.gather(client, conf["tgt"], conf["tgt_type"], "vmigrate.jobs",
                                     [], {}, conf["query_timeout"])
    held = requests(opts)
    out, unaccounted = [], {}
    for host in sorted(expected):
        data = got.get(host) or {}
        value = data.get("return")
        if data.get("retcode", 1) != 0 or not isinstance(value, dict) \
                or not isinstance(value.get("jobs"), dict):
            unaccounted[host] = str(value) if host in got else "no answer"
            continue
        for vm, info in sorted(value["jobs"].items()):
            entry = dict(info, vm=vm, host=host)
            record = held.get(vm) or {}
            if record.get("source"):
                entry.update(route=f"{record['source']} -> {record['dest']}",
                             trigger=record.get("trigger"))
            out.append(entry)
    lines = [f"{j['vm']} on {j['host']}: {j['operation']}"
             + (f" {j['route']}" if j.get("route") else "")
             + (f", {j['percent']:.0f}%" if j.get("percent") is not None else "")
             + (f", {j['elapsed_ms'] / 1000:.1f}s" if j.get("elapsed_ms") else "")
             for j in out]
    lines += [f"{vm}: requested {r.get('source')} -> {r.get('dest')} by {r.get('trigger')}, "
              "no libvirt job (yet)" for vm, r in held.items()
              if not any(j["vm"] == vm for j in out)]
    lines += [f"{h}: could not ask ({why})" for h, why in unaccounted.items()]
    flying = locks_.in_flight(opts)
    lines += [f"{vm}: in flight, {locks_.describe_in_flight(r)}: its end not seen yet (a "
              "request or reconcile checks it, and is refused while it runs)"
              for vm, r in flying.items() if "unreadable" not in r]
    return {"jobs": out, "requests": held, "in_flight": flying, "unaccounted": unaccounted,
            "comment": "\n".join(lines) or "no migration runs now"}


def abort(opts, vm):
    """Abort the migration of ``vm`` wherever it goes out from (each hypervisor is asked; the
    one sending it stops it): the domain stays on its source, as it was. Returns ``result``
    (True when one was aborted), ``comment``, ``hosts`` (each answer)."""
    validate_.vm_name(vm)
    conf = settings_.settings(opts)
    with bus_.local_client(opts) as client:
        _jid, got, expected = bus_.gather(client, conf["tgt"], conf["tgt_type"], "vmigrate.abort",
                                     [vm], {}, conf["query_timeout"] + 30)
    answers, aborted, postcopy, running, unanswered, other = {}, [], [], [], [], []
    for host in sorted(expected):
        data = got.get(host) or {}
        value = data.get("return")
        if isinstance(value, dict) and data.get("retcode", 0) == 0:
            answers[host] = value.get("comment")
            outcome = value.get("outcome", "aborted" if value.get("aborted") else "none")
            if outcome == "aborted":
                aborted.append(host)
            elif outcome == "postcopy":
                postcopy.append(host)
            elif outcome == "running":
                other.append(host)
            if (value.get("state") or {}).get("state") == "running":
                running.append(host)
        else:
            answers[host] = str(value) if host in got else "no answer"
            unanswered.append(host)
    if postcopy:
        # Not stopped, and not stoppable: say where the guest runs, from the answers.
        where = (f"it runs on {', '.join(running)}" if running else
                 "it runs on its destination")
        comment = "; ".join(answers[h] for h in postcopy) + f" ({where})"
    elif aborted or other:
        comment = "; ".join(answers[h] for h in aborted + other)
    else:
        comment = f"no migration of {vm} runs now (asked {', '.join(sorted(expected))})"
    if unanswered and not aborted:
        comment += f"; {', '.join(unanswered)} did not answer"
    out = {"result": bool(aborted) and not (postcopy or other), "name": vm, "comment": comment,
           "hosts": answers, "running_on": running}
    if postcopy:
        out["postcopy"] = postcopy
    bus_.fire(opts, f"vmigrate/{vm}/abort", out)
    return out


def watch(opts, vm, timeout=600, report=None):
    """Follow the migration of ``vm``, wherever it was started: ``report(line)`` for each
    progress event, until its ``vmigrate/<vm>/result`` or ``timeout`` seconds. Returns
    ``result`` (the migration's, None when none ended meanwhile), ``comment``, ``last``."""
    validate_.vm_name(vm)
    validate_.seconds(timeout, "timeout", allow_none=False)
    lines = []

    def keep(line):
        lines.append(line)
        if report is not None:
            report(line)

    with bus_.Relay(opts, vm, None, keep, stop_on_result=True) as relay:
        ended = relay.wait(timeout)
        last = relay.last
    if ended and isinstance(last, dict) and "status" in last:
        return {"result": bool(last.get("result")), "comment": last.get("comment"),
                "status": last.get("status"), "progress": lines}
    return {"result": None, "progress": lines,
            "comment": (f"no migration of {vm} ended within {timeout:g}s"
                        + ("" if lines else " (and none reported progress)"))}
