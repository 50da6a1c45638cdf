"""Finding or compiling the native extension (ops/native_jit.py, ops/native_build.py):
the decision logic with stand-in steps (no compiler runs), the file lock with
real threads and processes, and, in the full tier, one real first-import build."""
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings

import pytest

from tg_rapidalign.ops import native, native_build, native_jit


def fake_module(**overrides):
    module = types.ModuleType("tg_rapidalign._C")
    for name in native._LIMIT_NAMES:
        setattr(module, name, 1)
    for name, value in overrides.items():
        setattr(module, name, value)
    return module


def missing():
    raise ModuleNotFoundError("No module named 'tg_rapidalign._C'", name="tg_rapidalign._C")


class Steps:
    """Stand-ins for the compiler and the library loader that record their calls."""

    def __init__(self, fail=False, seconds=0.0):
        self.fail, self.seconds = fail, seconds
        self.compiled, self.loaded, self.said = [], [], []
        self.lock = threading.Lock()

    def compiler(self, csrc, cuda, directory):
        with self.lock:
            self.compiled.append(directory)
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("Error building extension '_C': csrc/x.cpp:1: error: boom")
        path = os.path.join(directory, "_C.so")
        open(path, "w").close()
        return path

    def loader(self, path):
        self.loaded.append(path)
        return fake_module()

    def run(self, importer=missing):
        return native_jit.find_or_build(native._stale, importer=importer, compiler=self.compiler,
                                        loader=self.loader, announce=self.said.append)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(native_build.CACHE_DIR, str(tmp_path))
    for name in (native_build.NO_EXT, native_build.NATIVE_ARCH, native_build.PORTABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(native_jit, "_cannot_compile", lambda cuda: None)  # a compiler and ninja exist
    return tmp_path


def test_installed_extension_is_used_without_compiling(cache):
    steps = Steps()
    out = steps.run(importer=fake_module)
    assert out.module is not None and out.origin == "installed with the package"
    assert steps.compiled == [] and steps.said == []


def test_first_import_compiles_once_then_loads_from_the_cache(cache):
    first = Steps()
    out = first.run()
    assert out.module is not None and out.origin.startswith("compiled on first import into ")
    assert len(first.compiled) == 1 and first.compiled[0].startswith(str(cache))
    assert any("compiling the native extension" in s for s in first.said)
    again = Steps()
    out2 = again.run()
    assert out2.module is not None and again.compiled == [] and again.said == []
    assert again.loaded == [os.path.join(first.compiled[0], "_C.so")]


def test_failed_build_is_recorded_with_its_log_and_not_retried(cache):
    steps = Steps(fail=True)
    out = steps.run()
    assert out.module is None
    log = os.path.join(steps.compiled[0], "build.log")
    assert "none was built at install" in out.reason and log in out.reason
    assert "error: boom" in open(log).read()
    assert out.fix.startswith(f"rm -rf {steps.compiled[0]}")
    retry = Steps()
    assert retry.run().module is None and retry.compiled == []


def test_stale_installed_extension_is_not_shadowed(cache):
    stale = fake_module()
    del stale.ESTEP_CUDA
    stale.__file__ = "/somewhere/_C.so"
    steps = Steps()
    out = steps.run(importer=lambda: stale)
    assert out.module is None and "ESTEP_CUDA" in out.reason
    assert out.fix.startswith("rm /somewhere/_C.so") and steps.compiled == []


def test_installed_extension_for_another_torch_falls_back_to_compiling(cache):
    def wrong_abi():
        raise ImportError("_C.so: undefined symbol: _ZN3c10...")

    steps = Steps()
    assert steps.run(importer=wrong_abi).module is not None and len(steps.compiled) == 1


def test_concurrent_imports_compile_once(cache):
    steps = Steps(seconds=0.5)
    results = []
    threads = [threading.Thread(target=lambda: results.append(steps.run())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(steps.compiled) == 1 and all(r.module is not None for r in results)
    assert sum("waiting for another process" in s for s in steps.said) >= 1


def test_lock_waits_for_another_process(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        f = open({path!r}, "a"); fcntl.flock(f, fcntl.LOCK_EX)
        print("held", flush=True); time.sleep(1.0)""")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waited, start = [], time.perf_counter()
    with native_jit.exclusive(path, lambda: waited.append(1)):
        elapsed = time.perf_counter() - start
    holder.wait()
    assert waited == [1] and elapsed > 0.3


@pytest.mark.parametrize("env,reason,fix", [
    ({"TG_RAPIDALIGN_NO_EXT": "1"}, "TG_RAPIDALIGN_NO_EXT=1 forbids", "unset TG_RAPIDALIGN_NO_EXT"),
    ({"CXX": "no-such-compiler-xyz"}, "no C++ compiler ('no-such-compiler-xyz')", "install a C++ compiler"),
])
def test_why_it_cannot_be_compiled(monkeypatch, tmp_path, env, reason, fix):
    monkeypatch.setenv(native_build.CACHE_DIR, str(tmp_path))
    monkeypatch.delenv(native_build.NO_EXT, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    steps = Steps()
    out = steps.run()
    assert out.module is None and steps.compiled == []
    assert reason in out.reason and out.fix.startswith(fix)


def test_import_warning_names_the_cause_and_the_fix(monkeypatch):
    outcome = native_jit.Outcome(None, reason="because", fix="do this")
    monkeypatch.setattr(native.native_jit, "find_or_build", lambda check: outcome)
    monkeypatch.delenv(native_build.REQUIRE_EXT, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert native._load() is outcome
    [w] = caught
    assert "not available: because" in str(w.message) and str(w.message).endswith("To fix: do this")
    monkeypatch.setenv(native_build.REQUIRE_EXT, "1")
    with pytest.raises(ImportError, match="because.*do this.*TG_RAPIDALIGN_REQUIRE_EXT=1"):
        native._load()


def test_build_flags_are_portable_unless_asked(monkeypatch):
    monkeypatch.delenv(native_build.NATIVE_ARCH, raising=False)
    monkeypatch.delenv(native_build.PORTABLE, raising=False)
    assert "-march=native" not in native_build.cxx_flags()
    assert "-ffp-contract=off" in native_build.cxx_flags()  # exact cutoff agreement
    monkeypatch.setenv(native_build.NATIVE_ARCH, "1")
    assert "-march=native" in native_build.cxx_flags()
    monkeypatch.delenv(native_build.NATIVE_ARCH)
    # The first-import build runs where it is compiled (its cache is keyed by the processor).
    assert "-march=native" in native_build.cxx_flags(first_import=True)
    monkeypatch.setenv(native_build.NATIVE_ARCH, "1")
    monkeypatch.setenv(native_build.PORTABLE, "1")
    assert "-march=native" not in native_build.cxx_flags()
    assert "-march=native" not in native_build.cxx_flags(first_import=True)
    assert "-DWITH_CUDA" in native_build.cxx_flags(cuda=True) and "--fmad=false" in native_build.NVCC_FLAGS


def test_build_key_changes_with_sources_and_flags(tmp_path, monkeypatch):
    for name in (native_build.NATIVE_ARCH, native_build.PORTABLE):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "extension.cpp").write_text("int x;")
    key = native_build.build_key(str(tmp_path), False, "2.13.0+cpu")
    assert key == native_build.build_key(str(tmp_path), False, "2.13.0+cpu")
    assert key.startswith(f"py{sys.version_info[0]}{sys.version_info[1]}-torch2.13.0_cpu-cpu-")
    assert key != native_build.build_key(str(tmp_path), True, "2.13.0+cpu")
    assert key != native_build.build_key(str(tmp_path), False, "2.14.0+cpu")
    monkeypatch.setenv(native_build.PORTABLE, "1")
    assert key != native_build.build_key(str(tmp_path), False, "2.13.0+cpu")
    monkeypatch.delenv(native_build.PORTABLE)
    monkeypatch.setattr(native_build, "cpu_identity", lambda: "another processor")
    assert key != native_build.build_key(str(tmp_path), False, "2.13.0+cpu")
    monkeypatch.undo()
    (tmp_path / "extension.cpp").write_text("int y;")
    assert key != native_build.build_key(str(tmp_path), False, "2.13.0+cpu")


def test_sources_cover_every_kernel_file():
    root = native_build.csrc_dir(os.path.dirname(os.path.dirname(native.__file__)))
    assert root is not None
    cpu = {os.path.relpath(p, root) for p in native_build.sources(root)}
    on_disk = {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
               if f.endswith(".cpp")}
    assert cpu == on_disk
    cu = set(native_build.sources(root, cuda=True)) - set(native_build.sources(root))
    assert cu and all(p.endswith(".cu") for p in cu)


@pytest.mark.full  # compiles the whole extension (about two minutes on two cores)
def test_real_first_import_build_in_two_processes(tmp_path):
    """Two processes import the package at once with the installed extension
    hidden: one compiles it into the cache, the other waits; both then run the
    native MMD and agree with the dense path; a third loads it from the cache."""
    code = textwrap.dedent("""
        import sys
        sys.modules['tg_rapidalign._C'] = None  # as an install without the extension
        import torch, tg_rapidalign
        from tg_rapidalign.ops import native
        assert native.AVAILABLE and native.ORIGIN.startswith('compiled on first import'), native.ORIGIN
        x, y = torch.rand(300, 3, dtype=torch.float64), torch.rand(200, 3, dtype=torch.float64)
        a = tg_rapidalign.kernel_mmd(x, y, sigma=0.2, backend='native')
        b = tg_rapidalign.kernel_mmd(x, y, sigma=0.2, backend='dense')
        assert torch.allclose(a, b, rtol=1e-10), (a, b)
        print('ok')
    """)
    env = {**os.environ, native_build.CACHE_DIR: str(tmp_path), "OMP_NUM_THREADS": "1"}
    for name in (native_build.NO_EXT, native_build.REQUIRE_EXT):
        env.pop(name, None)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=1500) for p in procs]
    assert all(p.returncode == 0 and out.strip() == "ok" for p, (out, _) in zip(procs, outs)), outs
    built = ["compiled the native extension in" in err for _, err in outs]
    assert sorted(built) == [False, True], outs  # one compiled ...
    assert "waiting for another process" in outs[built.index(False)][1], outs  # ... the other waited
    third = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "compiling" not in third.stderr, third.stderr
