"""
Where a domain is and what may be done about it, for the master: one broadcast of
``vmigrate.domains`` read into a placement (every copy of the domain, by name or UUID, and
the hosts that could not be read), the decision to migrate it, the check of a placement after
a move, and the repairs that bring it back to one copy.

Nothing here changes a domain: :func:`locate` only asks, and the rest are pure functions of
what it read. Plain Python over the master's ``opts``; no Salt dunders.
"""

import os
import runpy

from salt.exceptions import SaltInvocationError

bus_, names_, outcome_, settings_, validate_ = runpy.run_path(os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](__file__, "vmigrate_bus",
    "vmigrate_names", "vmigrate_outcome", "vmigrate_settings", "vmigrate_validate")

# Modes that move a running guest (live keeps it running; cold reboots it; save resumes it).
RUNNING_MODES = ("live", "cold", "save")
REFUSED = outcome_.REFUSED  # words for a person: the status decides


def host_list(hosts):
    """``hosts`` as a list of minion ids: a list, or one id or a comma-separated string as the
    CLI gives it (``hosts=host1``, ``hosts=host1,host2``); None stays None."""
    if hosts is None:
        return None
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise SaltInvocationError(f"hosts {hosts!r}: a minion id or a list of them")
    for host in hosts:
        validate_.minion_id(host, "hosts")
    return list(hosts)


def listing(data):
    """A valid ``vmigrate.domains`` return, or None."""
    if not isinstance(data, dict) or data.get("retcode", 0) != 0:
        return None
    ret = data.get("return")
    if not isinstance(ret, dict) or not isinstance(ret.get("domains"), dict):
        return None
    for info in ret["domains"].values():
        if not isinstance(info, dict) or not isinstance(info.get("state"), str) \
                or not isinstance(info.get("persistent"), bool):
            return None
    return ret


def locate(opts, vm, hosts=None, client=None, dname=None):
    """Where domain ``vm`` is: one broadcast of ``vmigrate.domains`` to the hypervisors (or to
    ``hosts``). A targeted hypervisor without a valid answer is ``unaccounted``: nothing is
    concluded about it (the domain may run there). A domain with ``vm``'s UUID under another
    name is a copy of it too (its info then has ``name``): expected when that name is
    ``dname``, the one a migration gives it (option dname), else nothing is repaired (see
    :func:`repairs`). With ``dname``, ``dname_taken`` ({host: uuid}) names the hosts where
    another domain has that name.

    Returns ``name``, ``running``, ``paused`` (with libvirt's reasons), ``defined``
    (persistent), ``hosts`` (per host: ``state``, ``reason``, ``persistent``, ``uuid``),
    ``hypervisors`` (those that answered), ``unaccounted`` ({host: why}), ``timeouts``
    (each answering host's migration timeout) and ``domain_names`` ({host: its domains}).
    ``client``: a LocalClient to use (one request opens one)."""
    hosts = host_list(hosts)
    if client is None:
        with bus_.local_client(opts) as opened:
            return locate(opts, vm, hosts, opened, dname)
    conf = settings_.settings(opts)
    wait = conf["query_timeout"]
    tgt, tgt_type = (sorted(hosts), "list") if hosts else (conf["tgt"], conf["tgt_type"])
    _jid, got, expected = bus_.gather(client, tgt, tgt_type, "vmigrate.domains", [], {}, wait)
    listings, unaccounted = {}, {}
    for host in sorted(expected | set(hosts or ())):
        if host not in expected:
            unaccounted[host] = "no such minion (no accepted key)"
        elif host not in got:
            unaccounted[host] = f"did not answer within {wait:g}s"
        elif listing(got[host]) is None:
            unaccounted[host] = f"answered with an error: {str(got[host].get('return'))[:400]}"
        else:
            listings[host] = listing(got[host])
    renamed = dname if dname != vm else None
    present, taken = _copies_of(vm, renamed, listings)
    where = _where(vm, present, listings, unaccounted)
    # Every answering host's domains by name: what the placement rules are checked against.
    where["domain_names"] = {h: sorted(ret["domains"]) for h, ret in listings.items()}
    if renamed:
        where.update(dname=renamed, dname_taken=taken)
    return where


def _copies_of(vm, dname, listings):
    """({host: info} of ``vm``'s copies, {host: uuid} of other domains named ``dname``). A
    copy is the domain named ``vm``, else one with the UUID of a domain named ``vm`` (of one
    named ``dname`` when no host has ``vm``: after the rename), whatever its name."""
    present = {h: ret["domains"][vm] for h, ret in listings.items() if vm in ret["domains"]}
    named = {h: ret["domains"][dname] for h, ret in listings.items()
             if dname and dname in ret["domains"]}
    uuids = {i.get("uuid") for i in (present or named).values()} - {None}
    taken = {}
    for host, ret in sorted(listings.items()):
        same = sorted(n for n, i in ret["domains"].items() if i.get("uuid") in uuids)
        if host not in present and same:
            name = dname if dname in same else same[0]
            present[host] = dict(ret["domains"][name], name=name)
        if host in named and present.get(host, {}).get("name") != dname:
            taken[host] = named[host].get("uuid")
    return present, taken


def _where(vm, present, listings, unaccounted):
    """A locate result from what each host holds (``present``: {host: domain info}),
    the hosts that answered (``listings``: {host: their answer}) and those that did not."""
    return {
        "name": vm,
        "running": sorted(h for h, i in present.items() if i["state"] in ("running", "blocked")),
        "paused": {h: i.get("reason", "unknown") for h, i in sorted(present.items())
                   if i["state"] == "paused"},
        "defined": sorted(h for h, i in present.items() if i["persistent"]),
        "hosts": present,
        "hypervisors": sorted(listings),
        "unaccounted": unaccounted,
        "timeouts": {h: (ret.get("timeout"), ret.get("abort_deadline", 30))
                     for h, ret in listings.items()},
        # What each host applies to a migration from it (pillar there): its option defaults
        # and cold's shutdown wait, as it reported them.
        "policies": {h: {"options": ret.get("options") if isinstance(ret.get("options"), dict)
                         else {}, "shutdown_timeout": ret.get("shutdown_timeout", 120)}
                     for h, ret in listings.items()},
        "host_uuids": {h: ret.get("host_uuid") for h, ret in listings.items()},
    }


def seen_by_source(vm, value, source, dest, dest_host_uuid):
    """The source minion's own reading of both hosts after a move (``copies`` in its
    return) as a locate result of those two, or None when it is missing or malformed, or
    was not read from the machine ``dest``'s minion runs on (``dest_host_uuid``, checked by
    the source before the move through the same connection)."""
    copies = value.get("copies") if isinstance(value, dict) else None
    if not isinstance(copies, dict) or not dest_host_uuid \
            or copies.get("dest_host_uuid") != dest_host_uuid \
            or not isinstance(copies.get("hosts"), dict) \
            or not isinstance(copies.get("unaccounted"), dict) \
            or not set(copies["hosts"]) | set(copies["unaccounted"]) <= {source, dest}:
        return None
    if listing({"return": {"domains": copies["hosts"]}}) is None:
        return None
    answered = {h: {} for h in (source, dest) if h not in copies["unaccounted"]}
    return _where(vm, dict(copies["hosts"]), answered, dict(copies["unaccounted"]))


def misplaced(after, source, dest, want, dname=None, uuid=None):
    """What is wrong with ``after`` (a locate result) for a move to ``dest`` that should
    leave the domain ``want`` (running, paused, shutoff) there, named ``dname`` if given, with
    ``uuid`` if given, and nothing on ``source``."""
    on_dest = after["hosts"].get(dest, {})
    problems = [f"could not verify {h} ({why})" for h, why in after["unaccounted"].items()]
    if dest not in after["unaccounted"] and (on_dest.get("state") != want
                                             or not on_dest.get("persistent")):
        problems.append(f"on {dest} it is {on_dest.get('state', 'absent')}"
                        f"{'' if on_dest.get('persistent', True) else ', not persistent'}")
    named = on_dest.get("name", after["name"])
    if on_dest and named != (dname or after["name"]):
        problems.append(f"on {dest} it is named {named}, not {dname or after['name']}")
    if on_dest and uuid and on_dest.get("uuid") != uuid:
        problems.append(f"on {dest} it has UUID {on_dest.get('uuid')}, not {uuid}")
    if source in after["hosts"]:
        problems.append(f"{source} still has it ({after['hosts'][source]['state']})")
    return problems


def placement(where, pair=()):
    """One line saying where the domain is, paused copies and unverified hosts named; ``pair``
    (source, dest) names the host to check before resuming a copy paused by a migration."""
    parts = []
    for host, info in sorted(where["hosts"].items()):
        state = info["state"]
        if state == "paused":
            state += f" ({info.get('reason', 'unknown')})"
            if info.get("reason") in names_.MIGRATION_PAUSE:
                other = next((h for h in pair if h != host), "the other host")
                state += f": do not resume before checking {other}"
        parts.append(f"{host}: {state}{'' if info['persistent'] else ', transient'}"
                     + (f" (as {info['name']})" if info.get("name") else ""))
    parts += [f"{host}: could not verify ({why})" for host, why in where["unaccounted"].items()]
    return "; ".join(parts) or "on no hypervisor that answered"


def summary(where):
    """The part of a locate result a migration's or a repair's result reports."""
    return {k: where[k] for k in ("running", "paused", "defined", "hosts", "unaccounted")}


def decide(where, vm, dest, force=False, already_ok=False, mode="live"):
    """From a locate result, returns (source, why): why is None to go ahead, else the reason
    to stop (source None when there is no single source). ``("", None)`` means it already
    runs on ``dest`` and ``already_ok`` says that is fine."""
    if where["unaccounted"] and not force:
        hosts = ", ".join(f"{h} ({why})" for h, why in where["unaccounted"].items())
        return None, (f"could not verify {hosts}: {vm} may run there, so nothing was moved; "
                      "bring the host back, or pass force=True to decide without it")
    present = sorted(where["hosts"])
    if not present:
        return None, (f"vm {vm} was not found on any hypervisor "
                      f"({', '.join(where['hypervisors']) or 'none answered'})")
    split = _postcopy_split(where)
    if split:
        return None, split
    if len(present) > 1:
        return None, (f"vm {vm} is on several hypervisors ({placement(where)}): refusing "
                      f"to migrate; salt-run vmigrate.reconcile {vm} repairs it to one copy "
                      "(dry_run=True shows how)")
    source = present[0]
    info = where["hosts"][source]
    if source == dest:
        if already_ok:
            return "", None
        return source, f"vm {vm} is already on {dest} ({info['state']}): nothing to migrate"
    if dest not in where["hypervisors"]:
        why = where["unaccounted"].get(dest, "not one of the hypervisors that answered")
        return source, f"dest {dest} is not an available hypervisor: {why}"
    uuids = where.get("host_uuids") or {}
    if uuids.get(source) and uuids.get(source) == uuids.get(dest):
        return source, (f"{source} and {dest} report the same libvirt host UUID "
                        f"{uuids[source]}: libvirt refuses a migration to what it takes for the "
                        f"same host, and their copies of {vm} could not be told apart. Fix: "
                        "give each hypervisor its own host_uuid in /etc/libvirt/libvirtd.conf "
                        "(a clone shares the SMBIOS UUID and /etc/machine-id), then restart "
                        "libvirtd")
    if info["state"] == "paused" and info.get("reason") in names_.MIGRATION_PAUSE:
        return source, (f"vm {vm} on {source} is paused by an unfinished migration "
                        f"({info['reason']}): do not resume it before checking the other host")
    active = info["state"] in names_.ACTIVE
    if mode in RUNNING_MODES and not active:
        return source, (f"vm {vm} is {info['state']} on {source}: a {mode} migration needs it "
                        "running; use mode=offline to move its definition")
    if mode == "offline" and active:
        return source, (f"vm {vm} is {info['state']} on {source}: an offline migration would "
                        "leave it running there; shut it down first or use mode=live")
    return source, None


def choose(opts, vm, dest, force=False, already_ok=False, mode="live", dname=None,
           client=None):
    """Locate ``vm`` and decide its move to ``dest`` (named ``dname`` there, option dname):
    what a migration and its plan both start from. Returns (where, source, why, there): the
    locate result; the source (None when there is no single one); the reason to stop, or None
    to go ahead; ``there`` True when it already is on ``dest`` as asked and ``already_ok``
    says that is fine. ``client``: the request's LocalClient (else one is opened)."""
    where = locate(opts, vm, client=client, dname=dname)
    source, why = decide(where, vm, dest, force, already_ok, mode)
    if source == "":
        why = _rename_refused(where, vm, dest, dname, here=True)
        if not why:
            return where, dest, None, True
        source = dest
    return where, source, why or _rename_refused(where, vm, source, dname), False


def _rename_refused(where, vm, source, dname, here=False):
    """Why option ``dname`` cannot rename ``vm`` (from ``source``), or None. ``here``: it is on
    the destination already, which is fine only under the new name."""
    if not dname or dname == vm:
        return None
    if here:
        if where["hosts"][source].get("name") == dname:
            return None
        return (f"vm {vm} is already on {source} under its own name, {REFUSED}: option dname "
                "renames on a migration, not in place (virsh domrename)")
    taken = where.get("dname_taken") or {}
    if taken:
        return (f"option dname {dname}: {', '.join(sorted(taken))} already "
                f"{'has' if len(taken) == 1 else 'have'} another domain of that name (UUID "
                f"{', '.join(sorted({str(u) for u in taken.values()}))}), {REFUSED}: choose "
                "another name")
    if where["hosts"][source].get("name"):
        return (f"vm {vm} is on {source} already named {dname}, {REFUSED}: migrate it by "
                "that name")
    return None


def _postcopy_split(where):
    """Why nothing may be stopped or resumed when a copy is in a post-copy migration, or
    None."""
    split = {h: i for h, i in sorted(where["hosts"].items())
             if i.get("reason") in names_.POSTCOPY}
    if not split:
        return None
    vm = where.get("name", "the vm")
    return (f"{vm} is in a post-copy migration that has not completed ("
            + "; ".join(f"{h}: {i['state']} ({i['reason']})" for h, i in split.items())
            + "): its memory is split between the hosts, so no copy may be stopped or resumed; "
            "only libvirt's post-copy recovery can finish it (docs, 'When the network breaks "
            "in post-copy')")


def repairs(where, prefer=None):
    """What makes ``where`` (a locate result) one running copy defined on one host: a list of
    (host, action) for the minions' ``vmigrate.repair``, or a reason nothing can be decided.
    Returns (actions, why). Rules: a running copy is kept (several: ``prefer``, the migration's
    destination, as nova does, else nothing is decided); otherwise the paused copy (several:
    the persistent one) is kept, and resumed if a migration paused it; every other copy is
    destroyed and its definition dropped; the kept copy is made persistent. Copies with
    different UUIDs are different VMs: nothing is decided. Never a disk, never a copy made."""
    if where["unaccounted"]:
        hosts = ", ".join(f"{h} ({why})" for h, why in where["unaccounted"].items())
        return [], f"could not verify {hosts}: nothing changed"
    hosts = where["hosts"]
    split = _postcopy_split(where)
    if split:
        return [], split
    # A copy under another name than the one asked: a migration's option dname, or another
    # VM sharing the UUID. Resuming or dropping a copy beside it could start a second guest.
    other = {h: i["name"] for h, i in sorted(hosts.items())
             if i.get("name") and i["name"] != where.get("dname")}
    if other:
        names = ", ".join(f"{n} on {h}" for h, n in other.items())
        return [], (f"a domain with {where.get('name', 'its')}'s UUID is named {names}: if a "
                    f"migration renamed it (option dname), reconcile with dname=<that name>; "
                    "if it is another VM with the same UUID, sort it out by hand")
    uuids = {i.get("uuid") for i in hosts.values()}
    if len(uuids) > 1:
        return [], (f"the domains named {where.get('name', 'so')} on "
                    f"{', '.join(sorted(hosts))} have different UUIDs: they are different "
                    "VMs, not copies of one; rename one by hand")
    running = [h for h, i in sorted(hosts.items()) if i["state"] in ("running", "blocked")]
    paused = [h for h, i in sorted(hosts.items()) if i["state"] == "paused"]
    if len(running) > 1:
        if prefer not in running:
            return [], (f"runs on {', '.join(running)}: two guests on one disk; vmigrate cannot "
                        "tell which to keep: stop one by hand")
        keep, actions = prefer, []
    elif running:
        keep, actions = running[0], []
    elif paused:
        persistent = [h for h in paused if hosts[h]["persistent"]]
        if len(paused) > 1 and len(persistent) != 1:
            return [], (f"paused on {', '.join(paused)}: cannot tell which copy to keep: "
                        "decide by hand")
        keep = paused[0] if len(paused) == 1 else persistent[0]
        # Only a pause a migration made is undone; a user's (or an I/O error's) stays.
        actions = ([(keep, "resume")] if hosts[keep].get("reason") in names_.MIGRATION_PAUSE
                   else [])
    else:
        defined = [h for h, i in sorted(hosts.items()) if i["persistent"]]
        if len(defined) > 1:
            return [], (f"shut off and defined on {', '.join(defined)}: keep one definition "
                        "by hand")
        return [], None  # shut off on one host, or nowhere: nothing vmigrate may change
    others = [(h, i) for h, i in sorted(hosts.items()) if h != keep]
    # The order keeps the VM defined and running somewhere at every step, whichever step
    # fails (the master stops at the first that does): the kept copy is made persistent
    # before any other definition goes, the other copies stop before the kept one resumes
    # (never two running), and their definitions go last.
    return ([(keep, "persist")] * (not hosts[keep]["persistent"])
            + [(h, "destroy") for h, i in others
               if i["state"] not in ("shutoff", "shutdown", "crashed", "nostate")]
            + actions
            + [(h, "undefine") for h, i in others if i["persistent"]]), None
