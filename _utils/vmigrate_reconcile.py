"""
Reconcile a domain: bring it to one running copy, defined on one host, by the rules of
``vmigrate_decide.repairs`` -- each step a ``vmigrate.repair`` on one minion, stopping at the
first that fails, and the outcome read again from every host. Never a disk, never a copy made.

A step acts on a copy only while it has the UUID the master read there; no Salt dunders.
"""

import os
import runpy

bus_, decide_, jobs_, locks_, settings_, validate_ = runpy.run_path(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](__file__,
    "vmigrate_bus", "vmigrate_decide", "vmigrate_jobs", "vmigrate_locks", "vmigrate_settings",
    "vmigrate_validate")


def reconcile(opts, vm, hosts=None, prefer=None, dry_run=False, dname=None):
    """Bring domain ``vm`` to one running copy, defined on one host (see
    ``vmigrate_decide.repairs``), holding its migration lock (Busy while a migration of it
    runs). ``dname``: the new name a migration of it was giving it (its copies under that name
    count, see ``vmigrate_decide.locate``).
    Returns ``result``, ``comment``, ``found`` (placement before), ``actions`` (each with its
    outcome) and ``now`` (placement after)."""
    validate_.vm_name(vm)
    if dname is not None:
        validate_.vm_name(dname, "dname")
    hosts = decide_.host_list(hosts)
    with locks_.hold(opts, vm, "reconcile", dname=dname):
        names = [vm, dname] if dname else [vm]
        if any(locks_.in_flight(opts, n) for n in names):
            with bus_.local_client(opts) as client:
                jobs_.check_in_flight(opts, client, names,
                                      settings_.settings(opts)["query_timeout"])
        return reconcile_held(opts, vm, hosts, prefer, dry_run, dname=dname)


def reconcile_held(opts, vm, hosts=None, prefer=None, dry_run=False, where=None, dname=None):
    """:func:`reconcile` with the lock already held by the caller (a migration settling what
    its failure left); ``where``: a placement the caller has just read from the master (never
    a minion's report), else ``hosts`` are asked now."""
    if where is None:
        where = decide_.locate(opts, vm, hosts, dname=dname)
    out = {"name": vm, "found": decide_.summary(where), "actions": []}
    actions, why = decide_.repairs(where, prefer)
    if why:
        return dict(out, result=False, comment=f"{vm}: {why}")
    if not actions:
        hint = ("" if where["hosts"] or dname else
                " (a copy a migration renamed is found with dname=<its new name>)")
        return dict(out, result=True,
                    comment=f"{vm} is consistent: {decide_.placement(where)}{hint}")
    if dry_run:
        out["actions"] = [{"host": h, "action": a, "done": None} for h, a in actions]
        return dict(out, result=None, comment=f"{vm} would be repaired: " + ", ".join(
            f"{a} on {h}" for h, a in actions))
    ok = True
    with bus_.local_client(opts) as client:
        for host, action in actions:
            # The copy by the name it has there, and only while it has the UUID read.
            info = where["hosts"][host]
            _jid, got, _ = bus_.gather(client, [host], "list", "vmigrate.repair",
                                       [info.get("name", vm), action],
                                       {"uuid": info.get("uuid")},
                                       settings_.settings(opts)["query_timeout"] + 30)
            data = got.get(host) or {}
            done = data.get("retcode", 1) == 0
            out["actions"].append({"host": host, "action": action, "done": done,
                                   "detail": data.get("return", "no answer")})
            if not done:
                ok = False
                break  # stop at the first failed step: the next assumed it
    after = decide_.locate(opts, vm, sorted(set(where["hosts"]) | set(hosts or ())),
                           dname=dname)
    out["now"] = decide_.summary(after)
    left, why = decide_.repairs(after, prefer)
    if ok and (left or why):
        ok = False
        out["actions"].append({"host": None, "action": "verify", "done": False,
                               "detail": why or f"still to do: {left}"})
    steps = ", ".join(f"{a['action']} on {a['host']}{'' if a['done'] else ' FAILED'}"
                      for a in out["actions"])
    return dict(out, result=ok, comment=f"{vm}: {steps}; now {decide_.placement(after)}")
