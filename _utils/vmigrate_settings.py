"""
The master's ``vmigrate`` configuration, read and checked in one place: which minions are the
hypervisors, how long the master waits for them, and how many migrations one hypervisor may
send and receive at a time (the locks hold those caps, ``vmigrate_locks.py``).

Master config (``/etc/salt/master.d/vmigrate.conf``):

.. code-block:: yaml

    vmigrate:
      hypervisors_target: [hv1, hv2]     # required: which minions are hypervisors
      hypervisors_target_type: list      # list (default for a list), glob, nodegroup, grain...
      query_timeout: 10                  # seconds a hypervisor has to list its domains
      return_margin: 30                  # seconds past a migration's timeout to wait for it
      timeout: 600                       # a migration's timeout, when neither the call nor
                                         # the source's pillar gives one
      max_outgoing: 1                    # migrations leaving one hypervisor at a time
      max_incoming: 2                    # migrations arriving on one hypervisor at a time
      placement:                         # the fleet's rules (vmigrate_planner.rules)
        anti_affinity: {web: [web1, web2]}    # never on one host
        affinity: {app: [app-db, app-web]}    # always on one host
        allowed: {"db*": [hv1, hv2]}          # where VMs named so may run
        threshold: 0.1                        # rebalancing's target spread of memory use

Who may ask for a migration on the event bus (``vmigrate:requests``) is the requests policy,
checked by ``vmigrate_authz.policy``. Plain functions over the master's ``opts``; no Salt
dunders.
"""

import os
import runpy

from salt.exceptions import CommandExecutionError, SaltInvocationError

(planner_,) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_planner")


def _conf(opts):
    return opts.get("vmigrate") or {}


def settings(opts):
    """The master's ``vmigrate`` settings, checked: ``tgt``, ``tgt_type`` (the hypervisors,
    which must be named) and the waits ``query_timeout``, ``return_margin`` and ``timeout``
    (seconds)."""
    conf = _conf(opts)
    tgt = conf.get("hypervisors_target")
    if not tgt:
        raise SaltInvocationError(
            "master config vmigrate:hypervisors_target is not set: name the hypervisor minions, "
            "e.g. 'hypervisors_target: [hv1, hv2]', or a nodegroup or grain match with "
            "hypervisors_target_type (see docs, 'Install on a Salt master')"
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


def caps(opts):
    """The per-hypervisor caps, checked: ``max_outgoing`` and ``max_incoming`` (migrations at a
    time). They need no hypervisors named: the locks read them on their own."""
    conf = _conf(opts)
    out = {}
    for key, default in (("max_outgoing", 1), ("max_incoming", 2)):
        value = conf.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CommandExecutionError(f"master config vmigrate:{key} {value!r}: an integer >= 1")
        out[key] = value
    return out


def placement(opts):
    """The placement rules, checked (``vmigrate_planner.rules``)."""
    return planner_.rules(_conf(opts).get("placement"))
