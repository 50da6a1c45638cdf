"""Loss modules."""
from .alignment_loss import SE3KernelAlignmentLoss
from .drmmd_loss import DrMMDLoss
from .group_mmd_loss import MMDLoss
from .mmd_loss import KernelMMDLoss

__all__ = ["KernelMMDLoss", "SE3KernelAlignmentLoss", "DrMMDLoss", "MMDLoss"]
