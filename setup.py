"""Builds the optional native extension ``tg_rapidalign._C``.

Everything else is declared in pyproject.toml. The extension needs torch at build
time, so the README's set-up installs with ``--no-build-isolation`` (a torch that
is already installed is used, never a new one fetched). Without torch, without a
C++ compiler, if the build fails, or with ``TG_RAPIDALIGN_NO_EXT=1``, the package
installs without it and falls back to its pure-torch paths
(``TG_RAPIDALIGN_REQUIRE_EXT=1``, set by CI, makes a missing extension an
error). CUDA kernels are added when torch has CUDA and ``nvcc`` is found
(``TG_RAPIDALIGN_NO_CUDA=1`` disables them). The build uses ``-march=native``
(it runs where it is built); ``TG_RAPIDALIGN_PORTABLE=1`` targets the baseline.
"""
import glob
import os
import shutil

from setuptools import setup

REQUIRE = os.environ.get("TG_RAPIDALIGN_REQUIRE_EXT") == "1"


def native_extension():
    if os.environ.get("TG_RAPIDALIGN_NO_EXT") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("tg_rapidalign: torch is not importable at build time; building without the native extension")
        return [], {}
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        if REQUIRE:
            raise RuntimeError("TG_RAPIDALIGN_REQUIRE_EXT=1 but no C++ compiler was found")
        print("tg_rapidalign: no C++ compiler found; building without the native extension")
        return [], {}
    root = os.path.dirname(os.path.abspath(__file__))
    # csrc/ as pyg-lib lays it out: extension.cpp (the module), common/ (shared
    # helpers), ops/<op>.cpp (each op's schema and argument checks), and the
    # kernels in ops/cpu/<op>_kernel.cpp and ops/cuda/<op>_kernel.cu.
    def sources_in(*parts, ext="cpp"):
        return sorted(glob.glob(os.path.join("csrc", *parts, f"*.{ext}")))

    sources = sources_in() + sources_in("common") + sources_in("ops") + sources_in("ops", "cpu")
    # -ffp-contract=off: distances round as in the torch paths, so "d <= r" agrees
    # exactly (no fused multiply-adds; see sqdist3 in csrc/common/distance.h).
    # -march=native: the extension is built where it runs (vectorised loops);
    # TG_RAPIDALIGN_PORTABLE=1 builds for the baseline instruction set.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off"]
    if os.environ.get("TG_RAPIDALIGN_PORTABLE") != "1":
        cxx.append("-march=native")
    with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
                 and os.environ.get("TG_RAPIDALIGN_NO_CUDA") != "1")
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[os.path.join(root, "csrc")])
    if with_cuda:
        sources += sources_in("ops", "cuda", ext="cu")
        # --fmad=false is nvcc's -ffp-contract=off: nvcc contracts a * b + c into
        # one fused multiply-add by default, which rounds the squared distance
        # differently from the torch paths, so the CUDA kernels' cutoff test
        # "d2 <= r * r" (sqdist3) would no longer agree exactly with them.
        nvcc = ["-O3", "--fmad=false"]
        # WITH_CUDA: the module reports tg_rapidalign._C.WITH_CUDA = 1.
        ext = CUDAExtension("tg_rapidalign._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                            define_macros=[("WITH_CUDA", None)], **kwargs)
    else:
        ext = CppExtension("tg_rapidalign._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    class OptionalBuild(BuildExtension):
        """A failed native build leaves a pure-torch install (with a warning at
        import), unless TG_RAPIDALIGN_REQUIRE_EXT=1 (CI) makes it an error."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:
                if REQUIRE:
                    raise
                print(f"tg_rapidalign: building the native extension failed ({err}); installing the "
                      "pure-torch package")

    return [ext], {"build_ext": OptionalBuild}


ext_modules, cmdclass = native_extension()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
