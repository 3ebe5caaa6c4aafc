"""
A small JSON document kept by the master in one file under its cachedir, read and changed
under ``flock`` so that every ``salt-run`` process and reactor worker sees one version: the
placement record (``vmigrate_placement``), the hosts in maintenance
(``vmigrate_maintenance``) and the request nonces (``vmigrate_authz``).

A change is written to a temporary file, synced and renamed over the document, so a crash or
a full disk mid-write leaves the old version whole; the lock is a separate ``.lock`` file. A
document that does not parse is refused, never read as empty: an empty maintenance set or
nonce history would open what it closes. Plain functions; no Salt dunders.
"""

import fcntl
import json
import os

from salt.exceptions import CommandExecutionError


def path(opts, name):
    """``<cachedir>/vmigrate/<name>``, its directory made (mode 0700)."""
    out = os.path.join(opts["cachedir"], "vmigrate", name)
    os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
    return out


def _read(filename):
    try:
        with open(filename, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(text or "{}")
    except ValueError as err:
        doc = err
    if not isinstance(doc, dict):
        raise CommandExecutionError(
            f"{filename} does not hold a vmigrate document ({doc}): move it aside to start it "
            "afresh (the master then forgets what it held)")
    return doc


def update(filename, change=None):
    """Read the document in ``filename`` (a dict) under an exclusive lock and, with
    ``change``, call ``change(document)`` and write what it left. Returns (document, what
    ``change`` returned)."""
    with open(f"{filename}.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        doc = _read(filename)
        out = None
        if change is not None:
            out = change(doc)
            tmp = f"{filename}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(doc, sort_keys=True))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, filename)
        return doc, out
