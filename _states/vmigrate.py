"""
Where a VM runs, as state: for orchestration SLS on the master.

Thin over the master's shared code that ``salt-run vmigrate.migrate`` runs too
(``_utils/vmigrate_move.py``; ``vmigrate_evacuate.py`` and ``vmigrate_intake.py`` for the
other two states): it locates the domain, moves it with its source minion's
``vmigrate.migrate`` and verifies both hosts. ``test=True`` shows the plan -- where it is,
the decision, the source's prechecks -- and changes nothing.

.. code-block:: yaml

    # salt/migrate.sls: `salt-run state.orch migrate pillar='{vm: vdisk, dest: host2}'`
    vmigrate-migrate-vmigrate-migrated:
      vmigrate.migrated:
        - name: vdisk
        - host: host2
        - require_move: true      # the request was to move it: already there is an error

    # declarative: vdisk runs on host2 (no change when it already does)
    vdisk-on-host2:
      vmigrate.migrated:
        - name: vdisk
        - host: host2

    # salt/evacuate.sls: `salt-run state.orch evacuate pillar='{host: host1}'`
    host1-empty:
      vmigrate.evacuated:
        - name: host1
        - concurrency: 2

    # a maintenance window: nothing lands on host3 until it is over
    host3-in-maintenance:
      vmigrate.maintenance:
        - name: host3
        - enabled: true
        - reason: firmware update

    # salt/vmigrate/orch/request.sls, started by the reactor: authorize, then act
    vmigrate-orch-request-vmigrate-requested:
      vmigrate.requested:
        - name: vmigrate/request     # the event's tag
        - data: {...}                # the event's data, untrusted
"""

import os
import runpy

from salt.exceptions import SaltException


# The shared code (``_utils``) as plain Python in every install: _utils/vmigrate_imports.py.
_shared = runpy.run_path(next(p for p in (os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), d, "vmigrate_imports.py") for d in ("utils", "_utils"))
    if os.path.isfile(p)))["load"]
evacuate_, intake_, jobs_, maintenance_, move_ = map(_shared, (
    "vmigrate_evacuate", "vmigrate_intake", "vmigrate_jobs", "vmigrate_maintenance",
    "vmigrate_move"))

__virtualname__ = "vmigrate"


def __virtual__():
    return __virtualname__


def migrated(name, host, mode="live", bandwidth=None, timeout=None, force=False,
             require_move=False, options=None):
    """
    Make sure domain ``name`` runs on hypervisor ``host`` (is defined there, for ``offline``).

    :param name: the domain
    :param host: the hypervisor minion id it must run on
    :param mode: ``live`` (default), ``offline`` (a shut-off domain's definition), ``cold``
        (shutdown, move, start) or ``save`` (save its memory, move, restore it)
    :param bandwidth: MiB/s cap for the memory transfer
    :param timeout: a live migration still running after this many seconds gets option
        ``timeout_action`` (default: abort)
    :param force: decide even if a hypervisor does not answer
    :param require_move: fail, rather than report no change, when it already is on ``host``
    :param options: more of ``virsh migrate``'s options (docs, "Every virsh migrate option")

    Under ``salt-run state.orch``, progress lines are printed on standard error as they happen.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    dname = options.get("dname") if isinstance(options, dict) else None
    renamed = {"name": {"old": name, "new": dname}} if dname not in (None, name) else {}
    if __opts__.get("test"):
        try:
            plan = move_.plan(__opts__, name, host, mode, force, already_ok=not require_move,
                              options=options, bandwidth=bandwidth)
        except Exception as err:  # pylint: disable=broad-except
            return dict(ret, result=False, comment=str(err))
        if plan["result"] is None:
            return dict(ret, comment=f"{name} already runs on {host}")
        lines = [plan["comment"]] + [
            f"[{'ok' if c['ok'] else 'BLOCKER'}] {c['name']}: {c['detail']}"
            + (f" Fix: {c['fix']}" if not c["ok"] else "") for c in plan["checks"]]
        if plan["result"] is False:
            return dict(ret, result=False, comment="\n".join(lines))
        return dict(ret, result=None, comment="\n".join(lines),
                    changes={"host": {"old": plan["source"], "new": host}, "mode": mode,
                             **renamed})
    out = move_.migrate(
        __opts__, name, host, mode, bandwidth, timeout, force, already_ok=not require_move,
        trigger="state", options=options, report=jobs_.terminal_report(__opts__))
    if not out["result"]:
        return dict(ret, result=False, comment=out["comment"])
    if out["status"] == "unchanged":
        return dict(ret, comment=out["comment"])
    numbers = {k: out.get(k) for k in ("elapsed", "job_ms", "downtime_ms", "bytes",
                                       "iterations", "data_stream", "wall", "policy")}
    return dict(ret, comment=out["comment"],
                changes={"host": {"old": out["source"], "new": host}, **renamed,
                         "migration": numbers})


def evacuated(name, targets=None, concurrency=2, bandwidth=None, timeout=None, force=False):
    """
    Make sure hypervisor ``name`` runs no domain and defines none: it goes into maintenance
    and each domain moves to the host the planner chooses (see ``salt-run
    vmigrate.evacuate``). ``test=True`` lists the moves and where each goes.

    :param name: the hypervisor minion id to empty
    :param targets: destination minion ids (default: every other answering hypervisor)
    :param concurrency: migrations at once
    :param bandwidth: MiB/s cap for each live migration
    :param timeout: abort each live migration after this many seconds
    :param force: go on although a hypervisor does not answer (it receives nothing)
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    out = evacuate_.evacuate(__opts__, name, targets, concurrency, bandwidth, timeout,
                             trigger="state", dry_run=bool(__opts__.get("test")), force=force)
    if out["result"] is False:
        return dict(ret, result=False, comment=out["comment"],
                    changes=_moved(out))
    if __opts__.get("test"):
        if not out.get("moves"):
            return dict(ret, comment=f"{name} runs and defines no domain to move")
        return dict(ret, result=None, comment=out["comment"],
                    changes={"moves": {vm: {"mode": mode, "dest": dest}
                                       for vm, mode, dest in out["moves"]}})
    if not out["vms"]:
        return dict(ret, comment=f"{name} runs and defines no domain to move")
    return dict(ret, comment=out["comment"], changes=_moved(out))


def _moved(out):
    return {vm: {"old": out["host"], "new": r.get("dest")}
            for vm, r in out.get("vms", {}).items() if r.get("result")}


def maintenance(name, enabled=True, reason=None):
    """
    Make sure hypervisor ``name`` is in maintenance (``enabled``: it receives no migration)
    or out of it. ``test=True`` says what would change.

    :param name: the hypervisor minion id
    :param enabled: true: in maintenance; false: out of it
    :param reason: a line saying why, kept with it
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        maintenance_.check_host(name)
        want = maintenance_.state_of(enabled)
        was = name in maintenance_.hosts(__opts__)
        if was == want:
            return dict(ret, comment=f"{name} is {'in' if want else 'out of'} maintenance "
                                     "already")
        if __opts__.get("test"):
            return dict(ret, result=None, comment=f"{name} would go "
                        f"{'into' if want else 'out of'} maintenance",
                        changes={"maintenance": {"old": was, "new": want}})
        maintenance_.switch(__opts__, name, want, reason, by="state")
    except (SaltException, OSError) as err:
        return dict(ret, result=False, comment=str(err))
    return dict(ret, comment=f"{name} is now {'in' if want else 'out of'} maintenance",
                changes={"maintenance": {"old": was, "new": want}})


def requested(name, data=None):
    """
    Handle one request from the event bus, as the reactor hands it over: ``name`` is the
    event's tag, ``data`` its data, trusted for nothing. Authorized from master config
    (``vmigrate:requests``) before anything is located; a refusal changes nothing and is
    logged. ``test=True`` changes nothing and authorizes nothing (a signed request's nonce
    would be spent).
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if __opts__.get("test"):
        return dict(ret, result=None, comment=f"would authorize and handle {name}")
    out = intake_.request(__opts__, name, data)
    if not out["result"]:
        return dict(ret, result=False, comment=out["comment"])
    if "vms" in out:
        return dict(ret, comment=out["comment"], changes=_moved(out))
    if out.get("status") == "unchanged":
        return dict(ret, comment=out["comment"])
    return dict(ret, comment=out["comment"],
                changes={"host": {"old": out.get("source"), "new": out.get("dest")}})
