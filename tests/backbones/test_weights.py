import pytest
import timm
import torch
import torchvision

from resdet.backbones import build_backbone, load_backbone_weights


def _randomize_norm_stats(model):
    # Fresh BN layers have mean 0 / var 1, which would hide a mix-up of running statistics.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_weights_give_equal_logits(depth):
    tv = _randomize_norm_stats(getattr(torchvision.models, f"resnet{depth}")(weights=None)).eval()
    ours = build_backbone(f"resnet{depth}", variant="v1.5").eval()
    load_backbone_weights(ours, tv.state_dict())
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=1e-5)


def test_timm_resnet_weights_give_equal_logits():
    tm = _randomize_norm_stats(timm.create_model("resnet50", pretrained=False)).eval()
    ours = build_backbone("resnet50").eval()
    load_backbone_weights(ours, tm.state_dict())
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=0, atol=1e-5)


def test_architecture_mismatch_is_an_error_naming_keys():
    tm = timm.create_model("resnet50d", pretrained=False)  # deep stem: not our architecture
    with pytest.raises(ValueError, match="conv1"):
        load_backbone_weights(build_backbone("resnet50"), tm.state_dict())
    with pytest.raises(ValueError, match="missing: layer1.2.conv1.weight"):
        load_backbone_weights(build_backbone("resnet34"), torchvision.models.resnet18().state_dict())
    with pytest.raises(ValueError, match=r"shape mismatch: layer1.0.conv1.weight: \(64, 64, 3, 3\)"):
        load_backbone_weights(build_backbone("resnet50"), torchvision.models.resnet18().state_dict())


def test_classifier_weights_load_into_feature_backbone_and_detection_layouts():
    tv = _randomize_norm_stats(torchvision.models.resnet50()).eval()
    bb = build_backbone("resnet50", out_features=("res4",), norm="FrozenBN").eval()
    load_backbone_weights(bb, tv.state_dict())  # drops fc and layer4, which bb does not have
    body = torchvision.models._utils.IntermediateLayerGetter(tv, {"layer3": "res4"})
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ours, theirs = bb(x)["res4"], body(x)["res4"]
    # FrozenBN folds the statistics into one scale and shift, so rounding differs from BatchNorm's:
    # compare relative to the activations' magnitude (hundreds after 3 random stages).
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * theirs.abs().max().item())
    # a torchvision detection checkpoint keeps the backbone under backbone.body.
    det_sd = {f"backbone.body.{k}": v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    det_sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(91, 1024)
    bb2 = build_backbone("resnet50", out_features=("res4",), norm="FrozenBN").eval()
    load_backbone_weights(bb2, {"model": det_sd})
    with torch.no_grad():
        torch.testing.assert_close(bb2(x)["res4"], bb(x)["res4"], rtol=0, atol=0)


def test_own_checkpoint_round_trips(tmp_path):
    a = _randomize_norm_stats(build_backbone("cifar_resnet20")).eval()
    path = tmp_path / "backbone.pth"
    torch.save({"model": a.state_dict(), "meta": {"name": "cifar_resnet20", "variant": "v1.5"}}, path)
    b = build_backbone("cifar_resnet20").eval()
    load_backbone_weights(b, str(path), expected_name="cifar_resnet20", expected_variant="v1.5")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="cifar_resnet20"):
        load_backbone_weights(b, str(path), expected_name="cifar_resnet56")


def test_missing_and_corrupt_files_are_named(tmp_path):
    bb = build_backbone("resnet18")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(bb, str(tmp_path / "nope.pth"))
    bad = tmp_path / "truncated.pth"
    torch.save(bb.state_dict(), bad)
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pth"):
        load_backbone_weights(bb, str(bad))
