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

**Safe ranges.** The stored parameters are float64 and may be trained or
loaded to any value, so :meth:`~BaseGaussianKernel.bands` clamps them before
they reach an op:

* :math:`\sigma_b` to :data:`SIGMA_RANGE` :math:`= [10^{-12}, 10^{12}]`
  (:math:`\lvert\log\sigma_b\rvert \le 27.63`, :data:`LOG_SIGMA_LIMIT`);
* the scale :math:`s` to :data:`SCALE_RANGE` :math:`= [10^{-12}, 10^{12}]`
  (:data:`LOG_SCALE_LIMIT`);
* the mixture logits :math:`\ell_b` and :math:`\operatorname{logit}\beta` to
  :math:`\pm 40` (:data:`LOGIT_LIMIT`): mixture weights stay within a ratio of
  :math:`e^{80}` and :math:`\beta` within :math:`4 \cdot 10^{-18}` of 0 or 1.

These ranges hold in float32 as well as float64 (the ops compute float32 and
half inputs in float32): :math:`1 / 2\sigma^2` lies in
:math:`[5 \cdot 10^{-25}, 5 \cdot 10^{23}]` and :math:`s^2` in
:math:`[10^{-24}, 10^{24}]`, all normal float32 numbers far from overflow
(float32 holds up to :math:`3.4 \cdot 10^{38}`, float64 up to
:math:`1.8 \cdot 10^{308}`). A bandwidth many orders of magnitude below the
spread of the coordinates is still representable but resolves nothing: every
kernel value between distinct points is 0. A parameter clamped at a
bound gets a zero gradient (the clamp's), so an optimiser that drives
:math:`\log\sigma` to :math:`-60` leaves the kernel at :math:`\sigma = 10^{-12}`
with finite values and gradients instead of producing NaN or inf. The
constructors refuse values outside these ranges, and
:func:`~tg_rapidalign.io.load_kernel` refuses files that hold them.

Bandwidths given as numbers or tensors are checked by :func:`resolve_kernel`
against the compute dtype instead (see :func:`sigma_limits`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._validation import check_positive_scalar, check_values, compiling
from .ops.gaussian import gaussian

KernelLike = Union[float, Tensor, "GaussianKernel", "MultiBandGaussianKernel"]

#: The bandwidths a kernel module evaluates with (its ``log_sigma`` is clamped to
#: the logarithms of these in :meth:`BaseGaussianKernel.bands`).
SIGMA_RANGE = (1e-12, 1e12)
#: ``|log sigma|`` bound of a kernel module, :math:`\log 10^{12} \approx 27.63`.
LOG_SIGMA_LIMIT = math.log(SIGMA_RANGE[1])
#: The global scales a kernel module evaluates with.
SCALE_RANGE = (1e-12, 1e12)
#: ``|log scale|`` bound of a kernel module.
LOG_SCALE_LIMIT = math.log(SCALE_RANGE[1])
#: Bound on the mixture logits and on ``logit(cross_type_weight)``: a weight
#: :math:`e^{-80}` (or :math:`\beta` within :math:`4 \cdot 10^{-18}` of 0 or 1)
#: changes no sum by more than that, and the value is finite in a JSON file.
LOGIT_LIMIT = 40.0


def clamp_log_sigma(log_sigma: Tensor) -> Tensor:
    """``log_sigma`` clamped to ``[-LOG_SIGMA_LIMIT, LOG_SIGMA_LIMIT]`` (zero gradient outside)."""
    return log_sigma.clamp(-LOG_SIGMA_LIMIT, LOG_SIGMA_LIMIT)


def clamp_log_scale(log_scale: Tensor) -> Tensor:
    """``log_scale`` clamped to ``[-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT]`` (zero gradient outside)."""
    return log_scale.clamp(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)


def clamp_logits(logits: Tensor) -> Tensor:
    """Logits clamped to ``[-LOGIT_LIMIT, LOGIT_LIMIT]`` (zero gradient outside)."""
    return logits.clamp(-LOGIT_LIMIT, LOGIT_LIMIT)


def _check_in_range(value: float, name: str, bounds: Tuple[float, float]) -> float:
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be within [{bounds[0]:g}, {bounds[1]:g}] (the kernel "
                         f"modules' safe range), got {value!r}")
    return value


class BaseGaussianKernel(torch.nn.Module):
    """The base of every kernel module: a Gaussian mixture given by :meth:`bands`."""

    def bands(self) -> Tuple[Tensor, Tensor]:
        """Returns ``(sigmas [K], coefs [K])`` with ``coefs = scale * softmax(logits)``."""
        raise NotImplementedError

    def type_weight(self) -> Optional[Tensor]:
        r"""The cross-type weight :math:`\beta` (a 0-d tensor), or ``None`` (0)."""
        return None

    @property
    def max_sigma(self) -> float:
        """The largest bandwidth (after the safe-range clamp), a float."""
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
        sigma = _check_in_range(check_positive_scalar(sigma, "sigma"), "sigma", SIGMA_RANGE)
        scale = _check_in_range(check_positive_scalar(scale, "scale"), "scale", SCALE_RANGE)
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
        """The bandwidth (clamped to :data:`SIGMA_RANGE`), a 0-d tensor."""
        return clamp_log_sigma(self.log_sigma).exp()[0]

    def bands(self) -> Tuple[Tensor, Tensor]:
        """``(sigma [1], scale [1])``, clamped to the safe ranges (module docstring)."""
        return clamp_log_sigma(self.log_sigma).exp(), clamp_log_scale(self.log_scale).exp().reshape(1)

    def __repr__(self) -> str:
        learn = isinstance(self.log_sigma, torch.nn.Parameter)
        return (f"{self.__class__.__name__}(sigma={float(self.sigma):.4g}, "
                f"scale={float(clamp_log_scale(self.log_scale).exp()):.4g}, learnable={learn})")


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
        sigmas = [_check_in_range(check_positive_scalar(s, "sigmas"), "sigmas", SIGMA_RANGE)
                  for s in sigmas]
        if len(sigmas) == 0:
            raise ValueError("sigmas must hold at least one bandwidth")
        if weights is None:
            weights = [1.0] * len(sigmas)
        if isinstance(weights, Tensor):
            weights = weights.detach().flatten().tolist()
        weights = [check_positive_scalar(w, "weights") for w in weights]
        if len(weights) != len(sigmas):
            raise ValueError(f"weights must have {len(sigmas)} entries, got {len(weights)}")
        scale = _check_in_range(check_positive_scalar(scale, "scale"), "scale", SCALE_RANGE)
        log_sigma = torch.tensor([math.log(s) for s in sigmas], dtype=torch.float64)
        logits = torch.tensor([math.log(w) for w in weights], dtype=torch.float64)
        logits = logits - logits.mean()
        if bool((logits.abs() > LOGIT_LIMIT).any()):
            raise ValueError(f"weights: the mixture logits (log weights less their mean) must be "
                             f"within +-{LOGIT_LIMIT:g}, got weights {weights}")
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
        r""":math:`\beta = \sigma(\operatorname{logit}\beta)`, the logit clamped to
        :math:`\pm` :data:`LOGIT_LIMIT`; ``None`` without a cross-type weight."""
        return None if self.type_logit is None else torch.sigmoid(clamp_logits(self.type_logit))

    @property
    def sigmas(self) -> Tensor:
        """The bandwidths (clamped to :data:`SIGMA_RANGE`)."""
        return clamp_log_sigma(self.log_sigma).exp()

    @property
    def mixture_weights(self) -> Tensor:
        r""":math:`\pi = \mathrm{softmax}(\boldsymbol{\ell})`, the logits clamped to :math:`\pm 40`."""
        return torch.softmax(clamp_logits(self.logits), dim=0)

    @property
    def scale(self) -> Tensor:
        """The global scale (clamped to :data:`SCALE_RANGE`)."""
        return clamp_log_scale(self.log_scale).exp()

    def bands(self) -> Tuple[Tensor, Tensor]:
        """``(sigmas [K], scale * softmax(logits) [K])``, every parameter clamped to
        its safe range (module docstring) first."""
        return self.sigmas, self.scale * self.mixture_weights

    def __repr__(self) -> str:
        fmt = ", ".join
        sig = fmt(f"{float(s):.4g}" for s in self.sigmas.detach())
        pis = fmt(f"{float(p):.3f}" for p in self.mixture_weights.detach())
        learn = isinstance(self.log_sigma, torch.nn.Parameter)
        beta = "" if self.type_logit is None else \
            f", cross_type_weight={float(self.type_weight().detach()):.3g}"
        return (f"{self.__class__.__name__}(sigmas=[{sig}], weights=[{pis}], "
                f"scale={float(self.scale):.4g}{beta}, learnable={learn})")


def _logit(beta: float) -> float:
    # logit(beta) is kept within +-LOGIT_LIMIT (beta within 4e-18 of 0 or 1).
    if beta <= 0.0:
        return -LOGIT_LIMIT
    if beta >= 1.0:
        return LOGIT_LIMIT
    return max(-LOGIT_LIMIT, min(LOGIT_LIMIT, math.log(beta) - math.log1p(-beta)))


def as_kernel_module(kernel: KernelLike, name: str = "kernel") -> BaseGaussianKernel:
    """A kernel module as given, or a fixed :class:`GaussianKernel` of a bandwidth
    (a positive number or one-element tensor within :data:`SIGMA_RANGE`); anything
    else raises a ``TypeError`` or ``ValueError`` naming ``name``."""
    if isinstance(kernel, BaseGaussianKernel):
        return kernel
    if isinstance(kernel, torch.nn.Module):
        raise TypeError(f"{name} must be a bandwidth or a Gaussian kernel module, got "
                        f"{type(kernel).__name__}")
    return GaussianKernel(_check_in_range(check_positive_scalar(kernel, name), name, SIGMA_RANGE))


def resolve_type_weight(sigma: KernelLike, dtype: torch.dtype, device) -> Tensor:
    r"""The cross-type weight :math:`\beta` of ``sigma`` (0 unless it is a kernel
    module with a ``cross_type_weight``), as a 0-d tensor."""
    beta = sigma.type_weight() if isinstance(sigma, BaseGaussianKernel) else None
    if beta is None:
        return torch.zeros((), dtype=dtype, device=device)
    return beta.to(device=device, dtype=dtype)


def sigma_limits(dtype: torch.dtype) -> Tuple[float, float]:
    r"""The bandwidths :func:`resolve_kernel` accepts for a computation in ``dtype``:
    :math:`[8\sqrt{t},\ 1 / (8\sqrt{t})]` with :math:`t` =
    ``torch.finfo(dtype).tiny``, the smallest normal number of the compute dtype
    (float64 for float64, float32 for every other dtype, as the ops compute).

    Within it both :math:`\sigma^2` and :math:`1 / 2\sigma^2` are normal,
    finite numbers with a factor of at least 32 to spare (:math:`1 / 2\sigma^2
    \le` ``finfo.max`` / 512 at the lower end, :math:`\ge 32 t` at the upper),
    so the kernel's exponent never overflows (a bandwidth below the range makes
    :math:`1 / 2\sigma^2` infinite: NaN at distance 0) and never underflows to 0
    (above it, every kernel value would be exactly the scale, the kernel blind to
    distances). In float32 that is :math:`[8.7 \cdot 10^{-19}, 1.2 \cdot 10^{18}]`,
    in float64 :math:`[1.2 \cdot 10^{-153}, 8.4 \cdot 10^{152}]`; the kernel
    modules' :data:`SIGMA_RANGE` lies inside both. Squared distances far larger
    than :math:`\sigma^2` still give kernel values of 0, as they should.
    """
    finfo = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32)
    low = 8.0 * math.sqrt(finfo.tiny)
    return low, 1.0 / low


def resolve_kernel(sigma: KernelLike, dtype: torch.dtype, device) -> Tuple[Tensor, Tensor]:
    """Turns a float, a 0-d tensor or a kernel module into ``(sigmas [K], coefs [K])``.

    Gradients flow from the returned tensors to a tensor ``sigma`` or to the
    module's parameters. Every bandwidth must lie within :func:`sigma_limits` of
    ``dtype`` and every coefficient be finite and non-negative, else a
    ``ValueError`` naming ``sigma`` is raised (a kernel module's clamped bands
    always pass).
    """
    if isinstance(sigma, BaseGaussianKernel):
        sigmas, coefs = sigma.bands()
    elif isinstance(sigma, Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar tensor, got shape {tuple(sigma.shape)}")
        if not sigma.is_floating_point():
            sigma = sigma.to(dtype)
        check_values(torch.isfinite(sigma.detach()).all() & (sigma.detach() > 0).all(),
                     "sigma must be positive and finite")
        sigmas = sigma.reshape(1)
        coefs = torch.ones(1, dtype=dtype, device=device)
    elif isinstance(sigma, torch.nn.Module):
        raise TypeError(f"sigma must be a float, a tensor or a Gaussian kernel module, got "
                        f"{type(sigma).__name__}")
    else:
        value = check_positive_scalar(sigma, "sigma")
        sigmas = torch.tensor([value], dtype=dtype, device=device)
        coefs = torch.ones(1, dtype=dtype, device=device)
    _check_bands(sigmas.detach(), coefs.detach(), dtype)
    sigmas = sigmas.to(device=device, dtype=dtype)
    coefs = coefs.to(device=device, dtype=dtype)
    return sigmas, coefs


def _check_bands(sigmas: Tensor, coefs: Tensor, dtype: torch.dtype) -> None:
    """Every bandwidth within :func:`sigma_limits` of ``dtype``, every coefficient
    finite and non-negative (one host sync each; asynchronous asserts while compiling)."""
    low, high = sigma_limits(dtype)
    checked = sigmas.to(torch.float64)
    in_range = ((checked >= low) & (checked <= high)).all()  # NaN fails too
    if compiling():
        check_values(in_range, f"sigma: every bandwidth must be within [{low:.3g}, {high:.3g}] to compute "
                               f"in {dtype}")
    elif not bool(in_range):
        if not bool(torch.isfinite(checked).all()) or bool((checked <= 0).any()):
            raise ValueError("sigma: every bandwidth must be positive and finite")
        raise ValueError(f"sigma: every bandwidth must be within [{low:.3g}, {high:.3g}] to compute in "
                         f"{dtype} (1/(2 sigma^2) must neither overflow nor underflow; see "
                         f"kernels.sigma_limits), got {checked.tolist()}")
    checked = coefs.to(torch.float64)
    check_values(((checked >= 0) & torch.isfinite(checked)).all(),
                 "sigma: the kernel's coefficients must be finite and non-negative")
