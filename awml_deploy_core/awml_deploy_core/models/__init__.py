"""PyTorch model definitions and checkpoint I/O."""

from .centerpoint import BackboneNeckHeadGraph, CenterPoint, VoxelEncoderGraph, build_centerpoint
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["BackboneNeckHeadGraph", "CenterPoint", "VoxelEncoderGraph", "build_centerpoint", "load_checkpoint", "save_checkpoint"]
