"""The config a checkpoint was trained with, and how another config differs from it.

Every checkpoint the engine writes carries its run's resolved config as YAML text ("config"), with
every KEY VALUE override and every value resolved at start-up (e.g. SOLVER.MAX_EPOCHS). Evaluation
(tools/eval.py), the predictor and tools/demo.py start from it, so that a model is tested at the
sizes, thresholds and heads it was trained with:

    cfg = config_for_checkpoint("output/run/model_final.pth")                 # the training's config
    cfg = config_for_checkpoint(path, overrides=["TEST.IMS_PER_BATCH", "4"])  # ... with overrides
    cfg = config_for_checkpoint(path, config_file="my.yaml")   # my.yaml if no INPUT/MODEL/TEST key differs,
                                                               # else a ConfigError naming every one
    cfg = config_for_checkpoint(path, config_file="my.yaml", on_mismatch="warn")    # my.yaml, with a
                                                               # warning naming them (--allow-config-mismatch)

A checkpoint without a config (a converted torchvision file, a plain state dict) needs `config_file`.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence, Tuple, Union

from ..backbones.registry import resolve_backbone_config
from ..config import CfgNode, ConfigError, flatten_keys, load_config, load_config_text
from .checkpoint import CheckpointError, load_checkpoint

__all__ = ["read_checkpoint_config", "config_differences", "config_for_checkpoint", "COMPARED_SECTIONS",
           "NOT_COMPARED", "TRAINING_ONLY", "is_training_only"]

logger = logging.getLogger(__name__)

# What decides a model's outputs: its architecture and weights' shapes (MODEL), its test-time input
# (INPUT) and its post-processing and scoring (TEST).
COMPARED_SECTIONS = ("INPUT", "MODEL", "TEST")
# Keys of those sections that say where or how fast, not what comes out: never reported.
NOT_COMPARED = frozenset({
    "MODEL.DEVICE",             # the same model on another device
    "MODEL.WEIGHTS",            # the checkpoint being loaded replaces it
    "MODEL.BACKBONE.WEIGHTS",   # the initialisation before training; the checkpoint holds the result
    "TEST.EVAL_PERIOD",         # when training evaluated
    "TEST.EVAL_PERIOD_FRACTION",
    "TEST.COCO_EVAL_BACKEND",   # the same numbers by either backend (tested)
})

# Keys that act only while training (sampling, matching, losses, augmentation, freezing), plus every key
# ending in _TRAIN: a difference there does not change what the trained model outputs, so it is only
# reported, never refused. Keys not listed are compared (the safe side for keys added later).
TRAINING_ONLY = frozenset({
    "INPUT.RANDOM_FLIP_PROB", "INPUT.ASPECT_RATIO_GROUPING", "INPUT.LSJ.ENABLED", "INPUT.LSJ.IMAGE_SIZE",
    "INPUT.LSJ.SCALE_RANGE", "INPUT.LSJ.PAD_VALUE", "INPUT.LSJ.RECOMPUTE_BOXES", "MODEL.ROI_BOX_CASCADE_HEAD.IOUS",
    "MODEL.BACKBONE.FREEZE_AT",
    "MODEL.RPN.IOU_THRESHOLDS", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "MODEL.RPN.POSITIVE_FRACTION",
    "MODEL.RPN.SMOOTH_L1_BETA", "MODEL.RPN.LOSS_WEIGHT",
    "MODEL.ROI_HEADS.IOU_THRESHOLDS", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.ROI_HEADS.POSITIVE_FRACTION",
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA",
    "MODEL.CLASSIFIER.LABEL_SMOOTHING",
})


def is_training_only(key: str) -> bool:
    return key in TRAINING_ONLY or key.endswith("_TRAIN")


def read_checkpoint_config(path: str) -> Optional[CfgNode]:
    """The config stored in a checkpoint (frozen), or None when it holds none."""
    data = load_checkpoint(path)
    text = data.get("config")
    if text is None:
        return None
    if not isinstance(text, str):
        raise CheckpointError(f"Checkpoint '{path}' has a 'config' entry of type {type(text).__name__}, "
                              "expected the config as YAML text")
    return load_config_text(text, source=f"checkpoint '{path}'")


def _plain(value: Any) -> Any:
    # YAML gives lists where the defaults have tuples: compare values, not container types
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def config_differences(reference: CfgNode, other: CfgNode, sections: Sequence[str] = COMPARED_SECTIONS,
                       ignore: Sequence[str] = NOT_COMPARED) -> List[Tuple[str, Any, Any]]:
    """[(key, value in reference, value in other)] for every key of `sections` whose values differ."""
    keys = [k for k in flatten_keys(reference) if k.split(".")[0] in sections and k not in ignore]
    return [(k, _get(reference, k), _get(other, k)) for k in keys if _plain(_get(reference, k)) != _plain(_get(other, k))]


def _override_keys(overrides: Sequence[str]) -> set:
    return set(list(overrides)[0::2])


def config_for_checkpoint(weights: str, config_file: Union[str, CfgNode, None] = None, overrides: Sequence[str] = (),
                          on_mismatch: str = "error", what: str = "evaluation") -> CfgNode:
    """The config to use a checkpoint with (frozen, MODEL.WEIGHTS set to `weights`).

    Without `config_file`: the checkpoint's own config, then `overrides`. With it (a YAML path or a
    CfgNode): that config, then
    `overrides`; every INPUT/MODEL/TEST key whose value differs from the checkpoint's (other than those
    set by `overrides`, which are deliberate, and those used only in training, which are logged) is
    named in one ConfigError (`on_mismatch="error"`) or
    one warning (`"warn"`: the tools' --allow-config-mismatch). `what` says what the config is for.
    """
    if on_mismatch not in ("warn", "error"):
        raise ValueError(f"on_mismatch must be 'warn' or 'error'; got {on_mismatch!r}")
    trained = read_checkpoint_config(weights) if weights else None
    if config_file is None:
        if trained is None:
            raise ConfigError(
                f"Checkpoint '{weights}' carries no config (a converted or plain state dict, not a resdet "
                f"training checkpoint): give the config to build its model with (--config CONFIG)"
                if weights else f"No checkpoint and no config given: {what} needs --weights CHECKPOINT or --config CONFIG")
        cfg = trained.clone()
        cfg.defrost()
        if overrides:
            cfg.merge_from_list(list(overrides))
            logger.info("Using the config stored in '%s' with overrides %s", weights, list(overrides))
        else:
            logger.info("Using the config stored in '%s' (the training run's)", weights)
    else:
        if isinstance(config_file, CfgNode):
            cfg = config_file.clone()
            cfg.defrost()
            if overrides:
                cfg.merge_from_list(list(overrides))
            config_file = "the given config"
        else:
            cfg = load_config(config_file, overrides, freeze=False)
        if weights:
            # VARIANT "auto" / SHORTCUT "" become what this checkpoint was built with (or what the
            # config's backbone weights record) before comparing, as training resolved them
            cfg.MODEL.WEIGHTS = weights
            cfg, _ = resolve_backbone_config(cfg)
        if trained is not None:
            trained, _ = resolve_backbone_config(trained)  # a config saved before "auto" was resolved
            chosen = _override_keys(overrides)
            diffs = config_differences(trained, cfg)
            asked = [d for d in diffs if d[0] in chosen]
            training = [d for d in diffs if d[0] not in chosen and is_training_only(d[0])]
            diffs = [d for d in diffs if d[0] not in chosen and not is_training_only(d[0])]
            if asked:
                logger.info("Differing from the training config, as the command line asks: %s",
                            ", ".join(f"{k} {b!r} (trained with {a!r})" for k, a, b in asked))
            if training:
                logger.info("%s differs from the checkpoint's training config in keys used only in training "
                            "(no effect on %s): %s", config_file, what,
                            ", ".join(f"{k} {b!r} (trained with {a!r})" for k, a, b in training))
            if diffs:
                lines = "\n".join(f"  {k}: checkpoint {a!r}, {config_file} {b!r}" for k, a, b in diffs)
                head = (f"{config_file} differs from the config checkpoint '{weights}' was trained with, in "
                        f"{len(diffs)} key{'s' if len(diffs) > 1 else ''}:\n{lines}\n")
                if on_mismatch == "error":
                    raise ConfigError(head + f"Leave out --config to use the checkpoint's own config, or allow the "
                                             f"difference (--allow-config-mismatch) to use {config_file} for {what}")
                logger.warning(head + "Using %s for %s as asked; leave out --config to use the checkpoint's own "
                               "config (the numbers may differ from the training run's).", config_file, what)
    if weights:
        cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    return cfg
