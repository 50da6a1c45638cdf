"""Fake (meta) kernels and autograd of the native ops, registered on import.

Imported by :mod:`.native` once the extension is loaded; the fake kernels let
``torch.compile`` trace the ops without running them.
"""
import torch


@torch.library.register_fake("tg_rapidalign::estep_moments")

def _estep_moments_fake(x, y, q, p, batch_x, batch_y, R, t, sigmas, coefs, r, num_graphs):
    return x.new_empty(num_graphs, 18)


@torch.library.register_fake("tg_rapidalign::special_polar3")

def _special_polar3_fake(S):
    return torch.empty_like(S)


@torch.library.register_fake("tg_rapidalign::radius_pairs")

def _radius_pairs_fake(x, y, r, batch_x, batch_y, num_graphs):
    count = torch.library.get_ctx().new_dynamic_size()
    return x.new_empty(2, count, dtype=torch.long)


@torch.library.register_fake("tg_rapidalign::kernel_row_sums")

def _row_sums_fake(a, b, cb, batch_a, batch_b, sigmas, coefs, r, num_graphs):
    return a.new_empty(a.size(0), cb.size(1))


@torch.library.register_fake("tg_rapidalign::kernel_row_sums_backward")

def _row_sums_backward_fake(grad, a, b, cb, batch_a, batch_b, sigmas, coefs, r, num_graphs, *needs):
    return (torch.empty_like(a), torch.empty_like(b), torch.empty_like(cb), torch.empty_like(sigmas),
            torch.empty_like(coefs))


def _setup_context(ctx, inputs, output):
    a, b, cb, batch_a, batch_b, sigmas, coefs, r, num_graphs = inputs
    ctx.save_for_backward(a, b, cb, batch_a, batch_b, sigmas, coefs)
    ctx.r, ctx.num_graphs = r, num_graphs


def _backward(ctx, grad):
    a, b, cb, batch_a, batch_b, sigmas, coefs = ctx.saved_tensors
    need = ctx.needs_input_grad
    ga, gb, gcb, gs, gc = torch.ops.tg_rapidalign.kernel_row_sums_backward(
        grad, a, b, cb, batch_a, batch_b, sigmas, coefs, ctx.r, ctx.num_graphs,
        need[0] or need[5] or need[6], need[1] or need[2])
    return (ga if need[0] else None, gb if need[1] else None, gcb if need[2] else None, None, None,
            gs if need[5] else None, gc if need[6] else None, None, None)


torch.library.register_autograd("tg_rapidalign::kernel_row_sums", _backward,
                                setup_context=_setup_context)
