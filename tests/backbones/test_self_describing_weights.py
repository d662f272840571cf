"""Backbone weights that describe themselves, and MODEL.BACKBONE.VARIANT "auto" following them."""
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from resdet.backbones import build_backbone
from resdet.backbones.registry import (backbone_from_config, describe_resnet_state_dict, resolve_backbone_config,
                                       resolve_backbone_options)
from resdet.backbones.weights import read_weights_file, save_backbone_weights
from resdet.config import load_config

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COCO_R50 = os.path.join(REPO, "configs", "coco_r50.yaml")


def _cfg(*overrides):
    return load_config(COCO_R50, ["MODEL.DEVICE", "cpu", *overrides])


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_torchvision_resnets_are_recognised_from_their_keys(depth):
    sd = getattr(torchvision.models, f"resnet{depth}")().state_dict()
    assert describe_resnet_state_dict(sd) == {"name": f"resnet{depth}", "shortcut": "B"}


def test_shortcut_options_a_and_c_are_read_from_the_blocks():
    assert describe_resnet_state_dict(build_backbone("resnet34", shortcut="A").state_dict())["shortcut"] == "A"
    assert describe_resnet_state_dict(build_backbone("resnet50", shortcut="C").state_dict())["shortcut"] == "C"
    with pytest.raises(ValueError, match="not one of the paper's ImageNet ResNets"):
        describe_resnet_state_dict(build_backbone("cifar_resnet20").state_dict())


def test_converted_torchvision_classifier_describes_itself_and_builds_v15(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    src, dst = tmp_path / "resnet50-tv.pth", tmp_path / "imagenet_r50" / "backbone_final.pth"
    torch.save(tv.state_dict(), src)
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_weights.py"), str(src), str(dst),
                        "--backbone"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "backbone resnet50, variant v1.5, shortcut B" in r.stdout
    meta = read_weights_file(str(dst))["meta"]
    assert {k: meta[k] for k in ("name", "variant", "shortcut", "norm")} == {
        "name": "resnet50", "variant": "v1.5", "shortcut": "B", "norm": "BN"}
    # the COCO config as it stands (VARIANT auto), pointed at the file: torchvision's backbone, same features
    cfg = _cfg("MODEL.BACKBONE.WEIGHTS", str(dst))
    assert cfg.MODEL.BACKBONE.VARIANT == "auto"
    bb = backbone_from_config(cfg).eval()
    assert bb.variant == "v1.5"
    body = torchvision.models._utils.IntermediateLayerGetter(tv, {"layer4": "res5"})
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(bb(x)["res5"], body(x)["res5"], rtol=1e-4, atol=1e-4)
    # an explicit variant that disagrees is an error naming the key and the value to set
    with pytest.raises(ValueError, match=r"MODEL\.BACKBONE\.VARIANT is 'v1'.*set MODEL\.BACKBONE\.VARIANT v1\.5"):
        backbone_from_config(_cfg("MODEL.BACKBONE.WEIGHTS", str(dst), "MODEL.BACKBONE.VARIANT", "v1"))


def test_a_v1_export_builds_the_papers_variant_and_a_wrong_name_is_named(tmp_path):
    v1 = build_backbone("resnet50", variant="v1", num_classes=1000)
    path = save_backbone_weights(v1.state_dict(), str(tmp_path / "bb.pth"),
                                 {"name": "resnet50", "variant": "v1", "shortcut": "B", "norm": "BN"})
    cfg, note = resolve_backbone_config(_cfg("MODEL.BACKBONE.WEIGHTS", path))
    assert (cfg.MODEL.BACKBONE.VARIANT, cfg.MODEL.BACKBONE.SHORTCUT) == ("v1", "B")
    assert "auto -> v1" in note and path in note
    bb = backbone_from_config(cfg)
    assert bb.variant == "v1" and bb.layer2[0].conv1.stride == (2, 2)  # the stride in the first 1x1
    for k, v in bb.state_dict().items():
        assert torch.equal(v, v1.state_dict()[k]), k
    with pytest.raises(ValueError, match=r"MODEL\.BACKBONE\.VARIANT is 'v1\.5'.*VARIANT v1 "):
        backbone_from_config(_cfg("MODEL.BACKBONE.WEIGHTS", path, "MODEL.BACKBONE.VARIANT", "v1.5"))
    with pytest.raises(ValueError, match=r"'resnet50' backbone \(name\), but MODEL\.BACKBONE\.NAME is 'resnet101'"):
        backbone_from_config(_cfg("MODEL.BACKBONE.WEIGHTS", path, "MODEL.BACKBONE.NAME", "resnet101"))


def test_missing_weights_file_says_both_ways_unless_model_weights_replace_them(tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", "coco_r101.yaml"))
    assert cfg.MODEL.BACKBONE.WEIGHTS == "output/imagenet_r101/backbone_final.pth"
    missing = str(tmp_path / "output" / "imagenet_r101" / "backbone_final.pth")
    cfg = load_config(os.path.join(REPO, "configs", "coco_r101.yaml"), ["MODEL.BACKBONE.WEIGHTS", missing])
    with pytest.raises(FileNotFoundError) as e:
        backbone_from_config(cfg)
    msg = str(e.value)
    assert missing in msg and "python tools/train_cls.py configs/imagenet_r101.yaml" in msg
    assert "python tools/convert_weights.py resnet101-63fe2227.pth" in msg and "--backbone" in msg
    # a whole-model checkpoint replaces the backbone's weights: the file is not needed, and VARIANT auto
    # follows the config saved in that checkpoint
    ckpt = tmp_path / "model_final.pth"
    saved = load_config(os.path.join(REPO, "configs", "coco_r101.yaml"), ["MODEL.BACKBONE.VARIANT", "v1"])
    torch.save({"model": {}, "config": saved.dump()}, ckpt)
    cfg = load_config(os.path.join(REPO, "configs", "coco_r101.yaml"),
                      ["MODEL.BACKBONE.WEIGHTS", missing, "MODEL.WEIGHTS", str(ckpt)])
    assert resolve_backbone_options(cfg)[0] == "v1"
    assert backbone_from_config(cfg).variant == "v1"


def test_no_weights_at_all_builds_v15_and_explicit_values_win():
    assert resolve_backbone_options(load_config(None))[:2] == ("v1.5", "")
    cfg = load_config(os.path.join(REPO, "configs", "imagenet_r50.yaml"))  # the paper's recipe says v1
    assert resolve_backbone_options(cfg)[:2] == ("v1", "B")
