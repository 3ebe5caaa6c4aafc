"""
How vmigrate is installed where it runs: as the ``saltext-vmigrate`` extension package, synced
into ``extension_modules`` from a master's file_roots (the formula), or loaded from the
repository (tests). Read from where the plugin file lies and from Python's package metadata;
no Salt dunders.

Salt's loader takes ``extension_modules`` before extension packages (salt/loader/__init__.py,
``_module_dirs``), so where both are installed the synced copy shadows the extension: that is
detected and named.
"""

import importlib.metadata
import os

DISTRIBUTION = "saltext-vmigrate"


def _installed_version():
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(plugin_file, extension_modules=None):
    """``version`` (the extension's, None when it is not installed), ``install`` (extension,
    synced or repository), ``path`` (the plugin's directory), ``sls_path`` (the SLS tree to
    list in a master's file_roots: the package's ``sls`` directory, or None for a synced
    install, whose master serves them already), ``shadowed`` (why the two installs clash, or
    None) and ``comment``."""
    path = os.path.dirname(os.path.abspath(plugin_file))
    parts = path.split(os.sep)
    version = _installed_version()
    extmods = os.path.abspath(extension_modules) if extension_modules else None
    if parts[-3:-1] == ["saltext", "vmigrate"]:
        install = "extension"
        sls = os.path.join(os.path.dirname(path), "sls")
    elif extmods and os.path.dirname(path) == extmods:
        install = "synced"
        sls = None
    else:
        install = "repository"
        sls = os.path.join(os.path.dirname(path), "salt")
    shadowed = None
    if install == "synced" and version:
        shadowed = (f"{DISTRIBUTION} {version} is installed too, and the synced copy in "
                    f"{extmods} shadows it (Salt's loader takes extension_modules first): "
                    f"remove one, either pip uninstall {DISTRIBUTION} (salt-pip on onedir), or "
                    "the synced vmigrate* files and saltutil.clear_cache")
    comment = {"extension": f"vmigrate {version} installed as the {DISTRIBUTION} extension; "
                            f"list {sls} in the master's file_roots for its SLS",
               "synced": "vmigrate synced from the master's file_roots (saltutil.sync_all)",
               "repository": f"vmigrate loaded from the repository at {os.path.dirname(path)}",
               }[install]
    return {"version": version, "install": install, "path": path,
            "sls_path": sls if sls and os.path.isdir(sls) else None, "shadowed": shadowed,
            "comment": comment + (f"; WARNING: {shadowed}" if shadowed else "")}
