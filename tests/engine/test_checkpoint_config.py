"""A checkpoint's own config is what evaluation uses; another config is compared with it key by key."""
import logging

import pytest
import torch
from torch import nn

from resdet.config import ConfigError, load_config
from resdet.engine.checkpoint import Checkpointer
from resdet.engine.checkpoint_config import config_differences, config_for_checkpoint, read_checkpoint_config

TRAINED = ["INPUT.MIN_SIZE_TEST", "512", "INPUT.MIN_SIZE_TRAIN", "(480, 512)", "MODEL.ROI_HEADS.NUM_CLASSES", "2",
           "SOLVER.MAX_ITER", "300", "MODEL.DEVICE", "cuda"]


def _checkpoint(tmp_path):
    cfg = load_config(None, TRAINED)
    return Checkpointer(str(tmp_path), nn.Linear(2, 2), config=cfg).save("model_final", iteration=300)


def _yaml(tmp_path, text):
    path = tmp_path / "my.yaml"
    path.write_text(text)
    return str(path)


def test_the_checkpoint_config_is_the_default(tmp_path):
    path = _checkpoint(tmp_path)
    assert read_checkpoint_config(path).INPUT.MIN_SIZE_TEST == 512
    cfg = config_for_checkpoint(path)
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.SOLVER.MAX_ITER) == (512, 2, 300)
    assert cfg.MODEL.WEIGHTS == path and cfg.is_frozen()
    assert config_for_checkpoint(path, overrides=["TEST.IMS_PER_BATCH", "4"]).TEST.IMS_PER_BATCH == 4


def test_a_differing_config_is_refused_naming_every_key(tmp_path, caplog):
    path = _checkpoint(tmp_path)
    # the README's old form: a config file without the training's KEY VALUE overrides
    my = _yaml(tmp_path, "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 2\n    SCORE_THRESH_TEST: 0.3\n")
    with pytest.raises(ConfigError) as e:
        config_for_checkpoint(path, my)
    msg = str(e.value)
    assert "differs from the config checkpoint" in msg and "in 2 keys" in msg
    assert f"INPUT.MIN_SIZE_TEST: checkpoint 512, {my} 800" in msg
    assert f"MODEL.ROI_HEADS.SCORE_THRESH_TEST: checkpoint 0.05, {my} 0.3" in msg
    # where the difference does not reach the outputs: MODEL.DEVICE never, training-only keys in the log
    assert "MODEL.DEVICE" not in msg and "MIN_SIZE_TRAIN" not in msg and "--allow-config-mismatch" in msg
    # allowed: a warning names the same keys, and the file's values are used
    with caplog.at_level(logging.INFO, logger="resdet.engine.checkpoint_config"):
        cfg = config_for_checkpoint(path, my, on_mismatch="warn")
    assert cfg.INPUT.MIN_SIZE_TEST == 800 and cfg.MODEL.WEIGHTS == path
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "INPUT.MIN_SIZE_TEST: checkpoint 512" in warned[0]
    assert "INPUT.MIN_SIZE_TRAIN" in caplog.text  # reported (info), not refused
    # a key set on the command line is a deliberate difference
    cfg = config_for_checkpoint(path, my, ["INPUT.MIN_SIZE_TEST", "640", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"])
    assert cfg.INPUT.MIN_SIZE_TEST == 640


def test_a_checkpoint_without_config_needs_one(tmp_path):
    plain = str(tmp_path / "converted.pth")
    torch.save({"model": nn.Linear(2, 2).state_dict()}, plain)
    with pytest.raises(ConfigError, match="carries no config .* give the config to build its model with"):
        config_for_checkpoint(plain)
    assert config_for_checkpoint(plain, _yaml(tmp_path, "SEED: 3\n")).SEED == 3  # nothing to compare with
    assert config_differences(load_config(None), load_config(None, ["TEST.DETECTIONS_PER_IMAGE", "50"])) == [
        ("TEST.DETECTIONS_PER_IMAGE", 100, 50)]
