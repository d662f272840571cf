"""The recipe configs say what the paper says (configs/cifar10_*.yaml, configs/imagenet_r*.yaml)."""
import glob
import os

import pytest

from resdet.backbones import list_backbones
from resdet.config import load_config

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CIFAR = sorted(glob.glob(os.path.join(REPO, "configs", "cifar10_*.yaml")))
IMAGENET = sorted(glob.glob(os.path.join(REPO, "configs", "imagenet_r*.yaml")))


def test_every_recipe_is_there():
    names = {os.path.basename(p) for p in CIFAR + IMAGENET}
    want = {f"cifar10_resnet{n}.yaml" for n in (20, 32, 44, 56, 110, 1202)}
    want |= {f"cifar10_plain{n}.yaml" for n in (20, 32, 44, 56, 110)}
    want |= {f"imagenet_r{n}.yaml" for n in (50, 101, 152)}
    assert names == want


@pytest.mark.parametrize("path", CIFAR, ids=os.path.basename)
def test_cifar_recipe(path):
    cfg = load_config(path)
    depth = int(os.path.basename(path).split("resnet" if "resnet" in path else "plain")[1].split(".")[0])
    assert cfg.MODEL.BACKBONE.NAME in list_backbones() and cfg.MODEL.BACKBONE.NAME.endswith(str(depth))
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MOMENTUM, s.WEIGHT_DECAY) == (128, 0.1, 0.9, 1e-4)
    assert (tuple(s.STEPS), s.MAX_ITER, s.GAMMA) == ((32000, 48000), 64000, 0.1)
    i = cfg.CLS.INPUT
    assert (i.TRAIN_AUG, i.PAD, i.CROP_SIZE, i.HFLIP, i.TEST_SHORT_SIDE) == ("pad_crop_flip", 4, 32, True, 0)
    if depth >= 110:   # 0.01 for the first 400 iterations, then 0.1
        assert (s.WARMUP_METHOD, s.WARMUP_FACTOR, s.WARMUP_ITERS) == ("constant", 0.1, 400)
    else:
        assert s.WARMUP_ITERS == 0
    assert cfg.MODEL.CLASSIFIER.NUM_CLASSES == 10 and cfg.CLS.DATA.HOLDOUT == 0


@pytest.mark.parametrize("path", IMAGENET, ids=os.path.basename)
def test_imagenet_recipe(path):
    cfg = load_config(path)
    assert cfg.MODEL.BACKBONE.NAME == "resnet" + os.path.basename(path)[len("imagenet_r"):-len(".yaml")]
    assert (cfg.MODEL.BACKBONE.VARIANT, cfg.MODEL.BACKBONE.SHORTCUT) == ("v1", "B")
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.REFERENCE_WORLD_BATCH, s.MOMENTUM, s.WEIGHT_DECAY) == (256, 0.1, 256, 0.9, 1e-4)
    assert tuple(s.STEPS) == (150150, 300300) and s.MAX_ITER == 450450   # 90 epochs, / 10 at 30 and 60
    i = cfg.CLS.INPUT
    assert (i.TRAIN_AUG, tuple(i.TRAIN_SHORT_SIDE), i.CROP_SIZE, i.COLOR_AUG) == ("scale", (256, 480), 224, "pca")
    assert i.TEST_SHORT_SIDE == 256 and cfg.MODEL.CLASSIFIER.NUM_CLASSES == 1000
