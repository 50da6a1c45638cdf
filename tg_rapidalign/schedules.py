r"""Bandwidth annealing: coarse structure first, fine detail later.

The design's advice for the alignment loss is to start training with a large
bandwidth (the loss sees global structure and has a wide basin) and to anneal
it to the bandwidth of interest.
"""
from __future__ import annotations

import math
from typing import Dict

from ._validation import check_choice, check_positive_scalar

MODES = ("geometric", "linear", "cosine")


class BandwidthSchedule:
    r"""A bandwidth that moves from :obj:`start` to :obj:`end` over
    :obj:`num_steps` calls of :meth:`step`, then stays at :obj:`end`:

    .. math::
        \sigma_k = \begin{cases}
        \sigma_0 (\sigma_1 / \sigma_0)^{s} & \text{geometric} \\
        \sigma_0 + (\sigma_1 - \sigma_0)\, s & \text{linear} \\
        \sigma_1 + \tfrac{1}{2}(\sigma_0 - \sigma_1)(1 + \cos \pi s) & \text{cosine}
        \end{cases}, \qquad s = \min(k / K, 1).

    Pass it as the :obj:`kernel` of :class:`SE3KernelAlignmentLoss` (or call it
    for a float) and call :meth:`step` once per training step or epoch, like a
    learning-rate scheduler. :meth:`state_dict` is a plain dict of numbers.

    Args:
        start (float): :math:`\sigma_0 > 0`.
        end (float): :math:`\sigma_1 > 0`.
        num_steps (int): :math:`K \ge 1`.
        mode (str, optional): :obj:`"geometric"`, :obj:`"linear"` or
            :obj:`"cosine"`. (default: :obj:`"geometric"`)
    """

    def __init__(self, start: float, end: float, num_steps: int, mode: str = "geometric"):
        self.start = check_positive_scalar(start, "start")
        self.end = check_positive_scalar(end, "end")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        self.num_steps = num_steps
        self.mode = check_choice(mode, "mode", MODES)
        self.last_step = 0

    def __call__(self, step: int) -> float:
        s = min(max(step, 0) / self.num_steps, 1.0)
        if self.mode == "geometric":
            return self.start * (self.end / self.start) ** s
        if self.mode == "linear":
            return self.start + (self.end - self.start) * s
        return self.end + 0.5 * (self.start - self.end) * (1 + math.cos(math.pi * s))

    @property
    def sigma(self) -> float:
        """The current bandwidth."""
        return self(self.last_step)

    def step(self) -> float:
        self.last_step += 1
        return self.sigma

    def state_dict(self) -> Dict[str, float]:
        return {"start": self.start, "end": self.end, "num_steps": self.num_steps,
                "mode": self.mode, "last_step": self.last_step}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.__init__(state["start"], state["end"], int(state["num_steps"]), state["mode"])
        self.last_step = int(state["last_step"])

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(start={self.start:.4g}, end={self.end:.4g}, "
                f"num_steps={self.num_steps}, mode={self.mode!r}, sigma={self.sigma:.4g})")
