"""Who may ask through the event bus: the policy, signatures, replays, and every field
refused before anything is located."""
import json

import pytest

from tests.support.modload import load

az = load("_utils", "vmigrate_authz")
validate = load("_utils", "vmigrate_validate")
KEY1, KEY2, KEY3, KEY4 = "11" * 32, "22" * 32, "33" * 32, "44" * 32
NOW = 1_800_000_000.0


@pytest.fixture
def opts(tmp_path):
    return {"cachedir": str(tmp_path), "vmigrate": {"requests": {"max_age": 60, "requesters": {
        "master": {"key": KEY3, "vms": ["*"], "dests": ["*"], "kinds": ["migrate", "evacuate"]},
        "host1": {"key": KEY1, "vms": "own", "dests": ["host*"], "kinds": ["migrate",
                                                                         "evacuate"]},
        "mon1": {"key": KEY2, "vms": ["web*"], "dests": ["host2"]},
        "web": {"key": KEY4, "vms": ["web*"], "dests": ["*"], "kinds": ["evacuate"]},
    }}}}


def signed(key, kind="migrate", requester="host1", nonce="ab" * 8, ts=NOW, **fields):
    fields = fields or {"vm": "vdisk", "dest": "host2", "mode": "live"}
    payload = dict(fields, requester=requester, ts=ts, nonce=nonce)
    payload["sig"] = az.sign(key, kind, payload)
    return payload


def minion_event(minion, payload):
    """What a minion's single event looks like on the master's bus."""
    return {"id": minion, "cmd": "_minion_event", "tag": "vmigrate/request", "data": payload,
            "_stamp": "2026-11-26T00:00:00"}


def master(fields, kind="migrate"):
    """A request the master signed (salt-run vmigrate.request)."""
    return az.signed_payload(KEY3, kind, fields, "master", now=NOW)


def authorize(opts, tag, data):
    return az.authorize(opts, tag, data, validate, now=NOW)


def test_the_master_signs_with_its_own_key(opts):
    payload = az.signed_payload(KEY3, "migrate", {"vm": "vdisk", "dest": "host2"}, "master",
                                now=NOW)
    out = authorize(opts, "vmigrate/request", payload)
    assert out == {"kind": "migrate", "requester": "master", "vm": "vdisk", "dest": "host2",
                   "mode": "live", "own": False}
    payload = az.signed_payload(KEY3, "evacuate", {"host": "host1"}, "master", now=NOW)
    out = authorize(opts, "vmigrate/evacuate", payload)
    assert out["kind"] == "evacuate" and out["host"] == "host1" and out["dests"] == ["*"]


def test_a_signed_minion_request_is_taken(opts):
    out = authorize(opts, "vmigrate/request", minion_event("host1", signed(KEY1)))
    assert out["requester"] == "host1" and out["own"] is True and out["vm"] == "vdisk"
    # The batched path fires the payload bare: the signature still says who asks.
    out = authorize(opts, "vmigrate/request", signed(KEY1, nonce="cd" * 8))
    assert out["requester"] == "host1"


@pytest.mark.parametrize("tag, data, why", [
    # An unsigned request looking like one fired on the master (a minion can send exactly it).
    ("vmigrate/request", {"vm": "vdisk", "dest": "host2"}, "unsigned request"),
    # A forged id through the batched path, unsigned.
    ("vmigrate/request", minion_event("host1", {"vm": "vdisk", "dest": "host2"}),
     "unsigned request"),
    # Signed with another requester's key (nfs1 claiming host1).
    ("vmigrate/request", minion_event("nfs1", signed(KEY2)), "signature does not match"),
    # A valid signature, sent by another minion in host1's name.
    ("vmigrate/request", minion_event("nfs1", signed(KEY1)), "in the name of 'host1'"),
    # Requesters the policy does not name, or that may not be signed for.
    ("vmigrate/request", minion_event("nfs1", signed(KEY1, requester="nfs1")),
     "requester 'nfs1' is not in master config"),
    ("vmigrate/request", signed(KEY1, requester="master"), "signature does not match"),
    # A minion imitating the master's runner announcement: not a request tag at all.
    ("salt/run/1/new", {"fun": "runner.event.send", "fun_args": [
        "vmigrate/request", {"vm": "vdisk", "dest": "host2"}]}, "is not a vmigrate request"),
    # Policy: mon1 may move web* to host2 only; host1 may not evacuate host2.
    ("vmigrate/request", signed(KEY2, requester="mon1"), "may not move vm 'vdisk'"),
    ("vmigrate/request", signed(KEY2, requester="mon1", vm="web1", dest="host3"),
     "may not send VMs to 'host3'"),
    ("vmigrate/evacuate", signed(KEY2, kind="evacuate", requester="mon1", host="host2"),
     "may not evacuate"),
    ("vmigrate/evacuate", signed(KEY4, kind="evacuate", requester="web", host="host2"),
     "an evacuation moves every VM of a host"),
    ("vmigrate/evacuate", signed(KEY1, kind="evacuate", host="host2"),
     "may evacuate only itself"),
    # Stale, and malformed.
    ("vmigrate/request", signed(KEY1, ts=NOW - 3600), "outside 60s of now"),
    ("vmigrate/request", signed(KEY1, nonce="xyz"), "nonce must be"),
    ("vmigrate/request", "vdisk host2", "not a mapping"),
    ("vmigrate/other", signed(KEY1), "is not a vmigrate request"),
    ("vmigrate/request", master({"vm": "vdisk"}), "field 'dest' is missing"),
    ("vmigrate/request", master({"vm": "vdisk", "dest": "host2", "unsafe": True}),
     "unexpected field"),
    # Injection attempts in any field: refused by the same checks every entry point uses.
    ("vmigrate/request", master({"vm": "{{ salt['cmd.run']('id') }}", "dest": "host2"}),
     "not a valid domain"),
    ("vmigrate/request", master({"vm": "vdisk", "dest": "host2\n- force: true"}),
     "not a valid minion id"),
    ("vmigrate/request", master({"vm": "vdisk", "dest": "host2", "mode": "live\"; unsafe: true"}),
     "mode 'live"),
    ("vmigrate/evacuate", master({"host": ["host1"]}, kind="evacuate"), "not a valid minion id"),
])
def test_refused_before_anything(opts, tag, data, why):
    with pytest.raises(az.Refused, match=None) as err:
        authorize(opts, tag, data)
    assert why in str(err.value), str(err.value)


def test_a_replayed_request_is_refused(opts):
    payload = signed(KEY1)
    authorize(opts, "vmigrate/request", payload)
    with pytest.raises(az.Refused, match="replayed"):
        authorize(opts, "vmigrate/request", payload)


def test_tampering_with_a_signed_field_breaks_the_signature(opts):
    payload = dict(signed(KEY1), dest="host3")
    with pytest.raises(az.Refused, match="signature does not match"):
        authorize(opts, "vmigrate/request", payload)


def test_without_a_policy_nobody_may_ask(tmp_path):
    with pytest.raises(az.Refused, match="not in master config"):
        az.authorize({"cachedir": str(tmp_path)}, "vmigrate/request", master(
            {"vm": "vdisk", "dest": "host2"}), validate, now=NOW)


@pytest.mark.parametrize("rule, words", [
    ({"master": {"vms": ["*"], "dests": ["*"]}}, "32..256 hex"),
    ({"host1": {"key": "short", "vms": "own", "dests": ["*"]}}, "32..256 hex"),
    ({"host1": {"key": KEY1, "vms": "all", "dests": ["*"]}}, "vms is 'own'"),
    ({"host1": {"key": KEY1, "vms": "own", "dests": "*"}}, "dests is a list"),
    ({"host1": {"key": KEY1, "vms": "own", "dests": ["*"], "kinds": ["delete"]}}, "kinds"),
])
def test_a_bad_policy_is_named(tmp_path, rule, words):
    opts = {"cachedir": str(tmp_path), "vmigrate": {"requests": {"requesters": rule}}}
    with pytest.raises(az.SaltInvocationError, match=None) as err:
        az.policy(opts)
    assert words in str(err.value)


def test_the_signature_covers_the_kind():
    payload = signed(KEY1)
    assert az.sign(KEY1, "evacuate", payload) != payload["sig"]
    assert json.loads(az.canonical("migrate", payload))[1].get("sig") is None


def test_the_bus_stamp_is_not_part_of_the_signature(opts):
    payload = dict(master({"vm": "vdisk", "dest": "host2"}), _stamp="2026-11-26T13:00:00")
    assert authorize(opts, "vmigrate/request", payload)["requester"] == "master"
