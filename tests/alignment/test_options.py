"""AlignmentOptions: the grouped options give the same result as keywords, and
bad values fail where they are given (function, options object, loss module, metric)."""
import pytest
import torch
from helpers import random_batch

from tg_rapidalign import SE3KernelAlignmentLoss, se3_kernel_alignment
from tg_rapidalign.alignment import AlignmentOptions


def test_options_object_equals_keywords_and_keywords_override_it():
    x, b = random_batch([12, 9], scale=2.0)
    y = x + 0.1 * torch.randn_like(x)
    kw = dict(pose_blend=0.3, pose_reg=0.5, eps=1e-6, kappa_floor=1e-4, refresh_neighbors=False)
    a = se3_kernel_alignment(x, y, b, b, sigma=0.7, iterations=3, **kw)
    c = se3_kernel_alignment(x, y, b, b, sigma=0.7, iterations=3, options=AlignmentOptions(**kw))
    assert torch.equal(a.loss, c.loss) and torch.equal(a.R, c.R)
    opts = AlignmentOptions(**kw)
    d = se3_kernel_alignment(x, y, b, b, sigma=0.7, iterations=3, options=opts, pose_blend=0.0)
    e = se3_kernel_alignment(x, y, b, b, sigma=0.7, iterations=3, **dict(kw, pose_blend=0.0))
    assert torch.equal(d.loss, e.loss) and not torch.equal(d.R, a.R)


@pytest.mark.parametrize("bad", [dict(eps=0.0), dict(pose_blend=1.0), dict(outlier_weight=-0.1),
                                 dict(pose_reg=float("inf")), dict(min_sigma=-1.0), dict(kappa_floor=0),
                                 dict(max_weight_ratio=float("nan")), dict(refresh_neighbors="yes")])
def test_bad_options_fail_at_construction(bad):
    name = next(iter(bad))
    with pytest.raises((ValueError, TypeError), match=name):
        AlignmentOptions(**bad)
    with pytest.raises((ValueError, TypeError), match=name):
        SE3KernelAlignmentLoss(1.0, **bad)


@pytest.mark.parametrize("bad", [dict(tau=0.0), dict(cutoff=-1.0), dict(iterations=-2), dict(init="random"),
                                 dict(objective="l2"), dict(estep="soft"), dict(backend="bogus"),
                                 dict(pose_grad="some")])
def test_loss_module_validates_its_options_when_built(bad):
    name = next(iter(bad))
    with pytest.raises((ValueError, TypeError), match=name):
        SE3KernelAlignmentLoss(**bad)


def test_unknown_keywords_are_refused():
    x = torch.randn(5, 3)
    with pytest.raises(TypeError, match="pose_blnd"):
        se3_kernel_alignment(x, x, pose_blnd=0.5)
    with pytest.raises(TypeError, match="pose_blnd"):
        SE3KernelAlignmentLoss(pose_blnd=0.5)
    with pytest.raises(TypeError, match="options must be an AlignmentOptions"):
        se3_kernel_alignment(x, x, options={"eps": 1e-3})
