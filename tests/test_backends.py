"""The backend registry: one rule, every op's names, refusals that say why."""
import pytest
import torch
from helpers import random_batch

from tg_rapidalign import backends, kernel_sums, radius_pairs, se3_kernel_alignment
from tg_rapidalign.ops import native


def test_every_op_lists_auto_first_and_its_backends():
    assert backends.names("kernel_sums") == ("auto", "dense", "native", "tiled")
    assert backends.names("alignment") == ("auto", "native", "dense", "pairs")
    assert backends.names("radius")[0] == "auto" and "grid" in backends.names("radius")
    with pytest.raises(ValueError, match="unknown op"):
        backends.names("nope")


def test_the_last_backend_of_every_op_always_applies():
    """auto never fails: the streaming pure-torch path takes any problem."""
    odd = backends.Problem.of(torch.zeros(0, 7, dtype=torch.float16), bands=99, needs_grad=True)
    for op, entries in backends.REGISTRY.items():
        assert entries[-1].pure_torch
        assert backends.why_not(op, entries[-1].name, odd) is None


def test_auto_takes_the_first_backend_that_supports_the_problem():
    x = torch.randn(10, 3)
    small = backends.Problem.of(x, batches=(torch.zeros(10, dtype=torch.long),) * 2 + (1,))
    assert backends.select("kernel_sums", "auto", small) == "dense"
    big = backends.Problem(x, 3, sizes=lambda: (1, 10**4, 10**4))
    expected = "native" if native.AVAILABLE else "tiled"
    assert backends.select("kernel_sums", "auto", big) == expected
    # Beyond the native kernels' bands the pure-torch path is taken.
    many = backends.Problem(x, 3, bands=10**3, sizes=lambda: (1, 10**4, 10**4))
    assert backends.select("kernel_sums", "auto", many) == "tiled"
    four_d = backends.Problem.of(torch.randn(10, 4), pairs=10**8)
    assert backends.select("radius", "auto", four_d) == "grid"


def test_requested_backend_refusals_name_the_reason():
    x = torch.randn(6, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend='native' cannot run this kernel_sums call: .*dimension"):
        kernel_sums(x, x, backend="native")
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.select("radius", "bogus", backends.Problem.of(x))
    with pytest.raises(TypeError, match="backend must be a string"):
        backends.select("radius", 3, backends.Problem.of(x))


def test_size_limits_bind_auto_only():
    """An explicit dense request on a large batch is the caller's choice."""
    x = torch.randn(5, 3)
    big = backends.Problem(x, 3, sizes=lambda: (10, 10**4, 10**4))
    assert backends.why_not("kernel_sums", "dense", big, auto=True) is not None
    assert backends.why_not("kernel_sums", "dense", big, auto=False) is None


@pytest.mark.skipif(not native.AVAILABLE, reason="native extension not built")
def test_limits_come_from_the_extension():
    assert set(native.LIMITS) == {"MAX_BANDS", "MAX_DIM", "GRAPH_SCAN_POINTS", "ESTEP_GRAPH_POINTS",
                                  "WITH_CUDA", "ESTEP_CUDA"}
    x = torch.randn(5, 3)
    assert backends.native_supports(x, bands=native.LIMITS["MAX_BANDS"])
    assert not backends.native_supports(x, bands=native.LIMITS["MAX_BANDS"] + 1)
    n = native.LIMITS["ESTEP_GRAPH_POINTS"]
    for size, ok in ((n, True), (n + 1, False)):
        b = torch.zeros(size, dtype=torch.long)
        p = backends.Problem.of(torch.randn(size, 3), batches=(b, b, 1))
        assert (backends.select("estep", "auto", p) == "native") == ok
    needs_grad = backends.Problem.of(torch.randn(4, 3), batches=(b[:4], b[:4], 1), needs_grad=True)
    assert backends.select("estep", "auto", needs_grad) == "torch"
    assert backends.select("polar", "auto", backends.Problem.of(torch.randn(2, 3, 3))) == "native"
    assert backends.select("polar", "auto", backends.Problem.of(torch.randn(2, 3, 3), needs_grad=True)) \
        == "torch"


def test_every_backend_of_an_op_gives_the_same_answer():
    """The registry only picks; each op's backends agree (float64)."""
    x, bx = random_batch([7, 12], scale=3.0)
    y, by = random_batch([9, 5], scale=3.0)
    names = [n for n in backends.available("kernel_sums", x) if n != "auto"]
    sums = [kernel_sums(x, y, bx, by, sigma=0.8, backend=n).kxy for n in names]
    for s in sums[1:]:
        assert torch.allclose(s, sums[0], rtol=1e-9, atol=1e-12)
    pairs = [radius_pairs(x, y, 1.0, bx, by, backend=n) for n in backends.available("radius", x)]
    as_sets = [set(map(tuple, p.t().tolist())) for p in pairs]
    assert all(s == as_sets[0] for s in as_sets)
    losses = [se3_kernel_alignment(x, y, bx, by, sigma=0.8, backend=n).loss
              for n in backends.available("alignment", x)]
    for v in losses[1:]:
        assert torch.allclose(v, losses[0], rtol=1e-7, atol=1e-10)


def test_describe_lists_every_backend():
    text = backends.describe()
    for op, entries in backends.REGISTRY.items():
        for b in entries:
            assert f"{op:12s} {b.name}" in text
