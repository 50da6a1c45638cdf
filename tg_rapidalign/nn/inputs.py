"""Reading PyG ``Data``/``Batch`` inputs and node-weight specs, shared by the loss modules."""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor

from ..weights import degree_weights

WeightSpec = Union[None, str, Tensor, Callable]


def unpack(data, name: str) -> Tuple[Tensor, Optional[Tensor], Optional[int]]:
    """``(pos, batch, num_graphs)`` from a ``Data``/``Batch`` or a plain tensor."""
    if isinstance(data, Tensor):
        return data, None, None
    pos = getattr(data, "pos", None)
    if pos is None:
        raise TypeError(f"{name} must be a tensor or a PyG Data/Batch with 'pos', got "
                        f"{type(data).__name__}")
    batch = getattr(data, "batch", None)
    num_graphs = getattr(data, "num_graphs", None) if batch is not None else 1
    return pos, batch, num_graphs


def resolve_weight(spec: WeightSpec, data, num_nodes: int, like: Tensor, name: str) -> Optional[Tensor]:
    """Node weights from a spec: ``None``/``"uniform"``, ``"degree"`` (from
    ``edge_index``), the name of a node attribute, a tensor, or a callable
    ``data -> Tensor`` (e.g. a learned module)."""
    if spec is None or (isinstance(spec, str) and spec == "uniform"):
        return None
    if isinstance(spec, Tensor):
        return spec
    if isinstance(spec, str):
        if spec == "degree":
            _require_data(data, spec, name)
            edge_index = getattr(data, "edge_index", None)
            if edge_index is None:
                raise ValueError(f"{name}='degree' needs 'edge_index' on the input")
            return degree_weights(edge_index, num_nodes, like.dtype)
        return node_attribute(data, spec, name).to(like.dtype)
    if callable(spec):
        return spec(data).view(-1)
    raise TypeError(f"{name} must be None, 'uniform', 'degree', an attribute name, a tensor "
                    f"or a callable, got {type(spec).__name__}")


def pair_inputs(pred, target, batch_pred: Optional[Tensor], batch_target: Optional[Tensor],
                num_graphs: Optional[int] = None):
    """``(x, y, batch_x, batch_y, num_graphs)`` from a (pred, target) pair; the
    graph counts of two ``Batch`` objects (and a given ``num_graphs``) must agree."""
    x, bx, nx = unpack(pred, "pred")
    y, by, ny = unpack(target, "target")
    bx = batch_pred if batch_pred is not None else bx
    by = batch_target if batch_target is not None else by
    if nx is not None and ny is not None:
        if nx != ny:
            raise ValueError(f"pred has {nx} graphs but target has {ny}")
        if num_graphs is not None and num_graphs != nx:
            raise ValueError(f"num_graphs={num_graphs} but the inputs hold {nx} graphs")
        num_graphs = nx
    return x, y, bx, by, num_graphs


def reduce_loss(out: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return out.mean()
    if reduction == "sum":
        return out.sum()
    return out


def _require_data(data, spec: str, name: str) -> None:
    if isinstance(data, Tensor):
        raise TypeError(f"{name}={spec!r} needs a PyG Data/Batch input, got a tensor")


def node_attribute(data, spec: str, name: str) -> Tensor:
    """The node attribute ``spec`` of a ``Data``/``Batch``, flattened; ``name`` is
    the option that asked for it (for the error message)."""
    _require_data(data, spec, name)
    value = getattr(data, spec, None)
    if value is None:
        raise ValueError(f"{name}={spec!r}: the input has no such node attribute")
    return value.view(-1)


def resolve_types(spec: Union[None, str], data, name: str) -> Optional[Tensor]:
    """Node types from a node attribute name (``"z"``, say) of a ``Data``/``Batch``."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise TypeError(f"{name} must be None or a node attribute name, got {type(spec).__name__}")
    return node_attribute(data, spec, name)


REDUCTIONS = ("mean", "sum", "none")


def check_optional_name(value, name: str) -> Optional[str]:
    """``None`` or a non-empty string (a node attribute name)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be None or a node attribute name, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must be a non-empty attribute name")
    return value


def check_weight_spec(spec: WeightSpec, name: str) -> WeightSpec:
    """A node-weight spec of the loss modules, checked where it is given:
    ``None``, a non-empty string (``"uniform"``, ``"degree"`` or a node attribute),
    a tensor of finite non-negative weights ``[N]`` or ``[N, 1]``, or a callable."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        return check_optional_name(spec, name)
    if isinstance(spec, Tensor):
        if spec.is_complex() or spec.dtype == torch.bool:
            raise TypeError(f"{name} must be a real tensor, got dtype {spec.dtype}")
        if spec.dim() > 2 or (spec.dim() == 2 and spec.size(1) != 1):
            raise ValueError(f"{name} must have shape [N] or [N, 1], got shape {tuple(spec.shape)}")
        if spec.numel():
            values = spec.detach()
            if values.is_floating_point() and not bool(torch.isfinite(values).all()):
                raise ValueError(f"{name} contains NaN or infinite values")
            if bool((values < 0).any()):
                raise ValueError(f"{name} must be non-negative")
        return spec
    raise TypeError(f"{name} must be None, 'uniform', 'degree', an attribute name, a tensor "
                    f"or a callable, got {type(spec).__name__}")
