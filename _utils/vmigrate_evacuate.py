"""
Every domain off one hypervisor, the master's use case behind ``salt-run vmigrate.evacuate``
and the ``vmigrate.evacuated`` state. The host goes into maintenance first (nothing lands on
it meanwhile; it stays there until ``salt-run vmigrate.maintenance <host> off``); the planner
(``vmigrate_planner.evacuation``) places each domain by capacity and the placement rules;
running ones move live and shut-off ones offline, each a full migration
(``vmigrate_move.migrate``), a few at a time within the per-host caps. A destination that
refuses one is replaced by the planner's next choice. It ends with a fresh reading of the
host: it succeeded only if the host runs and defines nothing. One
``vmigrate/evacuate/<host>/result`` event per evacuation.

The moves run in a thread pool of this process; no Salt dunders.
"""

import concurrent.futures
import fnmatch
import os
import runpy
import threading
import time

from salt.exceptions import CommandExecutionError, SaltException, SaltInvocationError

(bus_, decide_, fleet_, maintenance_, move_, planner_, settings_,
 validate_) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "vmigrate_imports.py"))["siblings"](__file__,
    "vmigrate_bus", "vmigrate_decide", "vmigrate_fleet", "vmigrate_maintenance",
    "vmigrate_move", "vmigrate_planner", "vmigrate_settings", "vmigrate_validate")


# Refusals about the destination: the planner's next choice may take the VM. Any other (its
# lock, its owner, a precheck of the guest itself) would refuse it everywhere.
ELSEWHERE = ("maintenance", "rules", "precheck", "error")


def evacuate(opts, host, targets=None, concurrency=2, bandwidth=None, timeout=None,
             trigger="cli", dry_run=False, allowed=None, force=False):
    """Every domain off hypervisor ``host``: running ones live, shut-off ones offline, each to
    the host the planner chooses among ``targets`` (default: every other answering
    hypervisor) -- by free memory, vCPUs, incoming migrations, maintenance and the placement
    rules -- ``concurrency`` at a time within the per-host caps. ``host`` is put in
    maintenance first (not with ``dry_run``). Each move is a full ``vmigrate_move.migrate``
    (locks, prechecks, verification, reconciliation, one result event). ``force``: go on
    past hypervisors that do not answer (none of them is used; each move then decides
    without them).

    Returns ``result`` (True only if a fresh reading at the end finds ``host`` running and
    defining nothing), ``vms`` ({vm: that migration's result}), ``left`` ({vm: why it is
    still there}), ``plan`` (every candidate of each VM, with why it was chosen or skipped)
    and ``comment``. ``dry_run`` returns the plan (``moves``: [[vm, mode, dest]]) and moves
    nothing. ``allowed``: destination name patterns a requester's policy permits."""
    start = time.monotonic()
    ret = {"result": False, "host": host, "trigger": trigger, "vms": {}, "left": {},
           "comment": ""}
    try:
        validate_.minion_id(host, "host")
        if targets is not None:
            if not isinstance(targets, list) or not targets:
                raise SaltInvocationError(f"targets {targets!r}: a list of minion ids")
            for target in targets:
                validate_.minion_id(target, "target")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
                or not 1 <= concurrency <= 16:
            raise SaltInvocationError(f"concurrency {concurrency!r}: an integer 1..16")
        if not isinstance(force, bool):
            raise SaltInvocationError(f"force {force!r}: true or false")
        validate_.mib_per_s(bandwidth)
        validate_.seconds(timeout, "timeout")
        _evacuate(opts, ret, host, targets, concurrency, bandwidth, timeout, trigger, dry_run,
                  allowed, force)
    except (SaltException, OSError) as err:
        ret["result"] = False
        ret["comment"] = "; ".join(x for x in (ret["comment"], str(err)) if x)
    except (KeyboardInterrupt, SystemExit):
        ret["result"] = False
        ret["comment"] = ("interrupted on the master: migrations under way go on under their "
                          "own timeouts, none not yet started was begun; see ``vms``")
    ret["wall"] = round(time.monotonic() - start, 3)
    if dry_run:
        return ret
    named = host if validate_.valid(validate_.minion_id, host) else "-"
    bus_.fire(opts, f"vmigrate/evacuate/{named}/result", ret)
    return ret


def _targets(fleet, host, targets, allowed):
    """The hosts a VM of ``host`` may go to: ``targets`` (or all), within ``allowed``."""
    return [h for h in (targets or sorted(fleet.hosts)) if h != host and (
        allowed is None or any(fnmatch.fnmatchcase(h, p) for p in allowed))]


def _evacuate(opts, ret, host, targets, concurrency, bandwidth, timeout, trigger, dry_run,
              allowed=None, force=False):
    rules = settings_.placement(opts)
    fleet, answers, silent = fleet_.read(opts)
    if answers.get(host) is None:
        raise CommandExecutionError(f"{host} is not an answering hypervisor: nothing to "
                                    "evacuate can be read")
    candidates = _targets(fleet, host, targets, allowed)
    quiet = sorted(h for h in candidates if h in silent)
    if quiet:
        ret["skipped_targets"] = quiet
    unknown = sorted(set(targets or ()) - set(fleet.hosts))
    if unknown:
        raise CommandExecutionError(f"targets {', '.join(unknown)}: not hypervisors "
                                    f"({', '.join(sorted(fleet.hosts))})")
    if silent and not force:
        raise CommandExecutionError(
            f"{', '.join(f'{h} ({why})' for h, why in sorted(silent.items()))} did not answer: "
            f"a VM of {host} may run there too, so nothing was moved; bring it back, or pass "
            "force=True to go on without it (it receives nothing)")
    if not [h for h in candidates if h not in silent]:
        raise CommandExecutionError(f"no answering hypervisor to evacuate {host} to")
    workers = min(concurrency, settings_.caps(opts)["max_outgoing"])
    ret["concurrency"] = workers
    plan = planner_.evacuation(fleet, rules, host, candidates)
    ret["plan"] = plan["candidates"]
    ret["left"] = dict(plan["left"])
    if dry_run:
        ret.update(result=None if plan["moves"] else not ret["left"],
                   moves=[[m["vm"], m["mode"], m["dest"]] for m in plan["moves"]],
                   candidates=candidates,
                   comment=f"{host}: would move {len(plan['moves'])} domain(s)"
                           + (f" to {', '.join(sorted({m['dest'] for m in plan['moves']}))}"
                              if plan["moves"] else "")
                           + f", {workers} at a time"
                           + (f"; no destination for {', '.join(sorted(ret['left']))}"
                              if ret["left"] else ""))
        return
    ret["maintenance"] = maintenance_.switch(opts, host, True, f"evacuation by {trigger}",
                                             by=f"evacuate:{trigger}")
    _run_moves(opts, ret, host, fleet, rules, plan, candidates, workers, bandwidth, timeout,
               trigger, force)
    _final_reading(opts, ret, host, len(plan["moves"]))


def _run_moves(opts, ret, host, fleet, rules, plan, candidates, workers, bandwidth, timeout,
               trigger, force):
    """Each planned move (an affinity group's members in one worker, one after another);
    a destination that refuses is replaced by the planner's next choice for that VM."""
    guard = threading.Lock()
    # The fleet as the plan leaves it: a fallback never takes what a later move was given.
    state = fleet.copy()
    checker = planner_.Rules(rules, state)
    units = {}
    for move in plan["moves"]:
        units.setdefault((move["dest"], checker.affine.get(move["vm"]) or move["vm"]),
                         []).append(move)
        src = state.vms[move["vm"]]["host"]
        state.move(move["vm"], move["dest"])
        checker.moved(state, move["vm"], src, move["dest"])

    def one(vm, mode, dest, alone):
        tried = set()
        deadline = time.monotonic() + 600
        result = None
        while dest is not None and time.monotonic() < deadline:
            result = move_.migrate(opts, vm, dest, mode, bandwidth, timeout, force=force,
                                   trigger=f"evacuate:{trigger}", owner=host)
            if result["result"] or result["status"] != "refused":
                return result
            if result.get("reason") == "slots":
                time.sleep(1)  # a cap: wait for a slot, same destination again
                continue
            if result.get("reason") not in ELSEWHERE or not alone:
                return result  # not about this destination (or a group): another won't do
            tried.add(dest)
            with guard:
                state.move(vm, host)  # give back what the plan took on ``dest``
                checker.moved(state, vm, dest, host)
                found = [c for c in planner_.candidates(state, checker, [vm], candidates)
                         if c["ok"] and c["host"] not in tried]
                dest = found[0]["host"] if found else None
                if dest is not None:
                    state.move(vm, dest)
                    checker.moved(state, vm, host, dest)
        return result or {"result": False, "status": "refused", "reason": "no_destination",
                          "name": vm, "comment": "no destination took it"}

    def unit(moves):
        done = []
        for index, m in enumerate(moves):
            result = one(m["vm"], m["mode"], m["dest"], alone=len(moves) == 1)
            done.append((m["vm"], result))
            if not result["result"]:
                # An affinity group moves whole or stops: the rest stays with what is left.
                done += [(r["vm"], {"result": False, "status": "refused", "reason": "group",
                                    "name": r["vm"], "comment": (
                                        f"not begun: {m['vm']} of its affinity group did not "
                                        f"move to {m['dest']}")})
                         for r in moves[index + 1:]]
                break
        return done

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    futures = [pool.submit(unit, moves) for moves in units.values()]
    try:
        for future in concurrent.futures.as_completed(futures):
            for vm, result in future.result():
                ret["vms"][vm] = result
    finally:
        # Interrupted: the moves not yet started are dropped; those under way finish.
        pool.shutdown(wait=True, cancel_futures=True)


def _final_reading(opts, ret, host, planned):
    """Read ``host`` afresh: the evacuation succeeded only if it runs and defines nothing."""
    failed = sorted(vm for vm, r in ret["vms"].items() if not r["result"])
    moved = len(ret["vms"]) - len(failed)
    conf = settings_.settings(opts)
    with bus_.local_client(opts) as client:
        _jid, got, _expected = bus_.gather(client, [host], "list", "vmigrate.domains", [], {},
                                           conf["query_timeout"])
    after = decide_.listing(got.get(host))
    if after is None:
        ret["remaining"] = None
        still = f"; {host} could not be read afterwards: run salt-run vmigrate.evacuate " \
                f"{host} dry_run=True to see what is left"
    else:
        ret["remaining"] = sorted(after["domains"])
        still = (f"; still on {host}: {', '.join(ret['remaining'])}" if ret["remaining"]
                 else f"; {host} runs and defines nothing")
    ret["result"] = after is not None and not ret["remaining"] and not failed
    ret["comment"] = (f"{host}: {moved} of {planned} domain(s) moved"
                      + (f"; not moved: {', '.join(failed)}" if failed else "")
                      + (f"; left: {', '.join(sorted(ret['left']))}" if ret["left"] else "")
                      + still)
