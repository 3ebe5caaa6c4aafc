"""
Ask the master for a migration or an evacuation through the event bus, signed.

The master's reactor takes a request from the bus only if it is signed with a key the master
config holds for this requester (``vmigrate:requests:requesters:<id>:key``): any minion can put
any event on the bus, under any id, so the signature is what says who asks. This minion gets
the same key through its own pillar:

.. code-block:: yaml

    # pillar for host1 only
    vmigrate:
      request_key: <the same 64 hex digits>

What the requester may ask for (which VMs, which destinations, migrate or evacuate) is the
master's policy; see ``_utils/vmigrate_authz.py``. A minion schedule can call these functions
(see docs, "Schedules").

CLI Example:

.. code-block:: bash

    salt-call vmigrate_request.migrate vdisk host2
    salt-call vmigrate_request.evacuate
"""

import os
import runpy

from salt.exceptions import CommandExecutionError, SaltInvocationError


# The shared code (``_utils``) as plain Python in every install: _utils/vmigrate_imports.py.
_shared = runpy.run_path(next(p for p in (os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), d, "vmigrate_imports.py") for d in ("utils", "_utils"))
    if os.path.isfile(p)))["load"]
authz_, validate_ = map(_shared, (
    "vmigrate_authz", "vmigrate_validate"))

__virtualname__ = "vmigrate_request"


def __virtual__():
    return __virtualname__


def _send(kind, tag, fields):
    key = (__pillar__.get("vmigrate") or {}).get("request_key")
    if not isinstance(key, str) or not key:
        raise CommandExecutionError(
            "no pillar vmigrate:request_key on this minion: the master takes signed requests "
            "only; give this minion the key the master config holds for it "
            "(vmigrate:requests:requesters:<id>:key)")
    try:
        payload = authz_.signed_payload(key, kind, fields, __opts__["id"])
    except ValueError as err:
        raise CommandExecutionError(f"pillar vmigrate:request_key is not hex: {err}") from err
    if not __salt__["event.send"](tag, payload):
        raise CommandExecutionError(f"could not send {tag} to the master")
    return {"sent": tag, "requester": __opts__["id"], "request": fields,
            "nonce": payload["nonce"]}


def migrate(vm, dest, mode="live"):
    """
    Ask the master to migrate domain ``vm`` to hypervisor ``dest`` (event ``vmigrate/request``,
    signed). The master's policy decides; watch ``vmigrate/<vm>/result`` or
    ``vmigrate/refused`` on the master's bus for the outcome.

    :param vm: the domain
    :param dest: the destination minion id
    :param mode: ``live`` (default) or ``offline``

    CLI Example:

    .. code-block:: bash

        salt-call vmigrate_request.migrate vdisk host2
    """
    validate_.vm_name(vm)
    validate_.minion_id(dest)
    validate_.mode(mode)
    return _send("migrate", "vmigrate/request", {"vm": vm, "dest": dest, "mode": mode})


def evacuate(host=None):
    """
    Ask the master to move every domain off ``host`` (default: this minion), event
    ``vmigrate/evacuate``, signed.

    CLI Example:

    .. code-block:: bash

        salt-call vmigrate_request.evacuate
    """
    host = __opts__["id"] if host is None else host
    if not isinstance(host, str):
        raise SaltInvocationError(f"host {host!r} is not a minion id")
    validate_.minion_id(host, "host")
    return _send("evacuate", "vmigrate/evacuate", {"host": host})
