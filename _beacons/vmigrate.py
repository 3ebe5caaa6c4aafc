"""
Beacon ``vmigrate``: a hypervisor's domain lifecycle, as libvirt reports it.

libvirt calls back on every lifecycle event (defined, undefined, started, suspended, resumed,
stopped, shutdown, pmsuspended, crashed). The callbacks run in a small helper process the
beacon starts (``python -c``, libvirt-python, a read-only connection with keepalive and its own
event loop), which writes one JSON line per event; every beacon pass hands over the lines that
arrived. Nothing polls the domains' state. The helper keeps libvirt out of the salt-minion
process itself, which forks a process per job: a libvirt event thread there could be holding
one of libvirt's locks at the moment of a fork and leave the job's libvirt unusable.

Each event reaches the master as ``salt/beacon/<minion>/vmigrate/domain/<event>`` with ``vm``,
``uuid``, ``event``, ``detail`` (libvirt's reason, e.g. ``migrated``), ``host`` and ``time``.
When the connection opens, ``resync`` lists every domain's state; when it drops,
``connection/lost`` says so and the helper is started again (at most every 10 s), so the
master's record never keeps a gap silently.

.. code-block:: yaml

    # minion config on each hypervisor
    beacons:
      vmigrate:
        - uri: qemu:///system      # default
"""

import json
import logging
import os
import subprocess
import sys
import time

log = logging.getLogger(__name__)
__virtualname__ = "vmigrate"

EVENTS = ("defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
          "pmsuspended", "crashed")
# libvirt's detail codes per event (virDomainEvent*DetailType), by name.
DETAILS = {
    "defined": ("added", "updated", "renamed", "from_snapshot"),
    "undefined": ("removed", "renamed"),
    "started": ("booted", "migrated", "restored", "from_snapshot", "wakeup", "recreated"),
    "suspended": ("paused", "migrated", "ioerror", "watchdog", "restored", "from_snapshot",
                  "api_error", "postcopy", "postcopy_failed"),
    "resumed": ("unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"),
    "stopped": ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
                "from_snapshot"),
    "shutdown": ("finished", "guest", "host"),
    "pmsuspended": ("memory", "disk"),
    "crashed": ("panicked", "crashloaded"),
}
RESTART_EVERY = 10.0

# The helper: libvirt's lifecycle callbacks as JSON lines on stdout; exits when the
# connection closes or the minion that started it is gone.
HELPER = r"""
import json, os, sys, libvirt
uri, parent = sys.argv[1], os.getppid()
def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
libvirt.registerErrorHandler(lambda ctx, err: None, None)
libvirt.virEventRegisterDefaultImpl()
try:
    conn = libvirt.openReadOnly(uri)
except libvirt.libvirtError as err:
    out({"kind": "error", "error": err.get_error_message()})
    sys.exit(1)
def lifecycle(_conn, dom, event, detail, _opaque):
    try:
        out({"kind": "event", "vm": dom.name(), "uuid": dom.UUIDString(), "event": event,
             "detail": detail})
    except libvirt.libvirtError:
        pass
def closed(_conn, reason, _opaque):
    out({"kind": "lost", "reason": reason})
    os._exit(0)
conn.registerCloseCallback(closed, None)
conn.setKeepAlive(5, 3)
conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
domains = {}
for dom in conn.listAllDomains(0):
    try:
        state, reason = dom.state()
        domains[dom.name()] = {"uuid": dom.UUIDString(), "state": state, "reason": reason,
                               "persistent": bool(dom.isPersistent())}
    except libvirt.libvirtError:
        pass
out({"kind": "resync", "domains": domains})
while os.getppid() == parent:
    libvirt.virEventRunDefaultImpl()
"""


def __virtual__():
    return __virtualname__


def validate(config):
    if not isinstance(config, list):
        return False, "beacon vmigrate: configuration is a list (e.g. [{uri: qemu:///system}])"
    for item in config:
        if not isinstance(item, dict) or set(item) - {"uri", "_beacon_name"}:
            return False, "beacon vmigrate: only 'uri' is configurable"
    return True, "valid"


def _uri(config):
    for item in config:
        if "uri" in item:
            return item["uri"]
    return "qemu:///system"


def _event(host, line):
    """One helper line as a beacon event (None for lines that are not events)."""
    now = time.time()
    kind = line.get("kind")
    if kind == "event":
        code, detail = line.get("event"), line.get("detail")
        name = EVENTS[code] if isinstance(code, int) and 0 <= code < len(EVENTS) else f"event{code}"
        details = DETAILS.get(name, ())
        return {"tag": f"domain/{name}", "vm": line.get("vm"), "uuid": line.get("uuid"),
                "event": name,
                "detail": details[detail] if isinstance(detail, int) and 0 <= detail < len(
                    details) else detail,
                "host": host, "time": now}
    if kind == "resync":
        return {"tag": "resync", "host": host, "domains": line.get("domains") or {}, "time": now}
    if kind == "lost":
        return {"tag": "connection/lost", "host": host, "reason": line.get("reason"),
                "time": now}
    if kind == "error":
        log.warning("vmigrate beacon: %s", line.get("error"))
    return None


def _start(ctx, uri):
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", HELPER, uri], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    os.set_blocking(proc.stdout.fileno(), False)
    ctx.update(proc=proc, started=time.monotonic(), buf=b"")


def _read(ctx):
    lines = []
    while True:
        try:
            chunk = os.read(ctx["proc"].stdout.fileno(), 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        ctx["buf"] += chunk
    *complete, ctx["buf"] = ctx["buf"].split(b"\n")
    for raw in complete:
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def beacon(config):
    """Hand over the lifecycle events libvirt reported since the last pass."""
    ctx = __context__.setdefault("vmigrate_beacon", {"proc": None, "started": -RESTART_EVERY})
    host = __opts__["id"]
    out = []
    if ctx["proc"] is not None:
        out = [e for e in (_event(host, line) for line in _read(ctx)) if e]
        if ctx["proc"].poll() is not None:
            ctx["proc"].stdout.close()
            ctx["proc"] = None
            if not any(e["tag"] == "connection/lost" for e in out):
                out.append({"tag": "connection/lost", "host": host, "reason": "helper exited",
                            "time": time.time()})
    if ctx["proc"] is None and time.monotonic() - ctx["started"] >= RESTART_EVERY:
        _start(ctx, _uri(config))
    return out


def close(config):  # pylint: disable=unused-argument
    """Salt calls this when the beacon is removed or the minion stops."""
    ctx = __context__.get("vmigrate_beacon") or {}
    if ctx.get("proc") is not None:
        ctx["proc"].terminate()
