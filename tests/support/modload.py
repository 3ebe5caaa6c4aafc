"""Import a Salt extension file (``_modules/x.py``, ``_states/x.py``...) as a plain module, for
pytest-salt-factories' loader mocking to give it its dunders (``__salt__``, ``__opts__``...):
a test module's ``configure_loader_modules`` fixture (``{module: {"__opts__": ...}}``), or
``load(..., opts=...)`` for a test that needs its own (the same ``LoaderModuleMock``, which
refuses a dunder Salt does not have); and stand fakes in for functions of the shared code it
imports (``_utils``, through vmigrate_imports)."""
import importlib.util
import pathlib
import types

from saltfactories.utils.loader import LoaderModuleMock

REPO = pathlib.Path(__file__).resolve().parents[2]


class _Overlay(types.ModuleType):
    """A shared module as one loaded plugin sees it: ``overrides`` first, then the module
    (other plugins and tests keep the real one)."""

    def __init__(self, module, overrides):
        super().__init__(module.__name__)
        self.__dict__.update(module.__dict__)
        self.__dict__.update(overrides)


def load(kind, name, utils=None, **dunders):
    """Load ``<kind>/<name>.py``; ``utils``: {"vmigrate_x.function": replacement}, applied to
    that plugin's view of ``_utils/vmigrate_x.py`` only."""
    path = REPO / kind / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"vmigrate_test_{kind}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if dunders:
        # The module is this test's alone: the mock need not be undone.
        LoaderModuleMock({module: {f"__{key}__": value for key, value in dunders.items()}}).start()
    by_file = {}
    for key, value in (utils or {}).items():
        util, function = key.split(".", 1)
        by_file.setdefault(util, {})[function] = value
    for attr, value in list(vars(module).items()):
        util = getattr(value, "__name__", "").removeprefix("vmigrate_utils_")
        if isinstance(value, types.ModuleType) and util in by_file:
            setattr(module, attr, _Overlay(value, by_file[util]))
    return module


def utils(*names, **overrides):
    """Replacements for ``load(utils=...)``: ``overrides`` ("file.function": replacement);
    ``names`` (the shared files a test relies on) are kept for readability and checked to
    exist."""
    for name in names:
        assert (REPO / "_utils" / f"{name}.py").exists(), name
    return dict(overrides)

