"""Import a Salt extension file (``_modules/x.py``, ``_states/x.py``...) as a plain module, so
unit tests can set its dunders (``__salt__``, ``__opts__``...) themselves."""
import importlib.util
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
