"""Loss modules."""
from .mmd_loss import KernelMMDLoss

__all__ = ["KernelMMDLoss"]
