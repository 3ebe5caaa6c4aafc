"""
Every domain off one hypervisor, the master's use case behind ``salt-run vmigrate.evacuate``
and the ``vmigrate.evacuated`` state: running ones live, shut-off ones offline, each a full
migration (``vmigrate_move.migrate``) to the least busy destination that takes it, a few at a
time within the per-host caps. One ``vmigrate/evacuate/<host>/result`` event per evacuation.

The moves run in a thread pool of this process; no Salt dunders.
"""

import concurrent.futures
import fnmatch
import os
import runpy
import threading
import time

from salt.exceptions import CommandExecutionError, SaltException, SaltInvocationError

bus_, decide_, move_, names_, settings_, validate_ = runpy.run_path(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](__file__,
    "vmigrate_bus", "vmigrate_decide", "vmigrate_move", "vmigrate_names", "vmigrate_settings",
    "vmigrate_validate")


def _evacuation_plan(listing):
    """What leaves a host: running (and paused, not mid-migration) domains live, shut-off
    persistent ones offline; the rest is named and left."""
    moves, left = [], {}
    for name, info in sorted(listing["domains"].items()):
        if info["state"] == "paused" and info.get("reason") in names_.MIGRATION_PAUSE:
            left[name] = f"paused ({info['reason']}): a migration of it is unfinished"
        elif info["state"] in names_.ACTIVE:
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
    at a time within the per-host caps. Each move is a full ``vmigrate_move.migrate`` (locks,
    prechecks, verification, reconciliation, one result event). Returns ``result`` (True only
    if every domain moved), ``vms`` ({vm: that migration's result}), ``left`` and ``comment``.
    ``dry_run`` lists the moves (``moves``: [[vm, mode]]) and the candidates, moving nothing:
    each move's own prechecks run when it is made. ``allowed``: destination name patterns a
    requester's policy permits. Each move refuses a VM that no longer runs on ``host``."""
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
        validate_.mib_per_s(bandwidth)
        validate_.seconds(timeout, "timeout")
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
    named = host if validate_.valid(validate_.minion_id, host) else "-"
    bus_.fire(opts, f"vmigrate/evacuate/{named}/result", ret)
    return ret


def _evacuate(opts, ret, host, targets, concurrency, bandwidth, timeout, trigger, dry_run,
              allowed=None):
    conf = settings_.settings(opts)
    with bus_.local_client(opts) as client:
        _jid, got, expected = bus_.gather(client, conf["tgt"], conf["tgt_type"], "vmigrate.domains",
                                     [], {}, conf["query_timeout"])
    listings = {h: decide_.listing(got.get(h)) for h in expected}
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
    load = {h: sum(1 for i in listings[h]["domains"].values() if i["state"] in names_.ACTIVE)
            for h in candidates}
    guard = threading.Lock()
    workers = min(concurrency, settings_.caps(opts)["max_outgoing"])
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
            result = move_.migrate(opts, vm, dest, mode, bandwidth, timeout,
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
