"""PyG transforms: synthetic corruptions for kernel calibration, and rigid motions."""
from .corruptions import GaussianNoise, NodeMasking, RigidSubpartDisplacement
from .rigid import AlignToReference, RandomRigidMotion, random_rotation

__all__ = ["GaussianNoise", "NodeMasking", "RigidSubpartDisplacement", "AlignToReference",
           "RandomRigidMotion", "random_rotation"]
