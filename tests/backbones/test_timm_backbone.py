import pytest
import torch

from resdet.backbones import build_backbone


def test_timm_features_follow_our_contract():
    bb = build_backbone("timm/resnet18", out_features=("res2", "res3", "res4", "res5"))
    ours = build_backbone("resnet18", out_features=("res2", "res3", "res4", "res5"))
    assert bb.output_shape() == ours.output_shape()
    feats = bb(torch.randn(1, 3, 64, 96))
    for name, spec in bb.output_shape().items():
        assert feats[name].shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)


def test_timm_other_architecture_and_freezing():
    bb = build_backbone("timm/resnet18d", out_features=("res3", "res5"), norm="FrozenBN", freeze_at=2)
    assert list(bb.output_shape()) == ["res3", "res5"]
    trainable = {n.split(".")[1] for n, p in bb.named_parameters() if p.requires_grad}
    frozen = {n.split(".")[1] for n, p in bb.named_parameters() if not p.requires_grad}
    assert "layer1" in frozen and "layer2" in trainable and "layer1" not in trainable
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.modules())


def test_timm_classifier_and_errors():
    clf = build_backbone("timm/resnet18", num_classes=7)
    assert clf(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(KeyError, match="no_such_net"):
        build_backbone("timm/no_such_net")
    with pytest.raises(ValueError, match="res9"):
        build_backbone("timm/resnet18", out_features=("res9",))
