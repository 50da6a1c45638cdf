"""How the native extension ``tg_rapidalign._C`` is compiled: its sources, flags
and switches, shared by the build at install (``setup.py``) and the build on
first import (:mod:`.native_jit`), so that both produce the same library.

Standard library only: ``setup.py`` loads this file by its path, before the
package (or torch) can be imported.

Environment switches (``1`` turns one on):

* ``TG_RAPIDALIGN_NO_EXT``: never compile the extension (neither at install nor
  on first import); the pure-torch paths are used unless one is installed.
* ``TG_RAPIDALIGN_REQUIRE_EXT``: a missing extension is an error: a failed build
  at install fails the install, and importing the package without a usable
  extension raises :class:`ImportError` (CI sets it).
* ``TG_RAPIDALIGN_NATIVE_ARCH``: the build at install compiles for this
  machine's processor (``-march=native``). By default it targets the portable
  baseline of the compiler's target, which runs on any processor of the
  architecture (a wheel may be copied to other machines). The first-import build
  compiles for the processor it runs on (its cache is keyed by the processor's
  model and instruction-set flags, so it never runs elsewhere).
* ``TG_RAPIDALIGN_PORTABLE``: a portable build, at install and on first import;
  it wins over ``TG_RAPIDALIGN_NATIVE_ARCH``.
* ``TG_RAPIDALIGN_NO_CUDA``: no CUDA kernels even where torch has CUDA and
  ``nvcc`` is found.
* ``TG_RAPIDALIGN_CACHE_DIR``: where the first-import build is kept (default
  ``$XDG_CACHE_HOME/tg_rapidalign``, else ``~/.cache/tg_rapidalign``).
"""
import glob
import hashlib
import os
import shutil
import sys
from typing import List, Optional

NO_EXT = "TG_RAPIDALIGN_NO_EXT"
REQUIRE_EXT = "TG_RAPIDALIGN_REQUIRE_EXT"
NATIVE_ARCH = "TG_RAPIDALIGN_NATIVE_ARCH"
PORTABLE = "TG_RAPIDALIGN_PORTABLE"
NO_CUDA = "TG_RAPIDALIGN_NO_CUDA"
CACHE_DIR = "TG_RAPIDALIGN_CACHE_DIR"

# nvcc contracts a * b + c into one fused multiply-add by default, which rounds
# the squared distance differently from the torch paths, so the CUDA kernels'
# cutoff test "d2 <= r * r" (sqdist3) would no longer agree exactly with them;
# --fmad=false is nvcc's -ffp-contract=off.
NVCC_FLAGS = ["-O3", "--fmad=false", "-DWITH_CUDA"]
LINK_FLAGS = ["-fopenmp"]


def switch(name: str) -> bool:
    """Whether the environment switch ``name`` is on (set to ``1``)."""
    return os.environ.get(name, "") == "1"


def native_arch(first_import: bool = False) -> bool:
    """Whether to compile for this machine's processor only (``-march=native``):
    on request at install, by default on first import (see the switches)."""
    return not switch(PORTABLE) and (first_import or switch(NATIVE_ARCH))


def cxx_flags(cuda: bool = False, first_import: bool = False) -> List[str]:
    """The C++ compiler's flags. ``-ffp-contract=off``: distances round as in the
    torch paths, so ``d <= r`` agrees exactly (no fused multiply-adds; see sqdist3
    in csrc/common/distance.h). ``WITH_CUDA``: the module then reports
    ``tg_rapidalign._C.WITH_CUDA = 1``."""
    flags = ["-O3", "-fopenmp", "-ffp-contract=off"]
    if native_arch(first_import):
        flags.append("-march=native")
    if cuda:
        flags.append("-DWITH_CUDA")
    return flags


def compiler() -> Optional[str]:
    """The C++ compiler's path (``$CXX``, else ``c++``), or ``None`` if absent."""
    return shutil.which(os.environ.get("CXX", "c++"))


def csrc_dir(package_dir: str) -> Optional[str]:
    """The C++ sources: ``csrc`` inside the installed package (wheels and sdists
    ship them there) or beside it (a source checkout), ``None`` if neither has
    them."""
    for root in (os.path.join(package_dir, "csrc"), os.path.join(os.path.dirname(package_dir), "csrc")):
        if os.path.isfile(os.path.join(root, "extension.cpp")):
            return root
    return None


def sources(root: str, cuda: bool = False) -> List[str]:
    """The translation units under ``root`` as pyg-lib lays them out:
    ``extension.cpp`` (the module), ``common/`` (shared helpers), ``ops/<op>.cpp``
    (each op's schema and argument checks), the kernels in
    ``ops/cpu/<op>_kernel.cpp`` and, with ``cuda``, ``ops/cuda/<op>_kernel.cu``."""
    def under(*parts, ext="cpp"):
        return sorted(glob.glob(os.path.join(root, *parts, f"*.{ext}")))

    files = under() + under("common") + under("ops") + under("ops", "cpu")
    return files + (under("ops", "cuda", ext="cu") if cuda else [])


def cpu_identity() -> str:
    """The processor's model and instruction-set flags (Linux), else its name."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        import platform

        return platform.processor() or platform.machine()


def build_key(root: str, cuda: bool, torch_version: str) -> str:
    """A directory name for one first-import build: Python and torch versions,
    CUDA or not, and a hash of every source and header, the flags, the compiler
    and (for ``-march=native``) the processor, so that a change of any of them
    builds anew instead of reusing a stale or foreign library."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    flags = cxx_flags(cuda, first_import=True)
    digest.update(repr((flags, NVCC_FLAGS if cuda else [], LINK_FLAGS, compiler())).encode())
    if native_arch(first_import=True):  # a -march=native build runs only on processors like this one
        digest.update(cpu_identity().encode())
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    kind = "cuda" if cuda else "cpu"
    return f"{py}-torch{torch_version.replace('+', '_')}-{kind}-{digest.hexdigest()[:16]}"
