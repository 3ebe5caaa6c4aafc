"""
Who may ask vmigrate for what through the event bus (the reactor), decided on the master from
master config alone. No event field is trusted for who sent it.

What Salt 3008.4 guarantees, and what it does not (read from its source): nothing about who
put an event on the master's bus. A minion's single event reaches the bus as its whole load,
into which ``event.fire_master``'s ``preload`` merges any keys, under any tag -- the minion
event blacklist (``salt/run/*``, ``salt/key``...) is applied to batched events only. A batch
(``events: [...]``, the path beacons use) fires each event's data verbatim, and with a
``pretag`` even under a blacklisted tag. So an ``id`` proves nothing, its absence proves
nothing, and neither does a ``salt/run/<jid>/new`` runner announcement: an event that looks
fired on the master may come from any minion.

So vmigrate takes a request from the bus only if it is **signed**: HMAC-SHA256 over the kind,
every field, a timestamp and a nonce, under a key the master config holds for that requester.
The requester ``master`` signs with its key from master config (``salt-run vmigrate.request``,
``salt-run vmigrate.request_evacuate``); a minion requester gets its key through its own pillar
(``vmigrate_request.migrate``/``.evacuate``). A request older than ``max_age`` or a nonce seen
before is refused. A minion without the key cannot ask in that requester's name, whatever it
writes in the event.

It cannot protect against: a requester's key leaking (pillar readable by the wrong minion,
logs); anyone who can run runners on the master (``salt-run``, salt-api or eauth users with
runner rights, ``peer_run``) -- they can call ``vmigrate.migrate`` anyway; a requester asking
for something its policy allows. Policies limit which VMs (name patterns, or ``own``: only VMs
running on the requester, checked where they run now) and which destinations (name patterns;
always hypervisors of this deployment) each requester may use, and which kinds (``migrate``,
``evacuate``; an evacuation is allowed only with ``vms`` ``own`` -- the requester's own host --
or ``['*']``, and its destinations follow ``dests``).

Master config:

.. code-block:: yaml

    vmigrate:
      requests:
        max_age: 60
        requesters:
          master: {key: <64 hex>, vms: ['*'], dests: ['*'], kinds: [migrate, evacuate]}
          host1:  {key: <64 hex>, vms: own, dests: ['host*'], kinds: [migrate]}

Plain functions; no Salt dunders.
"""

import fnmatch
import hashlib
import hmac
import json
import os
import re
import runpy
import secrets
import time

from salt.exceptions import SaltInvocationError

(store_,) = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "vmigrate_imports.py"))["siblings"](__file__,
                                                                            "vmigrate_store")

KINDS = {"vmigrate/request": "migrate", "vmigrate/evacuate": "evacuate"}
FIELDS = {"migrate": {"vm", "dest", "mode"}, "evacuate": {"host"}}
SIGNED = {"requester", "ts", "nonce", "sig"}
_NONCE_RE = re.compile(r"[0-9a-f]{16,64}")
_KEY_RE = re.compile(r"[0-9a-fA-F]{32,256}")


class Refused(SaltInvocationError):
    """A request the policy does not allow, or that is not what it claims: nothing is done."""


def policy(opts):
    """The master's ``vmigrate:requests`` policy, checked. No policy: nobody may ask."""
    conf = ((opts.get("vmigrate") or {}).get("requests")) or {}
    max_age = conf.get("max_age", 60)
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not 0 < max_age <= 3600:
        raise SaltInvocationError(f"master config vmigrate:requests:max_age {max_age!r}: "
                                  "seconds, 1..3600")
    requesters = {}
    for name, rule in (conf.get("requesters") or {}).items():
        if not isinstance(rule, dict):
            raise SaltInvocationError(f"master config vmigrate:requests:requesters:{name}: "
                                      "a mapping")
        key = rule.get("key")
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise SaltInvocationError(f"requester {name!r}: key must be 32..256 hex digits "
                                      "(e.g. openssl rand -hex 32)")
        vms = rule.get("vms", [])
        dests = rule.get("dests", [])
        kinds = rule.get("kinds", ["migrate"])
        if vms != "own" and not _patterns(vms):
            raise SaltInvocationError(f"requester {name!r}: vms is 'own' or a list of patterns")
        if not _patterns(dests):
            raise SaltInvocationError(f"requester {name!r}: dests is a list of patterns")
        if not isinstance(kinds, list) or not set(kinds) <= set(KINDS.values()):
            raise SaltInvocationError(f"requester {name!r}: kinds from {sorted(KINDS.values())}")
        requesters[name] = {"key": key, "vms": vms, "dests": dests, "kinds": kinds}
    return {"max_age": max_age, "requesters": requesters}


def _patterns(value):
    return isinstance(value, list) and all(isinstance(p, str) and p for p in value)


def canonical(kind, payload):
    """The bytes a signature covers: the kind and every field but ``sig`` and the ``_stamp``
    the master's event bus adds to an event fired on the master, sorted."""
    body = {k: v for k, v in payload.items() if k not in ("sig", "_stamp")}
    return json.dumps([kind, body], sort_keys=True, separators=(",", ":")).encode()


def sign(key, kind, payload):
    return hmac.new(bytes.fromhex(key), canonical(kind, payload), hashlib.sha256).hexdigest()


def _origin(tag, data):
    """(kind, payload) from the event: a single minion event nests the payload in its load;
    a batched one, or one fired on the master, is the payload itself."""
    if not isinstance(data, dict):
        raise Refused("event data is not a mapping")
    if tag not in KINDS:
        raise Refused(f"tag {tag!r} is not a vmigrate request")
    payload = data.get("data") if data.get("cmd") == "_minion_event" else data
    return KINDS[tag], payload


def signed_payload(key, kind, fields, requester, now=None, nonce=None):
    """A request ready for the bus: ``fields`` plus requester, timestamp, nonce and sig."""
    payload = dict(fields, requester=requester, ts=time.time() if now is None else now,
                   nonce=nonce or secrets.token_hex(16))
    payload["sig"] = sign(key, kind, payload)
    return payload


def _check_fields(kind, payload):
    if not isinstance(payload, dict):
        raise Refused("request is not a mapping")
    allowed = FIELDS[kind] | SIGNED | {"_stamp"}
    extra = set(payload) - allowed
    if extra:
        raise Refused(f"unexpected field(s) {sorted(extra)} (allowed: {sorted(allowed)})")
    for field in FIELDS[kind] - {"mode"}:
        if field not in payload:
            raise Refused(f"field {field!r} is missing")


def _fresh_nonce(opts, requester, nonce, max_age, now):
    """Remember ``nonce`` for ``max_age``; False if it was seen (a replay)."""
    key = f"{requester}:{nonce}"

    def remember(seen):
        for old in [k for k, t in seen.items() if now - t > 2 * max_age]:
            del seen[old]
        fresh = key not in seen
        seen[key] = now
        return fresh

    return store_.update(store_.path(opts, "nonces.json"), remember)[1]


def authorize(opts, tag, data, validate, now=None):
    """The request an event carries, if the policy allows it (before locating anything):
    ``{"kind", "requester", "vm"/"dest"/"mode" or "host", "own": bool}``. Raises Refused
    naming why. ``own`` asks the caller to check the VM runs on the requester. ``validate``
    is the vmigrate_validate module (the field checks every entry point uses)."""
    now = time.time() if now is None else now
    pol = policy(opts)
    kind, payload = _origin(tag, data)
    _check_fields(kind, payload)
    if "sig" not in payload:
        raise Refused("unsigned request: any minion can put any event on the master's bus, "
                      "so only signed requests are taken (salt-run vmigrate.request on the "
                      "master, vmigrate_request.migrate on a minion requester)")
    requester = payload.get("requester")
    if not isinstance(requester, str) or requester not in pol["requesters"]:
        raise Refused(f"requester {requester!r} is not in master config "
                      "vmigrate:requests:requesters")
    rule = pol["requesters"][requester]
    expect = sign(rule["key"], kind, payload)
    if not isinstance(payload["sig"], str) or not hmac.compare_digest(expect, payload["sig"]):
        raise Refused(f"signature does not match requester {requester!r}'s key")
    ts, nonce = payload.get("ts"), payload.get("nonce")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) \
            or abs(now - ts) > pol["max_age"]:
        raise Refused(f"request timestamp {ts!r} is outside {pol['max_age']}s of now")
    if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
        raise Refused("nonce must be 16..64 hex digits")
    if not _fresh_nonce(opts, requester, nonce, pol["max_age"], now):
        raise Refused(f"replayed request (nonce {nonce} seen before)")
    claimed = data.get("id")
    if data.get("cmd") == "_minion_event" and claimed != requester:
        raise Refused(f"sent by minion {claimed!r} in the name of {requester!r}")
    if kind not in rule["kinds"]:
        raise Refused(f"requester {requester!r} may not {kind}")
    out = {"kind": kind, "requester": requester}
    try:
        if kind == "migrate":
            out["vm"] = validate.vm_name(payload["vm"], "vm")
            out["dest"] = validate.minion_id(payload["dest"], "dest")
            out["mode"] = validate.mode(payload.get("mode", "live"))
        else:
            out["host"] = validate.minion_id(payload["host"], "host")
    except SaltInvocationError as err:
        raise Refused(str(err)) from err
    if kind == "migrate":
        if rule["vms"] != "own" and not any(fnmatch.fnmatchcase(out["vm"], p)
                                            for p in rule["vms"]):
            raise Refused(f"requester {requester!r} may not move vm {out['vm']!r}")
        if not any(fnmatch.fnmatchcase(out["dest"], p) for p in rule["dests"]):
            raise Refused(f"requester {requester!r} may not send VMs to {out['dest']!r}")
        out["own"] = rule["vms"] == "own"
    else:
        if rule["vms"] == "own":
            if out["host"] != requester:
                raise Refused(f"requester {requester!r} may evacuate only itself")
        elif rule["vms"] != ["*"]:
            raise Refused(f"requester {requester!r} may move only some VMs ({rule['vms']}): "
                          "an evacuation moves every VM of a host")
        out["own"] = False
        out["dests"] = rule["dests"]
    return out
