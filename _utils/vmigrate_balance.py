"""
Rebalancing, the master's use case behind ``salt-run vmigrate.balance``: the moves that even
out memory use across the hypervisors (``vmigrate_planner.balance``), within the placement
rules, the caps and maintenance, each one a full migration (``vmigrate_move.migrate``: lock,
prechecks, verification, one result event), one after another. A dry run prints the moves
with the spread before and after. It ends with a fresh reading of the fleet and the spread
measured there; a second run right after makes no move. One ``vmigrate/balance/result`` event.

No Salt dunders.
"""

import os
import runpy
import time

from salt.exceptions import CommandExecutionError, SaltException, SaltInvocationError

(bus_, fleet_, move_, planner_, settings_, validate_) = runpy.run_path(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_bus", "vmigrate_fleet", "vmigrate_move", "vmigrate_planner",
    "vmigrate_settings", "vmigrate_validate")

# A rebalance moves at most this many guests unless told otherwise: an operator's safety
# valve against a plan that would move half the fleet at once.
MAX_MOVES = 10


def balance(opts, dry_run=False, max_moves=MAX_MOVES, threshold=None, bandwidth=None,
            timeout=None, trigger="cli"):
    """Plan and make the moves that lower the spread of memory use (the most used host's
    fraction less the least used one's) to ``threshold`` (default: master config
    ``vmigrate:placement:threshold``, 0.1), at most ``max_moves`` of them. Returns
    ``result``, ``moves`` ([{vm, source, dest}] planned), ``vms`` ({vm: its migration's
    result}), ``spread_before``, ``spread_planned``, ``spread_after`` (measured afresh at the
    end), ``loads`` and ``comment``. ``dry_run`` moves nothing."""
    start = time.monotonic()
    ret = {"result": False, "trigger": trigger, "moves": [], "vms": {}, "comment": ""}
    try:
        if isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < 0:
            raise SaltInvocationError(f"max_moves {max_moves!r}: an integer >= 0")
        if threshold is not None:
            threshold = planner_.fraction(threshold, "threshold")
        validate_.mib_per_s(bandwidth)
        validate_.seconds(timeout, "timeout")
        _balance(opts, ret, dry_run, max_moves, threshold, bandwidth, timeout, trigger)
    except (SaltException, OSError) as err:
        ret["result"] = False
        ret["comment"] = "; ".join(x for x in (ret["comment"], str(err)) if x)
    except (KeyboardInterrupt, SystemExit):
        ret["result"] = False
        ret["comment"] = ("interrupted on the master: the migration under way goes on under "
                          "its own timeout, no later move was begun; see ``vms``")
    ret["wall"] = round(time.monotonic() - start, 3)
    if not dry_run:
        bus_.fire(opts, "vmigrate/balance/result", ret)
    return ret


def _balance(opts, ret, dry_run, max_moves, threshold, bandwidth, timeout, trigger):
    rules = settings_.placement(opts)
    fleet, _answers, silent = fleet_.read(opts)
    if silent:
        raise CommandExecutionError(
            f"{', '.join(f'{h} ({why})' for h, why in sorted(silent.items()))} did not answer: "
            "its guests' memory is unknown, so no balance can be planned; nothing was moved")
    plan = planner_.balance(fleet, rules, max_moves, threshold)
    ret.update(moves=[{"vm": m["vm"], "mode": m["mode"], "source": m["source"],
                       "dest": m["dest"]} for m in plan["moves"]],
               spread_before=plan["spread_before"], spread_planned=plan["spread_after"],
               loads={"before": plan["loads_before"], "planned": plan["loads_after"]},
               stopped=plan["stopped"], left=fleet.left)
    summary = (f"spread {plan['spread_before']:.3f} -> {plan['spread_after']:.3f} with "
               f"{len(plan['moves'])} move(s)"
               + "".join(f"; {m['vm']}: {m['source']} -> {m['dest']}" for m in plan["moves"])
               + f" ({plan['stopped']})")
    if dry_run:
        ret.update(result=None if plan["moves"] else True, comment=f"would move: {summary}")
        return
    for index, move in enumerate(plan["moves"]):
        result = move_.migrate(opts, move["vm"], move["dest"], move["mode"], bandwidth,
                               timeout, trigger=f"balance:{trigger}", owner=move["source"])
        ret["vms"][move["vm"]] = result
        if not result["result"]:
            # The fleet is no longer what the rest of the plan was made for.
            ret["skipped"] = [m["vm"] for m in plan["moves"][index + 1:]]
            break
    after, _answers, _silent = fleet_.read(opts)
    ret["spread_after"], ret["loads"]["after"] = planner_.spread(after)
    failed = sorted(vm for vm, r in ret["vms"].items() if not r["result"])
    ret["result"] = not failed
    ret["comment"] = (f"moved {len(ret['vms']) - len(failed)} of {len(plan['moves'])}: "
                      f"{summary}; measured after: spread {ret['spread_after']:.3f}"
                      + (f"; failed: {', '.join(failed)}" if failed else "")
                      + (f"; not begun: {', '.join(ret['skipped'])}" if ret.get("skipped")
                         else ""))
