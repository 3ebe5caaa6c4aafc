"""Import a Salt extension file (``_modules/x.py``, ``_states/x.py``...) as a plain module, so
unit tests can set its dunders (``__salt__``, ``__opts__``...) themselves."""
import importlib.util
import inspect
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def load(kind, name, **dunders):
    path = REPO / kind / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"vmigrate_test_{kind}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key, value in dunders.items():
        setattr(module, f"__{key}__", value)
    return module


def utils(*names, **overrides):
    """What ``__utils__`` holds for the given ``_utils`` files: ``{"file.function": function}``,
    the public functions of each, with ``overrides`` (``"file.function": replacement``)."""
    table = {}
    for name in names:
        module = load("_utils", name)
        for fname, fn in inspect.getmembers(module, inspect.isfunction):
            if not fname.startswith("_") and fn.__module__ == module.__name__:
                table[f"{name}.{fname}"] = fn
    table.update(overrides)
    return table
