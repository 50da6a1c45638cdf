"""Finding the native extension at import, and compiling it on first import
where the install did not (pip builds in an isolated environment without
torch, so ``pip install .`` installs the package without it).

:func:`find_or_build` takes, in order: the extension installed with the package
(built at install); one compiled earlier into the per-user cache; or it
compiles one there with :func:`torch.utils.cpp_extension.load` (about two
minutes, once per torch version, source and flag set), under a file lock so
that concurrent processes (DataLoader workers, DDP ranks) compile it once and
the others wait for it. Otherwise it says why not and what fixes it. The
switches are listed in :mod:`.native_build`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Iterator, Optional

from . import native_build as build

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "tg_rapidalign._C"
DONE, FAILED = "COMPLETE", "FAILED"  # markers in a build directory


@dataclass
class Outcome:
    """The extension module (``None`` if unavailable), where it came from, or why
    it is unavailable and the one command that fixes that."""

    module: Optional[ModuleType]
    origin: str = ""
    reason: str = ""
    fix: str = ""


def cache_root() -> str:
    """The per-user directory of first-import builds (``TG_RAPIDALIGN_CACHE_DIR``)."""
    if os.environ.get(build.CACHE_DIR):
        return os.environ[build.CACHE_DIR]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tg_rapidalign")


def import_installed() -> ModuleType:
    """The extension built at install (``tg_rapidalign/_C*.so``)."""
    return importlib.import_module(MODULE)


def import_library(path: str) -> ModuleType:
    """Imports the compiled library at ``path`` as ``tg_rapidalign._C`` (loading
    it registers the ops)."""
    spec = importlib.util.spec_from_file_location(MODULE, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[MODULE] = module
    return module


def compile_library(csrc: str, cuda: bool, directory: str) -> str:
    """Compiles the extension from ``csrc`` into ``directory`` with torch's
    builder (ninja) and the flags of :mod:`.native_build`; returns the
    library's path."""
    from torch.utils import cpp_extension

    os.makedirs(directory, exist_ok=True)
    baton = os.path.join(directory, "lock")  # torch's own lock, left behind by a killed build
    if os.path.exists(baton):  # we hold our lock: nobody else is building here
        os.remove(baton)
    cpp_extension.load(name="_C", sources=build.sources(csrc, cuda),
                       extra_cflags=build.cxx_flags(cuda, first_import=True),
                       extra_cuda_cflags=build.NVCC_FLAGS if cuda else None,
                       extra_ldflags=build.LINK_FLAGS, extra_include_paths=[csrc], build_directory=directory,
                       with_cuda=cuda, is_python_module=False, verbose=False)
    return os.path.join(directory, "_C" + cpp_extension.LIB_EXT)


@contextlib.contextmanager
def exclusive(path: str, on_wait: Callable[[], None]) -> Iterator[None]:
    """Holds an exclusive lock on the file ``path`` (released when the process
    ends, so a killed build never blocks the next); calls ``on_wait`` first if
    another process holds it. Without ``fcntl`` (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def say(message: str) -> None:
    print(f"tg_rapidalign: {message}", file=sys.stderr, flush=True)


def _installed(check: Callable[[ModuleType], str], importer: Callable[[], ModuleType]):
    """``(module, why it is unusable or "")`` if the installed extension loads,
    else ``(None, why not)``."""
    try:
        module = importer()
    except ModuleNotFoundError as err:
        if err.name == MODULE:
            return None, "none was built at install"
        return None, f"the installed one does not load ({err})"
    except ImportError as err:  # e.g. built against another torch
        return None, f"the installed one does not load ({str(err).splitlines()[0][:200]})"
    return module, check(module)


def _cannot_compile(cuda: bool) -> Optional[Outcome]:
    """Why the extension cannot be compiled here, or ``None`` if it can."""
    if build.switch(build.NO_EXT):
        return Outcome(None, reason="TG_RAPIDALIGN_NO_EXT=1 forbids compiling it",
                       fix="unset TG_RAPIDALIGN_NO_EXT and import tg_rapidalign again")
    if build.csrc_dir(PACKAGE_DIR) is None:
        return Outcome(None, reason=f"the package's C++ sources are missing (no csrc in {PACKAGE_DIR})",
                       fix="pip install --force-reinstall --no-deps tg_rapidalign")
    if build.compiler() is None:
        cxx = os.environ.get("CXX", "c++")
        return Outcome(None, reason=f"no C++ compiler ({cxx!r}) was found to compile it",
                       fix="install a C++ compiler (e.g. `sudo apt-get install g++`, or set CXX) "
                           "and import tg_rapidalign again")
    from torch.utils.cpp_extension import is_ninja_available
    if not is_ninja_available():
        return Outcome(None, reason="torch's extension builder needs ninja, which is not installed",
                       fix="pip install ninja")
    return None


def _with_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None and not build.switch(build.NO_CUDA)


def find_or_build(check: Callable[[ModuleType], str],
                  importer: Callable[[], ModuleType] = import_installed,
                  compiler: Callable[[str, bool, str], str] = compile_library,
                  loader: Callable[[str], ModuleType] = import_library,
                  announce: Callable[[str], None] = say) -> Outcome:
    """The extension as :class:`Outcome`. ``check(module)`` returns why a loaded
    module is unusable (``""`` if it is usable); ``importer``, ``compiler``,
    ``loader`` and ``announce`` are the steps (replaced in tests)."""
    module, why = _installed(check, importer)
    if module is not None:
        if not why:
            return Outcome(module, origin="installed with the package")
        # Its ops are registered now: a second library cannot register them again.
        return Outcome(None, reason=f"the installed one is out of date ({why})",
                       fix=f"rm {module.__file__}; then import tg_rapidalign again (it compiles anew)")
    import torch

    cuda = _with_cuda()
    blocked = _cannot_compile(cuda)
    if blocked is not None:
        blocked.reason = f"{why}, and {blocked.reason}"
        return blocked
    csrc = build.csrc_dir(PACKAGE_DIR)
    directory = os.path.join(cache_root(), build.build_key(csrc, cuda, torch.__version__))
    try:
        os.makedirs(directory, exist_ok=True)
        with exclusive(directory + ".lock", lambda: announce(
                f"waiting for another process compiling the native extension into {directory} ...")):
            return _build_once(directory, csrc, cuda, why, check, compiler, loader, announce)
    except OSError as err:
        return Outcome(None, reason=f"{why}, and the build cache {directory} is not usable ({err})",
                       fix=f"export {build.CACHE_DIR}=<a writable directory> and import tg_rapidalign again")


def _build_once(directory: str, csrc: str, cuda: bool, why: str, check, compiler, loader,
                announce) -> Outcome:
    """Inside the lock: the library compiled earlier into ``directory``, or a
    new build, or the record of a failed one."""
    log = os.path.join(directory, "build.log")
    retry = f"rm -rf {directory}  (after fixing the error in {log}), then import tg_rapidalign again"
    if os.path.exists(os.path.join(directory, FAILED)):
        return Outcome(None, reason=f"{why}, and compiling it failed (see {log})", fix=retry)
    done = os.path.join(directory, DONE)
    origin = f"compiled on first import into {directory}"
    if not os.path.exists(done):
        kind = "CPU and CUDA" if cuda else "CPU"
        announce(f"compiling the native extension ({kind} kernels, once for this torch and version of the "
                 f"package; a few minutes) into {directory} ...")
        start = time.perf_counter()
        try:
            path = compiler(csrc, cuda, directory)
        except Exception as err:
            with open(log, "w") as f:
                f.write(str(err))
            open(os.path.join(directory, FAILED), "w").close()
            return Outcome(None, reason=f"{why}, and compiling it failed (see {log})", fix=retry)
        with open(done, "w") as f:
            f.write(os.path.basename(path))
        announce(f"compiled the native extension in {time.perf_counter() - start:.0f} s")
    with open(done) as f:
        path = os.path.join(directory, f.read().strip())
    try:
        module = loader(path)
    except ImportError as err:
        return Outcome(None, reason=f"{why}, and the compiled {path} does not load ({err})", fix=retry)
    stale = check(module)
    if stale:
        return Outcome(None, reason=f"{why}, and the compiled {path} is unusable ({stale})", fix=retry)
    return Outcome(module, origin=origin)
