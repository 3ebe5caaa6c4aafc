"""
Requests from the event bus, for the master: one the reactor hands over (``vmigrate/request``,
``vmigrate/evacuate``) is authorized from master config before anything is located, then
done as a migration or an evacuation; and one the master itself puts on the bus, signed.

Nothing in a request's payload is trusted until ``vmigrate_authz`` has checked it; no Salt
dunders.
"""

import logging
import os
import runpy

from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)
authz_, bus_, evacuate_, move_, validate_ = runpy.run_path(os.path.join(os.path.dirname(
    os.path.abspath(__file__)), "vmigrate_imports.py"))["siblings"](__file__, "vmigrate_authz",
    "vmigrate_bus", "vmigrate_evacuate", "vmigrate_move", "vmigrate_validate")


def request(opts, tag, data):
    """A request from the event bus (the reactor hands each ``vmigrate/request`` and
    ``vmigrate/evacuate`` here): authorized from
    master config (see ``vmigrate_authz_.py``: what it guarantees and what it cannot), then
    done. A refusal touches nothing, is logged, and fires ``vmigrate/refused``."""
    try:
        req = authz_.authorize(opts, tag, data, validate_)
    except SaltInvocationError as err:
        why = str(err)
        log.warning("vmigrate: refused a request from the event bus (%s): %s", tag, why)
        bus_.fire(opts, "vmigrate/refused", {"tag": tag, "reason": why})
        return {"result": False, "status": "refused", "comment": f"refused: {why}"}
    trigger = f"reactor:{req['requester']}"
    if req["kind"] == "evacuate":
        out = evacuate_.evacuate(opts, req["host"], trigger=trigger, allowed=req["dests"])
    else:
        out = move_.migrate(opts, req["vm"], req["dest"], req["mode"], trigger=trigger,
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
        validate_.vm_name(fields["vm"])
        validate_.minion_id(fields["dest"])
        validate_.mode(fields["mode"])
    else:
        validate_.minion_id(fields["host"], "host")
    rule = authz_.policy(opts)["requesters"].get("master")
    if not rule:
        raise SaltInvocationError("master config vmigrate:requests:requesters:master is not set: "
                                  "give the master a key (openssl rand -hex 32) to sign with")
    payload = authz_.signed_payload(rule["key"], kind, fields, "master")
    tag = next(t for t, k in authz_.KINDS.items() if k == kind)
    bus_.fire(opts, tag, payload)
    return {"sent": tag, "request": fields, "nonce": payload["nonce"]}
