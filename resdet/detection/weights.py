"""Whole-detector weights in, with the class count checked by name.

A checkpoint trained for K classes does not fit a model built for J: torch's own message is a list
of size mismatches (`cls_score.weight: copying a param with shape [4, 1024] ... [81, 1024]`) that never
names the config key. `check_num_classes` says "the checkpoint has K classes, MODEL.ROI_HEADS.NUM_CLASSES
is J" before any tensor is copied; `load_detection_weights` does it and then loads strictly.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch
from torch import nn

from ..engine.checkpoint import CheckpointError, Checkpointer, load_checkpoint
from ..engine.distributed import unwrap_model

__all__ = ["CLASS_SCORE_KEY", "checkpoint_num_classes", "check_num_classes", "load_detection_weights"]

# The box predictor's classification layer: K + 1 outputs (background at 0) for K classes; the cascade's
# first stage has one too (every stage has the same K).
CLASS_SCORE_KEY = "roi_heads.box_predictor.cls_score.weight"
CASCADE_CLASS_SCORE_KEY = "roi_heads.box_predictors.0.cls_score.weight"


def _class_scores(state: Mapping[str, Any]):
    return state.get(CLASS_SCORE_KEY, state.get(CASCADE_CLASS_SCORE_KEY))


def _model_state(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return data["model"] if isinstance(data.get("model"), dict) else data


def checkpoint_num_classes(data: Mapping[str, Any]):
    """K of a loaded checkpoint (full or plain state dict), or None when it has no box predictor."""
    weight = _class_scores(_model_state(data))
    return None if not isinstance(weight, torch.Tensor) or weight.dim() != 2 else int(weight.shape[0]) - 1


def check_num_classes(data: Mapping[str, Any], model: nn.Module, path: str) -> None:
    """CheckpointError naming MODEL.ROI_HEADS.NUM_CLASSES when the checkpoint's class count is not the model's."""
    have = checkpoint_num_classes(data)
    mine = _class_scores(unwrap_model(model).state_dict())
    if have is None or mine is None:
        return
    want = int(mine.shape[0]) - 1
    if have != want:
        raise CheckpointError(
            f"Checkpoint '{path}' has {have} classes, MODEL.ROI_HEADS.NUM_CLASSES is {want}: set "
            f"MODEL.ROI_HEADS.NUM_CLASSES {have} to use it (the number of categories it was trained on)")


def load_detection_weights(model: nn.Module, path: str, strict: bool = True) -> Dict[str, Any]:
    """Load a detector checkpoint into `model` after checking its class count; returns the file's dict."""
    check_num_classes(load_checkpoint(path), model, path)
    return Checkpointer("", model).load_model(path, strict=strict)
