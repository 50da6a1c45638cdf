"""Fake (meta) kernels and autograd of the native ops, registered on import.

Imported by :mod:`.native` once the extension is loaded; the fake kernels let
``torch.compile`` trace the ops without running them. Each checks the shape,
dtype and device relations that the op's C++ dispatch checks
(``csrc/ops/<op>.cpp``), with ``torch._check*`` so that symbolic sizes become
guards or runtime asserts, and with messages naming the op and the argument.
What needs the tensors' values (graph ids in ``[0, num_graphs)`` and sorted) is
left to the real kernels.
"""
import math

import torch

from .. import _C

MAX_BANDS = int(_C.MAX_BANDS)
MAX_DIM = int(_C.MAX_DIM)
_FLOATS = (torch.float32, torch.float64)


def _points(op, name, t):
    torch._check_value(t.dim() == 2, lambda: f"{op}: {name} must have shape [N, {MAX_DIM}], got "
                                             f"{tuple(t.shape)}")
    torch._check_value(t.size(1) == MAX_DIM, lambda: f"{op}: {name} must have shape [N, {MAX_DIM}], "
                                                     f"got {tuple(t.shape)}")
    torch._check(t.dtype in _FLOATS, lambda: f"{op}: {name} must be float32 or float64, got {t.dtype}")


def _same_dtype(op, name, t, ref_name, ref):
    torch._check(t.dtype == ref.dtype, lambda: f"{op}: {name} must have the dtype of {ref_name} "
                                               f"({ref.dtype}), got {t.dtype}")


def _same_device(op, **tensors):
    (first, ref), *_ = tensors.items()
    for name, t in tensors.items():
        torch._check(t.device == ref.device, lambda name=name, t=t: f"{op}: {name} must be on the device of "
                                                                   f"{first} ({ref.device}), got {t.device}")


def _vector(op, name, t, size, of):
    torch._check_value(t.dim() == 1, lambda: f"{op}: {name} must be 1-D with {of}.size(0) entries, "
                                             f"got shape {tuple(t.shape)}")
    torch._check_value(t.size(0) == size, lambda: f"{op}: {name} must be 1-D with {of}.size(0) = {size} "
                                                  f"entries, got shape {tuple(t.shape)}")


def _num_graphs(op, num_graphs):
    torch._check_value(num_graphs >= 0, lambda: f"{op}: num_graphs must be >= 0, got {num_graphs}")


def _batch(op, name, batch, size, of, num_graphs):
    _num_graphs(op, num_graphs)
    torch._check(batch.dtype == torch.int64, lambda: f"{op}: {name} must be int64, got {batch.dtype}")
    torch._check_value(batch.dim() == 1, lambda: f"{op}: {name} must have {of}.size(0) entries, got shape "
                                                 f"{tuple(batch.shape)}")
    torch._check_value(batch.size(0) == size, lambda: f"{op}: {name} must have {of}.size(0) = {size} "
                                                      f"entries, got shape {tuple(batch.shape)}")
    if isinstance(num_graphs, int) and num_graphs == 0:
        torch._check_value(size == 0, lambda: f"{op}: num_graphs is 0 but {name} holds {size} graph ids "
                                              "(each must be below num_graphs)")


def _bands(op, sigmas, coefs, ref, exact=None):
    torch._check_value(sigmas.dim() == 1, lambda: f"{op}: sigmas must be 1-D, got shape "
                                                  f"{tuple(sigmas.shape)}")
    torch._check_value(coefs.dim() == 1, lambda: f"{op}: coefs must be 1-D with one entry per band, got "
                                                 f"shape {tuple(coefs.shape)}")
    torch._check_value(coefs.size(0) == sigmas.size(0),
                       lambda: f"{op}: coefs must be 1-D with one entry per band (sigmas.size(0) = "
                               f"{sigmas.size(0)}), got shape {tuple(coefs.shape)}")
    if exact is not None:
        torch._check_value(sigmas.size(0) == exact, lambda: f"{op}: sigmas must hold exactly {exact} "
                                                            f"band(s), got {sigmas.size(0)}")
    else:
        torch._check_value(sigmas.size(0) >= 1, lambda: f"{op}: sigmas must hold between 1 and {MAX_BANDS} "
                                                        f"(MAX_BANDS) bands, got {sigmas.size(0)}")
        torch._check_value(sigmas.size(0) <= MAX_BANDS, lambda: f"{op}: sigmas must hold between 1 and "
                                                                f"{MAX_BANDS} (MAX_BANDS) bands, got "
                                                                f"{sigmas.size(0)}")
    torch._check(sigmas.dtype == ref.dtype and coefs.dtype == ref.dtype,
                 lambda: f"{op}: sigmas and coefs must have the dtype of the points ({ref.dtype}), got "
                         f"{sigmas.dtype} and {coefs.dtype}")


def _radius(op, r):
    if isinstance(r, float):
        torch._check_value(not math.isnan(r) and r >= 0, lambda: f"{op}: r must be non-negative, got {r}")


def _cutoff(op, cutoff):
    if isinstance(cutoff, float):
        torch._check_value(not math.isnan(cutoff),
                           lambda: f"{op}: cutoff must be a number (negative: no cutoff), got {cutoff}")


def _row_sums_arguments(op, a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs):
    _points(op, "a", a)
    _points(op, "b", b)
    _same_dtype(op, "b", b, "a", a)
    torch._check_value(cb.dim() == 2, lambda: f"{op}: cb must have shape [b.size(0), C], got "
                                              f"{tuple(cb.shape)}")
    torch._check_value(cb.size(0) == b.size(0), lambda: f"{op}: cb must have shape [b.size(0) = {b.size(0)}, "
                                                        f"C], got {tuple(cb.shape)}")
    _same_dtype(op, "cb", cb, "a", a)
    _same_device(op, a=a, b=b, cb=cb, batch_a=batch_a, batch_b=batch_b, sigmas=sigmas, coefs=coefs)
    _bands(op, sigmas, coefs, a)
    _cutoff(op, cutoff)
    _batch(op, "batch_a", batch_a, a.size(0), "a", num_graphs)
    _batch(op, "batch_b", batch_b, b.size(0), "b", num_graphs)


@torch.library.register_fake("tg_rapidalign::estep_moments")
def _estep_moments_fake(x, y, q, p, batch_x, batch_y, R, t, sigmas, coefs, cutoff, num_graphs):
    op = "estep_moments"
    _points(op, "x", x)
    _points(op, "y", y)
    _same_dtype(op, "y", y, "x", x)
    _vector(op, "q", q, x.size(0), "x")
    _vector(op, "p", p, y.size(0), "y")
    _same_dtype(op, "q", q, "x", x)
    _same_dtype(op, "p", p, "x", x)
    _same_device(op, x=x, y=y, q=q, p=p, batch_x=batch_x, batch_y=batch_y, R=R, t=t, sigmas=sigmas,
                 coefs=coefs)
    _num_graphs(op, num_graphs)
    def r_shape():
        return f"{op}: R must have shape [num_graphs = {num_graphs}, 3, 3], got {tuple(R.shape)}"

    def t_shape():
        return f"{op}: t must have shape [num_graphs = {num_graphs}, 3], got {tuple(t.shape)}"

    torch._check_value(R.dim() == 3, r_shape)
    for size, want in zip(R.shape, (num_graphs, 3, 3)):
        torch._check_value(size == want, r_shape)
    torch._check_value(t.dim() == 2, t_shape)
    for size, want in zip(t.shape, (num_graphs, 3)):
        torch._check_value(size == want, t_shape)
    _same_dtype(op, "R", R, "x", x)
    _same_dtype(op, "t", t, "x", x)
    _bands(op, sigmas, coefs, x, exact=1)
    _cutoff(op, cutoff)
    _batch(op, "batch_x", batch_x, x.size(0), "x", num_graphs)
    _batch(op, "batch_y", batch_y, y.size(0), "y", num_graphs)
    return x.new_empty(num_graphs, 18)


@torch.library.register_fake("tg_rapidalign::special_polar3")
def _special_polar3_fake(S):
    def shape():
        return f"special_polar3: S must have shape [B, 3, 3], got {tuple(S.shape)}"

    torch._check_value(S.dim() == 3, shape)
    torch._check_value(S.size(1) == 3, shape)
    torch._check_value(S.size(2) == 3, shape)
    torch._check(S.dtype in _FLOATS, lambda: f"special_polar3: S must be float32 or float64, got {S.dtype}")
    return torch.empty_like(S)


@torch.library.register_fake("tg_rapidalign::radius_pairs")
def _radius_pairs_fake(x, y, r, batch_x, batch_y, num_graphs):
    op = "radius_pairs"
    _points(op, "x", x)
    _points(op, "y", y)
    _same_dtype(op, "y", y, "x", x)
    _same_device(op, x=x, y=y, batch_x=batch_x, batch_y=batch_y)
    _radius(op, r)
    _batch(op, "batch_x", batch_x, x.size(0), "x", num_graphs)
    _batch(op, "batch_y", batch_y, y.size(0), "y", num_graphs)
    count = torch.library.get_ctx().new_dynamic_size()
    return x.new_empty(2, count, dtype=torch.long)


@torch.library.register_fake("tg_rapidalign::kernel_row_sums")
def _row_sums_fake(a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs):
    _row_sums_arguments("kernel_row_sums", a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs)
    return a.new_empty(a.size(0), cb.size(1))


@torch.library.register_fake("tg_rapidalign::kernel_row_sums_backward")
def _row_sums_backward_fake(grad, a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs, *needs):
    op = "kernel_row_sums_backward"
    _row_sums_arguments(op, a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs)
    torch._check_value(grad.dim() == 2, lambda: f"{op}: grad must have shape [a.size(0), cb.size(1)], got "
                                                f"{tuple(grad.shape)}")
    for size, want in zip(grad.shape, (a.size(0), cb.size(1))):
        torch._check_value(size == want, lambda: f"{op}: grad must have shape [a.size(0), cb.size(1)] = "
                                                 f"[{a.size(0)}, {cb.size(1)}], got {tuple(grad.shape)}")
    _same_dtype(op, "grad", grad, "a", a)
    _same_device(op, a=a, grad=grad)
    return (torch.empty_like(a), torch.empty_like(b), torch.empty_like(cb), torch.empty_like(sigmas),
            torch.empty_like(coefs))


def _setup_context(ctx, inputs, output):
    a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs = inputs
    ctx.save_for_backward(a, b, cb, batch_a, batch_b, sigmas, coefs)
    ctx.cutoff, ctx.num_graphs = cutoff, num_graphs


def _backward(ctx, grad):
    a, b, cb, batch_a, batch_b, sigmas, coefs = ctx.saved_tensors
    need = ctx.needs_input_grad
    ga, gb, gcb, gs, gc = torch.ops.tg_rapidalign.kernel_row_sums_backward(
        grad, a, b, cb, batch_a, batch_b, sigmas, coefs, ctx.cutoff, ctx.num_graphs,
        need[0] or need[5] or need[6], need[1] or need[2])
    return (ga if need[0] else None, gb if need[1] else None, gcb if need[2] else None, None, None,
            gs if need[5] else None, gc if need[6] else None, None, None)


torch.library.register_autograd("tg_rapidalign::kernel_row_sums", _backward,
                                setup_context=_setup_context)
