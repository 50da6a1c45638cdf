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
round trip is bit-exact. (A parameter trained beyond the kernels' safe range,
see :mod:`tg_rapidalign.kernels`, is saved at the bound, the value the kernel
evaluates with.)

**Limits.** :func:`load_kernel` refuses, before building anything:

* a file larger than :data:`MAX_FILE_BYTES` (1 MiB; checked before it is read
  and parsed; a saved kernel takes a few kilobytes);
* JSON nested deeper than :data:`MAX_DEPTH` (32) levels;
* any number that is not finite in float64 (``NaN``, ``Infinity``, ``1e999``,
  integers beyond :math:`\\pm 1.8 \\cdot 10^{308}`), in the metadata as well;
* more than :data:`MAX_FILE_BANDS` (64) bands;
* ``log_sigma`` or ``log_scale`` beyond :math:`\\pm 27.63`
  (:math:`\\sigma, s \\in [10^{-12}, 10^{12}]`, ``kernels.LOG_SIGMA_LIMIT`` and
  ``kernels.LOG_SCALE_LIMIT``), and mixture ``logits`` or ``type_logit`` beyond
  :math:`\\pm 40` (``kernels.LOGIT_LIMIT``): the ranges within which a kernel
  computes without overflow in float32 as well as float64.

:func:`save_kernel` refuses what :func:`load_kernel` would. Every malformed
file (not UTF-8, not JSON, too large or too deep, a missing field, a wrong type,
a non-finite or out-of-range number, a list of the wrong length, an unknown
field) raises a ``ValueError`` whose message names the file and the field.

**The checksum guards against accidental corruption, not tampering.** It is a
plain SHA-256 of the content that anyone can recompute after an edit, not a
signature; a file from an untrusted source is as trustworthy as its source.
What keeps such a file harmless is the rest: JSON only (no pickle, nothing is
imported or executed), the size limits, and every value checked for type and
range whether or not the checksum matches.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, List, Optional, Union

import torch

from .kernels import (
    LOG_SCALE_LIMIT,
    LOG_SIGMA_LIMIT,
    LOGIT_LIMIT,
    GaussianKernel,
    MultiBandGaussianKernel,
    clamp_log_scale,
    clamp_log_sigma,
    clamp_logits,
)
from .version import __version__

FORMAT = "tg_rapidalign.kernel"
FORMAT_VERSION = 1
#: The largest kernel file :func:`load_kernel` reads (bytes), 1 MiB.
MAX_FILE_BYTES = 1 << 20
#: The most bands a kernel file may hold.
MAX_FILE_BANDS = 64
#: The deepest nesting of JSON objects and lists a kernel file may hold.
MAX_DEPTH = 32
PathLike = Union[str, "os.PathLike[str]"]

_KINDS = ("GaussianKernel", "MultiBandGaussianKernel")
_DOC_FIELDS = {"format", "format_version", "library_version", "kernel", "metadata", "sha256"}
_KERNEL_FIELDS = {
    "GaussianKernel": {"type", "log_sigma", "log_scale", "learnable", "learnable_scale"},
    "MultiBandGaussianKernel": {"type", "log_sigma", "logits", "log_scale", "type_logit", "learnable",
                                "learnable_scale"},
}
# Integers longer than this many digits are beyond float64 whatever they hold;
# parsed as a marker instead (no slow conversion, no int-digits ValueError).
_MAX_INT_DIGITS = 320


class _TooLarge:
    """What an over-long JSON integer parses to (refused with its field's name)."""


def _parse_int(text: str):
    return int(text) if len(text) <= _MAX_INT_DIGITS else _TooLarge()


def _digest(kernel: Dict[str, Any], metadata: Dict[str, Any]) -> str:
    canonical = json.dumps({"kernel": kernel, "metadata": metadata}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class _Refused(ValueError):
    """A malformed value: ``field`` and what is wrong with it."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def _name(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_tree(value: Any, root: str) -> None:
    """Depth and numbers of a parsed JSON value, iteratively (no recursion):
    containers at most :data:`MAX_DEPTH` deep, every number finite in float64.
    ``root`` names the value in messages (``""``: the whole document)."""
    stack = [(value, root, 0)]
    while stack:
        item, field, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise _Refused(field or "(document)", f"nested deeper than {MAX_DEPTH} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(item, list):
                    name = f"{field}[{key}]"
                else:
                    name = f"{field}.{_name(key)}" if field else _name(key)
                stack.append((child, name, depth + 1))
        elif isinstance(item, _TooLarge):
            raise _Refused(field, "an integer beyond the float64 range")
        elif isinstance(item, float) and not math.isfinite(item):
            raise _Refused(field, f"a non-finite number ({item}); every number must be finite in float64")
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                float(item)
            except OverflowError:
                raise _Refused(field, "an integer beyond the float64 range") from None
        elif not (item is None or isinstance(item, (str, bool, int, float))):
            raise _Refused(field, f"a {type(item).__name__}, not a JSON value")


def _number(value: Any, field: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(field, f"must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise _Refused(field, f"must be finite, got {value}")
    if abs(value) > limit:
        raise _Refused(field, f"must be within +-{limit:.4g} (the kernels' safe range), got {value!r}")
    return value


def _numbers(value: Any, field: str, limit: float, count: Optional[int] = None) -> List[float]:
    if not isinstance(value, list):
        raise _Refused(field, f"must be a list of numbers, got {type(value).__name__}")
    if not value:
        raise _Refused(field, "must be a non-empty list of numbers")
    if len(value) > MAX_FILE_BANDS:
        raise _Refused(field, f"holds {len(value)} bands; at most {MAX_FILE_BANDS} are allowed")
    if count is not None and len(value) != count:
        raise _Refused(field, f"must have {count} entries, got {len(value)}")
    return [_number(v, f"{field}[{i}]", limit) for i, v in enumerate(value)]


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise _Refused(field, f"must be a boolean, got {type(value).__name__}")
    return value


def _values(t: torch.Tensor, field: str) -> List[float]:
    values = [float(v) for v in t.detach().double().flatten().tolist()]
    if not all(math.isfinite(v) for v in values):
        raise _Refused(field, "holds NaN or an infinite value")
    return values


def kernel_state(kernel: torch.nn.Module) -> Dict[str, Any]:
    """The JSON-ready description of a Gaussian kernel module (parameters beyond
    the safe range at the bound they are clamped to; NaN refused)."""
    if isinstance(kernel, MultiBandGaussianKernel):
        state = {"type": "MultiBandGaussianKernel",
                 "log_sigma": _values(clamp_log_sigma(kernel.log_sigma), "kernel.log_sigma"),
                 "logits": _values(clamp_logits(kernel.logits), "kernel.logits"),
                 "log_scale": _values(clamp_log_scale(kernel.log_scale), "kernel.log_scale")[0],
                 "learnable": isinstance(kernel.log_sigma, torch.nn.Parameter),
                 "learnable_scale": isinstance(kernel.log_scale, torch.nn.Parameter)}
        if kernel.type_logit is not None:
            state["type_logit"] = _values(clamp_logits(kernel.type_logit), "kernel.type_logit")[0]
    elif isinstance(kernel, GaussianKernel):
        state = {"type": "GaussianKernel",
                 "log_sigma": _values(clamp_log_sigma(kernel.log_sigma), "kernel.log_sigma"),
                 "log_scale": _values(clamp_log_scale(kernel.log_scale), "kernel.log_scale")[0],
                 "learnable": isinstance(kernel.log_sigma, torch.nn.Parameter),
                 "learnable_scale": isinstance(kernel.log_scale, torch.nn.Parameter)}
    else:
        raise TypeError(f"kernel must be a GaussianKernel or MultiBandGaussianKernel, got "
                        f"{type(kernel).__name__}")
    if len(state["log_sigma"]) > MAX_FILE_BANDS:
        raise _Refused("kernel.log_sigma", f"holds {len(state['log_sigma'])} bands; a kernel file "
                                           f"holds at most {MAX_FILE_BANDS}")
    return state


def save_kernel(kernel: torch.nn.Module, path: PathLike, metadata: Optional[Dict[str, Any]] = None) -> None:
    """Writes ``kernel`` (and JSON-serialisable ``metadata``) to ``path``.

    Refuses (``ValueError``) what :func:`load_kernel` would refuse: more than
    :data:`MAX_FILE_BANDS` bands, NaN parameters, metadata that is not a JSON
    object of finite numbers nested at most :data:`MAX_DEPTH` deep, and a file
    larger than :data:`MAX_FILE_BYTES`."""
    where = os.fspath(path)
    metadata = {} if metadata is None else metadata
    try:
        state = kernel_state(kernel)
        if not isinstance(metadata, dict):
            raise _Refused("metadata", f"must be a dict, got {type(metadata).__name__}")
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as err:
            raise _Refused("metadata", f"must be JSON-serialisable with finite numbers: {err}") from None
        _check_tree(metadata, "metadata")
    except _Refused as err:
        raise ValueError(f"cannot save kernel file {where!r}: {err}") from None
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
           "kernel": state, "metadata": metadata, "sha256": _digest(state, metadata)}
    text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False)
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise ValueError(f"cannot save kernel file {where!r}: metadata: the file would exceed "
                         f"{MAX_FILE_BYTES} bytes (MAX_FILE_BYTES)")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _read(path: PathLike, where: str) -> Any:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:  # before reading: a huge file is never loaded
            raise ValueError(f"kernel file {where!r}: (file) is {size} bytes; kernel files are at "
                             f"most {MAX_FILE_BYTES} bytes (MAX_FILE_BYTES)")
        raw = f.read(MAX_FILE_BYTES + 1)  # a file that grows (or a pipe) is bounded too
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"kernel file {where!r}: (file) exceeds {MAX_FILE_BYTES} bytes (MAX_FILE_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"kernel file {where!r}: (file) is not valid UTF-8 text: {err}") from None
    try:
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise ValueError(f"kernel file {where!r}: (document) is not valid JSON: nested too deeply "
                         f"(at most {MAX_DEPTH} levels)") from None
    except ValueError as err:  # JSONDecodeError and the like
        raise ValueError(f"kernel file {where!r}: (document) is not valid JSON: {err}") from None


def load_kernel(path: PathLike, return_metadata: bool = False):
    """Reads a file written by :func:`save_kernel` and returns the kernel module
    (and its metadata with ``return_metadata=True``). Never unpickles.

    A malformed file raises a ``ValueError`` naming the file and the field (see
    the module docstring for the limits); the SHA-256 checksum catches
    accidental corruption only, it is not a signature."""
    where = os.fspath(path)
    doc = _read(path, where)
    try:
        kernel, metadata = _build(doc)
    except _Refused as err:
        if err.field == "format":
            raise ValueError(f"kernel file {where!r} is not a {FORMAT} file ({err})") from None
        raise ValueError(f"kernel file {where!r}: {err}") from None
    return (kernel, metadata) if return_metadata else kernel


def _build(doc: Any):
    if not isinstance(doc, dict):
        raise _Refused("format", f"the document must be a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise _Refused("format", f"must be {FORMAT!r}")
    _check_tree(doc, "")
    version = doc.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise _Refused("format_version", f"unsupported format_version {version!r} "
                                         f"(expected {FORMAT_VERSION})")
    unknown = sorted(set(doc) - _DOC_FIELDS)
    if unknown:
        raise _Refused(_name(unknown[0]), "unknown field")
    if "library_version" in doc and not isinstance(doc["library_version"], str):
        raise _Refused("library_version", "must be a string")
    if "kernel" not in doc:
        raise _Refused("kernel", "missing field")
    state, metadata = doc["kernel"], doc.get("metadata", {})
    if not isinstance(state, dict):
        raise _Refused("kernel", f"must be an object, got {type(state).__name__}")
    if not isinstance(metadata, dict):
        raise _Refused("metadata", f"must be an object, got {type(metadata).__name__}")
    checksum = doc.get("sha256")
    if not isinstance(checksum, str):
        raise _Refused("sha256", "missing or not a string")
    if checksum != _digest(state, metadata):
        raise _Refused("sha256", "checksum mismatch (the file was modified or truncated)")
    kind = state.get("type")
    if kind not in _KINDS:
        raise _Refused("kernel.type", f"unknown kernel type {_name(kind)!r}; expected one of {_KINDS}")
    unknown = sorted(set(state) - _KERNEL_FIELDS[kind])
    if unknown:
        raise _Refused(f"kernel.{_name(unknown[0])}", f"unknown field for a {kind}")
    for field in _KERNEL_FIELDS[kind] - {"type_logit"}:
        if field not in state:
            raise _Refused(f"kernel.{field}", "missing field")
    log_sigma = _numbers(state["log_sigma"], "kernel.log_sigma", LOG_SIGMA_LIMIT)
    log_scale = _number(state["log_scale"], "kernel.log_scale", LOG_SCALE_LIMIT)
    learnable = _flag(state["learnable"], "kernel.learnable")
    learnable_scale = _flag(state["learnable_scale"], "kernel.learnable_scale")
    # Built from placeholders, then the exact stored values copied in (no exp/log round trip).
    if kind == "GaussianKernel":
        if len(log_sigma) != 1:
            raise _Refused("kernel.log_sigma", f"a GaussianKernel has one bandwidth, got {len(log_sigma)}")
        kernel = GaussianKernel(1.0, learnable, 1.0, learnable_scale)
    else:
        logits = _numbers(state["logits"], "kernel.logits", LOGIT_LIMIT, len(log_sigma))
        type_logit = state.get("type_logit")
        if type_logit is not None:
            type_logit = _number(type_logit, "kernel.type_logit", LOGIT_LIMIT)
        kernel = MultiBandGaussianKernel([1.0] * len(log_sigma), learnable, None, 1.0, learnable_scale,
                                         cross_type_weight=None if type_logit is None else 0.5)
        with torch.no_grad():
            kernel.logits.copy_(torch.tensor(logits, dtype=torch.float64))
            if type_logit is not None:
                kernel.type_logit.copy_(torch.tensor(type_logit, dtype=torch.float64))
    with torch.no_grad():
        kernel.log_sigma.copy_(torch.tensor(log_sigma, dtype=torch.float64))
        kernel.log_scale.copy_(torch.tensor(log_scale, dtype=torch.float64))
    return kernel, metadata
