import pytest
import torch
import torchvision

from resdet.backbones import build_backbone, list_backbones
from resdet.backbones.resnet import ZeroPadShortcut
from resdet.utils.model_stats import count_flops, count_parameters

# one intra-op thread (tests/conftest.py): two spin-waiting threads on two shared cores cost CPU for nothing
pytestmark = pytest.mark.usefixtures("one_thread")

# The paper's Table 6 (CIFAR-10, option A) and torchvision's ImageNet models with a 1000-class head.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
IMAGENET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth,expected", sorted(CIFAR_PARAMS.items()))
def test_cifar_resnet_parameters_match_paper(depth, expected):
    assert count_parameters(build_backbone(f"cifar_resnet{depth}")) == expected


@pytest.mark.parametrize("depth,expected", sorted(IMAGENET_PARAMS.items()))
def test_imagenet_resnet_parameters_match_torchvision(depth, expected):
    ours = count_parameters(build_backbone(f"resnet{depth}"))
    theirs = count_parameters(getattr(torchvision.models, f"resnet{depth}")())
    assert ours == theirs == expected


@pytest.mark.parametrize("name,variant,gflops", [
    ("resnet50", "v1", 3.88), ("resnet101", "v1", 7.60), ("resnet152", "v1", 11.33),
    ("resnet50", "v1.5", 4.11), ("resnet101", "v1.5", 7.83), ("resnet152", "v1.5", 11.56),
    ("resnet18", "v1.5", 1.82), ("resnet34", "v1.5", 3.67),
])
def test_flops_match_paper_and_torchvision(name, variant, gflops):
    flops = count_flops(build_backbone(name, variant=variant), (224, 224))
    assert round(flops / 1e9, 2) == gflops


def test_v1_and_v15_differ_only_in_stride_position():
    v1 = build_backbone("resnet50", variant="v1")
    v15 = build_backbone("resnet50", variant="v1.5")
    assert count_parameters(v1) == count_parameters(v15)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)


def test_shortcut_options_follow_table3():
    # ResNet-34: A has no projection parameters, B adds projections where the shape changes (3 stages),
    # C adds one on every block. The paper: A/B/C differ only by these shortcut parameters.
    a, b, c = (build_backbone("resnet34", shortcut=s) for s in "ABC")
    assert count_parameters(b) > count_parameters(a)
    assert count_parameters(c) > count_parameters(b)
    n_proj_b = sum(1 for blk in b.modules() if hasattr(blk, "downsample") and isinstance(blk.downsample, torch.nn.Sequential))
    n_proj_c = sum(1 for blk in c.modules() if hasattr(blk, "downsample") and isinstance(blk.downsample, torch.nn.Sequential))
    assert n_proj_b == 3 and n_proj_c == 16
    assert isinstance(a.layer2[0].downsample, ZeroPadShortcut) and a.layer1[0].downsample is None
    x = torch.randn(1, 3, 64, 64)
    for m in (a, b, c):
        assert m.eval()(x).shape == (1, 1000)


def test_zero_pad_shortcut_subsamples_and_pads():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = ZeroPadShortcut(2, 5, 2)(x)
    assert y.shape == (1, 5, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2]) and not y[:, 2:].any()


def test_plain_nets_have_no_shortcuts_and_same_layers():
    plain, res = build_backbone("cifar_plain20"), build_backbone("cifar_resnet20")
    assert all(getattr(m, "downsample", None) is None for m in plain.modules())
    assert count_parameters(plain) == count_parameters(res)  # option A adds no parameters
    plain34, res34 = build_backbone("plain34"), build_backbone("resnet34", shortcut="A")
    assert count_parameters(plain34) == count_parameters(res34)
    # the residual path changes the function: same weights, different outputs
    plain.load_state_dict(res.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(plain.eval()(x), res.eval()(x))


def test_multiscale_outputs_have_strides_and_channels():
    bb = build_backbone("resnet50", out_features=("res2", "res3", "res4", "res5"))
    x = torch.randn(1, 3, 96, 128)
    feats = bb(x)
    for name, spec in bb.output_shape().items():
        assert feats[name].shape == (1, spec.channels, 96 // spec.stride, 128 // spec.stride)
    assert [s.stride for s in bb.output_shape().values()] == [4, 8, 16, 32]
    assert [s.channels for s in bb.output_shape().values()] == [256, 512, 1024, 2048]
    assert bb.size_divisibility == 32
    basic = build_backbone("resnet18", out_features=("res4",))
    assert not hasattr(basic, "layer4")  # stages after the last requested one are not built
    assert basic(x)["res4"].shape == (1, 256, 6, 8)


@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "SyncBN", "GN"])
def test_norms_build_and_run(norm):
    bb = build_backbone("resnet18", norm=norm, out_features=("res5",))
    expected = {"BN": torch.nn.BatchNorm2d, "FrozenBN": torchvision.ops.FrozenBatchNorm2d,
                "SyncBN": torch.nn.SyncBatchNorm, "GN": torch.nn.GroupNorm}[norm]
    assert isinstance(bb.layer3[0].bn1, expected)
    out = bb.train()(torch.randn(2, 3, 64, 64))["res5"]
    assert out.shape == (2, 512, 2, 2) and torch.isfinite(out).all()


def test_freeze_at_stops_gradients_and_freezes_norms():
    bb = build_backbone("resnet50", out_features=("res2", "res3", "res4", "res5"), freeze_at=2)
    out = bb(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert all(not p.requires_grad for p in bb.conv1.parameters())
    assert all(not p.requires_grad for p in bb.layer1.parameters())
    assert all(p.grad is not None for p in bb.layer2.parameters())
    assert isinstance(bb.layer1[0].bn1, torchvision.ops.FrozenBatchNorm2d)
    assert isinstance(bb.layer2[0].bn1, torch.nn.BatchNorm2d)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'D'"):
        build_backbone("resnet50", shortcut="D")
    with pytest.raises(ValueError, match="v2"):
        build_backbone("resnet50", variant="v2")
    with pytest.raises(ValueError, match="res6"):
        build_backbone("resnet50", out_features=("res6",))
    with pytest.raises(KeyError, match="resnet50"):
        build_backbone("resnet5O")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        build_backbone("resnet18")(torch.randn(3, 32, 32))


def test_registry_lists_the_paper_families():
    names = set(list_backbones())
    assert {f"resnet{d}" for d in (18, 34, 50, 101, 152)} <= names
    assert {f"plain{d}" for d in (18, 34, 50, 101, 152)} <= names
    assert {f"cifar_resnet{d}" for d in CIFAR_PARAMS} <= names
    assert {f"cifar_plain{d}" for d in (20, 32, 44, 56, 110)} <= names
