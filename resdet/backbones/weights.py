"""Bringing weights into a backbone: torchvision and timm ResNet state dicts, and our own checkpoints.

Our ResNet uses torchvision's parameter names, so a torchvision (or architecture-matching timm) ResNet
state dict loads as it is; what this module adds is finding the state dict inside the various checkpoint
layouts, dropping the parts the target does not have (a classifier head, stages a backbone does not
build), and failing loudly, naming the file and the keys, when the architectures differ.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn as nn

from resdet.utils.errors import UserInputError

__all__ = ["WeightsFileError", "extract_state_dict", "load_backbone_weights", "load_state_dict_checked", "BACKBONE_PREFIXES",
           "BACKBONE_EXPORT_FORMAT", "save_backbone_weights", "read_weights_file", "backbone_meta"]

# A backbone file that describes itself: {"format": BACKBONE_EXPORT_FORMAT, "meta": {"name", "variant",
# "shortcut", "norm", ...}, "state_dict": backbone weights without a classifier head}. train_cls writes it
# (backbone_final.pth, --export-backbone); tools/convert_weights.py --backbone writes it for torchvision
# and timm classifiers; MODEL.BACKBONE.VARIANT/SHORTCUT "auto"/"" follow its meta.
BACKBONE_EXPORT_FORMAT = "resdet-backbone-v1"


class WeightsFileError(UserInputError, ValueError):
    """Backbone weights that cannot be used (unreadable, not a state dict, another architecture, a name or
    variant the config does not ask for); the message names the file. A ValueError, as before."""

# Prefixes under which a backbone's weights sit in detection checkpoints: ours, torchvision's
# (`backbone.body.`), Detectron2's (`backbone.bottom_up.`), and DDP's `module.`.
BACKBONE_PREFIXES = ("module.", "backbone.body.", "backbone.bottom_up.", "backbone.")


def extract_state_dict(obj, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The backbone state dict inside a raw state dict, a resdet checkpoint or a backbone export."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise WeightsFileError(f"{source}: expected a state dict (names -> tensors), or a checkpoint holding one "
                         f"under 'model' or 'state_dict'")
    sd = dict(obj)
    for prefix in BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _droppable(key: str, model: nn.Module) -> bool:
    """Keys a checkpoint may carry that the target legitimately lacks."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    if key in own:
        return False
    if key.startswith("fc.") and not hasattr(model, "fc"):
        return True  # a classifier's head, loaded into a feature backbone
    m = re.match(r"layer(\d+)\.", key)
    if m and not hasattr(model, f"layer{m.group(1)}"):
        return True  # a stage the backbone does not build (out_features stops earlier)
    return False


def load_state_dict_checked(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load strictly, except for droppable keys and BN's num_batches_tracked; errors name the keys."""
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if not _droppable(k, model)}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    # BatchNorm's step counter is not a weight: FrozenBN has none, and fresh BN ones start at zero anyway
    unexpected = [k for k in sd if k not in own and not k.endswith("num_batches_tracked")]
    sd = {k: v for k, v in sd.items() if k in own}
    mismatched = [f"{k}: {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def show(keys):
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"{name}: {show(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
        raise WeightsFileError(f"{source} does not fit {type(model).__name__} (different architecture or variant?) -- "
                         + "; ".join(parts))
    model.load_state_dict(sd, strict=False)


def read_weights_file(path: str, what: str = "Backbone weights") -> Mapping:
    """torch.load(weights_only=True) of a weights file; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: '{path}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled objects we refuse to run
        raise WeightsFileError(f"Could not read {what.lower()} '{path}': {type(e).__name__}: {str(e)[:600]}") from e


def backbone_meta(weights: Mapping) -> Dict[str, str]:
    """What a weights object says of the backbone it holds (name, variant, shortcut, norm), or {}."""
    meta = weights.get("meta", {}) if isinstance(weights, Mapping) else {}
    if not isinstance(meta, Mapping):
        return {}
    return {k: meta[k] for k in ("name", "variant", "shortcut", "norm") if isinstance(meta.get(k), str)}


def save_backbone_weights(state_dict: Mapping[str, torch.Tensor], path: str, meta: Mapping[str, Any]) -> str:
    """Write a self-describing backbone file (BACKBONE_EXPORT_FORMAT) atomically: temp file, fsync, rename."""
    missing = [k for k in ("name", "variant", "shortcut", "norm") if not meta.get(k)]
    if missing:
        raise ValueError(f"backbone meta needs {missing}; got {dict(meta)}")
    state = {k: v.detach().cpu().clone() for k, v in state_dict.items() if not k.startswith("fc.")}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": BACKBONE_EXPORT_FORMAT, "meta": dict(meta), "state_dict": state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_backbone_weights(model: nn.Module, weights: Union[str, Mapping], expected_name: Optional[str] = None,
                          expected_variant: Optional[str] = None, expected_shortcut: Optional[str] = None
                          ) -> nn.Module:
    """Load a file path or an in-memory checkpoint into `model` (a resdet ResNet or timm backbone).

    A self-describing backbone file records the registry name, variant and shortcut it was built with;
    they must match `expected_*` when those are given (the error names the config key and the value to set).
    """
    source = weights if isinstance(weights, str) else "in-memory checkpoint"
    if isinstance(weights, str):
        weights = read_weights_file(weights)
    meta = backbone_meta(weights)
    for key, expected in (("name", expected_name), ("variant", expected_variant), ("shortcut", expected_shortcut)):
        got = meta.get(key)
        if expected and got and got != expected:
            cfg_key = f"MODEL.BACKBONE.{key.upper()}"
            follow = " (or 'auto', the default, to follow the weights)" if key == "variant" else (
                " (or '', the default, to follow the weights)" if key == "shortcut" else "")
            raise WeightsFileError(f"{source} holds a '{got}' backbone ({key}), but {cfg_key} is '{expected}': set "
                             f"{cfg_key} {got}{follow}, or give weights of a '{expected}' backbone")
    target = getattr(model, "model", model)  # TimmBackbone wraps the timm module
    load_state_dict_checked(target, extract_state_dict(weights, source), source)
    return model
