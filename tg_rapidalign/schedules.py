r"""Bandwidth annealing: coarse structure first, fine detail later.

A common recipe for the alignment loss is to start training with a large
bandwidth (the loss sees global structure and has a wide basin) and to anneal
it to the bandwidth of interest.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping

import torch

from ._validation import check_choice, check_positive_scalar

MODES = ("geometric", "linear", "cosine")
_KEYS = ("start", "end", "num_steps", "mode", "last_step")


def _check_count(value, name: str, minimum: int) -> int:
    """An int ``>= minimum``; integral floats (``4.0``, as a JSON round trip may
    give) are accepted."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


class BandwidthSchedule(torch.nn.Module):
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
    learning-rate scheduler.

    Checkpoints: the schedule is a ``torch.nn.Module`` without parameters whose
    whole state (``start``, ``end``, ``num_steps``, ``mode`` and the step count
    ``last_step``) is its *extra state*, a plain dict of numbers and a string.
    On its own, :meth:`state_dict` returns that plain dict (JSON-ready, and
    loadable by ``torch.load(..., weights_only=True)``); inside a module, such as
    a loss given the schedule, it is stored under ``"<name>._extra_state"``, so
    the loss's own ``state_dict()`` / ``load_state_dict()`` save and restore the
    annealing: a resumed run continues at the step it was saved at.

    Args:
        start (float): :math:`\sigma_0 > 0`.
        end (float): :math:`\sigma_1 > 0`.
        num_steps (int): :math:`K \ge 1`.
        mode (str, optional): :obj:`"geometric"`, :obj:`"linear"` or
            :obj:`"cosine"`. (default: :obj:`"geometric"`)
    """

    def __init__(self, start: float, end: float, num_steps: int, mode: str = "geometric"):
        super().__init__()
        self._configure(start, end, num_steps, mode)
        self.last_step = 0

    def _configure(self, start, end, num_steps, mode) -> None:
        self.start = check_positive_scalar(start, "start")
        self.end = check_positive_scalar(end, "end")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        self.num_steps = num_steps
        self.mode = check_choice(mode, "mode", MODES)

    def forward(self, step: int) -> float:
        """The bandwidth after ``step`` steps (a float)."""
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
        """Advances the schedule by one step and returns the new bandwidth."""
        self.last_step += 1
        return self.sigma

    # ---------------------------------------------------------------- checkpoints

    def get_extra_state(self) -> Dict[str, Any]:
        return {"start": self.start, "end": self.end, "num_steps": self.num_steps,
                "mode": self.mode, "last_step": self.last_step}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"BandwidthSchedule state must be a dict, got {type(state).__name__}")
        missing = [k for k in _KEYS if k not in state]
        if missing:
            raise ValueError(f"BandwidthSchedule state lacks {', '.join(missing)}")
        num_steps = _check_count(state["num_steps"], "num_steps", 1)
        last_step = _check_count(state["last_step"], "last_step", 0)
        self._configure(state["start"], state["end"], num_steps, state["mode"])  # checks every value
        self.last_step = last_step

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        """The schedule's state. Called directly (no ``destination``/``prefix``):
        the plain dict ``{"start", "end", "num_steps", "mode", "last_step"}``; called
        by a parent module: the usual entry ``prefix + "_extra_state"``."""
        if args or destination is not None or prefix:
            return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        return self.get_extra_state()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Restores a state from :meth:`state_dict`: the plain dict, or a
        ``torch.nn.Module`` state dict holding it under ``"_extra_state"``."""
        if isinstance(state_dict, Mapping) and "_extra_state" not in state_dict:
            state_dict = {"_extra_state": state_dict}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return (f"start={self.start:.4g}, end={self.end:.4g}, num_steps={self.num_steps}, "
                f"mode={self.mode!r}, sigma={self.sigma:.4g}")

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.extra_repr()})"
