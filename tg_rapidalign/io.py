"""Saving and loading calibrated kernels as JSON: no pickle, nothing is executed.

File layout (``format_version`` 1)::

    {
      "format": "tg_rapidalign.kernel",
      "format_version": 1,
      "library_version": "0.1.0",
      "kernel": {"type": "GaussianKernel" | "MultiBandGaussianKernel",
                 "log_sigma": [...], "logits": [...] (multi-band only), "log_scale": float,
                 "type_logit": float (multi-band with a cross_type_weight only),
                 "learnable": bool, "learnable_scale": bool},
      "metadata": {...},            # free JSON: loss type, corruption spec, data, report
      "sha256": "..."               # of the canonical JSON of {"kernel", "metadata"}
    }

Parameters are stored in log space, exactly as the module holds them, so a
round trip is bit-exact. A file that is not valid JSON, lacks a field, holds a
non-finite number or fails its checksum (edited by hand or truncated) raises a
``ValueError`` naming the problem.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, Optional, Union

import torch

from .kernels import GaussianKernel, MultiBandGaussianKernel
from .version import __version__

FORMAT = "tg_rapidalign.kernel"
FORMAT_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]


def _digest(kernel: Dict[str, Any], metadata: Dict[str, Any]) -> str:
    canonical = json.dumps({"kernel": kernel, "metadata": metadata}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def kernel_state(kernel: torch.nn.Module) -> Dict[str, Any]:
    """The JSON-ready description of a Gaussian kernel module."""
    def values(t):
        return [float(v) for v in t.detach().double().flatten().tolist()]

    if isinstance(kernel, MultiBandGaussianKernel):
        state = {"type": "MultiBandGaussianKernel", "log_sigma": values(kernel.log_sigma),
                 "logits": values(kernel.logits), "log_scale": float(kernel.log_scale.detach()),
                 "learnable": isinstance(kernel.log_sigma, torch.nn.Parameter),
                 "learnable_scale": isinstance(kernel.log_scale, torch.nn.Parameter)}
        if kernel.type_logit is not None:
            state["type_logit"] = float(kernel.type_logit.detach())
        return state
    if isinstance(kernel, GaussianKernel):
        return {"type": "GaussianKernel", "log_sigma": values(kernel.log_sigma),
                "log_scale": float(kernel.log_scale.detach()),
                "learnable": isinstance(kernel.log_sigma, torch.nn.Parameter),
                "learnable_scale": isinstance(kernel.log_scale, torch.nn.Parameter)}
    raise TypeError(f"kernel must be a GaussianKernel or MultiBandGaussianKernel, got "
                    f"{type(kernel).__name__}")


def save_kernel(kernel: torch.nn.Module, path: PathLike, metadata: Optional[Dict[str, Any]] = None) -> None:
    """Writes ``kernel`` (and JSON-serialisable ``metadata``) to ``path``."""

    state = kernel_state(kernel)
    metadata = {} if metadata is None else metadata
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable with finite numbers: {err}") from None
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
           "kernel": state, "metadata": metadata, "sha256": _digest(state, metadata)}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, sort_keys=True, allow_nan=False)


def _numbers(value, name: str, count: Optional[int] = None):
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                       for v in value):
        raise ValueError(f"kernel file: {name} must be a non-empty list of numbers")
    if count is not None and len(value) != count:
        raise ValueError(f"kernel file: {name} must have {count} entries, got {len(value)}")
    if not all(math.isfinite(v) for v in value):
        raise ValueError(f"kernel file: {name} holds a non-finite number")
    return [float(v) for v in value]


def load_kernel(path: PathLike, return_metadata: bool = False):
    """Reads a file written by :func:`save_kernel` and returns the kernel module
    (and its metadata with ``return_metadata=True``). Never unpickles."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"kernel file {os.fspath(path)!r} is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"kernel file {os.fspath(path)!r} is not a {FORMAT} file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"kernel file: unsupported format_version {doc.get('format_version')!r}")
    state, metadata = doc.get("kernel"), doc.get("metadata", {})
    if not isinstance(state, dict) or not isinstance(metadata, dict):
        raise ValueError("kernel file: 'kernel' and 'metadata' must be objects")
    if doc.get("sha256") != _digest(state, metadata):
        raise ValueError("kernel file: checksum mismatch (the file was modified or truncated)")
    kind = state.get("type")
    log_sigma = _numbers(state.get("log_sigma"), "log_sigma")
    log_scale = _numbers([state.get("log_scale")] if isinstance(state.get("log_scale"), (int, float))
                         else None, "log_scale")[0]
    learnable, learnable_scale = state.get("learnable"), state.get("learnable_scale")
    if not isinstance(learnable, bool) or not isinstance(learnable_scale, bool):
        raise ValueError("kernel file: learnable and learnable_scale must be booleans")
    if kind == "GaussianKernel":
        if len(log_sigma) != 1:
            raise ValueError("kernel file: a GaussianKernel has one bandwidth")
        kernel = GaussianKernel(math.exp(log_sigma[0]), learnable, math.exp(log_scale), learnable_scale)
    elif kind == "MultiBandGaussianKernel":
        logits = _numbers(state.get("logits"), "logits", len(log_sigma))
        type_logit = state.get("type_logit")
        if type_logit is not None:
            type_logit = _numbers([type_logit] if isinstance(type_logit, (int, float)) else None,
                                  "type_logit")[0]
        kernel = MultiBandGaussianKernel([math.exp(s) for s in log_sigma], learnable, None,
                                         math.exp(log_scale), learnable_scale,
                                         cross_type_weight=None if type_logit is None else 0.5)
        with torch.no_grad():
            kernel.logits.copy_(torch.tensor(logits, dtype=torch.float64))
            if type_logit is not None:
                kernel.type_logit.copy_(torch.tensor(type_logit, dtype=torch.float64))
    else:
        raise ValueError(f"kernel file: unknown kernel type {kind!r}")
    with torch.no_grad():  # the exact stored values (no exp/log round trip)
        kernel.log_sigma.copy_(torch.tensor(log_sigma, dtype=torch.float64))
        kernel.log_scale.copy_(torch.tensor(log_scale, dtype=torch.float64))
    return (kernel, metadata) if return_metadata else kernel
