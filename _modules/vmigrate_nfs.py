"""
Shared storage for vmigrate: typed, validated NFS exports and mounts.

The exports file is rendered from typed pillar data, never from raw strings: every path,
client and option is checked against an allowlist before anything is written, so a newline,
``#``, quote or space in a pillar value is an error naming the entry, not a new export line.

Safe by default: ``sync``, ``root_squash``, ``no_subtree_check``, ``secure``. ``no_root_squash``,
``insecure``, ``async`` and the ``*`` client need an explicit switch in
``vmigrate:nfs:server:allow_unsafe`` (``soft`` and ``nolock`` mounts in
``vmigrate:nfs:client:allow_unsafe``), and the state comment then carries a warning.

The rules and the rendering are plain Python (``_utils/vmigrate_exports.py``); this module reads
pillar and the host, writes the exports file and runs exportfs.

CLI Example:

.. code-block:: bash

    salt nfs1 vmigrate_nfs.render
    salt nfs1 vmigrate_nfs.exportfs
"""

import logging
import os
import runpy

import salt.utils.path

from salt.exceptions import CommandExecutionError

# The shared code (``_utils``) as plain Python in every install: _utils/vmigrate_imports.py.
_shared = runpy.run_path(next(p for p in (os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), d, "vmigrate_imports.py") for d in ("utils", "_utils"))
    if os.path.isfile(p)))["load"]
exports_ = _shared("vmigrate_exports")

log = logging.getLogger(__name__)

__virtualname__ = "vmigrate_nfs"


def __virtual__():
    return __virtualname__


def _server_pillar():
    return __salt__["config.get"]("vmigrate:nfs:server", {}) or {}


def render(exports=None, allow_unsafe=None, exports_file=None):
    """
    Validate and render the exports file from pillar ``vmigrate:nfs:server`` (or arguments).

    Returns a dict: ``exports_file``, ``content`` (the file as it would be written),
    ``exports`` (canonical), ``warnings`` (unsafe options in use) and ``notes`` (an export
    with ``mp`` whose path is not a mount point now: not served until it is). Writes nothing.

    :param exports: list of ``{path, clients: [{host, options}]}`` (default: pillar)
    :param allow_unsafe: unsafe switches to permit (default: pillar)
    :param exports_file: the file to render (default: pillar, else
        ``/etc/exports.d/vmigrate.exports``)

    CLI Example:

    .. code-block:: bash

        salt nfs1 vmigrate_nfs.render
    """
    server = _server_pillar()
    exports = server.get("exports", []) if exports is None else exports
    allow_unsafe = server.get("allow_unsafe", []) if allow_unsafe is None else allow_unsafe
    exports_file = exports_.check_exports_file(
        exports_file or server.get("exports_file") or exports_.DEFAULT_EXPORTS_FILE)
    checked = exports_.validate_exports(exports, allow_unsafe, exportfs_knows())
    notes = exports_.unmounted_notes(checked["exports"])
    current = None
    if exports_file == "/etc/exports" and __salt__["file.file_exists"](exports_file):
        current = __salt__["file.read"](exports_file)
    return {
        "exports_file": exports_file,
        "content": exports_.render_file(checked["exports"], current, exports_file),
        "exports": checked["exports"],
        "warnings": checked["warnings"],
        "notes": notes,
    }


def exportfs_knows():
    """The newer export keywords (``NEWER_KEYWORDS``) this server's exportfs parses: read from
    the program itself (its parser's keyword strings), not guessed from a version."""
    path = salt.utils.path.which("exportfs")
    try:
        with open(path, "rb") as fh:
            binary = fh.read()
    except (OSError, TypeError):
        return ()
    return tuple(k for k in exports_.NEWER_KEYWORDS if f"{k}=".encode() in binary)


def exportfs():
    """
    Apply the exports with ``exportfs -ra``. Any warning or error exportfs prints fails.

    Returns a dict: ``retcode``, ``output``.

    CLI Example:

    .. code-block:: bash

        salt nfs1 vmigrate_nfs.exportfs
    """
    res = __salt__["cmd.run_all"](["exportfs", "-ra"], python_shell=False)
    output = "\n".join(x for x in (res.get("stdout"), res.get("stderr")) if x).strip()
    if res["retcode"] != 0 or res.get("stderr", "").strip():
        raise CommandExecutionError(
            f"exportfs -ra rejected the exports (exit {res['retcode']}): {output}"
        )
    return {"retcode": res["retcode"], "output": output}


def apply_exports(exports=None, allow_unsafe=None, exports_file=None):
    """
    Validate and render the exports (pillar ``vmigrate:nfs:server``, or arguments), write the
    exports file atomically if it differs, and apply it with ``exportfs -ra``. Only a rendering
    of validated exports is ever written. If exportfs rejects it, the previous file (or its
    absence) is restored and exportfs re-run, so a failed apply leaves the exports as they were.

    Returns a dict: ``exports_file``, ``changed``, ``output`` (what exportfs printed),
    ``warnings``.

    CLI Example:

    .. code-block:: bash

        salt nfs1 vmigrate_nfs.apply_exports
    """
    rendered = render(exports, allow_unsafe, exports_file)
    out = _write_exports(rendered["exports_file"], rendered["content"])
    out["warnings"] = rendered["warnings"]
    return out


def _read(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _restore(path, old):
    if old is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        _atomic_write(path, old)


def _exportfs_or_restore(path, old):
    """exportfs -ra; if it fails, put ``old`` back (None: no file), re-run it, and raise."""
    try:
        return exportfs()
    except CommandExecutionError as err:
        _restore(path, old)
        try:
            exportfs()
        except CommandExecutionError as again:
            log.error("vmigrate_nfs: exports restored but exportfs still fails: %s", again)
        raise CommandExecutionError(f"{err}; {path} was restored") from err


def _write_exports(exports_file, content):
    exports_.check_exports_file(exports_file)
    old = _read(exports_file)
    if old == content:
        return {"exports_file": exports_file, "changed": False, "output": ""}
    os.makedirs(os.path.dirname(exports_file), mode=0o755, exist_ok=True)
    _atomic_write(exports_file, content)
    out = _exportfs_or_restore(exports_file, old)
    return {"exports_file": exports_file, "changed": True, "output": out["output"]}


def _atomic_write(path, content):
    tmp = f"{path}.vmigrate-tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def remove_exports(exports_file=None):
    """
    Remove vmigrate's exports: delete our own file, or our marked block from /etc/exports
    (other lines stay), then ``exportfs -ra``.

    Returns a dict: ``exports_file``, ``changed``.

    CLI Example:

    .. code-block:: bash

        salt nfs1 vmigrate_nfs.remove_exports
    """
    exports_file = exports_.check_exports_file(
        exports_file or _server_pillar().get("exports_file") or exports_.DEFAULT_EXPORTS_FILE)
    new = removed_content(exports_file)
    if new is False:
        return {"exports_file": exports_file, "changed": False}
    old = _read(exports_file)
    _restore(exports_file, new)
    _exportfs_or_restore(exports_file, old)
    return {"exports_file": exports_file, "changed": True}


def removed_content(exports_file):
    """What the exports file becomes without our exports: None (delete), False (no change).
    A damaged marker block raises (see ``vmigrate_exports.marker_block``)."""
    exports_.check_exports_file(exports_file)
    if not os.path.exists(exports_file):
        return False
    if exports_file != "/etc/exports":
        return None
    with open(exports_file, encoding="utf-8") as fh:
        return exports_.strip_block(fh.read(), exports_file)


def mount_args(mount, allow_unsafe=None, index=0):
    """
    Validate one client mount (see pillar ``vmigrate:nfs:client:mounts``) and return the
    arguments for ``mount.mounted`` plus ``warnings``. Raises SaltInvocationError naming the
    entry and the rule it breaks.

    CLI Example:

    .. code-block:: bash

        salt host1 vmigrate_nfs.mount_args '{name: /srv/vm, device: "nfs1:/srv/vm"}'
    """
    if allow_unsafe is None:
        allow_unsafe = (__salt__["config.get"]("vmigrate:nfs:client", {}) or {}).get(
            "allow_unsafe", [])
    return exports_.validate_mount(mount, allow_unsafe, index)
