"""
A small JSON document kept by the master in one file under its cachedir, read and changed
under ``flock`` so that every ``salt-run`` process and reactor worker sees one version: the
placement record (``vmigrate_placement``) and the hosts in maintenance
(``vmigrate_maintenance``). A file that does not parse reads as empty. Plain functions; no Salt
dunders.
"""

import fcntl
import json
import os


def path(opts, name):
    """``<cachedir>/vmigrate/<name>``, its directory made (mode 0700)."""
    out = os.path.join(opts["cachedir"], "vmigrate", name)
    os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
    return out


def update(filename, change=None):
    """Read the document in ``filename`` (a dict) under an exclusive lock and, with
    ``change``, call ``change(document)`` and write what it left. Returns (document, what
    ``change`` returned)."""
    with open(filename, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        fh.seek(0)
        try:
            doc = json.loads(fh.read() or "{}")
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        out = None
        if change is not None:
            out = change(doc)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(doc, sort_keys=True))
        return doc, out
