"""CenterPoint: voxelize -> features -> encoder -> scatter -> head -> decode -> NMS."""

from .pipeline import CenterPointPipeline, PipelineOutput, PreprocessOutput
from .voxelize import Voxels, VoxelStats, voxelize

__all__ = ["CenterPointPipeline", "PipelineOutput", "PreprocessOutput", "VoxelStats", "Voxels", "voxelize"]
