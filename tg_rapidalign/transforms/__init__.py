"""PyG transforms: synthetic corruptions for kernel calibration."""
from .corruptions import GaussianNoise, NodeMasking, RigidSubpartDisplacement

__all__ = ["GaussianNoise", "NodeMasking", "RigidSubpartDisplacement"]
