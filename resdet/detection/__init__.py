"""Faster / Mask R-CNN with FPN: our modules on torchvision.ops kernels (see resdet/DESIGN.md)."""
from .rcnn import GeneralizedRCNN, build_detection_model
from .postprocess import paste_masks

__all__ = ["GeneralizedRCNN", "build_detection_model", "paste_masks"]
