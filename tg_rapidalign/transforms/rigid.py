r"""Rigid-motion PyG transforms: a random proper rigid motion of the whole graph
(what ``T.RandomTranslate`` is often taken for: that one jitters every node
independently), and rigid alignment onto a reference with the library's pose
solvers."""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .._validation import check_choice, check_positions, check_positive_scalar
from ..alignment.search import nn_spacing
from .corruptions import resolve_generator, rms_radius

METHODS = ("global", "em")
# The global method's default bandwidth: this fraction of the reference's RMS
# radius, at least this multiple of its median nearest-neighbour distance.
SIGMA_FRACTION = 0.08
SPACING_FACTOR = 0.3


def random_rotation(num: int = 1, generator: Optional[torch.Generator] = None,
                    dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """``num`` rotations drawn uniformly from SO(3) (normalised Gaussian
    quaternions), :math:`[num, 3, 3]`."""
    q = torch.randn(num, 4, generator=generator, dtype=torch.float64)
    w, a, b, c = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    R = torch.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w),
                     2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w),
                     2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)], 1)
    return R.view(num, 3, 3).to(dtype=dtype, device=device)


def _apply_pose(data: Data, R: Tensor, t: Tensor, vector_keys: Sequence[str]) -> Data:
    R = R.to(data.pos.dtype)
    data.pos = data.pos @ R.T + t.to(data.pos.dtype)
    for key in vector_keys:  # directions (normals, forces) turn but do not shift
        value = getattr(data, key, None)
        if value is not None:
            setattr(data, key, value @ R.T.to(value.dtype))
    return data


class RandomRigidMotion(BaseTransform):
    r"""Moves the whole graph by one random proper rigid motion,
    :math:`\mathbf{x}_i \mapsto R\mathbf{x}_i + \mathbf{t}`, with :math:`R`
    uniform on SO(3) and :math:`\mathbf{t}` uniform in
    :math:`[-\text{translate}, \text{translate}]^3`. The SE(3)-invariant scores of
    this library do not change under it.

    Args:
        translate (float, optional): Half-width of the translation box. (default: :obj:`1.0`)
        vector_keys (sequence of str, optional): Node attributes holding 3-D
            directions that turn with the graph. (default: :obj:`("normal",)`)
        seed (int, optional): Seeds a private generator once. (default: :obj:`None`)
        generator (torch.Generator, optional): The random source. (default: the global RNG)
    """

    def __init__(self, translate: float = 1.0, vector_keys: Sequence[str] = ("normal",),
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        if isinstance(translate, bool) or not isinstance(translate, (int, float)) or not translate >= 0:
            raise ValueError(f"translate must be a non-negative number, got {translate!r}")
        self.translate = float(translate)
        self.vector_keys = tuple(vector_keys)
        self.generator = resolve_generator(seed, generator)

    def forward(self, data: Data) -> Data:
        """A moved copy of ``data`` (``pos`` and the :obj:`vector_keys`); the input is not modified."""
        check_positions(data.pos, "data.pos", dim=3)
        data = copy.copy(data)
        R = random_rotation(1, self.generator)[0]
        t = (torch.rand(3, generator=self.generator, dtype=torch.float64) * 2 - 1) * self.translate
        return _apply_pose(data, R.to(data.pos.device), t.to(data.pos.device), self.vector_keys)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(translate={self.translate:g})"


class AlignToReference(BaseTransform):
    r"""Rigidly moves a graph onto a reference structure with the library's pose
    solvers, :math:`\mathbf{x}_i \mapsto R^\star\mathbf{x}_i + \mathbf{t}^\star`:

    .. math::
        (R^\star, \mathbf{t}^\star) = \operatorname*{arg\,min}_{R \in SO(3),\,\mathbf{t}}
        \sum_i w_i \lVert \mathbf{r}_i - (R\mathbf{x}_i + \mathbf{t}) \rVert^2
        \quad\text{or}\quad
        \operatorname*{arg\,max}_{R, \mathbf{t}} \sum_{i, j} q_i\, p_j\,
        k(\mathbf{r}_i, R\mathbf{x}_j + \mathbf{t}).

    With a node-to-node correspondence (same node count, row :math:`i` of the
    graph is row :math:`i` of the reference) the left problem is solved exactly
    by :func:`~tg_rapidalign.weighted_procrustes`; without one, the kernel
    correlation on the right is maximised by
    :func:`~tg_rapidalign.se3_kernel_alignment`: by default (:obj:`method="global"`)
    with the global pose search (:obj:`init="global"`, a rotation grid verified
    by the kernel correlation, for partial overlap and outliers at any rotation)
    and the kernel E-step at a narrow bandwidth; :obj:`method="em"` is the
    earlier fit (principal-axes starts, robust E-step, bandwidth a quarter of
    the reference's RMS radius). Proper rotations only: a mirror image is not reflected back. The
    pose is recorded as ``data.align_R [1, 3, 3]`` and ``data.align_t [1, 3]``
    (so a ``Batch`` stacks them per graph).

    Args:
        reference (torch.Tensor or Data): Reference positions :math:`[M, 3]`, or a ``Data`` with ``pos``.
        paired (bool, optional): Use the correspondence. :obj:`None` uses it when
            the node counts agree. (default: :obj:`None`)
        weight (str, optional): Node attribute holding the weights of the paired
            fit (the same attribute of the reference, if it is a ``Data``, in the
            kernel fit). (default: :obj:`None`, uniform)
        sigma (float, optional): Kernel bandwidth of the unpaired fit. (default:
            :obj:`"global"`: 0.08 of the reference's RMS radius, at least 0.3 of
            its median nearest-neighbour distance; :obj:`"em"`: a quarter of its RMS radius)
        iterations (int, optional): EM steps of the unpaired fit after its start.
            (default: :obj:`15` for :obj:`"global"`, :obj:`30` for :obj:`"em"`)
        vector_keys (sequence of str, optional): Node attributes holding 3-D
            directions that turn with the graph. (default: :obj:`("normal",)`)
        method (str, optional): The unpaired fit, :obj:`"global"` or :obj:`"em"`
            (see above). (default: :obj:`"global"`)
    """

    def __init__(self, reference: Union[Tensor, Data], paired: Optional[bool] = None,
                 weight: Optional[str] = None, sigma: Optional[float] = None,
                 iterations: Optional[int] = None, vector_keys: Sequence[str] = ("normal",),
                 method: str = "global"):
        ref_pos = reference.pos if isinstance(reference, Data) else reference
        check_positions(ref_pos, "reference", dim=3)
        if ref_pos.size(0) == 0:
            raise ValueError("reference must have at least one point")
        self.reference = reference
        self.ref_pos = ref_pos.detach()
        self.paired = paired
        self.weight = weight
        self.sigma = check_positive_scalar(sigma, "sigma", allow_none=True)
        check_choice(method, "method", METHODS)
        self.method = method
        if iterations is None:
            iterations = 15 if method == "global" else 30
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive int, got {iterations!r}")
        self.iterations = iterations
        self.vector_keys = tuple(vector_keys)
        self._auto_sigma = None

    def pose(self, data: Data):
        """``(R [3, 3], t [3])`` mapping ``data.pos`` onto the reference."""
        from ..functional.alignment import se3_kernel_alignment
        from ..functional.procrustes import weighted_procrustes

        pos = check_positions(data.pos, "data.pos", dim=3).detach()
        ref = self.ref_pos.to(pos)
        paired = self.paired if self.paired is not None else pos.size(0) == ref.size(0)
        if paired and pos.size(0) != ref.size(0):
            raise ValueError(f"paired=True needs as many nodes as the reference, got {pos.size(0)} "
                             f"and {ref.size(0)}")
        w = getattr(data, self.weight).view(-1).to(pos) if self.weight else None
        if pos.size(0) == 0:
            return torch.eye(3, dtype=pos.dtype, device=pos.device), pos.new_zeros(3)
        if paired:
            R, t = weighted_procrustes(ref, pos, w)
            return R[0], t[0]
        w_ref = None
        if self.weight and isinstance(self.reference, Data):
            w_ref = getattr(self.reference, self.weight).view(-1).to(ref)
        if self.method == "em":
            sigma = self.sigma if self.sigma is not None else 0.25 * rms_radius(ref)
            res = se3_kernel_alignment(ref, pos, weight_x=w_ref, weight_y=w, sigma=sigma, estep="robust",
                                       iterations=self.iterations, cutoff=None)
        else:
            res = se3_kernel_alignment(ref, pos, weight_x=w_ref, weight_y=w, sigma=self.fine_sigma(),
                                       init="global", estep="kernel", iterations=self.iterations, cutoff=3.0)
        return res.R[0], res.t[0]

    def fine_sigma(self) -> float:
        """The bandwidth of the global method: :obj:`sigma` if given, else
        ``SIGMA_FRACTION`` of the reference's RMS radius, at least
        ``SPACING_FACTOR`` times its median nearest-neighbour distance (computed once)."""
        if self.sigma is not None:
            return self.sigma
        if self._auto_sigma is None:
            ref = self.ref_pos
            scale = rms_radius(ref)
            sigma = max(SIGMA_FRACTION * scale, SPACING_FACTOR * nn_spacing(ref))
            self._auto_sigma = sigma if sigma > 0 else 1.0
        return self._auto_sigma

    def forward(self, data: Data) -> Data:
        """A copy of ``data`` moved onto the reference, with ``align_R`` and ``align_t`` set."""
        R, t = self.pose(data)
        data = _apply_pose(copy.copy(data), R, t, self.vector_keys)
        data.align_R, data.align_t = R.unsqueeze(0), t.unsqueeze(0)
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(reference=[{self.ref_pos.size(0)}, 3], paired={self.paired}, "
                f"method={self.method!r}, iterations={self.iterations})")
