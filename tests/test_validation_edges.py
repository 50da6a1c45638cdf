"""Edges of the numeric and argument checks: kernel parameters outside the safe
range, bandwidths relative to the compute dtype, loss-module arguments checked
at construction, and empty inputs."""
import math

import pytest
import torch
from helpers import chain_batch, graph_index, random_batch

from tg_rapidalign import (
    DrMMDFlow,
    DrMMDLoss,
    GaussianKernel,
    KernelMMDLoss,
    MMDLoss,
    MultiBandGaussianKernel,
    SE3KernelAlignmentLoss,
    backends,
    drmmd,
    drmmd_from_gram,
    drmmd_witness_grad,
    group_mmd,
    kernel_cosine,
    kernel_mmd,
    se3_kernel_alignment,
)
from tg_rapidalign.kernels import SIGMA_RANGE, resolve_kernel, sigma_limits
from tg_rapidalign.metrics import AlignmentMetric

# ---------------------------------------------------------------- safe parameter range


def _set(kernel, **values):
    with torch.no_grad():
        for name, value in values.items():
            getattr(kernel, name).copy_(torch.as_tensor(value, dtype=torch.float64))
    return kernel


def _loaded_gaussian():
    kern = GaussianKernel(1.0, learnable=True)
    kern.load_state_dict({"log_sigma": torch.tensor([-50.0], dtype=torch.float64),
                          "log_scale": torch.tensor(0.0, dtype=torch.float64)})
    return kern


EXTREME = {
    "log_sigma-60-trained": lambda: _set(MultiBandGaussianKernel([0.3, 1.0]), log_sigma=[-60.0, 0.0]),
    "log_sigma-50-loaded": _loaded_gaussian,
    "log_scale+700": lambda: _set(GaussianKernel(0.5, learnable=True, learnable_scale=True), log_scale=700.0),
    "log_scale-700": lambda: _set(GaussianKernel(0.5, learnable_scale=True), log_scale=-700.0),
    "log_sigma+80": lambda: _set(GaussianKernel(0.5, learnable=True), log_sigma=[80.0]),
    "logits-type_logit": lambda: _set(MultiBandGaussianKernel([0.4, 1.2], cross_type_weight=0.3),
                                      logits=[1e4, -1e4], type_logit=1e6),
}


def _ops():
    sums = [b for b in backends.available("kernel_sums") if b != "tiled"]
    ops = []
    for b in sums:
        for cutoff in (4.0, None):
            ops.append((f"mmd-{b}-{cutoff}", lambda x, y, bx, by, k, b=b, c=cutoff:
                        kernel_mmd(x, y, bx, by, sigma=k, backend=b, cutoff=c)))
        ops.append((f"cosine-{b}", lambda x, y, bx, by, k, b=b:
                    kernel_cosine(x, y, bx, by, sigma=k, backend=b)))
    for b in backends.available("alignment"):
        if b != "pairs":  # the slowest; see test_pairs_alignment_with_extreme_parameters
            ops.append((f"alignment-{b}", lambda x, y, bx, by, k, b=b:
                        se3_kernel_alignment(x, y, bx, by, sigma=k, backend=b).loss))
    ops.append(("group_mmd", lambda x, y, bx, by, k:
                group_mmd(torch.cat([x, y]), torch.cat([bx, by + 2]), None, k)[0]))
    ops.append(("drmmd", lambda x, y, bx, by, k: drmmd(x, y, k, 0.5)))
    return ops


def _check_finite(op, kern, dtype):
    x, bx = random_batch([5, 6], dtype=dtype, scale=3.0)
    y, by = random_batch([4, 7], dtype=dtype, scale=3.0)
    x.requires_grad_(True)
    value = op(x, y, bx, by, kern)
    assert torch.isfinite(value).all()
    params = [x] + list(kern.parameters())
    grads = torch.autograd.grad(value.sum(), params, allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", list(EXTREME.values()), ids=list(EXTREME))
def test_parameters_beyond_the_safe_range_stay_finite(make, dtype):
    kern = make()
    sigmas, coefs = kern.bands()
    assert SIGMA_RANGE[0] <= float(sigmas.min()) and float(sigmas.max()) <= SIGMA_RANGE[1] * (1 + 1e-12)
    assert torch.isfinite(coefs).all() and bool((coefs >= 0).all())
    for name, op in _ops():
        try:
            _check_finite(op, kern, dtype)
        except AssertionError:
            raise AssertionError(f"non-finite value or gradient from {name}") from None
    flow = DrMMDFlow(torch.randn(8, 3, dtype=dtype), kern, lam=0.1, w2=False)
    assert torch.isfinite(flow.run(torch.randn(9, 3, dtype=dtype), 2, progress=False).particles).all()


@pytest.mark.parametrize("make", [EXTREME["log_sigma-60-trained"], EXTREME["log_scale+700"]],
                         ids=["log_sigma-60", "log_scale+700"])
def test_pairs_alignment_with_extreme_parameters(make):
    _check_finite(lambda x, y, bx, by, k: se3_kernel_alignment(x, y, bx, by, sigma=k, backend="pairs").loss,
                  make(), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiled_backend_with_the_smallest_bandwidth(dtype):
    _check_finite(lambda x, y, bx, by, k: kernel_mmd(x, y, bx, by, sigma=k, backend="tiled"),
                  EXTREME["log_sigma-50-loaded"](), dtype)


def test_a_learnable_bandwidth_driven_out_of_range_keeps_finite_gradients():
    kern = GaussianKernel(0.5, learnable=True, learnable_scale=True)
    loss_fn = KernelMMDLoss(kern, cutoff=None)
    x, bx = random_batch([6, 5])
    y, by = random_batch([5, 6])
    _set(kern, log_sigma=[-60.0], log_scale=700.0)
    loss = loss_fn(x, y, bx, by)
    loss.backward()
    assert torch.isfinite(loss)
    # Clamped: no gradient pushes further out, and none is NaN.
    assert float(kern.log_sigma.grad.abs().max()) == 0.0 and float(kern.log_scale.grad.abs()) == 0.0
    assert float(kern.sigma) == pytest.approx(SIGMA_RANGE[0]) and "sigma=1e-12" in repr(kern)
    # Inside the range the clamp passes gradients unchanged.
    kern = GaussianKernel(0.5, learnable=True)
    KernelMMDLoss(kern, cutoff=None)(x, y, bx, by).backward()
    assert float(kern.log_sigma.grad.abs()) > 0


def test_constructors_refuse_values_outside_the_safe_range():
    for make, word in ((lambda: GaussianKernel(1e-13), "sigma"), (lambda: GaussianKernel(1e13), "sigma"),
                       (lambda: GaussianKernel(1.0, scale=1e13), "scale"),
                       (lambda: MultiBandGaussianKernel([1.0, 1e-14]), "sigmas"),
                       (lambda: MultiBandGaussianKernel([1.0], scale=1e-13), "scale"),
                       (lambda: MultiBandGaussianKernel([1.0, 2.0], weights=[1.0, 1e-40]), "weights"),
                       (lambda: KernelMMDLoss(1e-20), "kernel")):
        with pytest.raises(ValueError, match=word):
            make()
    assert float(GaussianKernel(1e-12).sigma) == pytest.approx(1e-12)


# ---------------------------------------------------------------- bandwidths vs the compute dtype

def test_sigma_limits_follow_finfo():
    for dtype, ref in ((torch.float32, torch.float32), (torch.float16, torch.float32),
                       (torch.bfloat16, torch.float32), (torch.float64, torch.float64)):
        low, high = sigma_limits(dtype)
        tiny, big = torch.finfo(ref).tiny, torch.finfo(ref).max
        assert low == pytest.approx(8 * math.sqrt(tiny)) and high == pytest.approx(1 / low)
        # 1/(2 sigma^2) neither overflows at the low end nor underflows at the high end.
        assert 0.5 / low ** 2 < big / 100 and 0.5 / high ** 2 > tiny * 10
    assert 1e-19 < sigma_limits(torch.float32)[0] < 1e-18
    assert sigma_limits(torch.float32)[0] < SIGMA_RANGE[0] and SIGMA_RANGE[1] < sigma_limits(torch.float32)[1]


@pytest.mark.parametrize("sigma", [1e-19, 1e-30, 1e19, torch.tensor(1e-25, dtype=torch.float64)])
def test_bandwidth_outside_the_dtype_range_is_refused(sigma):
    x, bx = random_batch([4, 5], dtype=torch.float32)
    y, by = random_batch([5, 4], dtype=torch.float32)
    with pytest.raises(ValueError, match="sigma"):
        kernel_mmd(x, y, bx, by, sigma=sigma)
    with pytest.raises(ValueError, match="sigma"):
        se3_kernel_alignment(x, y, bx, by, sigma=sigma)
    with pytest.raises(ValueError, match="sigma"):
        resolve_kernel(sigma, torch.float16, "cpu")  # half computes in float32


def test_tiny_bandwidth_is_fine_in_float64():
    x, bx = random_batch([4, 5])
    y, by = random_batch([5, 4])
    value = kernel_mmd(x, y, bx, by, sigma=1e-19, backend="dense", cutoff=None)
    assert torch.isfinite(value).all()
    with pytest.raises(ValueError, match="sigma"):
        kernel_mmd(x, y, bx, by, sigma=1e-160)


# ---------------------------------------------------------------- constructors check every argument

BAD_ARGUMENTS = [
    (KernelMMDLoss, dict(backend="bogus"), ValueError, "backend"),
    (KernelMMDLoss, dict(backend=3), ValueError, "backend"),
    (KernelMMDLoss, dict(cutoff=-1), ValueError, "cutoff"),
    (KernelMMDLoss, dict(cutoff=float("nan")), ValueError, "cutoff"),
    (KernelMMDLoss, dict(cutoff="far"), TypeError, "cutoff"),
    (KernelMMDLoss, dict(reduction="x"), ValueError, "reduction"),
    (KernelMMDLoss, dict(similarity="l2"), ValueError, "similarity"),
    (KernelMMDLoss, dict(unbiased="yes"), TypeError, "unbiased"),
    (KernelMMDLoss, dict(max_weight_ratio=0.5), ValueError, "max_weight_ratio"),
    (KernelMMDLoss, dict(max_weight_ratio="big"), TypeError, "max_weight_ratio"),
    (KernelMMDLoss, dict(weight=5), TypeError, "weight"),
    (KernelMMDLoss, dict(weight=""), ValueError, "weight"),
    (KernelMMDLoss, dict(weight=torch.tensor([1.0, float("nan")])), ValueError, "weight"),
    (KernelMMDLoss, dict(weight=torch.tensor([1.0, -1.0])), ValueError, "weight"),
    (KernelMMDLoss, dict(weight=torch.ones(3, 2)), ValueError, "weight"),
    (KernelMMDLoss, dict(node_type=3), TypeError, "node_type"),
    (KernelMMDLoss, dict(kernel="wide"), TypeError, "kernel"),
    (KernelMMDLoss, dict(kernel=-1.0), ValueError, "kernel"),
    (KernelMMDLoss, dict(kernel=torch.nn.Linear(2, 2)), TypeError, "kernel"),
    (KernelMMDLoss, dict(kernel=torch.ones(2)), ValueError, "kernel"),
    (DrMMDLoss, dict(lam=0), ValueError, "lam"),
    (DrMMDLoss, dict(lam=float("inf")), ValueError, "lam"),
    (DrMMDLoss, dict(lam="1"), TypeError, "lam"),
    (DrMMDLoss, dict(kernel=0.0), ValueError, "kernel"),
    (MMDLoss, dict(mode="all"), ValueError, "mode"),
    (MMDLoss, dict(unbiased=1), TypeError, "unbiased"),
    (MMDLoss, dict(num_groups=0), ValueError, "num_groups"),
    (MMDLoss, dict(num_groups=2.5), TypeError, "num_groups"),
    (MMDLoss, dict(num_groups=True), TypeError, "num_groups"),
    (MMDLoss, dict(gather="yes"), TypeError, "gather"),
    (MMDLoss, dict(kernel=float("nan")), ValueError, "kernel"),
    (SE3KernelAlignmentLoss, dict(reduction="avg"), ValueError, "reduction"),
    (SE3KernelAlignmentLoss, dict(weight=3), TypeError, "weight"),
    (SE3KernelAlignmentLoss, dict(kernel="x"), TypeError, "kernel"),
    (SE3KernelAlignmentLoss, dict(itrations=3), TypeError, "itrations"),
    (AlignmentMetric, dict(rmsd="yes"), TypeError, "rmsd"),
    (AlignmentMetric, dict(weight=2), TypeError, "weight"),
    (AlignmentMetric, dict(kernel=-0.5), ValueError, "kernel"),
]


BAD_IDS = [f"{c.__name__}-{'-'.join(k)}-{i}" for i, (c, k, *_) in enumerate(BAD_ARGUMENTS)]


@pytest.mark.parametrize("cls,kwargs,error,word", BAD_ARGUMENTS, ids=BAD_IDS)
def test_bad_constructor_arguments_are_refused_at_construction(cls, kwargs, error, word):
    with pytest.raises(error, match=word):
        cls(**kwargs)


def test_valid_arguments_are_kept():
    for name in backends.names("kernel_sums"):
        assert KernelMMDLoss(0.5, backend=name).backend == name
    loss = KernelMMDLoss(0.5, weight=torch.tensor([1.0, 2.0]), max_weight_ratio=2, cutoff=None,
                         unbiased=True, node_type="z")
    assert loss.max_weight_ratio == 2.0 and loss.cutoff is None and loss.node_type == "z"
    assert MMDLoss(num_groups=3, gather=False).num_groups == 3
    assert SE3KernelAlignmentLoss(0.5, weight=lambda d: d.mass).weight is not None
    pred, target = chain_batch([4, 5], 0), chain_batch([4, 5], 1)
    assert torch.isfinite(KernelMMDLoss(0.5, weight="mass")(pred, target))


# ---------------------------------------------------------------- empty inputs

@pytest.mark.parametrize("mode", ["pairwise", "one_vs_rest"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_group_mmd_of_empty_input(mode, unbiased):
    z = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    groups = torch.zeros(0, dtype=torch.long)
    values, valid = group_mmd(z, groups, mode=mode, unbiased=unbiased)
    shape = (0, 0) if mode == "pairwise" else (0,)
    assert values.shape == shape and valid.shape == shape and valid.dtype == torch.bool
    values, valid = group_mmd(z, groups, torch.zeros(0), mode=mode, unbiased=unbiased, num_groups=3)
    shape = (3, 3) if mode == "pairwise" else (3,)
    assert values.shape == shape and not bool(valid.any()) and bool((values == 0).all())
    values.sum().backward()
    assert z.grad.shape == z.shape
    # Empty groups next to non-empty ones keep their meaning.
    z = torch.randn(6, 4, dtype=torch.float64)
    values, valid = group_mmd(z, graph_index([3, 3]), mode=mode, num_groups=4)
    assert int(valid.sum()) == (2 if mode == "pairwise" else 2)


def test_mmd_loss_of_empty_input_is_zero_with_a_gradient():
    z = torch.zeros(0, 5, requires_grad=True)
    groups = torch.zeros(0, dtype=torch.long)
    for loss_fn in (MMDLoss(), MMDLoss(mode="one_vs_rest", num_groups=2)):
        loss = loss_fn(z, groups)
        assert loss.shape == () and float(loss) == 0.0
        loss.backward()
        assert z.grad.shape == z.shape


def test_drmmd_with_an_empty_side_raises_naming_it():
    x, y = torch.randn(5, 2), torch.randn(4, 2)
    empty = torch.zeros(0, 2)
    for fn in (lambda a, b: drmmd(a, b), lambda a, b: DrMMDLoss()(a, b),
               lambda a, b: drmmd_witness_grad(x, a, b)):
        with pytest.raises(ValueError, match="x is empty"):
            fn(empty, y)
        with pytest.raises(ValueError, match="y is empty"):
            fn(x, empty)
    with pytest.raises(ValueError, match="at least one"):
        drmmd_from_gram(torch.zeros(0, 0), torch.zeros(0, 3), torch.eye(3))
    with pytest.raises(ValueError, match="target"):
        DrMMDFlow(empty)
    with pytest.raises(ValueError, match="x0"):
        DrMMDFlow(y).run(empty, 1, progress=False)


def test_flow_arguments():
    y = torch.randn(4, 2, dtype=torch.float64)
    for kwargs, error, word in ((dict(noise="a"), TypeError, "noise"),
                                (dict(noise=-1.0), ValueError, "noise"),
                                (dict(noise_decay=None), TypeError, "noise_decay"),
                                (dict(adaptive="yes"), TypeError, "adaptive"), (dict(w2=1), TypeError, "w2"),
                                (dict(record_every=True), TypeError, "record_every"),
                                (dict(record_every=0), ValueError, "record_every")):
        with pytest.raises(error, match=word):
            DrMMDFlow(y, **kwargs)
    flow = DrMMDFlow(y, w2=False)
    with pytest.raises(ValueError, match="steps"):
        flow.run(y.clone(), -1, progress=False)
    with pytest.raises(TypeError, match="steps"):
        flow.run(y.clone(), 2.5, progress=False)
    assert torch.equal(flow.run(y.clone(), 0, progress=False).particles, y)
