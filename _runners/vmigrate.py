"""
Master side of vmigrate: find where a domain runs, migrate it, verify, report.

The orchestration ``salt/migrate.sls`` (``salt-run state.orch migrate pillar='{vm: vdisk,
dest: host2}'``) calls :py:func:`migrate`; it can be called directly too.

Which minions are hypervisors: master config ``vmigrate:hypervisors_target`` (default ``*``)
and ``vmigrate:hypervisors_target_type`` (default ``glob``), e.g.

.. code-block:: yaml

    # /etc/salt/master.d/vmigrate.conf
    vmigrate:
      hypervisors_target: 'hv*'

CLI Example:

.. code-block:: bash

    salt-run vmigrate.locate vdisk
    salt-run vmigrate.migrate vdisk host2
    salt-run vmigrate.migrate vdisk host2 mode=offline
"""

import logging
import re
import time

import salt.client
import salt.utils.event
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "vmigrate"

MODES = ("live", "offline")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+:@-]{0,254}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
# How long to wait for a minion to answer a short call (listing domains, verifying).
QUERY_TIMEOUT = 15


def __virtual__():
    return __virtualname__


def _settings():
    conf = __opts__.get("vmigrate") or {}
    return {
        "tgt": conf.get("hypervisors_target", "*"),
        "tgt_type": conf.get("hypervisors_target_type", "glob"),
    }


def _client():
    return salt.client.get_local_client(__opts__["conf_file"])


def _fail(ret, comment):
    """Mark the runner's return as failed: salt-run and state.orch then exit non-zero."""
    ret["result"] = False
    ret["comment"] = comment
    # salt-run exits with a returned "retcode"; state.orch reads the context's.
    ret["retcode"] = 1
    __context__["retcode"] = 1
    return ret


def _fire(tag, data):
    try:
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as ev:
            ev.fire_event(data, tag)
    except Exception as err:  # pylint: disable=broad-except
        log.warning("vmigrate: could not fire %s: %s", tag, err)


def _validate(vm, dest=None, mode="live"):
    if not isinstance(vm, str) or not _NAME_RE.fullmatch(vm):
        raise SaltInvocationError(
            f"vm {vm!r} is not a valid domain name: pass pillar='{{vm: <name>, dest: <minion>}}'"
        )
    if dest is not None and (not isinstance(dest, str) or not _HOST_RE.fullmatch(dest)):
        raise SaltInvocationError(f"dest {dest!r} is not a valid minion id")
    if mode not in MODES:
        raise SaltInvocationError(f"mode {mode!r}: must be one of {', '.join(MODES)}")


def _domains(tgt, tgt_type="glob"):
    """Ask ``tgt`` for their domains. Returns ({host: {name: info}}, {host: error})."""
    returns = _client().cmd(
        tgt, "vmigrate.domains", timeout=QUERY_TIMEOUT, tgt_type=tgt_type, full_return=True
    )
    hosts, errors = {}, {}
    for minion, ret in returns.items():
        value = ret.get("ret") if isinstance(ret, dict) else ret
        if isinstance(ret, dict) and ret.get("retcode", 0) == 0 and isinstance(value, dict):
            hosts[minion] = value.get("domains", {})
        else:
            errors[minion] = str(value)
    return hosts, errors


def _where(vm, hosts):
    running = sorted(h for h, doms in hosts.items()
                     if vm in doms and doms[vm]["state"] in ("running", "paused", "blocked"))
    defined = sorted(h for h, doms in hosts.items() if vm in doms and doms[vm]["persistent"])
    present = sorted(h for h, doms in hosts.items() if vm in doms)
    return running, defined, present


def locate(vm, tgt=None, tgt_type=None):
    """
    Find where domain ``vm`` lives: one broadcast of ``vmigrate.domains`` to the hypervisors.

    Returns a dict: ``name``, ``running`` and ``defined`` (lists of minion ids), ``hosts``
    (per host: ``state``, ``persistent``), ``hypervisors`` (every minion that answered) and
    ``unreachable`` (minions that answered with an error).

    :param vm: the domain name
    :param tgt: which minions to ask (default: master config ``vmigrate:hypervisors_target``)
    :param tgt_type: how to match ``tgt`` (default ``glob``)

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.locate vdisk
    """
    _validate(vm)
    settings = _settings()
    hosts, errors = _domains(tgt or settings["tgt"], tgt_type or settings["tgt_type"])
    running, defined, present = _where(vm, hosts)
    return {
        "name": vm,
        "running": running,
        "defined": defined,
        "hosts": {h: hosts[h][vm] for h in present},
        "hypervisors": sorted(hosts),
        "unreachable": errors,
    }


def _call(minion, fun, args, kwargs=None, timeout=QUERY_TIMEOUT):
    """Run ``fun`` on one minion. Returns (ok, value)."""
    ret = _client().cmd(minion, fun, list(args), kwarg=kwargs or {}, timeout=timeout,
                        full_return=True).get(minion)
    if not ret:
        # Salt keeps waiting while the minion reports the job running (saltutil.find_job);
        # no return means the minion went away or never got the job.
        return False, f"{minion} did not return from {fun}"
    if isinstance(ret, dict) and "ret" in ret:
        return ret.get("retcode", 0) == 0, ret["ret"]
    return False, ret


def migrate(vm=None, dest=None, mode="live", bandwidth=None, timeout=None, tgt=None,
            tgt_type=None):
    """
    Migrate domain ``vm`` to hypervisor ``dest``: locate, migrate on the source, verify.

    Refuses, changing nothing, when the domain is on no hypervisor or on several, when it
    already runs on ``dest``, or when ``dest`` is not an answering hypervisor.

    :param vm: the domain name
    :param dest: the destination minion id
    :param mode: ``live`` (default) or ``offline`` (a shut-off domain)
    :param bandwidth: MiB/s cap for the memory transfer
    :param timeout: abort a live migration after this many seconds
    :param tgt: the hypervisors to search (default: master config
        ``vmigrate:hypervisors_target``)
    :param tgt_type: how to match ``tgt``

    Returns a dict: ``result``, ``comment``, ``name``, ``source``, ``dest``, ``mode`` and the
    migration's numbers (``elapsed`` of the call, ``job_ms`` of libvirt's job, ``downtime_ms``,
    ``bytes``, ``iterations``), ``wall`` (seconds for the whole runner call), ``located``
    (where it was found) and ``after`` (where it is now, checked on source and dest).

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.migrate vdisk host2
        salt-run state.orch migrate pillar='{vm: vdisk, dest: host2}'
    """
    start = time.monotonic()
    ret = {"result": True, "name": vm, "dest": dest, "mode": mode, "comment": ""}
    try:
        _validate(vm, dest, mode)
        if dest is None:
            raise SaltInvocationError("dest is required: pass pillar='{vm: <name>, dest: <minion>}'")
    except SaltInvocationError as err:
        return _fail(ret, str(err))

    where = locate(vm, tgt, tgt_type)
    ret["located"] = {k: where[k] for k in ("running", "defined", "hosts")}
    present = sorted(where["hosts"])
    if not present:
        extra = f"; no answer from {', '.join(sorted(where['unreachable']))}" if where[
            "unreachable"] else ""
        return _fail(ret, f"vm {vm} was not found on any hypervisor "
                          f"({', '.join(where['hypervisors']) or 'none answered'}){extra}")
    if len(present) > 1:
        return _fail(ret, f"vm {vm} is on several hypervisors ({', '.join(present)}): refusing "
                          "to migrate; resolve it so that exactly one host has it")
    source = present[0]
    ret["source"] = source
    if source == dest:
        state = where["hosts"][source]["state"]
        return _fail(ret, f"vm {vm} is already on {dest} ({state}): nothing to migrate")
    if dest not in where["hypervisors"]:
        why = where["unreachable"].get(dest, "it did not answer")
        return _fail(ret, f"dest {dest} is not an available hypervisor: {why}")

    ok, out = _call(source, "vmigrate.migrate", [vm, dest],
                    {"mode": mode, "bandwidth": bandwidth, "timeout": timeout},
                    timeout=QUERY_TIMEOUT)
    # Where it is now, whatever the call said: the report on failure, the check on success.
    after = locate(vm, [source, dest], "list")
    ret["after"] = {k: after[k] for k in ("running", "defined", "hosts")}
    if not ok:
        _fire(f"vmigrate/{vm}/result", dict(ret, result=False, error=str(out)))
        return _fail(ret, f"migration of {vm} from {source} to {dest} failed: {out}; "
                          f"{vm} is now running on {', '.join(after['running']) or 'no host'}")
    ret.update({k: out.get(k) for k in ("elapsed", "downtime_ms", "bytes", "iterations")})
    ret["job_ms"] = (out.get("stats") or {}).get("time_elapsed")

    # Verify: dest has it persistently (running for live), the source no longer has it.
    want_state = "running" if mode == "live" else "shutoff"
    on_dest = after["hosts"].get(dest, {})
    problems = []
    if on_dest.get("state") != want_state or not on_dest.get("persistent"):
        problems.append(f"on {dest} it is {on_dest.get('state', 'absent')}"
                        f"{'' if on_dest.get('persistent') else ', not persistent'}")
    if source in after["hosts"]:
        problems.append(f"{source} still has it ({after['hosts'][source]['state']})")
    ret["wall"] = round(time.monotonic() - start, 3)
    if problems:
        _fire(f"vmigrate/{vm}/result", dict(ret, result=False))
        return _fail(ret, f"migration of {vm} reported success but verification failed: "
                          + "; ".join(problems))
    ret["comment"] = (f"{vm} migrated {mode} from {source} to {dest} in {ret['elapsed']}s"
                      + (f", downtime {ret['downtime_ms']} ms" if ret["downtime_ms"] is not None
                         else ""))
    _fire(f"vmigrate/{vm}/result", ret)
    return ret
