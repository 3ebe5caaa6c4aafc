"""
Master side of vmigrate: where a domain runs, what a migration would do, and the migration.

Thin over the master's shared code (``_utils``), which the orchestration states
``vmigrate.migrated`` and ``vmigrate.evacuated`` (behind ``salt-run state.orch migrate`` and
``evacuate``) share: ``vmigrate_decide`` (where a domain is), ``vmigrate_move`` (one
migration and its plan), ``vmigrate_reconcile``, ``vmigrate_evacuate``, ``vmigrate_jobs``
(what runs now) and ``vmigrate_intake`` (requests through the reactor). The hypervisors are
named in the master config (``vmigrate:hypervisors_target``, required; every setting:
``_utils/vmigrate_settings.py``), e.g.

.. code-block:: yaml

    # /etc/salt/master.d/vmigrate.conf
    vmigrate:
      hypervisors_target: [hv1, hv2]

CLI Example:

.. code-block:: bash

    salt-run vmigrate.locate vdisk
    salt-run vmigrate.plan vdisk host2
    salt-run vmigrate.migrate vdisk host2
    salt-run vmigrate.migrate vdisk host2 mode=offline
    salt-run vmigrate.reconcile vdisk
    salt-run vmigrate.evacuate host1
    salt-run vmigrate.maintenance host2 on
    salt-run vmigrate.balance dry_run=True
    salt-run vmigrate.jobs
    salt-run vmigrate.abort vdisk
    salt-run vmigrate.watch vdisk
"""

import logging
import os
import runpy

from salt.exceptions import SaltException


# The shared code (``_utils``) as plain Python in every install: _utils/vmigrate_imports.py.
_shared = runpy.run_path(next(p for p in (os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), d, "vmigrate_imports.py") for d in ("utils", "_utils"))
    if os.path.isfile(p)))["load"]
(balance_, decide_, evacuate_, install_, intake_, jobs_, maintenance_, move_, placement_,
 reconcile_, validate_) = map(_shared, (
    "vmigrate_balance", "vmigrate_decide", "vmigrate_evacuate", "vmigrate_install",
    "vmigrate_intake", "vmigrate_jobs", "vmigrate_maintenance", "vmigrate_move",
    "vmigrate_placement", "vmigrate_reconcile", "vmigrate_validate"))

log = logging.getLogger(__name__)

__virtualname__ = "vmigrate"


def __virtual__():
    return __virtualname__


def _finish(ret, ok):
    """Set the outcome on every call, never only on failure: the runner client and its context
    are reused across jobs (the reactor). salt-run exits with the returned ``retcode``; the
    job's ``success`` follows the context's."""
    code = 0 if ok else 1
    __context__["retcode"] = code
    ret["retcode"] = code
    return ret


def locate(vm, hosts=None, dname=None):
    """
    Find where domain ``vm`` lives: one broadcast of ``vmigrate.domains`` to the hypervisors.

    A hypervisor that does not answer, or answers with an error, is listed under
    ``unaccounted``: the domain may run there.

    :param vm: the domain name
    :param hosts: a list of minion ids to ask instead of the configured hypervisors
    :param dname: the new name a migration (option dname) was giving it: a domain of that
        name with its UUID is one of its copies too (its entry in ``hosts`` then has ``name``)

    Returns a dict: ``name``, ``running``, ``paused`` ({host: libvirt's reason}),
    ``defined`` (persistent), ``hosts`` (per host: ``state``, ``reason``, ``persistent``,
    ``uuid``), ``hypervisors`` (those that answered), ``unaccounted`` ({host: why}) and
    ``retcode`` (1 when a hypervisor is unaccounted: the answer is incomplete).

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.locate vdisk
        salt-run vmigrate.locate vdisk dname=vdisk-new
    """
    try:
        validate_.vm_name(vm)
        if dname is not None:
            validate_.vm_name(dname, "dname")
        where = decide_.locate(__opts__, vm, hosts, dname=dname)
    except (SaltException, OSError) as err:
        return _finish({"name": vm, "comment": str(err)}, False)
    where.pop("timeouts", None)
    return _finish(where, not where["unaccounted"])


def version():
    """
    Which vmigrate this master runs and how it is installed: the ``saltext-vmigrate``
    extension package (then ``sls_path`` is the SLS tree to list in ``file_roots``: Salt
    extensions cannot serve SLS themselves) or synced from file_roots; ``shadowed`` names a
    synced copy that hides an installed extension.

    Returns a dict: ``version``, ``install``, ``path``, ``sls_path``, ``shadowed``,
    ``comment``.

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.version
    """
    return install_.describe(__file__, __opts__.get("extension_modules"))


def plan(vm, dest, mode="live", force=False, options=None, bandwidth=None):
    """
    What ``migrate`` would do, changing nothing: where ``vm`` is, the decision, the
    destination's maintenance and the placement rules, and the source hypervisor's prechecks
    (each with ``name``, ``ok``, ``detail``, ``fix``); with ``bandwidth``, the convergence
    forecast of a live migration (``forecast``: the dirty rate libvirt measured, whether and
    how soon it converges, the steps policy auto would choose).

    :param vm: the domain name
    :param dest: the destination minion id
    :param mode: ``live`` (default), ``offline``, ``cold`` or ``save``
    :param force: decide even if a hypervisor does not answer
    :param options: the migration's options, validated as ``migrate`` does; with
        ``copy_storage`` the disks to copy are checked as such
    :param bandwidth: the cap (MiB/s) the migration would run under: forecast it

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.plan vdisk host2
        salt-run vmigrate.plan vdisk host2 bandwidth=20
        salt-run vmigrate.plan vlocal host2 options='{copy_storage: all}'
    """
    try:
        out = move_.plan(__opts__, vm, dest, mode, force, options=options, bandwidth=bandwidth)
    except (SaltException, OSError) as err:
        out = {"name": vm, "dest": dest, "result": False, "comment": str(err), "checks": [],
               "blockers": ["input"]}
    return _finish(out, out["result"] is not False)


def migrate(vm=None, dest=None, mode="live", bandwidth=None, timeout=None, force=False,
            options=None):
    """
    Migrate domain ``vm`` to hypervisor ``dest``: locate, migrate on the source, verify.

    Refuses, changing nothing, when the domain is on no hypervisor or on several, when a
    hypervisor cannot be accounted for (unless ``force``), when it already runs on ``dest``,
    when ``dest`` is not an answering hypervisor, or when the source's storage precheck fails.

    :param vm: the domain name
    :param dest: the destination minion id
    :param mode: ``live`` (default), ``offline`` (a shut-off domain), ``cold`` (shutdown,
        move, start) or ``save`` (save its memory, move, restore it)
    :param bandwidth: MiB/s cap for the memory transfer
    :param timeout: a live migration still running after this many seconds gets option
        ``timeout_action`` (default abort) (default: the source's pillar ``vmigrate:timeout``)
    :param force: go ahead although a hypervisor did not answer (named in ``forced``)
    :param options: more of ``virsh migrate``'s options (docs, "Every virsh migrate
        option"), e.g. ``options='{auto_converge: true, max_downtime: 500}'``

    Run from ``salt-run``, progress lines are printed on standard error as they happen.

    Returns a dict: ``result``, ``status`` (migrated, refused, aborted, failed or unknown),
    ``comment``,
    ``name``, ``source``, ``dest``, ``mode``, the migration's numbers (``elapsed`` of the call,
    ``job_ms`` of libvirt's job, ``downtime_ms``, ``bytes``, ``iterations``), ``data_stream``,
    ``wall`` (seconds for the whole call), ``located`` and ``after`` (where it is now).

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.migrate vdisk host2
        salt-run vmigrate.migrate vdisk host2 mode=save
        salt-run vmigrate.migrate vdisk host2 options='{timeout_action: pause}' timeout=60
        salt-run state.orch migrate pillar='{vm: vdisk, dest: host2}'
    """
    ret = move_.migrate(__opts__, vm, dest, mode, bandwidth, timeout, force, trigger="runner",
                        options=options, report=jobs_.terminal_report(__opts__))
    return _finish(ret, ret["result"])


def jobs():
    """
    What migrates now: libvirt's jobs on every hypervisor (migrations going out and coming
    in, with percent, pass and rate), beside the requests the master holds (route, trigger).

    Returns a dict: ``jobs`` (a list), ``requests``, ``unaccounted`` and ``comment`` (a line
    per job).

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.jobs
    """
    try:
        out = jobs_.jobs(__opts__)
        out["maintenance"] = maintenance_.hosts(__opts__)
    except (SaltException, OSError) as err:
        return _finish({"result": False, "comment": str(err)}, False)
    if out["maintenance"]:
        out["comment"] = "\n".join(x for x in (out.get("comment"), "in maintenance: " + ", ".join(
            sorted(out["maintenance"]))) if x)
    return _finish(dict(out, result=True), True)


def abort(vm):
    """
    Abort the migration of ``vm``: the hypervisor sending it stops it, and the domain stays
    there, as it was. The migration's own request then reports ``status: aborted``.

    Returns a dict: ``result`` (True when a migration was aborted), ``comment``, ``hosts``.

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.abort vdisk
    """
    try:
        out = jobs_.abort(__opts__, vm)
    except SaltException as err:
        return _finish({"result": False, "comment": str(err)}, False)
    return _finish(out, out["result"])


def watch(vm, timeout=600):
    """
    Follow the migration of ``vm`` started elsewhere (another terminal, a schedule, the
    reactor): a progress line for each of its events, until it ends or ``timeout`` seconds.

    Returns a dict: ``result`` (the migration's; None when none ended meanwhile),
    ``status``, ``comment`` and ``progress`` (the lines).

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.watch vdisk
        salt-run vmigrate.watch vdisk timeout=60
    """
    try:
        out = jobs_.watch(__opts__, vm, timeout, jobs_.terminal_report(__opts__))
    except SaltException as err:
        return _finish({"result": False, "comment": str(err)}, False)
    return _finish(out, out["result"] is not False)


def reconcile(vm, dry_run=False, dname=None):
    """
    Bring domain ``vm`` to one running copy, defined on one host, and report what was found
    and what was changed. A running copy is kept and any other copy destroyed and undefined; with
    no running copy, the paused one (the persistent one, if several) is resumed; a running
    transient copy is made persistent. Nothing is decided while a hypervisor is unaccounted, or
    when copies run on several hosts; no disk is ever touched. Holds the VM's migration lock.

    :param vm: the domain name
    :param dry_run: report the repairs without making them
    :param dname: the new name a migration (option dname) was giving it: its copies under
        that name, with its UUID, are repaired too

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.reconcile vdisk
        salt-run vmigrate.reconcile vdisk dry_run=True
        salt-run vmigrate.reconcile vdisk dname=vdisk-new
    """
    try:
        out = reconcile_.reconcile(__opts__, vm, dry_run=dry_run, dname=dname)
    except (SaltException, OSError) as err:
        out = {"name": vm, "result": False, "comment": str(err), "actions": []}
    return _finish(out, out["result"] is not False)


def evacuate(host, targets=None, concurrency=2, bandwidth=None, timeout=None, dry_run=False,
             force=False):
    """
    Move every domain off hypervisor ``host``, which goes into maintenance first: running
    ones live, shut-off ones offline, each to the host the planner chooses by free memory,
    vCPUs, incoming migrations and the placement rules (the plan names every candidate and
    why it was chosen or skipped), ``concurrency`` at a time (bounded by master config
    ``vmigrate:max_outgoing``). Exits non-zero unless a fresh reading at the end finds the
    host running and defining nothing; each domain that did not move stays where it was.

    :param host: the hypervisor to empty
    :param targets: destination minion ids (default: every other answering hypervisor)
    :param concurrency: migrations at once (1..16)
    :param bandwidth: MiB/s cap for each live migration
    :param timeout: abort each live migration after this many seconds
    :param dry_run: list the moves and the plan, move nothing
    :param force: go on although a hypervisor does not answer (it receives nothing)

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.evacuate host1 dry_run=True
        salt-run vmigrate.evacuate host1
        salt-run vmigrate.evacuate host1 targets='[host2, host3]' concurrency=2
        salt-run state.orch evacuate pillar='{host: host1}'
    """
    out = evacuate_.evacuate(__opts__, host, targets, concurrency, bandwidth, timeout,
                             trigger="runner", dry_run=dry_run, force=force)
    return _finish(out, out["result"] is not False)


def maintenance(host=None, state=None, reason=None):
    """
    Hosts in maintenance receive no migration: not from a migration asked by name, an
    evacuation, a rebalance or a reactor request. Kept on the master across restarts.

    :param host: the hypervisor (none: list the hosts in maintenance)
    :param state: ``on`` or ``off`` (none: show ``host``)
    :param reason: a line saying why, shown with it

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.maintenance
        salt-run vmigrate.maintenance host2 on reason='firmware update'
        salt-run vmigrate.maintenance host2 off
    """
    try:
        if host is None:
            hosts = maintenance_.hosts(__opts__)
            return _finish({"result": True, "maintenance": hosts, "comment": (
                "in maintenance: " + ", ".join(sorted(hosts))) if hosts
                else "no host is in maintenance"}, True)
        validate_.minion_id(host, "host")
        if state is None:
            info = maintenance_.hosts(__opts__).get(host)
            return _finish({"result": True, "host": host, "maintenance": info is not None,
                            **(info or {}), "comment": f"{host} is "
                            f"{'in' if info else 'not in'} maintenance"}, True)
        out = maintenance_.switch(__opts__, host, state, reason, by="runner")
    except (SaltException, OSError) as err:
        return _finish({"result": False, "comment": str(err)}, False)
    out["comment"] = (f"{host} {'is now' if out['changed'] else 'already was'} "
                      f"{'in' if out['maintenance'] else 'out of'} maintenance")
    return _finish(dict(out, result=True), True)


def balance(dry_run=False, max_moves=balance_.MAX_MOVES, threshold=None, bandwidth=None,
            timeout=None):
    """
    Even out memory use across the hypervisors: the planner's moves (each guest's maximum
    memory against what each host offers, pillar ``vmigrate:capacity``) until the spread --
    the most used host's fraction less the least used one's -- is within ``threshold``,
    honouring the placement rules, the caps and maintenance. Each move is a full migration.
    Exits non-zero if a move fails (the rest of the plan is then not begun).

    :param dry_run: print the moves with the spread before and after, move nothing
    :param max_moves: at most this many migrations (default 10)
    :param threshold: the spread to reach (default master config
        ``vmigrate:placement:threshold``, 0.1)
    :param bandwidth: MiB/s cap for each migration
    :param timeout: abort each migration after this many seconds

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.balance dry_run=True
        salt-run vmigrate.balance max_moves=4 threshold=0.2
    """
    out = balance_.balance(__opts__, dry_run, max_moves, threshold, bandwidth, timeout,
                           trigger="runner")
    return _finish(out, out["result"] is not False)


def placement(vm=None):
    """
    Where the hypervisors' ``vmigrate`` beacons say each domain is, from libvirt's lifecycle
    events (the master's record; see ``_utils/vmigrate_placement.py``). Asks no minion. A
    record, not what a migration decides on: ``locate`` asks every hypervisor.

    :param vm: one domain (default: all)

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.placement
        salt-run vmigrate.placement vdisk
    """
    return dict(placement_.placement(__opts__, vm), maintenance=maintenance_.hosts(__opts__))


def record(tag, data):
    """
    Take one ``salt/beacon/<minion>/vmigrate/...`` event into the placement record (the
    reactor ``vmigrate/reactor/beacon.sls`` calls this).
    """
    return placement_.record(__opts__, tag, data)


def request(vm, dest, mode="live"):
    """
    Ask for a migration through the reactor, signed as requester ``master`` (master config
    ``vmigrate:requests:requesters:master:key``), and return at once: the reactor moves it,
    and ``vmigrate/<vm>/result`` reports the outcome. An unsigned event cannot do this: any
    minion could send the same one (see docs, "Triggers").

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.request vdisk host2
    """
    try:
        out = intake_.send_request(__opts__, "migrate", {"vm": vm, "dest": dest, "mode": mode})
    except (SaltException, OSError) as err:
        return _finish({"comment": str(err)}, False)
    return _finish(out, True)


def request_evacuate(host):
    """
    Ask for an evacuation of ``host`` through the reactor, signed as requester ``master``.

    CLI Example:

    .. code-block:: bash

        salt-run vmigrate.request_evacuate host1
    """
    try:
        out = intake_.send_request(__opts__, "evacuate", {"host": host})
    except (SaltException, OSError) as err:
        return _finish({"comment": str(err)}, False)
    return _finish(out, True)
