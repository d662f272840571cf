"""Norm layers under autocast keep the input dtype (so AMP runs the backbone in half precision), and the
frozen BN's cached scale/shift give torchvision's numbers and follow every change of its buffers."""
import contextlib
import copy
import warnings

import pytest
import torch
import torchvision

from resdet.backbones import build_backbone
from resdet.backbones.norms import FrozenBatchNorm2d, GroupNorm
from resdet.utils.counting import count_ops

STAGES = ("stem", "res2", "res3", "res4", "res5")


@contextlib.contextmanager
def cuda_autocast_policy_for_group_norm():
    """CPU autocast as CUDA's autocast treats group_norm: computed in float32 (CUDA's fp32 list holds it;
    CPU autocast leaves it in the input dtype, so on a CPU nn.GroupNorm keeps bf16 by itself and a test
    of the dtype could not fail). A kernel for the AutocastCPU key, removed after the block."""
    lib = torch.library.Library("aten", "IMPL")

    def group_norm_fp32(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)):
            return torch.ops.aten.group_norm(input.float(), num_groups, weight, bias, eps, cudnn_enabled)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel": for this block only
        lib.impl("group_norm", group_norm_fp32, "AutocastCPU")
    try:
        yield
    finally:
        lib._destroy()


def test_group_norm_keeps_the_input_dtype_where_autocast_promotes():
    x = torch.randn(2, 8, 5, 5).to(torch.bfloat16)
    with cuda_autocast_policy_for_group_norm(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.nn.GroupNorm(4, 8)(x).dtype == torch.float32  # the policy promotes: torch's own forward
        out = GroupNorm(4, 8)(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.nn.GroupNorm(4, 8)(x.float()), rtol=0, atol=0.02)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the policy is gone after its block
        assert torch.nn.GroupNorm(4, 8)(x).dtype == torch.bfloat16


@pytest.mark.parametrize("name,norm", [("resnet50", "FrozenBN"), ("resnet18", "BN"), ("resnet18", "GN")])
def test_stage_outputs_stay_bf16_under_autocast(name, norm):
    # GN: under CUDA's autocast policy (float32 group_norm), where torch's GroupNorm would turn the stages
    # float32; the norms' contract is the input's dtype out
    with cuda_autocast_policy_for_group_norm() if norm == "GN" else contextlib.nullcontext():
        _check_stage_outputs_stay_bf16(name, norm)


def _check_stage_outputs_stay_bf16(name, norm):
    torch.manual_seed(0)
    bb = build_backbone(name, norm=norm, freeze_at=2 if norm == "FrozenBN" else 0, out_features=STAGES)
    g = torch.Generator().manual_seed(1)
    for m in bb.modules():  # statistics that are not the identity, so the layers really do something
        if isinstance(m, (torchvision.ops.FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
    x = torch.randn(2, 3, 32, 32)  # bf16 convs are slow on a CPU: keep it tiny
    with torch.no_grad():
        if norm == "BN":  # training mode (batch statistics) keeps the dtype too
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert all(v.dtype == torch.bfloat16 for v in bb.train()(x).values())
        bb.eval()
        x = x[:1]
        ref = bb(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = bb(x)
    for stage in STAGES:
        assert out[stage].dtype == torch.bfloat16, (stage, out[stage].dtype)
        # sensible: bf16 keeps ~3 significant digits per layer; the whole stage agrees to a few percent
        err = float((out[stage].float() - ref[stage]).norm() / ref[stage].norm())
        assert err < 0.05, (stage, err)


def test_frozen_bn_equals_torchvision_and_follows_its_buffers():
    g = torch.Generator().manual_seed(0)
    tv, ours = torchvision.ops.FrozenBatchNorm2d(8), FrozenBatchNorm2d(8)
    state = {k: torch.rand(8, generator=g) + 0.5 for k in ("weight", "bias", "running_mean", "running_var")}
    tv.load_state_dict(state)
    ours.load_state_dict(state)
    x = torch.randn(2, 8, 5, 5, generator=g)
    assert torch.equal(ours(x), tv(x))  # the same arithmetic in float32: the same bits
    assert set(ours.state_dict()) == set(tv.state_dict())  # the cache is not state
    with count_ops() as c:
        ours(x)
    assert c.aten_ops == 2  # x * scale + shift, from the cache (torchvision's: 11 ops)
    ours.running_var.mul_(4)  # an in-place change of a buffer invalidates the cache
    tv.running_var.mul_(4)
    assert torch.equal(ours(x), tv(x))
    state["bias"] = state["bias"] + 1
    ours.load_state_dict(state)
    tv.load_state_dict(state)
    assert torch.equal(ours(x), tv(x))
    twin = copy.deepcopy(ours).double()  # new tensors: recomputed in the new dtype
    assert twin(x.double()).dtype == torch.float64
    torch.testing.assert_close(twin(x.double()).float(), tv(x))
    assert ours(x.half()).dtype == torch.float16


def test_registry_frozen_norms_are_ours():
    bb = build_backbone("resnet18", norm="BN", freeze_at=2, out_features=("res5",))
    assert isinstance(bb.bn1, FrozenBatchNorm2d) and isinstance(bb.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(bb.layer2[0].bn1, torch.nn.BatchNorm2d)
