r"""Particle flows that move samples towards a target along a kernel witness:
the DrMMD flow (Chen et al., 2024), with a fixed or an adaptive
:math:`\lambda`, and the MMD flow (Arbel et al., 2019) as a baseline.

Each step moves every particle down the witness gradient,
:math:`x \leftarrow x - \gamma_n \nabla h_n(x)`. For DrMMD the step is
:math:`\gamma_n = \max(\lambda_n \cdot \mathrm{step\_size}, \mathrm{lr\_min})`
(the witness scales like :math:`1/\lambda`), and the adaptive schedule is

.. math::
    \lambda_{n+1} = \lambda_0 \sqrt{\mathrm{DrMMD}_{\lambda_n}(\mu_{n+1}) /
    \mathrm{DrMMD}_{\lambda_0}(\mu_0)}.

With ``noise > 0`` the gradient is evaluated at noisy copies of the particles
(:math:`x + \epsilon_n u`, :math:`u \sim N(0, I)`, :math:`\epsilon_n` decaying
geometrically), the noise injection of Arbel et al.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real
from typing import Dict, List, Optional

import torch
from torch import Tensor

from . import extras
from ._validation import check_choice, check_flag, check_positions, check_positive_scalar, check_same_space
from .functional.drmmd import cholesky_jitter, witness_grad
from .kernels import KernelLike, resolve_kernel
from .ops.gaussian import band_blocks, gaussian_gram


def exact_w2(x: Tensor, y: Tensor) -> float:
    r"""The 2-Wasserstein distance between two equal-size uniform point sets,
    exactly, by an optimal assignment (``scipy.optimize.linear_sum_assignment``;
    scipy is an optional extra)."""
    linear_sum_assignment = extras.require("scipy.optimize", "exact_w2").linear_sum_assignment

    if x.size(0) != y.size(0):
        raise ValueError(f"exact_w2 needs equal sizes, got {x.size(0)} and {y.size(0)}")
    cost = torch.cdist(x.detach().double().cpu(), y.detach().double().cpu()).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean()) ** 0.5


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


@dataclass
class FlowResult:
    """Final particles and the metrics recorded every ``record_every`` steps
    (keys: ``step``, ``mmd2``, ``drmmd``, ``lam``, ``lr`` and, for equal sizes, ``w2``)."""
    particles: Tensor
    history: Dict[str, List[float]] = field(default_factory=dict)


class DrMMDFlow:
    r"""DrMMD particle descent towards the samples ``target`` (or the MMD flow
    with ``method="mmd"``), see the module docstring.

    Args:
        target (Tensor): target samples :math:`[M, d]`.
        sigma (float, Tensor or kernel module, optional): the kernel. (default: :obj:`1.0`)
        lam (float, optional): :math:`\lambda_0 > 0`. (default: :obj:`1e-3`)
        step_size (float, optional): for DrMMD the step is :math:`\lambda_n \cdot` ``step_size``;
            for the MMD flow it is ``step_size``. (default: :obj:`1.0`)
        method (str, optional): ``"drmmd"`` or ``"mmd"``. (default: :obj:`"drmmd"`)
        adaptive (bool, optional): adapt :math:`\lambda_n` by the schedule above. (default: :obj:`False`)
        lr_min (float, optional): floor of the DrMMD step; :obj:`None` floors it at its
            initial value :math:`\lambda_0 \cdot` ``step_size`` (the adaptive schedule then
            sharpens the witness as :math:`\lambda_n` falls without shrinking the step).
            (default: :obj:`None`)
        noise (float, optional): initial noise level :math:`\epsilon_0`. (default: :obj:`0.0`)
        noise_decay (float, optional): :math:`\epsilon_{n+1} = \epsilon_n \cdot` ``noise_decay``.
            (default: :obj:`1.0`)
        record_every (int, optional): record metrics every this many steps. (default: :obj:`100`)
        w2 (bool, optional): record the exact :math:`W_2` (equal sizes only; it
            needs scipy, an optional extra). :obj:`None` records it when scipy is
            installed. (default: :obj:`None`)
    """

    def __init__(self, target: Tensor, sigma: KernelLike = 1.0, lam: float = 1e-3, step_size: float = 1.0, *,
                 method: str = "drmmd", adaptive: bool = False, lr_min: Optional[float] = None,
                 noise: float = 0.0, noise_decay: float = 1.0, record_every: int = 100,
                 w2: Optional[bool] = None):
        check_positions(target, "target")
        if target.size(0) == 0:
            raise ValueError("target needs at least one sample")
        self.method = check_choice(method, "method", ("drmmd", "mmd"))
        self.lam0 = check_positive_scalar(lam, "lam")
        self.step_size = check_positive_scalar(step_size, "step_size")
        self.lr_min = (self.lam0 * self.step_size if lr_min is None
                       else check_positive_scalar(lr_min, "lr_min"))
        noise, noise_decay = _real(noise, "noise"), _real(noise_decay, "noise_decay")
        if not (noise >= 0):
            raise ValueError(f"noise must be non-negative, got {noise}")
        if not (0 < noise_decay <= 1):
            raise ValueError(f"noise_decay must be in (0, 1], got {noise_decay}")
        record_every = _count(record_every, "record_every")
        if record_every < 1:
            raise ValueError(f"record_every must be a positive int, got {record_every!r}")
        self.adaptive, self.noise, self.noise_decay = check_flag(adaptive, "adaptive"), noise, noise_decay
        self.record_every = record_every
        self.w2 = extras.has("scipy") if w2 is None else check_flag(w2, "w2")
        self.y = target.detach().double()
        self.sigmas, self.coefs = (t.detach() for t in resolve_kernel(sigma, torch.float64, target.device))
        self.kyy = gaussian_gram(self.y, self.y, self.sigmas, self.coefs)
        self.kyy_mean_rows = self.kyy.mean(1)
        self._factor_lam: Optional[float] = None
        self._factor: Optional[Tensor] = None

    def __repr__(self) -> str:
        sig = ", ".join(f"{float(s):.4g}" for s in self.sigmas)
        return (f"{self.__class__.__name__}(method={self.method!r}, M={self.y.size(0)}, sigma=[{sig}], "
                f"lam={self.lam0:g}, step_size={self.step_size:g}, adaptive={self.adaptive}, "
                f"noise={self.noise:g})")

    def _cholesky(self, lam: float) -> Tensor:
        if self._factor_lam != lam:
            m = self.y.size(0)
            A = self.kyy + m * lam * torch.eye(m, dtype=self.kyy.dtype, device=self.kyy.device)
            self._factor, self._factor_lam = cholesky_jitter(A), lam
        return self._factor

    def _blocks(self, x: Tensor) -> List[Tensor]:
        """``[k_b(x_i, x_j) | k_b(x_i, y_m)]`` ``[N, N + M]`` for each band ``b``."""
        # No gradient flows here: a fused exact-difference distance (no Gram cancellation).
        d2 = torch.cdist(x, torch.cat([x, self.y]), compute_mode="donot_use_mm_for_euclid_dist").pow_(2)
        return band_blocks(d2, [float(s) for s in self.sigmas])

    def _kernel(self, blocks: List[Tensor]) -> Tensor:
        out = blocks[0] * self.coefs[0]
        for b in range(1, len(blocks)):
            out = out + self.coefs[b] * blocks[b]
        return out

    def _beta(self, kxy: Tensor, lam: float):
        a = kxy.mean(0) - self.kyy_mean_rows
        return torch.cholesky_solve(a.unsqueeze(1), self._cholesky(lam)).squeeze(1), a

    def _drmmd(self, K: Tensor, lam: float):
        n = K.size(0)
        kxx, kxy = K[:, :n], K[:, n:]
        mmd2 = kxx.mean() + self.kyy.mean() - 2 * kxy.mean()
        beta, a = self._beta(kxy, lam)
        return float(mmd2), float((1 + lam) / lam * (mmd2 - a @ beta))

    def divergences(self, x: Tensor, lam: Optional[float] = None):
        r"""``(mmd2, drmmd)`` of the particles ``x`` at ``lam`` (default: :math:`\lambda_0`)."""
        lam = self.lam0 if lam is None else lam
        return self._drmmd(self._kernel(self._blocks(x.detach().double())), lam)

    def gradient(self, x: Tensor, lam: float, z: Optional[Tensor] = None, blocks: Optional[Tensor] = None
                 ) -> Tensor:
        """The witness gradient at ``z`` (default: the particles ``x``); ``blocks``
        (from :meth:`_blocks` at ``x``) saves recomputing the kernel."""
        blocks = self._blocks(x) if blocks is None else blocks
        beta, scale = None, 2.0
        if self.method == "drmmd":
            beta, _ = self._beta(self._kernel(blocks)[:, x.size(0):], lam)
            scale = 2 * (1 + lam) / lam
        if z is None or z is x:  # at the particles: the kernel blocks are those of x
            return witness_grad(x, x, self.y, beta, self.sigmas, self.coefs, scale, blocks)
        return witness_grad(z, x, self.y, beta, self.sigmas, self.coefs, scale)  # noisy points

    def learning_rate(self, lam: float) -> float:
        if self.method == "mmd":
            return self.step_size
        return max(lam * self.step_size, self.lr_min)

    def run(self, x0: Tensor, steps: int, progress: bool = True, generator: Optional[torch.Generator] = None,
            ) -> FlowResult:
        """Runs ``steps`` steps from the particles ``x0`` :math:`[N, d]` (at least one)."""
        if _count(steps, "steps") < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps}")
        check_positions(x0, "x0")
        check_same_space(x0.double(), self.y, "x0", "target")
        if x0.size(0) == 0:
            raise ValueError("x0 needs at least one particle")
        x = x0.detach().double().clone()
        lam, eps = self.lam0, self.noise
        _, base = self.divergences(x, self.lam0) if self.adaptive else (None, None)
        history: Dict[str, List[float]] = {k: [] for k in ("step", "mmd2", "drmmd", "lam", "lr")}
        if self.w2 and x.size(0) == self.y.size(0):
            history["w2"] = []

        def record(step):
            mmd2, dr = self.divergences(x, lam)
            for key, value in (("step", step), ("mmd2", mmd2), ("drmmd", dr), ("lam", lam),
                               ("lr", self.learning_rate(lam))):
                history[key].append(value)
            if "w2" in history:
                history["w2"].append(exact_w2(x, self.y))
            return mmd2

        bar = extras.progress(range(steps), enabled=progress, desc=f"{self.method} flow", leave=False)
        record(0)
        blocks = self._blocks(x)
        for n in bar:
            z = None
            if eps > 0:
                noise = torch.randn(x.shape, dtype=x.dtype, generator=generator).to(x.device)
                z = x + eps * noise
                eps *= self.noise_decay
            x = x - self.learning_rate(lam) * self.gradient(x, lam, z, blocks)
            blocks = self._blocks(x)  # reused by the schedule and the next step
            if self.adaptive:  # lam_{n+1} from DrMMD_{lam_n}(mu_{n+1})
                _, current = self._drmmd(self._kernel(blocks), lam)
                lam = max(self.lam0 * (max(current, 0.0) / base) ** 0.5 if base > 0 else lam, 1e-12)
            if (n + 1) % self.record_every == 0 or n + 1 == steps:
                mmd2 = record(n + 1)
                extras.set_postfix(bar, mmd2=f"{mmd2:.3g}", lam=f"{lam:.3g}")
        return FlowResult(x.to(x0.dtype), history)
