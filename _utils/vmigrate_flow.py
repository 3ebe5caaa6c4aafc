"""
The master side of vmigrate: find where a domain lives, decide, migrate it through its source
minion, verify, report. Shared by the runner (``salt-run vmigrate.*``) and the orchestration
state (``vmigrate.migrated``, behind ``salt-run state.orch migrate``).

Plain functions over the master's ``opts``: every Salt client opened here is closed here, and
every request fires exactly one ``vmigrate/<vm>/result`` event, refusals included. The other
shared files beside this one are imported as plain Python (``vmigrate_imports.py``).

Master config (``/etc/salt/master.d/vmigrate.conf``):

.. code-block:: yaml

    vmigrate:
      hypervisors_target: [hv1, hv2]     # required: which minions are hypervisors
      hypervisors_target_type: list      # list (default for a list), glob, nodegroup, grain...
      query_timeout: 10                  # seconds a hypervisor has to list its domains
      return_margin: 30                  # seconds past a migration's timeout to wait for it
"""

import concurrent.futures
import contextlib
import fnmatch
import json
import logging
import os
import runpy
import sys
import threading
import time

import salt.client
import salt.utils.event
from salt.exceptions import CommandExecutionError, SaltException, SaltInvocationError

log = logging.getLogger(__name__)


def _sibling(name):
    """``<name>.py`` from this file's directory, as plain Python (_utils/vmigrate_imports.py)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return runpy.run_path(os.path.join(here, "vmigrate_imports.py"))["load"](name, here)


validate = _sibling("vmigrate_validate")
locks = _sibling("vmigrate_locks")
authz = _sibling("vmigrate_authz")
options_ = _sibling("vmigrate_options")
Busy = locks.Busy

ACTIVE = ("running", "blocked", "paused")
MIB = 1024 * 1024
# A source paused for one of these reasons is mid-migration: resuming it may start a second copy.
MIGRATION_PAUSE = ("migration", "postcopy", "postcopy_failed")
# A copy in (or left by) a post-copy migration: the guest's memory is split between the two
# hosts, the newest pages on the destination, the rest only on the source. Stopping either
# copy, or resuming the source, loses the guest; only resuming the migration saves it.
POSTCOPY = ("postcopy", "postcopy_failed")
# Words for a person (the minion's too); outcomes are decided on status codes, never on these.
REFUSED = "nothing was moved"
# The codes a minion's vmigrate.migrate ends with when it does not move as asked.
FAILURES = ("refused", "failed", "aborted", "unknown")
# Modes that move a running guest (live keeps it running; cold reboots it; save resumes it).
RUNNING_MODES = ("live", "cold", "save")


def settings(opts):
    """The master's ``vmigrate`` settings, checked. The hypervisors must be named."""
    conf = opts.get("vmigrate") or {}
    tgt = conf.get("hypervisors_target")
    if not tgt:
        raise SaltInvocationError(
            "master config vmigrate:hypervisors_target is not set: name the hypervisor minions, "
            "e.g. 'hypervisors_target: [hv1, hv2]', or a nodegroup or grain match with "
            "hypervisors_target_type (see README, 'Install on a Salt master')"
        )
    tgt_type = conf.get("hypervisors_target_type", "list" if isinstance(tgt, list) else "glob")
    out = {"tgt": tgt, "tgt_type": tgt_type}
    for key, default in (("query_timeout", 10), ("return_margin", 30), ("timeout", 600)):
        value = conf.get(key, default)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 < value < 86400):
            raise SaltInvocationError(f"master config vmigrate:{key} {value!r}: seconds, > 0")
        out[key] = value
    return out


def _client(opts):
    return salt.client.get_local_client(opts["conf_file"])


def fire(opts, tag, data):
    """Fire one event on the master's bus; never fails the caller."""
    try:
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
            bus.fire_event(dict(data), tag)  # a copy: Salt adds _stamp to what it fires
    except Exception as err:  # pylint: disable=broad-except
        log.warning("vmigrate: could not fire %s: %s", tag, err)


def progress_line(data):
    """One line for a person from a ``vmigrate/<vm>/progress`` event's data."""
    head = (f"{data.get('name')} {data.get('source')} -> {data.get('dest')}: "
            f"{data.get('phase')} {float(data.get('elapsed') or 0):.1f}s")
    parts = []
    if data.get("percent") is not None:
        parts.append(f"{data['percent']:.0f}%")
    if data.get("memory_remaining"):
        parts.append(f"{data['memory_remaining'] / MIB:.1f} MiB left")
    if data.get("memory_bps"):
        parts.append(f"{data['memory_bps'] / MIB:.1f} MiB/s")
    if data.get("iteration"):
        parts.append(f"pass {data['iteration']}")
    if data.get("dirty_rate"):  # pages/s of 4 KiB
        parts.append(f"dirtying {data['dirty_rate'] * 4096 / MIB:.1f} MiB/s")
    if data.get("disk_total"):  # copy_storage
        left = data.get("disk_remaining") or 0
        parts.append(f"disks {100.0 * (data['disk_total'] - left) / data['disk_total']:.0f}% "
                     f"({left / MIB:.1f} MiB left)")
    return head + (", " + ", ".join(parts) if parts else "")


class Relay:
    """While a migration runs, hands ``report`` a line for each progress event its source
    minion sends (``vmigrate/<vm>/progress``), in order, as they arrive; ``stop_on_result``
    also ends at the request's ``vmigrate/<vm>/result`` (salt-run vmigrate.watch). Listening
    starts before the caller publishes; on exit it drains the last events for a moment. A
    no-op when ``report`` is None."""

    def __init__(self, opts, vm, source, report, stop_on_result=False):
        self.opts, self.vm, self.source, self.report = opts, vm, source, report
        self.stop_on_result = stop_on_result
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.done = threading.Event()
        self.last = None
        self.thread = None

    def __enter__(self):
        if self.report is not None:
            self.thread = threading.Thread(target=self._run, name="vmigrate-relay",
                                           daemon=True)
            self.thread.start()
            self.ready.wait(5)
        return self

    def _run(self):
        # The bus is opened in this thread, and used only here.
        try:
            with salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"],
                                                   listen=True) as bus:
                self.ready.set()
                self._loop(bus)
        except Exception as err:  # pylint: disable=broad-except
            log.warning("vmigrate: progress relay stopped: %s", err)
        finally:
            self.ready.set()
            self.done.set()

    def _loop(self, bus):
        seen = -1
        drain_until = None
        prefix = f"vmigrate/{self.vm}/"
        while True:
            if self.stop.is_set() and drain_until is None:
                if (self.last or {}).get("phase") in ("completed", "failed"):
                    return
                drain_until = time.monotonic() + 1.0
            if drain_until is not None and time.monotonic() > drain_until:
                return
            event = bus.get_event(wait=0.05, tag=prefix, full=True)
            if not event:
                continue
            data = event.get("data") or {}
            if event.get("tag") == f"{prefix}result" and self.stop_on_result:
                self.last = data
                return
            if event.get("tag") != f"{prefix}progress":
                continue
            body = data.get("data") or {}
            if (self.source is not None and data.get("id") != self.source) \
                    or not isinstance(body, dict):
                continue
            seq = body.get("seq", 0)
            if isinstance(seq, int) and seq <= seen and body.get("phase") == "running":
                continue  # each event.send is its own connection: a late one is stale
            seen = max(seen, seq) if isinstance(seq, int) else seen
            self.last = body
            try:
                self.report(progress_line(body))
            except Exception as err:  # pylint: disable=broad-except
                log.warning("vmigrate: could not report progress: %s", err)
            if body.get("phase") in ("completed", "failed") and drain_until is not None:
                return

    def wait(self, timeout):
        """Until the relay ended by itself (watch) or ``timeout`` seconds passed."""
        return self.done.wait(timeout)

    def __exit__(self, *exc):
        if self.thread is not None:
            self.stop.set()
            self.thread.join(3)


def gather(client, tgt, tgt_type, fun, arg, kwarg, wait, published=None):
    """Publish ``fun`` to ``tgt`` and collect each targeted minion's own return event until
    every one answered or ``wait`` seconds passed -- no ``saltutil.find_job`` pings, whose one
    miss would end the wait early. ``published(jid)`` is called once the job is out. Returns
    (jid, {minion: return data}, targeted minions)."""
    pub = client.run_job(tgt, fun, arg, tgt_type=tgt_type, kwarg=kwarg, listen=True,
                         timeout=wait)
    if not pub or not pub.get("jid"):
        raise CommandExecutionError(
            f"could not publish {fun} to {tgt}: is the salt master running and are the "
            "minions' keys accepted?")
    jid, expected = pub["jid"], set(pub.get("minions") or [])
    if published:
        published(jid)
    got = {}
    deadline = time.monotonic() + wait
    while not expected <= set(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        event = client.event.get_event(wait=min(1.0, remaining), tag=f"salt/job/{jid}/ret/",
                                       full=True)
        if (event or {}).get("tag") == "salt/event/exit":
            # Salt's event reader turns a KeyboardInterrupt that arrives while it waits into
            # this event: raise it again, or the request would go on waiting for the job's
            # return with the interrupt lost. salt-run's own handler raises SystemExit, which
            # passes through; this is for callers of the runner whose SIGINT is Python's.
            raise KeyboardInterrupt
        data = (event or {}).get("data") or {}
        if data.get("id") in expected and data.get("fun") == fun:
            got[data["id"]] = data
    return jid, got, expected


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
        validate.minion_id(host, "hosts")
    return list(hosts)


def _listing(data):
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
    ``hypervisors`` (those that answered), ``unaccounted`` ({host: why}) and ``timeouts``
    (each answering host's migration timeout). ``client``: a LocalClient to use (one request
    opens one)."""
    hosts = host_list(hosts)
    if client is None:
        with _client(opts) as opened:
            return locate(opts, vm, hosts, opened, dname)
    conf = settings(opts)
    wait = conf["query_timeout"]
    tgt, tgt_type = (sorted(hosts), "list") if hosts else (conf["tgt"], conf["tgt_type"])
    _jid, got, expected = gather(client, tgt, tgt_type, "vmigrate.domains", [], {}, wait)
    listings, unaccounted = {}, {}
    for host in sorted(expected | set(hosts or ())):
        if host not in expected:
            unaccounted[host] = "no such minion (no accepted key)"
        elif host not in got:
            unaccounted[host] = f"did not answer within {wait:g}s"
        elif _listing(got[host]) is None:
            unaccounted[host] = f"answered with an error: {str(got[host].get('return'))[:400]}"
        else:
            listings[host] = _listing(got[host])
    renamed = dname if dname != vm else None
    present, taken = _copies_of(vm, renamed, listings)
    where = _where(vm, present, listings, unaccounted)
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


def _seen_by_source(vm, value, source, dest, dest_host_uuid):
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
    listing = _listing({"return": {"domains": copies["hosts"]}})
    if listing is None:
        return None
    answered = {h: {} for h in (source, dest) if h not in copies["unaccounted"]}
    return _where(vm, dict(copies["hosts"]), answered, dict(copies["unaccounted"]))


def _misplaced(after, source, dest, want, dname=None, uuid=None):
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
            if info.get("reason") in MIGRATION_PAUSE:
                other = next((h for h in pair if h != host), "the other host")
                state += f": do not resume before checking {other}"
        parts.append(f"{host}: {state}{'' if info['persistent'] else ', transient'}"
                     + (f" (as {info['name']})" if info.get("name") else ""))
    parts += [f"{host}: could not verify ({why})" for host, why in where["unaccounted"].items()]
    return "; ".join(parts) or "on no hypervisor that answered"


def _summary(where):
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
    if info["state"] == "paused" and info.get("reason") in MIGRATION_PAUSE:
        return source, (f"vm {vm} on {source} is paused by an unfinished migration "
                        f"({info['reason']}): do not resume it before checking the other host")
    active = info["state"] in ACTIVE
    if mode in RUNNING_MODES and not active:
        return source, (f"vm {vm} is {info['state']} on {source}: a {mode} migration needs it "
                        "running; use mode=offline to move its definition")
    if mode == "offline" and active:
        return source, (f"vm {vm} is {info['state']} on {source}: an offline migration would "
                        "leave it running there; shut it down first or use mode=live")
    return source, None


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
        if isinstance(err, Busy):
            ret["reason"] = "slots" if isinstance(err, locks.SlotsBusy) else "busy"
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
        fire(opts, f"vmigrate/{vm if _valid(validate.vm_name, vm) else '-'}/result", ret)
    return ret


def _valid(check, value):
    try:
        check(value)
        return True
    except SaltInvocationError:
        return False


def _migrate(opts, ret, vm, dest, mode, bandwidth, timeout, force, already_ok, trigger,
             owner=None, options=None, report=None):
    validate.vm_name(vm)
    if dest is None:
        raise SaltInvocationError("dest is required: pass pillar='{vm: <name>, dest: <minion>}'")
    validate.minion_id(dest)
    validate.mode(mode)
    validate.mib_per_s(bandwidth)
    validate.seconds(timeout, "timeout")
    if not isinstance(force, bool):
        raise SaltInvocationError(f"force {force!r}: true or false")
    # Names, values and the rules between them; the minion checks again, with the domain.
    options = options_.check(options_.merge(None, options), mode, vm)
    if "dname" in options:
        validate.vm_name(options["dname"], "option dname")
    conf = settings(opts)
    # One request per VM at a time (and per name it is given), held from before it is
    # located (Busy names the other); one client for every publish it makes.
    with locks.hold(opts, vm, trigger, dname=options.get("dname")) as held, \
            _client(opts) as client:
        _migrate_locked(opts, client, ret, conf, held, vm, dest, mode, bandwidth, timeout,
                        force, already_ok, owner, options, report)


def _migrate_locked(opts, client, ret, conf, held, vm, dest, mode, bandwidth, timeout, force,
                    already_ok, owner=None, options=None, report=None):
    dname = (options or {}).get("dname")
    cleared = check_in_flight(opts, client, [vm, dname] if dname else [vm],
                              conf["query_timeout"])
    if cleared:
        ret["in_flight_ended"] = cleared
    where = locate(opts, vm, client=client, dname=dname)
    ret["located"] = _summary(where)
    if force and where["unaccounted"]:
        ret["forced"] = sorted(where["unaccounted"])
    source, why = decide(where, vm, dest, force, already_ok, mode)
    if source == "":
        why = _rename_refused(where, vm, dest, dname, here=True)
        if not why:
            named = where["hosts"][dest].get("name")
            ret.update(result=True, status="unchanged", source=dest,
                       comment=f"{vm} already runs on {dest}" + (f" as {named}" if named else ""))
            return
        source = dest
    if source:
        ret["source"] = source
    why = why or _rename_refused(where, vm, source, dname)
    if why:
        ret["comment"] = why
        return
    if owner is not None and source != owner:
        ret["comment"] = (f"only VMs running on {owner} may move here (a requester's own, or "
                          f"the host being evacuated); {vm} runs on {source}: {REFUSED}")
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
    if _valid(validate.host_uuid, dest_host_uuid) and dest_host_uuid:
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


def failure(value):
    """(status, words) of a source minion's vmigrate.migrate return that is not a success: its
    ``status`` code when it gives a known one; ``failed`` for anything else (an exception's
    text, a minion without vmigrate)."""
    if isinstance(value, dict) and value.get("status") in FAILURES:
        return value["status"], str(value.get("comment") or value["status"])
    return "failed", str(value)


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
        locks.mark_in_flight(opts, names, {"vm": vm, "jid": jid, "source": source, "dest": dest,
                                           "mode": mode, "trigger": ret.get("trigger"),
                                           "since": time.time(), "master_pid": os.getpid()})
        if held is not None:
            held.note(jid=jid)

    with Relay(opts, vm, source, report) as _relay:
        jid, got, _ = gather(client, [source], "list", "vmigrate.migrate", [vm, dest], kwarg,
                             wait_all, published=published)
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
        locks.clear_in_flight(opts, names, jid)
    after = (_seen_by_source(vm, value, source, dest, dest_host_uuid)
             if out.get("retcode", 0) == 0 and isinstance(value, dict) else None)
    ret["verified_by"] = source
    if after is None or _misplaced(after, source, dest, want, dname, uuid):
        after = locate(opts, vm, [source, dest], client, dname)
        ret["verified_by"] = "master"
    ret["after"] = _summary(after)
    now = placement(after, (source, dest))
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
        status, text = failure(value)
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

    problems = _misplaced(after, source, dest, want, dname, uuid)
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
    if mode in RUNNING_MODES:
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
        fixed = _reconcile(opts, vm, [source, dest], prefer=dest,
                           where=after if after["unaccounted"] else None, dname=dname)
    except (SaltException, OSError) as err:
        fixed = {"result": False, "comment": f"could not reconcile: {err}"}
    ret["reconciled"] = fixed
    ret["comment"] += f"; reconciled: {fixed['comment']}"


def plan(opts, vm, dest, mode="live", force=False, already_ok=False, options=None):
    """What a migration would do, changing nothing: where the domain is, the decision, and the
    source's prechecks. Returns ``result`` (True: it would go ahead; None: nothing to do;
    False: refused), ``comment``, ``source``, ``checks`` and ``blockers``."""
    validate.vm_name(vm)
    validate.minion_id(dest)
    validate.mode(mode)
    dname = options_.check(options_.merge(None, options), mode, vm).get("dname")
    if dname is not None:
        validate.vm_name(dname, "option dname")
    where = locate(opts, vm, dname=dname)
    out = {"name": vm, "dest": dest, "mode": mode, "located": _summary(where), "checks": [],
           "blockers": []}
    source, why = decide(where, vm, dest, force, already_ok, mode)
    if source == "":
        why = _rename_refused(where, vm, dest, dname, here=True)
        if not why:
            return dict(out, result=None, source=dest, comment=f"{vm} already runs on {dest}")
        source = dest
    out["source"] = source
    why = why or _rename_refused(where, vm, source, dname)
    if why:
        return dict(out, result=False, comment=why, blockers=["placement"])
    kwarg = {"mode": mode}
    if where["host_uuids"].get(dest) and _valid(validate.host_uuid, where["host_uuids"][dest]):
        kwarg["dest_host_uuid"] = where["host_uuids"][dest]
    if options:
        kwarg["options"] = options  # copy_storage changes which storage checks apply
    with _client(opts) as client:
        _jid, got, _ = gather(client, [source], "list", "vmigrate.precheck", [vm, dest],
                              kwarg, settings(opts)["query_timeout"])
    data = got.get(source) or {}
    value = data.get("return")
    if data.get("retcode", 1) != 0 or not isinstance(value, dict):
        return dict(out, result=False, blockers=["precheck"],
                    comment=f"precheck on {source} did not complete: {value or 'no answer'}")
    out.update(checks=value["checks"], blockers=value["blockers"])
    if value["blockers"]:
        failed = [c for c in value["checks"] if not c["ok"]]
        return dict(out, result=False, comment="; ".join(
            f"{c['detail']}. Fix: {c['fix']}" for c in failed))
    return dict(out, result=True,
                comment=f"would migrate {vm} {mode} from {source} to {dest}")


def _postcopy_split(where):
    """Why nothing may be stopped or resumed when a copy is in a post-copy migration, or
    None."""
    split = {h: i for h, i in sorted(where["hosts"].items()) if i.get("reason") in POSTCOPY}
    if not split:
        return None
    vm = where.get("name", "the vm")
    return (f"{vm} is in a post-copy migration that has not completed ("
            + "; ".join(f"{h}: {i['state']} ({i['reason']})" for h, i in split.items())
            + "): its memory is split between the hosts, so no copy may be stopped or resumed; "
            "only libvirt's post-copy recovery can finish it (README, 'When the network breaks "
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
        actions = [(keep, "resume")] if hosts[keep].get("reason") in MIGRATION_PAUSE else []
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


def _job_runs(client, record, wait):
    """Whether the job of in-flight ``record`` may still run on its source, and why: Salt's
    job there (``saltutil.find_job``) or libvirt's job for the VM (``vmigrate.jobs``); a source
    that does not answer may still run it."""
    source, jid, vm = record.get("source"), record.get("jid"), record.get("vm")
    _jid, got, _ = gather(client, [source], "list", "saltutil.find_job", [jid], {}, wait)
    data = got.get(source)
    if not data or data.get("retcode", 0) != 0 or not isinstance(data.get("return"), dict):
        return True, f"{source} did not answer whether it still runs"
    if data["return"]:
        return True, f"Salt's job {jid} still runs on {source}"
    _jid, got, _ = gather(client, [source], "list", "vmigrate.jobs", [], {}, wait)
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
        record = locks.in_flight(opts, name)
        if not record:
            continue
        if "unreadable" in record:
            raise Busy(f"vm {name}: its in-flight record cannot be read ({record['unreadable']})"
                       f": nothing may act on it until salt-run vmigrate.jobs shows no job of "
                       f"it; then remove inflight-{name}.json in the master's vmigrate lock "
                       "directory")
        runs, why = _job_runs(client, record, wait)
        if runs:
            vm = record.get("vm", name)
            raise Busy(f"vm {name} is in flight: {locks.describe_in_flight(record)}, and its "
                       f"end is not seen yet ({why}), {REFUSED}: acting now could stop or "
                       f"drop a copy that migration still uses; follow it with salt-run "
                       f"vmigrate.watch {vm}, or stop it with salt-run vmigrate.abort {vm}")
        locks.clear_in_flight(opts, [name], record.get("jid"))
        log.warning("vmigrate: %s: the in-flight %s has ended on its source", name,
                    locks.describe_in_flight(record))
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
    directory = locks.lock_dir(opts)
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
    conf = settings(opts)
    with _client(opts) as client:
        _jid, got, expected = gather(client, conf["tgt"], conf["tgt_type"], "vmigrate.jobs",
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
    flying = locks.in_flight(opts)
    lines += [f"{vm}: in flight, {locks.describe_in_flight(r)}: its end not seen yet (a "
              "request or reconcile checks it, and is refused while it runs)"
              for vm, r in flying.items() if "unreadable" not in r]
    return {"jobs": out, "requests": held, "in_flight": flying, "unaccounted": unaccounted,
            "comment": "\n".join(lines) or "no migration runs now"}


def abort(opts, vm):
    """Abort the migration of ``vm`` wherever it goes out from (each hypervisor is asked; the
    one sending it stops it): the domain stays on its source, as it was. Returns ``result``
    (True when one was aborted), ``comment``, ``hosts`` (each answer)."""
    validate.vm_name(vm)
    conf = settings(opts)
    with _client(opts) as client:
        _jid, got, expected = gather(client, conf["tgt"], conf["tgt_type"], "vmigrate.abort",
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
    fire(opts, f"vmigrate/{vm}/abort", out)
    return out


def watch(opts, vm, timeout=600, report=None):
    """Follow the migration of ``vm``, wherever it was started: ``report(line)`` for each
    progress event, until its ``vmigrate/<vm>/result`` or ``timeout`` seconds. Returns
    ``result`` (the migration's, None when none ended meanwhile), ``comment``, ``last``."""
    validate.vm_name(vm)
    validate.seconds(timeout, "timeout", allow_none=False)
    lines = []

    def keep(line):
        lines.append(line)
        if report is not None:
            report(line)

    with Relay(opts, vm, None, keep, stop_on_result=True) as relay:
        ended = relay.wait(timeout)
        last = relay.last
    if ended and isinstance(last, dict) and "status" in last:
        return {"result": bool(last.get("result")), "comment": last.get("comment"),
                "status": last.get("status"), "progress": lines}
    return {"result": None, "progress": lines,
            "comment": (f"no migration of {vm} ended within {timeout:g}s"
                        + ("" if lines else " (and none reported progress)"))}


def reconcile(opts, vm, hosts=None, prefer=None, dry_run=False, dname=None):
    """Bring domain ``vm`` to one running copy, defined on one host (see :func:`repairs`),
    holding its migration lock (Busy while a migration of it runs). ``dname``: the new name a
    migration of it was giving it (its copies under that name count, see :func:`locate`).
    Returns ``result``, ``comment``, ``found`` (placement before), ``actions`` (each with its
    outcome) and ``now`` (placement after)."""
    validate.vm_name(vm)
    if dname is not None:
        validate.vm_name(dname, "dname")
    hosts = host_list(hosts)
    with locks.hold(opts, vm, "reconcile", dname=dname):
        names = [vm, dname] if dname else [vm]
        if any(locks.in_flight(opts, n) for n in names):
            with _client(opts) as client:
                check_in_flight(opts, client, names, settings(opts)["query_timeout"])
        return _reconcile(opts, vm, hosts, prefer, dry_run, dname=dname)


def _reconcile(opts, vm, hosts=None, prefer=None, dry_run=False, where=None, dname=None):
    """:func:`reconcile` without the lock; ``where``: a placement the caller has just read
    from the master (never a minion's report), else ``hosts`` are asked now."""
    if where is None:
        where = locate(opts, vm, hosts, dname=dname)
    out = {"name": vm, "found": _summary(where), "actions": []}
    actions, why = repairs(where, prefer)
    if why:
        return dict(out, result=False, comment=f"{vm}: {why}")
    if not actions:
        hint = ("" if where["hosts"] or dname else
                " (a copy a migration renamed is found with dname=<its new name>)")
        return dict(out, result=True, comment=f"{vm} is consistent: {placement(where)}{hint}")
    if dry_run:
        out["actions"] = [{"host": h, "action": a, "done": None} for h, a in actions]
        return dict(out, result=None, comment=f"{vm} would be repaired: " + ", ".join(
            f"{a} on {h}" for h, a in actions))
    ok = True
    with _client(opts) as client:
        for host, action in actions:
            # The copy by the name it has there, and only while it has the UUID read.
            info = where["hosts"][host]
            _jid, got, _ = gather(client, [host], "list", "vmigrate.repair",
                                  [info.get("name", vm), action], {"uuid": info.get("uuid")},
                                  settings(opts)["query_timeout"] + 30)
            data = got.get(host) or {}
            done = data.get("retcode", 1) == 0
            out["actions"].append({"host": host, "action": action, "done": done,
                                   "detail": data.get("return", "no answer")})
            if not done:
                ok = False
                break  # stop at the first failed step: the next assumed it
    after = locate(opts, vm, sorted(set(where["hosts"]) | set(hosts or ())), dname=dname)
    out["now"] = _summary(after)
    left, why = repairs(after, prefer)
    if ok and (left or why):
        ok = False
        out["actions"].append({"host": None, "action": "verify", "done": False,
                               "detail": why or f"still to do: {left}"})
    steps = ", ".join(f"{a['action']} on {a['host']}{'' if a['done'] else ' FAILED'}"
                      for a in out["actions"])
    return dict(out, result=ok, comment=f"{vm}: {steps}; now {placement(after)}")


def request(opts, tag, data):
    """A request from the event bus (the reactor hands each ``vmigrate/request`` and
    ``vmigrate/evacuate`` here): authorized from
    master config (see ``vmigrate_authz.py``: what it guarantees and what it cannot), then
    done. A refusal touches nothing, is logged, and fires ``vmigrate/refused``."""
    try:
        req = authz.authorize(opts, tag, data, validate)
    except SaltInvocationError as err:
        why = str(err)
        log.warning("vmigrate: refused a request from the event bus (%s): %s", tag, why)
        fire(opts, "vmigrate/refused", {"tag": tag, "reason": why})
        return {"result": False, "status": "refused", "comment": f"refused: {why}"}
    trigger = f"reactor:{req['requester']}"
    if req["kind"] == "evacuate":
        out = evacuate(opts, req["host"], trigger=trigger, allowed=req["dests"])
    else:
        out = migrate(opts, req["vm"], req["dest"], req["mode"], trigger=trigger,
                      owner=req["requester"] if req["own"] else None)
    if out.get("status") == "refused":
        log.warning("vmigrate: refused %s from %s: %s", req["kind"], req["requester"],
                    out["comment"])
    return out


def send_request(opts, kind, fields):
    """Put a request on the bus as requester ``master``, signed with its key from master
    config: the reactor then handles it like any other (asynchronously). Fields are checked
    first; returns what was sent (without the signature)."""
    if kind == "migrate":
        validate.vm_name(fields["vm"])
        validate.minion_id(fields["dest"])
        validate.mode(fields["mode"])
    else:
        validate.minion_id(fields["host"], "host")
    rule = authz.policy(opts)["requesters"].get("master")
    if not rule:
        raise SaltInvocationError("master config vmigrate:requests:requesters:master is not set: "
                                  "give the master a key (openssl rand -hex 32) to sign with")
    payload = authz.signed_payload(rule["key"], kind, fields, "master")
    tag = next(t for t, k in authz.KINDS.items() if k == kind)
    fire(opts, tag, payload)
    return {"sent": tag, "request": fields, "nonce": payload["nonce"]}


def _evacuation_plan(listing):
    """What leaves a host: running (and paused, not mid-migration) domains live, shut-off
    persistent ones offline; the rest is named and left."""
    moves, left = [], {}
    for name, info in sorted(listing["domains"].items()):
        if info["state"] == "paused" and info.get("reason") in MIGRATION_PAUSE:
            left[name] = f"paused ({info['reason']}): a migration of it is unfinished"
        elif info["state"] in ACTIVE:
            moves.append((name, "live"))
        elif info["persistent"]:
            moves.append((name, "offline"))
        else:
            left[name] = f"{info['state']} and transient: nothing to move"
    return moves, left


def evacuate(opts, host, targets=None, concurrency=2, bandwidth=None, timeout=None,
             trigger="cli", dry_run=False, allowed=None):
    """Every domain off hypervisor ``host``: running ones live, shut-off ones offline, each to
    the least busy of ``targets`` (default: every other answering hypervisor) that takes it
    -- a destination whose prechecks or caps refuse is skipped for the next -- ``concurrency``
    at a time within the per-host caps. Each move is a full :func:`migrate` (locks, prechecks,
    verification, reconciliation, one result event). Returns ``result`` (True only if every
    domain moved), ``vms`` ({vm: that migration's result}), ``left`` and ``comment``.
    ``dry_run`` lists the moves (``moves``: [[vm, mode]]) and the candidates, moving nothing:
    each move's own prechecks run when it is made. ``allowed``: destination name patterns a
    requester's policy permits. Each move refuses a VM that no longer runs on ``host``."""
    start = time.monotonic()
    ret = {"result": False, "host": host, "trigger": trigger, "vms": {}, "left": {},
           "comment": ""}
    try:
        validate.minion_id(host, "host")
        if targets is not None:
            if not isinstance(targets, list) or not targets:
                raise SaltInvocationError(f"targets {targets!r}: a list of minion ids")
            for target in targets:
                validate.minion_id(target, "target")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
                or not 1 <= concurrency <= 16:
            raise SaltInvocationError(f"concurrency {concurrency!r}: an integer 1..16")
        validate.mib_per_s(bandwidth)
        validate.seconds(timeout, "timeout")
        _evacuate(opts, ret, host, targets, concurrency, bandwidth, timeout, trigger, dry_run,
                  allowed)
    except (SaltException, OSError) as err:
        ret["comment"] = "; ".join(x for x in (ret["comment"], str(err)) if x)
    except (KeyboardInterrupt, SystemExit):
        ret["result"] = False
        ret["comment"] = ("interrupted on the master: migrations under way go on under their "
                          "own timeouts, none not yet started was begun; see ``vms``")
    ret["wall"] = round(time.monotonic() - start, 3)
    if dry_run:
        return ret
    fire(opts, f"vmigrate/evacuate/{host if _valid(validate.minion_id, host) else '-'}/result",
         ret)
    return ret


def _evacuate(opts, ret, host, targets, concurrency, bandwidth, timeout, trigger, dry_run,
              allowed=None):
    conf = settings(opts)
    with _client(opts) as client:
        _jid, got, expected = gather(client, conf["tgt"], conf["tgt_type"], "vmigrate.domains",
                                     [], {}, conf["query_timeout"])
    listings = {h: _listing(got.get(h)) for h in expected}
    if listings.get(host) is None:
        raise CommandExecutionError(f"{host} is not an answering hypervisor: nothing to "
                                    "evacuate can be read")
    candidates = [h for h in (targets or sorted(expected)) if h != host and (
        allowed is None or any(fnmatch.fnmatchcase(h, p) for p in allowed))]
    silent = [h for h in candidates if listings.get(h) is None]
    candidates = [h for h in candidates if listings.get(h) is not None]
    if silent:
        ret["skipped_targets"] = silent
    if not candidates:
        raise CommandExecutionError(f"no answering hypervisor to evacuate {host} to")
    moves, ret["left"] = _evacuation_plan(listings[host])
    load = {h: sum(1 for i in listings[h]["domains"].values() if i["state"] in ACTIVE)
            for h in candidates}
    guard = threading.Lock()
    workers = min(concurrency, locks.caps(opts)["max_outgoing"])
    ret["concurrency"] = workers
    if dry_run:
        ret.update(result=None if moves else True, moves=[list(m) for m in moves],
                   candidates=candidates,
                   comment=f"{host}: would move {len(moves)} domain(s) to {', '.join(candidates)}"
                           f", {workers} at a time")
        return

    def move(vm, mode):
        tried, result = set(), None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with guard:
                order = sorted((h for h in candidates if h not in tried),
                               key=lambda h: (load[h], h))
                if not order:
                    break
                dest = order[0]
                load[dest] += 1
            result = migrate(opts, vm, dest, mode, bandwidth, timeout,
                             trigger=f"evacuate:{trigger}", owner=host)
            if result["result"] or result["status"] != "refused":
                if not result["result"]:
                    with guard:
                        load[dest] -= 1
                return result
            with guard:
                load[dest] -= 1
            if result.get("reason") == "slots":
                time.sleep(1)  # a cap: wait for a slot, same destinations again
                continue
            tried.add(dest)
        return result or {"result": False, "status": "refused", "name": vm,
                          "comment": "no destination took it"}

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    futures = {pool.submit(move, vm, mode): vm for vm, mode in moves}
    try:
        for future in concurrent.futures.as_completed(futures):
            ret["vms"][futures[future]] = future.result()
    finally:
        # Interrupted: the moves not yet started are dropped; those under way finish.
        pool.shutdown(wait=True, cancel_futures=True)
    failed = sorted(vm for vm, r in ret["vms"].items() if not r["result"])
    moved = len(ret["vms"]) - len(failed)
    ret["result"] = not failed and not ret["left"]
    ret["comment"] = (f"{host}: {moved} of {len(moves)} domain(s) moved"
                      + (f"; not moved: {', '.join(failed)}" if failed else "")
                      + (f"; left: {', '.join(sorted(ret['left']))}" if ret["left"] else ""))
