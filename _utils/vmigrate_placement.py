"""
The master's placement record: where each hypervisor's ``vmigrate`` beacon says each domain is,
kept from libvirt's own lifecycle events (``_beacons/vmigrate.py``), one file under the
master's cachedir, updated under a lock.

A record, not the truth a migration decides on. Beacon events reach the master through the
minions' batched event path, whose data Salt 3008.4 fires verbatim (see
``vmigrate_authz.py``): a minion can write any event under any hypervisor's name. So
``vmigrate_decide.locate`` still asks every hypervisor before anything moves; the record answers
"where is it, what happened to it, since when" without asking anyone (``salt-run
vmigrate.placement``), and an event that disagrees with its own tag is dropped.

Plain functions; no Salt dunders.
"""

import os
import re
import runpy
import time

names_, store_ = runpy.run_path(os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](__file__, "vmigrate_names",
                                                                    "vmigrate_store")

# The state a lifecycle event leaves the domain in on that host (None: not there any more).
AFTER = {"started": "running", "resumed": "running", "suspended": "paused",
         "stopped": "shutoff", "shutdown": "shutdown", "crashed": "crashed",
         "pmsuspended": "pmsuspended", "defined": "shutoff", "undefined": None}
_TAG_RE = re.compile(r"salt/beacon/([A-Za-z0-9_.-]+)/vmigrate/(domain/[a-z]+|resync|connection/lost)")


def _update(opts, change):
    def both(rec):
        rec.setdefault("vms", {})
        rec.setdefault("hosts", {})
        change(rec)

    return store_.update(store_.path(opts, "placement.json"), both)[0]


def record(opts, tag, data):
    """Take one beacon event into the record. Returns what was recorded, or why not."""
    match = _TAG_RE.fullmatch(tag or "")
    if not match or not isinstance(data, dict):
        return {"recorded": False, "why": f"not a vmigrate beacon event: {tag!r}"}
    host, kind = match[1], match[2]
    if data.get("host") != host or data.get("id", host) != host:
        return {"recorded": False, "why": f"event for {data.get('host')!r} under {host}'s tag"}
    when = data.get("time") if isinstance(data.get("time"), (int, float)) else time.time()

    def change(rec):
        hostrec = rec["hosts"].setdefault(host, {})
        hostrec["seen"] = when
        if kind == "connection/lost":
            hostrec["connected"] = False
            return
        hostrec["connected"] = True
        if kind == "resync":
            for vm in list(rec["vms"]):
                rec["vms"][vm].pop(host, None)
                if not rec["vms"][vm]:
                    del rec["vms"][vm]
            for vm, info in (data.get("domains") or {}).items():
                state = info.get("state")
                rec["vms"].setdefault(vm, {})[host] = {
                    "state": names_.state(state) if isinstance(state, int) else str(state),
                    "persistent": bool(info.get("persistent")), "uuid": info.get("uuid"),
                    "event": "resync", "detail": None, "since": when}
            return
        event = kind.split("/", 1)[1]
        vm = data.get("vm")
        if not isinstance(vm, str) or event not in AFTER:
            return
        entry = rec["vms"].setdefault(vm, {}).get(host, {})
        if entry.get("since", 0) > when:
            return  # an older event arriving late
        state = AFTER[event]
        # libvirt 11.3 emits no "undefined" event when a migration undefines the source
        # (VIR_MIGRATE_UNDEFINE_SOURCE: qemu_migration.c deletes the config silently), so a
        # domain stopped by its migration has left this host; a resync corrects the rare
        # migration that kept the source's definition.
        left = event == "stopped" and (data.get("detail") == "migrated"
                                       or not entry.get("persistent", True))
        if state is None or left:
            rec["vms"][vm].pop(host, None)  # undefined, or a transient domain that stopped
            if not rec["vms"][vm]:
                del rec["vms"][vm]
            return
        persistent = entry.get("persistent", event == "defined")
        if event == "defined":
            persistent = True
        rec["vms"][vm][host] = {"state": state, "persistent": persistent,
                                "uuid": data.get("uuid"), "event": event,
                                "detail": data.get("detail"), "since": when}

    _update(opts, change)
    return {"recorded": True, "host": host, "kind": kind, "vm": data.get("vm")}


def placement(opts, vm=None):
    """The record: ``vms`` ({vm: {host: state, persistent, event, detail, since}}) and
    ``hosts`` ({host: seen, connected}), or one VM's entry."""
    rec = _update(opts, lambda rec: None)
    if vm is not None:
        return {"name": vm, "hosts": rec["vms"].get(vm, {}), "hypervisors": rec["hosts"]}
    return rec
