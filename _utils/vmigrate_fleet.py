"""
The fleet as the master reads it for a plan: one broadcast of ``vmigrate.domains`` to the
hypervisors, the hosts in maintenance (``vmigrate_maintenance``), the migrations in flight to
each host (``vmigrate_locks.in_flight``) and the caps, made into the planner's facts
(``vmigrate_planner.facts``). Also the checks a migration asked by name passes against the
same facts: its destination not in maintenance, and within the placement rules.

Plain functions over the master's ``opts``; no Salt dunders.
"""

import os
import runpy

bus_, decide_, locks_, maintenance_, planner_, settings_ = runpy.run_path(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_bus", "vmigrate_decide", "vmigrate_locks", "vmigrate_maintenance",
    "vmigrate_planner", "vmigrate_settings")


def incoming(opts):
    """{host: migrations in flight to it}, from the master's in-flight records."""
    out = {}
    seen = set()
    for record in locks_.in_flight(opts).values():
        key = record.get("jid")
        if key in seen or not record.get("dest"):
            continue  # a VM and its dname share one record
        seen.add(key)
        out[record["dest"]] = out.get(record["dest"], 0) + 1
    return out


def listings(opts, client):
    """({host: its vmigrate.domains answer, or None}, {host: why it is None})."""
    conf = settings_.settings(opts)
    _jid, got, expected = bus_.gather(client, conf["tgt"], conf["tgt_type"], "vmigrate.domains",
                                      [], {}, conf["query_timeout"])
    out, silent = {}, {}
    for host in sorted(expected):
        out[host] = decide_.listing(got.get(host))
        if out[host] is None:
            silent[host] = (f"did not answer within {conf['query_timeout']:g}s"
                            if host not in got else "answered with an error")
    return out, silent


def facts(opts, answers):
    """The planner's :class:`~vmigrate_planner.Fleet` from ``answers`` (see
    :func:`listings`), with maintenance, incoming migrations and the caps."""
    return planner_.facts(answers, maintenance_.hosts(opts), incoming(opts),
                          settings_.caps(opts)["max_incoming"])


def read(opts, client=None):
    """(fleet, answers, silent): one fresh reading of every hypervisor."""
    if client is None:
        with bus_.local_client(opts) as opened:
            return read(opts, opened)
    answers, silent = listings(opts, client)
    return facts(opts, answers), answers, silent


def maintenance_refusal(opts, dest):
    """Why ``dest`` may not receive a migration because it is in maintenance, or None."""
    info = maintenance_.hosts(opts).get(dest)
    if info is None:
        return None
    why = f" ({info['reason']})" if info.get("reason") else ""
    return (f"dest {dest} is in maintenance{why} since {info.get('since')}, set by "
            f"{info.get('by', 'an operator')}: it receives no migration; salt-run "
            f"vmigrate.maintenance {dest} off ends it")


def rules_refusal(opts, where, vm, dest, rules=None):
    """Why the placement rules (``rules``, default the master's) forbid ``vm`` on ``dest``,
    from a locate result's ``domain_names``, or None."""
    rules = settings_.placement(opts) if rules is None else rules
    if not (rules["anti_affinity"] or rules["allowed"]):
        return None
    names = where.get("domain_names") or {}
    answers = {h: {"domains": {n: {"state": "running", "persistent": True} for n in vms}}
               for h, vms in names.items()}
    source = next(iter(where["hosts"]), None)
    if source is None:
        return None
    # A destination that did not answer (force): its domains are unknown, its name is not.
    answers.setdefault(dest, {"domains": {}})
    fleet = planner_.facts(answers)
    if vm not in fleet.vms:
        return None
    skip = planner_.violations(rules, fleet, vm, dest)
    if skip is None:
        return None
    return f"placement rule: {vm} may not run on {dest}: {skip[1]} (master config " \
           "vmigrate:placement)"
