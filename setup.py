"""Builds the native extension ``tg_rapidalign._C`` at install where it can, and
ships its C++ sources in the package so that it can be compiled on first import
where it cannot.

Everything else is declared in pyproject.toml. The extension needs torch at
build time. pip builds in an isolated environment without torch by default
(``pip install .``): the package then installs without the extension and
compiles it on its first import into a per-user cache (see
tg_rapidalign/ops/native_jit.py). With ``pip install --no-build-isolation .``
the installed torch is used and the extension is built now (never a second
torch fetched). Without a C++ compiler, if the build fails, or with
``TG_RAPIDALIGN_NO_EXT=1``, the package installs without it
(``TG_RAPIDALIGN_REQUIRE_EXT=1``, set by CI, makes that an error). Flags and
switches (portable by default, ``TG_RAPIDALIGN_NATIVE_ARCH=1`` for
``-march=native``; CUDA kernels when torch has CUDA and ``nvcc`` is found) are in
tg_rapidalign/ops/native_build.py, shared with the first-import build;
docs/backends_build.md describes them.
"""
import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def _native_build():
    """tg_rapidalign/ops/native_build.py, loaded by path (the package imports torch)."""
    path = os.path.join(ROOT, "tg_rapidalign", "ops", "native_build.py")
    spec = importlib.util.spec_from_file_location("_tg_rapidalign_native_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nb = _native_build()
REQUIRE = nb.switch(nb.REQUIRE_EXT)


class BuildPyWithSources(build_py):
    """Copies csrc/ into the built package as tg_rapidalign/csrc, for the
    first-import build (an editable install reads the checkout's csrc/)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = os.path.join(ROOT, "csrc")
        target = os.path.join(self.build_lib, "tg_rapidalign", "csrc")
        if os.path.isdir(source):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)


def native_extension():
    if nb.switch(nb.NO_EXT):
        print("tg_rapidalign: TG_RAPIDALIGN_NO_EXT=1; building without the native extension")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("tg_rapidalign: torch is not importable in the build environment (pip's build isolation); "
              "the native extension will be compiled on first import instead (or build it now: "
              "pip install --no-build-isolation .)")
        return [], {}
    if nb.compiler() is None:
        if REQUIRE:
            raise RuntimeError("TG_RAPIDALIGN_REQUIRE_EXT=1 but no C++ compiler was found")
        print("tg_rapidalign: no C++ compiler found; building without the native extension")
        return [], {}
    with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None and not nb.switch(nb.NO_CUDA))
    # Relative paths: setuptools wants sources inside the project.
    sources = [os.path.relpath(p, ROOT) for p in nb.sources(os.path.join(ROOT, "csrc"), cuda=with_cuda)]
    kwargs = dict(extra_link_args=nb.LINK_FLAGS, include_dirs=[os.path.join(ROOT, "csrc")])
    flags = {"cxx": nb.cxx_flags(with_cuda)}
    if with_cuda:
        ext = CUDAExtension("tg_rapidalign._C", sources, extra_compile_args={**flags, "nvcc": nb.NVCC_FLAGS},
                            **kwargs)
    else:
        ext = CppExtension("tg_rapidalign._C", sources, extra_compile_args=flags, **kwargs)

    class OptionalBuild(BuildExtension):
        """A failed native build leaves a package that compiles the extension on
        first import (or warns), unless TG_RAPIDALIGN_REQUIRE_EXT=1 (CI) makes it
        an error."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:
                if REQUIRE:
                    raise
                print(f"tg_rapidalign: building the native extension failed ({err}); installing without it")

    return [ext], {"build_ext": OptionalBuild}


ext_modules, cmdclass = native_extension()
setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithSources, **cmdclass})
