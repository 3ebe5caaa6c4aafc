"""
vmigrate's shared code (the ``_utils`` files) as plain Python, the same way in every install:

- synced (``saltutil.sync_all``): ``<extension_modules>/{modules,runners,states}/vmigrate.py``
  beside ``<extension_modules>/utils/``;
- the ``saltext-vmigrate`` extension package: ``saltext/vmigrate/{modules,...}/`` beside
  ``saltext/vmigrate/utils/``;
- the repository (tests, the formula before a sync): ``_modules/`` beside ``_utils/``.

Salt 3008 builds ``__utils__`` without extensions (``load_extensions=False``), so an installed
extension's utils never appear there: every caller imports through :func:`load` instead. A
module is loaded from its file and kept in ``sys.modules`` under ``vmigrate_utils_<name>``
for as long as the file is unchanged: after a sync brings a new version, the next process that
loads it gets the new one. No Salt dunders here.
"""

import importlib.util
import os
import sys


def load(name, directory=None):
    """The shared module ``name`` (``vmigrate_options``...) from ``directory`` (default: the
    directory holding this file)."""
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(directory, f"{name}.py")
    os.stat(path)  # a missing file fails here, by its name
    key = f"vmigrate_utils_{name}"
    version = (path, _signature(directory))
    module = sys.modules.get(key)
    if module is not None and getattr(module, "__vmigrate_version__", None) == version:
        return module
    return load_file(key, path, version)


def _signature(directory):
    """Every shared file's (name, mtime, size) in ``directory``: the shared modules import each
    other, so a sync that changes one (say vmigrate_outcome, whose Outcome class the others
    raise) makes every one load afresh; a module kept because its own file did not change
    would go on with the older copy of what it imports."""
    with os.scandir(directory) as entries:
        return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries
                            if e.name.startswith("vmigrate_") and e.name.endswith(".py")))


def load_file(key, path, version=None):
    """The Python file ``path`` run as module ``key`` in ``sys.modules`` (``version``: what
    :func:`load` compares to know it is unchanged). A file that fails to run leaves nothing."""
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    module.__vmigrate_version__ = version
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(key, None)
        raise
    return module


def siblings(shared_file, *names):
    """The shared modules ``names`` beside ``shared_file`` (a ``_utils`` file importing
    others, in one statement)."""
    directory = os.path.dirname(os.path.abspath(shared_file))
    return [load(name, directory) for name in names]


def utils_dir(plugin_file):
    """Where the shared code lies for the plugin file ``plugin_file`` (a module, runner,
    state or beacon): ``utils`` (synced, extension) or ``_utils`` (repository) beside its
    directory."""
    base = os.path.dirname(os.path.dirname(os.path.abspath(plugin_file)))
    for sub in ("utils", "_utils"):
        if os.path.isfile(os.path.join(base, sub, "vmigrate_imports.py")):
            return os.path.join(base, sub)
    raise ImportError(f"vmigrate: no utils directory beside {os.path.dirname(plugin_file)} "
                      "(run saltutil.sync_all, or install saltext-vmigrate)")
