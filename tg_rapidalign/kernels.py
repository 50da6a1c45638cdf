r"""Gaussian kernels with learnable bandwidths.

Every kernel in this library is a (possibly single-band) mixture

.. math::
    k(\mathbf{x}, \mathbf{y}) = s \sum_{b=1}^{K} \pi_b
    \exp\left(-\frac{\lVert \mathbf{x} - \mathbf{y} \rVert^2}{2\sigma_b^2}\right),
    \qquad \pi = \mathrm{softmax}(\boldsymbol{\ell}),

with bandwidths :math:`\sigma_b > 0` (stored as :math:`\log \sigma_b`), mixture
weights :math:`\pi_b` (positive, summing to one) and a global scale :math:`s > 0`
(stored as :math:`\log s`). The ops only ever see the pair of tensors
``(sigmas [K], coefs [K])`` with ``coefs = s * pi``, returned by :meth:`bands`.

When the losses are given node types (``type_x``, ``type_y``: atomic numbers,
residue or point classes), the kernel is multiplied by a type kernel,

.. math::
    k\big((\mathbf{x}, a), (\mathbf{y}, b)\big) = k(\mathbf{x}, \mathbf{y})
    \big(\beta + (1 - \beta)\,[a = b]\big), \qquad \beta \in [0, 1],

still positive definite (a convex combination of the constant and the
identity kernel on types): pairs of different types count with the weight
:math:`\beta`, the ``cross_type_weight`` of a :class:`MultiBandGaussianKernel`
(learnable through :math:`\operatorname{logit} \beta`); for every other
kernel :math:`\beta = 0` (only pairs of the same type interact).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._validation import check_positive_scalar
from .ops.gaussian import gaussian

KernelLike = Union[float, Tensor, "GaussianKernel", "MultiBandGaussianKernel"]


class BaseGaussianKernel(torch.nn.Module):
    """The base of every kernel module: a Gaussian mixture given by :meth:`bands`."""

    def bands(self) -> Tuple[Tensor, Tensor]:
        """Returns ``(sigmas [K], coefs [K])`` with ``coefs = scale * softmax(logits)``."""
        raise NotImplementedError

    def type_weight(self) -> Optional[Tensor]:
        """The cross-type weight :math:`\beta` (a 0-d tensor), or ``None`` (0)."""
        return None

    @property
    def max_sigma(self) -> float:
        return float(self.bands()[0].detach().max())

    def forward(self, sqdist: Tensor) -> Tensor:
        """Evaluates the kernel on squared distances of any shape."""
        sigmas, coefs = self.bands()
        return gaussian(sqdist, sigmas.to(sqdist.dtype), coefs.to(sqdist.dtype))


class GaussianKernel(BaseGaussianKernel):
    r"""The single-band Gaussian kernel
    :math:`k(\mathbf{x}, \mathbf{y}) = s\exp(-\lVert\mathbf{x}-\mathbf{y}\rVert^2 / 2\sigma^2)`.

    Args:
        sigma (float): The bandwidth :math:`\sigma > 0`. (default: :obj:`1.0`)
        learnable (bool, optional): If :obj:`True`, :math:`\log\sigma` is a
            parameter. (default: :obj:`False`)
        scale (float, optional): The global scale :math:`s > 0`. (default: :obj:`1.0`)
        learnable_scale (bool, optional): If :obj:`True`, :math:`\log s` is a
            parameter. (default: :obj:`False`)
    """

    def __init__(self, sigma: float = 1.0, learnable: bool = False, scale: float = 1.0,
                 learnable_scale: bool = False):
        super().__init__()
        sigma = check_positive_scalar(sigma, "sigma")
        scale = check_positive_scalar(scale, "scale")
        log_sigma = torch.tensor([math.log(sigma)], dtype=torch.float64)
        log_scale = torch.tensor(math.log(scale), dtype=torch.float64)
        if learnable:
            self.log_sigma = torch.nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        if learnable_scale:
            self.log_scale = torch.nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp()[0]

    def bands(self) -> Tuple[Tensor, Tensor]:
        return self.log_sigma.exp(), self.log_scale.exp().reshape(1)

    def __repr__(self) -> str:
        learn = isinstance(self.log_sigma, torch.nn.Parameter)
        return (f"{self.__class__.__name__}(sigma={float(self.sigma):.4g}, "
                f"scale={float(self.log_scale.exp()):.4g}, learnable={learn})")


class MultiBandGaussianKernel(BaseGaussianKernel):
    r"""A mixture of Gaussian kernels at several bandwidths,
    :math:`k = s \sum_b \pi_b \exp(-\lVert\mathbf{x}-\mathbf{y}\rVert^2 / 2\sigma_b^2)`,
    with :math:`\pi = \mathrm{softmax}(\boldsymbol{\ell})`.

    Args:
        sigmas (sequence of float): The initial bandwidths, all positive.
        learnable (bool, optional): If :obj:`True`, the log-bandwidths and the
            mixture logits are parameters. (default: :obj:`True`)
        weights (sequence of float, optional): Initial mixture weights
            (positive; normalised). (default: uniform)
        scale (float, optional): The global scale :math:`s`. (default: :obj:`1.0`)
        learnable_scale (bool, optional): If :obj:`True`, :math:`\log s` is a
            parameter too. (default: :obj:`False`)
        cross_type_weight (float, optional): :math:`\beta \in [0, 1]`, the weight of
            pairs of different node types when the loss is given node types
            (stored as :math:`\operatorname{logit}\beta`, clamped to
            :math:`\pm 40`; learnable with :obj:`learnable`). (default: :obj:`None`,
            i.e. 0 when types are given)
    """

    def __init__(self, sigmas: Sequence[float], learnable: bool = True,
                 weights: Sequence[float] | None = None, scale: float = 1.0,
                 learnable_scale: bool = False, cross_type_weight: Optional[float] = None):
        super().__init__()
        if isinstance(sigmas, Tensor):
            sigmas = sigmas.detach().flatten().tolist()
        sigmas = [check_positive_scalar(s, "sigmas") for s in sigmas]
        if len(sigmas) == 0:
            raise ValueError("sigmas must hold at least one bandwidth")
        if weights is None:
            weights = [1.0] * len(sigmas)
        if isinstance(weights, Tensor):
            weights = weights.detach().flatten().tolist()
        weights = [check_positive_scalar(w, "weights") for w in weights]
        if len(weights) != len(sigmas):
            raise ValueError(f"weights must have {len(sigmas)} entries, got {len(weights)}")
        scale = check_positive_scalar(scale, "scale")
        log_sigma = torch.tensor([math.log(s) for s in sigmas], dtype=torch.float64)
        logits = torch.tensor([math.log(w) for w in weights], dtype=torch.float64)
        logits = logits - logits.mean()
        log_scale = torch.tensor(math.log(scale), dtype=torch.float64)
        for name, value, learn in (("log_sigma", log_sigma, learnable),
                                   ("logits", logits, learnable),
                                   ("log_scale", log_scale, learnable_scale)):
            if learn:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        if cross_type_weight is None:
            self.register_buffer("type_logit", None)
        else:
            beta = float(cross_type_weight)
            if not 0.0 <= beta <= 1.0:  # also catches NaN
                raise ValueError(f"cross_type_weight must be in [0, 1], got {cross_type_weight}")
            value = torch.tensor(_logit(beta), dtype=torch.float64)
            if learnable:
                self.type_logit = torch.nn.Parameter(value)
            else:
                self.register_buffer("type_logit", value)

    def type_weight(self) -> Optional[Tensor]:
        return None if self.type_logit is None else torch.sigmoid(self.type_logit)

    @property
    def sigmas(self) -> Tensor:
        return self.log_sigma.exp()

    @property
    def mixture_weights(self) -> Tensor:
        return torch.softmax(self.logits, dim=0)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def bands(self) -> Tuple[Tensor, Tensor]:
        return self.log_sigma.exp(), self.log_scale.exp() * torch.softmax(self.logits, dim=0)

    def __repr__(self) -> str:
        fmt = ", ".join
        sig = fmt(f"{float(s):.4g}" for s in self.sigmas.detach())
        pis = fmt(f"{float(p):.3f}" for p in self.mixture_weights.detach())
        learn = isinstance(self.log_sigma, torch.nn.Parameter)
        beta = "" if self.type_logit is None else \
            f", cross_type_weight={float(self.type_weight().detach()):.3g}"
        return (f"{self.__class__.__name__}(sigmas=[{sig}], weights=[{pis}], "
                f"scale={float(self.scale):.4g}{beta}, learnable={learn})")


# logit(beta) is kept within +-40 (beta within 4e-18 of 0 or 1): finite in a JSON
# file, and a weight that small changes no sum by more than that.
_LOGIT_LIMIT = 40.0


def _logit(beta: float) -> float:
    if beta <= 0.0:
        return -_LOGIT_LIMIT
    if beta >= 1.0:
        return _LOGIT_LIMIT
    return max(-_LOGIT_LIMIT, min(_LOGIT_LIMIT, math.log(beta) - math.log1p(-beta)))


def as_kernel_module(kernel: KernelLike) -> BaseGaussianKernel:
    """A kernel module as given, or a fixed :class:`GaussianKernel` of a bandwidth."""
    if isinstance(kernel, BaseGaussianKernel):
        return kernel
    if isinstance(kernel, torch.nn.Module):
        raise TypeError(f"kernel must be a bandwidth or a Gaussian kernel module, got "
                        f"{type(kernel).__name__}")
    return GaussianKernel(float(kernel))


def resolve_type_weight(sigma: KernelLike, dtype: torch.dtype, device) -> Tensor:
    """The cross-type weight :math:`\beta` of ``sigma`` (0 unless it is a kernel
    module with a ``cross_type_weight``), as a 0-d tensor."""
    beta = sigma.type_weight() if isinstance(sigma, BaseGaussianKernel) else None
    if beta is None:
        return torch.zeros((), dtype=dtype, device=device)
    return beta.to(device=device, dtype=dtype)


# The evaluation lives in ops.gaussian (one place for every pure-torch path).
evaluate_bands = gaussian


def resolve_kernel(sigma: KernelLike, dtype: torch.dtype, device) -> Tuple[Tensor, Tensor]:
    """Turns a float, a 0-d tensor or a kernel module into ``(sigmas [K], coefs [K])``.

    Gradients flow from the returned tensors to a tensor ``sigma`` or to the
    module's parameters.
    """
    if isinstance(sigma, BaseGaussianKernel):
        sigmas, coefs = sigma.bands()
    elif isinstance(sigma, Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar tensor, got shape {tuple(sigma.shape)}")
        if not sigma.is_floating_point():
            sigma = sigma.to(dtype)
        if not bool(torch.isfinite(sigma).all()) or float(sigma.detach()) <= 0:
            raise ValueError(f"sigma must be positive and finite, got {float(sigma.detach())}")
        sigmas = sigma.reshape(1)
        coefs = torch.ones(1, dtype=dtype, device=device)
    elif isinstance(sigma, torch.nn.Module):
        raise TypeError(f"sigma must be a float, a tensor or a Gaussian kernel module, got "
                        f"{type(sigma).__name__}")
    else:
        value = check_positive_scalar(sigma, "sigma")
        sigmas = torch.tensor([value], dtype=dtype, device=device)
        coefs = torch.ones(1, dtype=dtype, device=device)
    sigmas = sigmas.to(device=device, dtype=dtype)
    coefs = coefs.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise ValueError("sigma: every bandwidth must be positive and finite")
    return sigmas, coefs
