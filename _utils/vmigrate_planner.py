"""
Where VMs should go: the fleet planner behind evacuations, rebalancing and the choice of a
destination. A pure function of the fleet's facts (what each hypervisor's ``vmigrate.domains``
reported, the hosts in maintenance, the migrations in flight) and the placement rules; it asks
nobody and changes nothing, so a plan for 1,000 hypervisors is computed the same way as one for
the lab (``bench/planner.py``).

A hypervisor offers, from its pillar ``vmigrate:capacity`` (``vmigrate_conf.capacity``):
``memory_mib`` for guests (default: its memory less ``memory_reserve_mib``) and ``vcpus``
(its CPUs times ``cpu_allocation_ratio``). A guest takes its maximum memory and its vCPUs
while it is active (running or paused); a shut-off guest takes nothing until it starts.

The rules (master config ``vmigrate:placement``, :func:`rules`): ``anti_affinity`` groups
(their VMs never share a host), ``affinity`` groups (their VMs stay on one host: they move
together) and ``allowed`` hosts per VM name pattern. A host in maintenance, or that did not
answer, is never a destination. Every candidate considered is named with why it was chosen or
skipped. Plain Python; no Salt dunders.
"""

import fnmatch
import os
import runpy

from salt.exceptions import SaltInvocationError

(names_,) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "vmigrate_imports.py"))["siblings"](__file__,
                                                                            "vmigrate_names")

# Rebalancing stops once the spread of memory use (the most used host's fraction less the
# least used one's) is at most this.
THRESHOLD = 0.10


def _patterns(value, where):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value \
            or not all(isinstance(p, str) and p.strip() for p in value):
        raise SaltInvocationError(f"master config vmigrate:placement:{where} {value!r}: a list "
                                  "of VM names or patterns (web*, db-?)")
    return list(value)


def rules(conf):
    """The placement rules from master config ``vmigrate:placement`` (``conf``), checked:
    ``anti_affinity`` and ``affinity`` ({group: [VM names or patterns]}), ``allowed`` ({VM
    pattern: [host patterns]}) and ``threshold`` (a fraction, rebalancing's target spread)."""
    conf = conf or {}
    if not isinstance(conf, dict):
        raise SaltInvocationError("master config vmigrate:placement: a mapping")
    unknown = set(conf) - {"anti_affinity", "affinity", "allowed", "threshold"}
    if unknown:
        raise SaltInvocationError(f"master config vmigrate:placement: unknown key(s) "
                                  f"{', '.join(sorted(unknown))} (anti_affinity, affinity, "
                                  "allowed, threshold)")
    out = {"anti_affinity": {}, "affinity": {}, "allowed": {}}
    for kind in ("anti_affinity", "affinity"):
        groups = conf.get(kind) or {}
        if not isinstance(groups, dict):
            raise SaltInvocationError(f"master config vmigrate:placement:{kind}: a mapping of "
                                      "group names to lists of VMs")
        for group, members in groups.items():
            out[kind][str(group)] = _patterns(members, f"{kind}:{group}")
    allowed = conf.get("allowed") or {}
    if not isinstance(allowed, dict):
        raise SaltInvocationError("master config vmigrate:placement:allowed: a mapping of VM "
                                  "patterns to lists of host patterns")
    for pattern, hosts in allowed.items():
        out["allowed"][str(pattern)] = _patterns(hosts, f"allowed:{pattern}")
    out["threshold"] = fraction(conf.get("threshold", THRESHOLD), "master config "
                                "vmigrate:placement:threshold")
    return out


def fraction(value, where):
    """``value`` if it is a number in 0..1, else refused naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SaltInvocationError(f"{where} {value!r}: a fraction of a host's memory, 0..1 "
                                  "(0.1 is ten percentage points)")
    return float(value)


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _matching(pattern, names, known):
    """The VMs of ``names`` that ``pattern`` names: a plain name is looked up, a pattern
    matched once over the sorted list (a fleet of 20,000 VMs has few patterns)."""
    if not any(c in pattern for c in "*?["):
        return [pattern] if pattern in known else []
    return fnmatch.filter(names, pattern)


def _members(groups, names, known):
    """(group, [its VMs]) for each group of ``groups`` ({group: [names or patterns]})."""
    for group, patterns in groups.items():
        vms = set()
        for pattern in patterns:
            vms.update(_matching(pattern, names, known))
        yield group, sorted(vms)


class Fleet:
    """The fleet's facts, as the planner changes them while it plans: ``hosts`` ({host:
    {answered, maintenance, memory_mib, vcpus, used_mib, used_vcpus, incoming,
    max_incoming}}) and ``vms`` ({vm: {host, state, mode, memory_mib, vcpus, active}});
    ``left`` names the VMs nothing may plan for, and why."""

    def __init__(self, hosts, vms, left=None, split=None):
        self.hosts, self.vms, self.left = hosts, vms, dict(left or {})
        self.split = split or {}  # {vm: [hosts]} of a VM found on several hosts
        self.on = {h: set() for h in hosts}
        for host in hosts.values():
            # What a VM found on several hosts takes there: it is planned for by no one.
            host["used_mib"] += host.get("reserved_mib", 0)
            host["used_vcpus"] += host.get("reserved_vcpus", 0)
        for vm, info in vms.items():
            self.on.setdefault(info["host"], set()).add(vm)
            if info["active"]:
                host = hosts.get(info["host"])
                if host is not None:
                    host["used_mib"] += info["memory_mib"]
                    host["used_vcpus"] += info["vcpus"]

    def copy(self):
        hosts = {h: dict(i, used_mib=0, used_vcpus=0) for h, i in self.hosts.items()}
        return Fleet(hosts, {v: dict(i) for v, i in self.vms.items()}, self.left, self.split)

    def move(self, vm, dest):
        info = self.vms[vm]
        src = info["host"]
        self.on[src].discard(vm)
        self.on.setdefault(dest, set()).add(vm)
        if info["active"]:
            for host, sign in ((self.hosts.get(src), -1), (self.hosts[dest], 1)):
                if host is not None:
                    host["used_mib"] += sign * info["memory_mib"]
                    host["used_vcpus"] += sign * info["vcpus"]
        info["host"] = dest

    def load(self, host):
        """The fraction of ``host``'s guest memory its active guests take."""
        info = self.hosts[host]
        return info["used_mib"] / info["memory_mib"] if info["memory_mib"] else 1.0


def mode_of(info):
    """(mode, None) for what moves a domain (``live`` for an active one, ``offline`` for a
    shut-off persistent one), or (None, why) when nothing may move it."""
    if info["state"] == "paused" and info.get("reason") in names_.MIGRATION_PAUSE:
        return None, f"paused ({info['reason']}): a migration of it is unfinished"
    if info["state"] in names_.ACTIVE:
        return "live", None
    if info.get("persistent"):
        return "offline", None
    return None, f"{info['state']} and transient: nothing to move"


def facts(listings, maintenance=(), incoming=None, max_incoming=2):
    """A :class:`Fleet` from the hypervisors' ``vmigrate.domains`` answers (``listings``:
    {host: answer, or None for a host that did not answer}), the hosts in ``maintenance``
    and the migrations arriving on each (``incoming``: {host: count}) within
    ``max_incoming``. A VM found on two hosts is left out of every plan (reconcile it)."""
    incoming = incoming or {}
    hosts, vms, left, seen = {}, {}, {}, {}
    for host, ret in sorted(listings.items()):
        cap = (ret or {}).get("capacity") or {}
        hosts[host] = {"answered": ret is not None, "maintenance": host in maintenance,
                       "memory_mib": int(cap.get("memory_mib") or 0),
                       "vcpus": float(cap.get("vcpus") or 0), "used_mib": 0, "used_vcpus": 0,
                       "reserved_mib": 0, "reserved_vcpus": 0, "planned": 0,
                       "incoming": int(incoming.get(host, 0)), "max_incoming": max_incoming}
        for name, info in ((ret or {}).get("domains") or {}).items():
            seen.setdefault(name, []).append(host)
            mode, why = mode_of(info)
            vms[name] = {"host": host, "state": info["state"], "mode": mode,
                         "memory_mib": int(info.get("memory_mib") or 0),
                         "vcpus": int(info.get("vcpus") or 0),
                         "active": info["state"] in names_.ACTIVE}
            if why:
                left[name] = why
    split = {name: where for name, where in seen.items() if len(where) > 1}
    for name, where in split.items():
        left[name] = (f"on several hypervisors ({', '.join(where)}): salt-run "
                      f"vmigrate.reconcile {name} first")
        vms.pop(name, None)
        for host in where:
            info = listings[host]["domains"][name]
            if info["state"] in names_.ACTIVE:
                hosts[host]["reserved_mib"] += int(info.get("memory_mib") or 0)
                hosts[host]["reserved_vcpus"] += int(info.get("vcpus") or 0)
    return Fleet(hosts, vms, left, split)


class Rules:
    """The rules applied to one fleet: each VM's groups, computed once."""

    def __init__(self, rules_, fleet):
        self.rules = rules_
        self.anti, self.affine, self.allowed = {}, {}, {}
        self.anti_hosts = {}  # group: {host: members there}
        names = sorted(fleet.vms)
        for group, vms in _members(rules_["anti_affinity"], names, fleet.vms):
            for vm in vms:
                self.anti.setdefault(vm, []).append(group)
                self.anti_hosts.setdefault(group, {}).setdefault(
                    fleet.vms[vm]["host"], set()).add(vm)
        for group, vms in _members(rules_["affinity"], names, fleet.vms):
            for vm in vms:
                if vm in self.affine:
                    raise SaltInvocationError(
                        f"vm {vm} is in affinity groups {self.affine[vm]} and {group}: a VM "
                        "stays with one group; merge them")
                self.affine[vm] = group
        for pattern, hosts in rules_["allowed"].items():
            for vm in _matching(pattern, names, fleet.vms):
                self.allowed.setdefault(vm, []).append(hosts)
        self.members = {}
        for vm, group in self.affine.items():
            self.members.setdefault(group, []).append(vm)
        for group, members in self.members.items():
            for vm in members:
                clash = sorted(set(self.anti.get(vm, ())) & {
                    g for other in members if other != vm for g in self.anti.get(other, ())})
                if clash:
                    raise SaltInvocationError(
                        f"affinity group {group} keeps {', '.join(sorted(members))} together "
                        f"and anti-affinity group {clash[0]} keeps them apart: fix "
                        "vmigrate:placement")

    def unit(self, fleet, vm):
        """The VMs that move with ``vm``: it and its affinity group's members on its host."""
        group = self.affine.get(vm)
        if group is None:
            return [vm]
        host = fleet.vms[vm]["host"]
        return sorted(m for m in self.members[group]
                      if fleet.vms[m]["host"] == host and m not in fleet.left)

    def moved(self, fleet, vm, src, dest):
        for group in self.anti.get(vm, ()):
            hosts = self.anti_hosts[group]
            hosts.get(src, set()).discard(vm)
            hosts.setdefault(dest, set()).add(vm)

    def why_not(self, fleet, unit, dest):
        """Why the VMs of ``unit`` (one host's) may not go to ``dest``: None, or (code,
        words), the code one of :data:`SKIPS`."""
        src = fleet.vms[unit[0]]["host"]
        host = fleet.hosts.get(dest)
        if dest == src:
            return "own", "its own host"
        if host is None or not host["answered"]:
            return "silent", "did not answer"
        if host["maintenance"]:
            return "maintenance", "in maintenance"
        for vm in unit:
            for hosts in self.allowed.get(vm, ()):
                if not _matches(dest, hosts):
                    return "allowed", f"{vm} may run only on {', '.join(hosts)}"
            for group in self.anti.get(vm, ()):
                there = self.anti_hosts[group].get(dest)
                if there:
                    return "anti_affinity", (f"anti-affinity group {group}: "
                                             f"{', '.join(sorted(there))} runs there")
        group = self.affine.get(unit[0])
        if group is not None:
            others = {fleet.vms[m]["host"] for m in self.members[group] if m not in unit}
            if others and dest not in others:
                return "affinity", f"affinity group {group} is on {', '.join(sorted(others))}"
        memory = sum(fleet.vms[vm]["memory_mib"] for vm in unit if fleet.vms[vm]["active"])
        vcpus = sum(fleet.vms[vm]["vcpus"] for vm in unit if fleet.vms[vm]["active"])
        free = host["memory_mib"] - host["used_mib"]
        if memory > free:
            return "memory", f"needs {memory} MiB, {max(free, 0)} MiB free of {host['memory_mib']}"
        if vcpus and host["used_vcpus"] + vcpus > host["vcpus"]:
            return "vcpus", (f"needs {vcpus} vCPU(s), "
                             f"{max(host['vcpus'] - host['used_vcpus'], 0):g} left of "
                             f"{host['vcpus']:g}")
        return None


def _score(fleet, unit, dest):
    """Lower is better: a host whose incoming slots are free now (migrations in flight), then
    the least used after the move, then the fewest moves to it, in flight or planned."""
    host = fleet.hosts[dest]
    memory = sum(fleet.vms[vm]["memory_mib"] for vm in unit if fleet.vms[vm]["active"])
    after = (host["used_mib"] + memory) / host["memory_mib"] if host["memory_mib"] else 1.0
    return (host["incoming"] >= host["max_incoming"], round(after, 6),
            host["incoming"] + host["planned"], dest)


def candidates(fleet, checker, unit, hosts=None):
    """Every host considered for ``unit`` (``hosts``, default all but its own), best first:
    ``[{host, ok, skip, why, load_after}]``: ``skip`` the code of why a host was skipped
    (:data:`SKIPS`), ``why`` the words, or why it was chosen (the first ``ok``)."""
    out = []
    for dest in (hosts if hosts is not None else fleet.hosts):
        if dest == fleet.vms[unit[0]]["host"]:
            continue
        skip = checker.why_not(fleet, unit, dest)
        entry = {"host": dest, "ok": skip is None, "skip": skip and skip[0],
                 "why": skip and skip[1]}
        if skip is None:
            score = _score(fleet, unit, dest)
            entry["load_after"] = round(score[1], 3)
            entry["key"] = score
        out.append(entry)
    out.sort(key=lambda e: (not e["ok"], e.get("key", ()), e["host"]))
    for entry in out:
        entry.pop("key", None)
    if out and out[0]["ok"]:
        best = fleet.hosts[out[0]["host"]]
        busy = best["incoming"] >= best["max_incoming"]
        out[0]["why"] = ("chosen: the least used after the move"
                         + (" (its incoming slots are taken now: it waits for one)" if busy else ""))
    return out


def _apply(fleet, checker, unit, dest):
    for vm in unit:
        src = fleet.vms[vm]["host"]
        fleet.move(vm, dest)
        checker.moved(fleet, vm, src, dest)
    fleet.hosts[dest]["planned"] += len(unit)


def evacuation(fleet, rules_, host, targets=None, explain=True):
    """The plan that empties ``host``: ``moves`` ([{vm, mode, dest}], in order; an affinity
    group's members one after another to one host), ``left`` ({vm: why}: nothing may move
    it, or no host takes it) and, with ``explain``, ``candidates`` ({vm: candidates}). The
    largest guests are placed first. ``targets``: the hosts it may go to (default: all)."""
    fleet = fleet.copy()
    fleet.hosts[host]["maintenance"] = True
    checker = Rules(rules_, fleet)
    moves, left, why = [], {}, {}
    mine = sorted((vm for vm in fleet.on.get(host, ()) if vm not in fleet.left),
                  key=lambda v: (-fleet.vms[v]["memory_mib"], v))
    done = set()
    for vm in mine:
        if vm in done:
            continue
        unit = checker.unit(fleet, vm)
        done.update(unit)
        found = candidates(fleet, checker, unit, targets)
        if explain:
            for member in unit:
                why[member] = found
        if not found or not found[0]["ok"]:
            reasons = "; ".join(f"{c['host']}: {c['why']}" for c in found[:8]) \
                or "no other host"
            for member in unit:
                left[member] = f"no host takes it ({reasons})"
            continue
        dest = found[0]["host"]
        for member in unit:
            moves.append({"vm": member, "mode": fleet.vms[member]["mode"], "dest": dest})
        _apply(fleet, checker, unit, dest)
    for vm in sorted(fleet.on.get(host, ())):
        if vm in fleet.left:
            left[vm] = fleet.left[vm]
    for vm, hosts in fleet.split.items():
        if host in hosts:
            left[vm] = fleet.left[vm]
    out = {"moves": moves, "left": left}
    if explain:
        out["candidates"] = why
    return out


def spread(fleet, hosts=None):
    """(spread, {host: load}) of the hosts that may hold guests: answered, not in
    maintenance, with memory for guests."""
    loads = {h: round(fleet.load(h), 4) for h in (hosts or fleet.hosts)
             if fleet.hosts[h]["answered"] and not fleet.hosts[h]["maintenance"]
             and fleet.hosts[h]["memory_mib"]}
    return (round(max(loads.values()) - min(loads.values()), 4) if loads else 0.0), loads


def balance(fleet, rules_, max_moves=None, threshold=None, width=8):
    """The moves that even out memory use: while the spread is above ``threshold`` (default:
    the rules'), the move of a guest (with its affinity group) from the most used host that
    most lowers the sum of squared loads, to one of the ``width`` least used hosts that take
    it. Stops at ``max_moves``, or when no move lowers it: a plan run again on the fleet it
    leaves makes no move. Returns ``moves`` ([{vm, mode, dest, source}]), ``spread_before``,
    ``spread_after``, ``loads_before``, ``loads_after`` and ``stopped`` (why it ended)."""
    fleet = fleet.copy()
    checker = Rules(rules_, fleet)
    threshold = rules_["threshold"] if threshold is None else threshold
    before, loads_before = spread(fleet)
    moves, stopped = [], None
    while True:
        now, loads = spread(fleet)
        if now <= threshold:
            stopped = f"spread {now:.3f} within the threshold {threshold:g}"
            break
        if max_moves is not None and len(moves) >= max_moves:
            stopped = f"max_moves {max_moves} reached"
            break
        src = max(loads, key=lambda h: (loads[h], h))
        lightest = sorted((h for h in loads if h != src), key=lambda h: (loads[h], h))
        best, tried_units = None, set()
        budget = None if max_moves is None else max_moves - len(moves)
        for vm in sorted(fleet.on.get(src, ())):
            info = fleet.vms[vm]
            if vm in fleet.left or not info["active"] or info["mode"] != "live":
                continue
            unit = checker.unit(fleet, vm)
            if tuple(unit) in tried_units or (budget is not None and len(unit) > budget) \
                    or any(fleet.vms[m]["mode"] is None for m in unit):
                continue  # a group is tried once; never past max_moves; all of it movable
            tried_units.add(tuple(unit))
            memory = sum(fleet.vms[m]["memory_mib"] for m in unit if fleet.vms[m]["active"])
            tried = 0
            for dest in lightest:
                if tried >= width:
                    break
                if checker.why_not(fleet, unit, dest):
                    continue
                tried += 1
                cs, cd = fleet.hosts[src]["memory_mib"], fleet.hosts[dest]["memory_mib"]
                ls, ld = fleet.load(src), fleet.load(dest)  # exact: the rounded ones oscillate
                gain = (ls - memory / cs) ** 2 + (ld + memory / cd) ** 2 - ls ** 2 - ld ** 2
                if gain < -1e-6 and (best is None or (gain, unit, dest) < best):
                    best = (gain, unit, dest)
        if best is None:
            stopped = f"no move lowers the spread ({now:.3f}) further"
            break
        _gain, unit, dest = best
        for vm in unit:
            moves.append({"vm": vm, "mode": fleet.vms[vm]["mode"], "dest": dest, "source": src})
        _apply(fleet, checker, unit, dest)
    after, loads_after = spread(fleet)
    return {"moves": moves, "spread_before": before, "spread_after": after,
            "loads_before": loads_before, "loads_after": loads_after, "stopped": stopped}


# Why a host is not a destination, by code: what each means.
SKIPS = {
    "own": "the host the guest is on",
    "silent": "the hypervisor did not answer",
    "maintenance": "the host is in maintenance (salt-run vmigrate.maintenance)",
    "allowed": "placement:allowed does not list it for this VM",
    "anti_affinity": "a VM of one of its anti-affinity groups runs there",
    "affinity": "its affinity group is on another host",
    "memory": "not enough guest memory left (pillar vmigrate:capacity)",
    "vcpus": "not enough vCPUs left (pillar vmigrate:capacity:cpu_allocation_ratio)",
}
# What a migration asked by name is refused for: the rules. Capacity is the destination's own
# precheck; an affinity group may be moved one member at a time.
RULES = ("allowed", "anti_affinity")


def violations(rules_, fleet, vm, dest):
    """(code, words) when the rules forbid ``vm`` on ``dest`` (a migration asked by name),
    else None."""
    if vm not in fleet.vms or dest not in fleet.hosts:
        return None
    skip = Rules(rules_, fleet).why_not(fleet, [vm], dest)
    return skip if skip and skip[0] in RULES else None
