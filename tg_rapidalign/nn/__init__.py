"""Loss modules."""
from .alignment_loss import SE3KernelAlignmentLoss
from .mmd_loss import KernelMMDLoss

__all__ = ["KernelMMDLoss", "SE3KernelAlignmentLoss"]
