"""Packaging metadata (pyproject.toml) against the code: the light core, the
extras named by tg_rapidalign/extras.py, one version source, the licence and
the type marker."""
import os
import re

import pytest

from tg_rapidalign import extras
from tg_rapidalign.version import __version__

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tg_rapidalign")


@pytest.fixture(scope="module")
def project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def names(requirements):
    """Distribution names (normalised) of requirement strings; self-references
    ``tg_rapidalign[a,b]`` expand to ``extra:a``, ``extra:b``."""
    out = set()
    for req in requirements:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(\[([^\]]*)\])?", req)
        name = m.group(1).lower().replace("_", "-")
        if name == "tg-rapidalign":
            out |= {f"extra:{e.strip()}" for e in m.group(3).split(",")}
        else:
            out.add(name)
    return out


def expand(project, extra):
    deps = names(project["optional-dependencies"][extra])
    for ref in [d for d in deps if d.startswith("extra:")]:
        deps = (deps - {ref}) | expand(project, ref[6:])
    return deps


def test_core_dependencies_are_light(project):
    assert names(project["dependencies"]) == {"torch", "torch-geometric", "ninja"}


def test_every_optional_module_is_in_the_extra_that_extras_py_names(project):
    optional = project["optional-dependencies"]
    for module, extra in extras.EXTRAS.items():
        assert extra in optional, (module, extra)
        assert module.replace("_", "-") in expand(project, extra), (module, extra)
        assert module.replace("_", "-") in expand(project, "all"), module


def test_all_covers_every_runtime_extra(project):
    optional = project["optional-dependencies"]
    assert "examples" not in optional
    runtime = set(optional) - {"all", "test", "docs"}
    assert {f"extra:{e}" for e in runtime} <= names(optional["all"])


def test_one_version_source(project):
    assert "version" in project.get("dynamic", []) and "version" not in project
    hits = []
    for folder in ("tg_rapidalign", "scripts", "benchmarks", "examples"):
        for d, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith((".py", ".sh", ".toml", ".cfg")):
                    text = open(os.path.join(d, f), encoding="utf-8").read()
                    pattern = rf"(version|__version__)\s*=\s*['\"]{re.escape(__version__)}['\"]"
                    if re.search(pattern, text):
                        hits.append(os.path.relpath(os.path.join(d, f), ROOT))
    assert hits == [os.path.join("tg_rapidalign", "version.py")]


def test_license_and_type_marker(project):
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()
    assert text.startswith("MIT License") and "tg_rapidalign developers" in text
    assert os.path.isfile(os.path.join(PACKAGE, "py.typed"))
