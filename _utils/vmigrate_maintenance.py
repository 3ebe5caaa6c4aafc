"""
Hosts in maintenance, kept by the master: a host in maintenance is never a destination (of a
migration, an evacuation, a rebalance or a reactor request) until it is taken out. An
evacuation puts its host in first, and leaves it there for the operator to end
(``salt-run vmigrate.maintenance host1 off``).

One file under the master's cachedir (``vmigrate/maintenance.json``), read and written under
``flock``, so it survives a master restart and every ``salt-run`` process and reactor worker
sees the same set. Plain functions over the master's ``opts``; no Salt dunders.
"""

import os
import runpy
import time

from salt.exceptions import SaltInvocationError

store_, validate_ = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                   "vmigrate_imports.py"))["siblings"](
    __file__, "vmigrate_store", "vmigrate_validate")

# What the CLI may say for on and off (salt-run's YAML reads a bare on/off as a boolean).
_ON = {True: True, False: False, "on": True, "off": False, "true": True, "false": False,
       "yes": True, "no": False}


def _update(opts, change=None):
    return store_.update(store_.path(opts, "maintenance.json"), change)


def hosts(opts):
    """{host: {since, reason, by}} of the hosts in maintenance."""
    return _update(opts)[0]


def check_host(host):
    """``host`` if it is a valid minion id, else refused."""
    validate_.minion_id(host, "host")
    return host


def state_of(value):
    """True or False from ``on``/``off`` (or a boolean), else refused."""
    key = value.lower() if isinstance(value, str) else value
    if key not in _ON:
        raise SaltInvocationError(f"maintenance {value!r}: on or off")
    return _ON[key]


def switch(opts, host, on, reason=None, by="cli"):
    """Put ``host`` in maintenance (``on`` True) or take it out. Returns ``host``,
    ``maintenance`` (now), ``changed`` and, when on, ``since``, ``reason`` and ``by``."""
    check_host(host)
    on = state_of(on)
    if reason is not None and (not isinstance(reason, str) or len(reason) > 200
                               or any(ord(c) < 32 for c in reason)):
        raise SaltInvocationError("maintenance reason: one line of text, at most 200 characters")

    def change(current):
        was = host in current
        if on and not was:
            current[host] = {"since": round(time.time(), 3), "reason": reason or "", "by": by}
        elif not on and was:
            del current[host]
        return was != on

    current, changed = _update(opts, change)
    out = {"host": host, "maintenance": on, "changed": changed}
    if on:
        out.update(current[host])
    return out
