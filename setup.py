"""Builds the optional native extension ``tg_rapidalign._C``.

Everything else is declared in pyproject.toml. The extension needs torch at build
time, so the README's set-up installs with ``--no-build-isolation`` (a torch that
is already installed is used, never a new one fetched). Without torch, without a
C++ compiler, or with ``TG_RAPIDALIGN_NO_EXT=1``, the package installs without
it and falls back to its pure-torch paths. CUDA kernels are added when torch has
CUDA and ``nvcc`` is found (``TG_RAPIDALIGN_NO_CUDA=1`` disables them).
"""
import glob
import os
import shutil

from setuptools import setup


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
        print("tg_rapidalign: no C++ compiler found; building without the native extension")
        return [], {}
    root = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx = ["-O3", "-fopenmp"]
    with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
                 and os.environ.get("TG_RAPIDALIGN_NO_CUDA") != "1")
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[os.path.join(root, "csrc")], optional=True)
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        ext = CUDAExtension("tg_rapidalign._C", sources, extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
                            **kwargs)
    else:
        ext = CppExtension("tg_rapidalign._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = native_extension()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
