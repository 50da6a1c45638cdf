"""The stages of the SE(3) kernel alignment loss (see
:func:`tg_rapidalign.se3_kernel_alignment`): :mod:`.inputs` (checks, weights,
centring), :mod:`.evaluators` (kernel correlation and E-step moments of a
pose, one per backend), :mod:`.pose` (all pose mathematics), :mod:`.em`
(starting poses and EM steps), :mod:`.score` (the loss at the pose) and
:mod:`.options` (the finer options, :class:`AlignmentOptions`)."""
from .options import AlignmentOptions

__all__ = ["AlignmentOptions"]
