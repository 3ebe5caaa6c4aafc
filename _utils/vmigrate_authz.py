"""
Who may ask vmigrate for what through the event bus (the reactor), decided on the master from
master config alone. No event field is trusted for who sent it.

What Salt 3008.4 guarantees, and what it does not (read from its source):

- A minion's single event (``salt-call event.send``) reaches the bus as ``{"id": <minion>,
  "cmd": "_minion_event", "data": ...}`` with an ``id`` the request server verified against the
  minion's key. But a minion can also send a *batch* (``events: [...]``, the path beacons use):
  each batched event's data is fired **verbatim**, so any minion can put any ``id`` -- or none,
  looking exactly like an event fired on the master -- under any tag it is not blacklisted
  from. An ``id`` on the bus therefore proves nothing, and neither does its absence.
- Minions are blacklisted from ``salt/run/*`` tags. ``salt-run event.send <tag> <data>`` on the
  master runs a runner job, announced as ``salt/run/<jid>/new`` with ``fun:
  runner.event.send`` and its arguments: that announcement can only come from the master.

So vmigrate accepts a request from exactly two origins:

1. **The master** (requester ``master``): read from the ``salt/run/<jid>/new`` announcement of
   ``salt-run event.send vmigrate/request ...``, never from the ``vmigrate/request`` event
   itself (which a minion can imitate; it is refused and logged like any unsigned event).
   Anyone who can run runners (``salt-run``, salt-api/eauth users with runner rights, a minion
   that ``peer_run`` allows ``event.send``) is this requester.
2. **A named requester with a key**: a minion (or anything that can put an event on the bus)
   sends a payload signed with HMAC-SHA256 under a key the master config holds for that
   requester (the minion gets the same key through its own pillar; ``vmigrate.request`` signs
   and sends). The signature covers the kind, every field, a timestamp and a nonce; a request
   older than ``max_age`` or a nonce seen before is refused. A minion without the key cannot
   ask in that requester's name, whatever ``id`` it writes.

It cannot protect against: a requester's key leaking (pillar readable by the wrong minion,
logs); a person with ``salt-run`` on the master; a requester asking for something its policy
allows. Policies limit which VMs (name patterns, or ``own``: only VMs running on the requester,
checked where they run now) and which destinations (name patterns; always hypervisors of this
deployment) each requester may use, and which kinds (``migrate``, ``evacuate``).

Master config:

.. code-block:: yaml

    vmigrate:
      requests:
        max_age: 60
        requesters:
          master: {vms: ['*'], dests: ['*'], kinds: [migrate, evacuate]}
          host1:  {key: <64 hex>, vms: own, dests: ['host*'], kinds: [migrate]}

Plain functions; no Salt dunders.
"""

import fcntl
import fnmatch
import hashlib
import hmac
import json
import os
import re
import time

from salt.exceptions import SaltInvocationError

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
        if name == "master" and key is not None:
            raise SaltInvocationError("requester 'master' takes no key: it is the master itself")
        if name != "master" and (not isinstance(key, str) or not _KEY_RE.fullmatch(key)):
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
    """The bytes a signature covers: the kind and every field but ``sig``, sorted."""
    body = {k: v for k, v in payload.items() if k != "sig"}
    return json.dumps([kind, body], sort_keys=True, separators=(",", ":")).encode()


def sign(key, kind, payload):
    return hmac.new(bytes.fromhex(key), canonical(kind, payload), hashlib.sha256).hexdigest()


def _origin(tag, data):
    """(kind, payload, requester-or-None) from the event; requester None means signed."""
    if not isinstance(data, dict):
        raise Refused("event data is not a mapping")
    if re.fullmatch(r"salt/run/\d+/new", tag or ""):
        # The master's own runner announcement: only the master can fire salt/run/*.
        if data.get("fun") != "runner.event.send":
            raise Refused(f"{tag} is not an event.send runner job")
        args = data.get("fun_args") or []
        if len(args) < 2 or args[0] not in KINDS:
            raise Refused(f"{tag}: event.send of another tag")
        payload = args[1]
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError as err:
                raise Refused(f"request data is not JSON: {err}") from err
        return KINDS[args[0]], payload, "master"
    if tag not in KINDS:
        raise Refused(f"tag {tag!r} is not a vmigrate request")
    # A bus event: the single-event shape nests the payload; a batched one is verbatim.
    payload = data.get("data") if data.get("cmd") == "_minion_event" else data
    return KINDS[tag], payload, None


def _check_fields(kind, payload, signed):
    if not isinstance(payload, dict):
        raise Refused("request is not a mapping")
    allowed = FIELDS[kind] | (SIGNED if signed else set()) | {"_stamp"}
    extra = set(payload) - allowed
    if extra:
        raise Refused(f"unexpected field(s) {sorted(extra)} (allowed: {sorted(allowed)})")
    for field in FIELDS[kind] - {"mode"}:
        if field not in payload:
            raise Refused(f"field {field!r} is missing")


def _fresh_nonce(opts, requester, nonce, max_age, now):
    """Remember ``nonce`` for ``max_age``; False if it was seen (a replay)."""
    path = os.path.join(opts["cachedir"], "vmigrate", "nonces.json")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.seek(0)
        try:
            seen = json.loads(fh.read() or "{}")
        except ValueError:
            seen = {}
        seen = {k: t for k, t in seen.items() if now - t <= 2 * max_age}
        key = f"{requester}:{nonce}"
        fresh = key not in seen
        seen[key] = now
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(seen))
    return fresh


def authorize(opts, tag, data, validate, now=None):
    """The request an event carries, if the policy allows it (before locating anything):
    ``{"kind", "requester", "vm"/"dest"/"mode" or "host", "own": bool}``. Raises Refused
    naming why. ``own`` asks the caller to check the VM runs on the requester. ``validate``
    is the vmigrate_validate module (the field checks every entry point uses)."""
    now = time.time() if now is None else now
    pol = policy(opts)
    kind, payload, requester = _origin(tag, data)
    signed = requester is None
    _check_fields(kind, payload, signed)
    if signed:
        if "sig" not in payload:
            raise Refused("unsigned request on the event bus: any minion can put one there, "
                          "with any id, so only signed requests are taken (vmigrate.request "
                          "on a requester with a key); on the master, salt-run event.send is "
                          "read from its runner record instead")
        requester = payload.get("requester")
        if not isinstance(requester, str) or requester == "master" \
                or requester not in pol["requesters"]:
            raise Refused(f"requester {requester!r} is not in master config "
                          "vmigrate:requests:requesters")
        rule = pol["requesters"][requester]
        expect = sign(rule["key"], kind, payload)
        if not isinstance(payload["sig"], str) or not hmac.compare_digest(expect,
                                                                          payload["sig"]):
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
    else:
        if "master" not in pol["requesters"]:
            raise Refused("requests fired on the master are not allowed (no 'master' "
                          "requester in vmigrate:requests:requesters)")
        rule = pol["requesters"]["master"]
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
        if rule["vms"] == "own" and out["host"] != requester:
            raise Refused(f"requester {requester!r} may evacuate only itself")
        out["own"] = False
    return out
