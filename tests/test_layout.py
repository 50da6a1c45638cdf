"""The package's layering, read from its import statements: each unit (a
top-level module or subpackage) imports only from units of a lower layer, no
module imports another module's private names, the core never imports the
applications, and the old application paths still work (with a warning)."""
import ast
import importlib
import pathlib
import sys
import warnings

import pytest

import tg_rapidalign

ROOT = pathlib.Path(tg_rapidalign.__file__).parent

# Bottom-up. A unit may import from any unit of a strictly lower layer.
LAYERS = [
    {"_C", "_validation", "extras", "segments", "version"},
    {"ops", "numerics"},                       # op bindings, Gaussian evaluation, tiles; dtype policy
    {"backends", "kernels", "weights", "schedules", "distributed"},
    {"neighbors", "stats"},
    {"alignment"},                             # the alignment loss's stages
    {"functional"},                            # the public ops
    {"nn", "flows", "io"},
    {"metrics", "transforms"},
    {"__init__"},                              # the public API
    {"apps"},                                  # demo, calibration, datasets, models, CLI
    {"denoising", "calibration", "datasets", "cli", "models"},  # deprecated paths into apps
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
CORE = {unit for rank, units in enumerate(LAYERS) if rank < RANK["apps"] for unit in units}


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        package = parts if parts[-1] == "__init__" else parts[:-1]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, list(package[:-1] if parts[-1] == "__init__" else package), ast.parse(path.read_text())


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1] if parts[1] in RANK else "__init__"  # a name imported from the root package


def _imports():
    """``(importing module, imported module, imported names)`` of every
    ``from tg_rapidalign... import`` statement (relative ones resolved)."""
    for name, package, tree in _modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                is_pkg = name.split(".") == package
                base = (package if not is_pkg else name.split("."))[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tg_rapidalign":
                continue
            names = [a.name for a in node.names]
            if node.module is None:  # "from . import x": x is a module or a name of the package
                for n in names:
                    yield name, f"{target}.{n}", [n]
            else:
                yield name, target, names


def test_every_unit_has_a_layer():
    units = {_unit(name) for name, _, _ in _modules()}
    assert units <= set(RANK), sorted(units - set(RANK))


def test_units_import_only_from_lower_layers():
    bad = []
    for importer, target, _ in _imports():
        a, b = _unit(importer), _unit(target)
        if a != b and RANK[b] >= RANK[a]:
            bad.append(f"{importer} ({a}, layer {RANK[a]}) imports {target} ({b}, layer {RANK[b]})")
    assert not bad, "\n".join(bad)


def test_the_core_never_imports_the_applications():
    bad = [f"{i} imports {t}" for i, t, _ in _imports() if _unit(i) in CORE and _unit(t) not in CORE]
    assert not bad, "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    bad = [f"{i} imports {n} from {t}" for i, t, names in _imports() for n in names
           if n.startswith("_") and not n.startswith("__") and n != "_C"]
    assert not bad, "\n".join(bad)


def test_one_spelling_of_neighbors_in_names():
    """Identifiers use one spelling, "neighbors" (as PyG and ``refresh_neighbors``), not the British one."""
    bad = []
    for name, _, tree in _modules():
        for node in ast.walk(tree):
            ident = getattr(node, "name", None) or getattr(node, "attr", None) or getattr(node, "id", None)
            if isinstance(ident, str) and "neighb" + "our" in ident.lower():
                bad.append(f"{name}: {ident}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("old, new", [("denoising", "apps.denoising"), ("calibration", "apps.calibration"),
                                      ("datasets", "apps.datasets"), ("cli", "apps.cli"),
                                      ("models", "apps.models")])
def test_moved_application_modules_warn_and_forward(old, new):
    sys.modules.pop(f"tg_rapidalign.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(f"tg_rapidalign.{old}")
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
    target = importlib.import_module(f"tg_rapidalign.{new}")
    public = [n for n in dir(target) if not n.startswith("_")]
    assert public and all(getattr(mod, n) is getattr(target, n) for n in public)
