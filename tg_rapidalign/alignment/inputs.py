"""The first stages of the alignment pipeline: checked inputs, normalised
weights, centring, and the second moments the starts and the robust E-step need."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._validation import (
    check_batch,
    check_positions,
    check_same_space,
    check_values,
    check_weights,
    resolve_num_graphs,
)
from ..numerics import centre
from ..weights import normalize_weights
from .em import Centred
from .pose import weighted_covariance


class Prepared(NamedTuple):
    data: Centred     # centred points, normalised weights, batches
    mu_x: Tensor      # [B, 3] weighted centroids
    mu_y: Tensor


def prepare(x: Tensor, y: Tensor, batch_x: Optional[Tensor], batch_y: Optional[Tensor],
            weight_x: Optional[Tensor], weight_y: Optional[Tensor], num_graphs: Optional[int],
            paired: bool, max_weight_ratio: Optional[float]) -> Prepared:
    """Checks the point sets, normalises the weights per graph and centres each
    graph on its weighted centroid (the translation invariance)."""
    check_positions(x, "x", dim=3)
    check_positions(y, "y", dim=3)
    check_same_space(x, y)
    batch_x = check_batch(batch_x, x.size(0), "batch_x", x.device)
    batch_y = check_batch(batch_y, y.size(0), "batch_y", y.device)
    num_graphs = resolve_num_graphs(batch_x, batch_y, num_graphs)
    weight_x = check_weights(weight_x, x.size(0), "weight_x", x)
    weight_y = check_weights(weight_y, y.size(0), "weight_y", y)
    if paired:
        same = "init='paired' needs x and y with the same nodes: equal sizes and equal batch vectors " \
               "(row i of x paired with row i of y)"
        if x.size(0) != y.size(0):
            raise ValueError(same)
        if batch_x is not batch_y and x.size(0):
            check_values((batch_x == batch_y).all(), same)
    q = normalize_weights(weight_x, batch_x, num_graphs, x.dtype, max_ratio=max_weight_ratio)
    p = normalize_weights(weight_y, batch_y, num_graphs, y.dtype, max_ratio=max_weight_ratio)
    xc, mu_x = centre(x, q, batch_x, num_graphs)
    yc, mu_y = centre(y, p, batch_y, num_graphs)
    return Prepared(Centred(xc, yc, batch_x, batch_y, q, p, num_graphs), mu_x, mu_y)


def second_moments(data: Centred, needed: bool, full: bool):
    """``(spread [B], (cov_x, cov_y) or None)``: the weighted covariances (for
    the principal-axes starts) and the mean per-axis variance of both sets (the
    scale of ``pose_reg`` and the robust E-step's first bandwidth; part of the
    gradient with ``pose_grad="full"``). One pass each, skipped unless ``needed``."""
    if not needed:
        return data.x.new_zeros(data.num_graphs), None
    with torch.set_grad_enabled(full and torch.is_grad_enabled()):
        cx = weighted_covariance(data.x, data.q, data.batch_x, data.num_graphs)
        cy = weighted_covariance(data.y, data.p, data.batch_y, data.num_graphs)
        spread = (cx.diagonal(dim1=-2, dim2=-1).sum(-1) + cy.diagonal(dim1=-2, dim2=-1).sum(-1)) / 6
    return spread, (cx.detach(), cy.detach())
