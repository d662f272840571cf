import os

import pytest
import torch
from torch import nn

from resdet.engine.checkpoint import CheckpointError, Checkpointer, atomic_save, load_checkpoint
from resdet.engine.schedules import WarmupMultiStepLR


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_atomic_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    atomic_save({"w": torch.ones(3)}, str(path))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        # the tensor is written first, then pickling fails part-way through
        atomic_save({"w": torch.zeros(1000), "bad": _Unpicklable()}, str(path))
    assert path.read_bytes() == before  # the old checkpoint is untouched
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pth"]  # and no temporary file is left behind
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"bad": _Unpicklable()}, str(tmp_path / "new.pth"))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pth"]


def test_truncated_or_missing_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "model_0000010.pth"
    atomic_save({"model": nn.Linear(20, 20).state_dict()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model_0000010\.pth.*truncated, corrupt"):
        load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match="not found: '.*nowhere.pth'"):
        load_checkpoint(str(tmp_path / "nowhere.pth"))


def _objects():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = WarmupMultiStepLR(opt, [3], warmup_iters=2)
    return model, opt, sched


def _train(model, opt, sched, steps):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 4)).square().mean().backward()
        opt.step()
        sched.step()


def test_save_load_restores_everything(tmp_path):
    model, opt, sched = _objects()
    _train(model, opt, sched, 4)
    ck = Checkpointer(str(tmp_path), model, opt, sched, config="SEED: 3\n")
    path = ck.save("model_0000004", iteration=4, sampler={"position": 40})
    assert ck.latest() == path
    raw = load_checkpoint(path)
    assert raw["config"] == "SEED: 3\n" and raw["iteration"] == 4 and len(raw["rng"]) == 1

    model2, opt2, sched2 = _objects()
    rest = Checkpointer(str(tmp_path), model2, opt2, sched2).resume_or_load("", resume=True)
    assert rest["iteration"] == 4 and rest["sampler"] == {"position": 40} and "python" in rest["rng"]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.last_epoch == sched.last_epoch and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    torch.manual_seed(1)
    _train(model, opt, sched, 2)
    torch.manual_seed(1)
    _train(model2, opt2, sched2, 2)  # momentum buffers restored: identical continuation
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_keeps_only_the_newest_k(tmp_path):
    model, opt, sched = _objects()
    ck = Checkpointer(str(tmp_path), model, opt, sched, max_keep=2)
    for it in (10, 20, 30, 40):
        ck.save(f"model_{it:07d}", iteration=it)
    ck.save("model_final", iteration=50)
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth"))
    assert files == ["model_0000030.pth", "model_0000040.pth", "model_final.pth"]
    assert ck.latest().endswith("model_final.pth")


def test_resume_without_checkpoint_loads_weights_only(tmp_path):
    src, _, _ = _objects()
    weights = tmp_path / "weights.pth"
    torch.save(src.state_dict(), weights)  # a plain state dict (e.g. converted weights)
    model, opt, sched = _objects()
    out = Checkpointer(str(tmp_path / "run"), model, opt, sched).resume_or_load(str(weights), resume=True)
    assert out == {}
    assert torch.equal(model[0].weight, src[0].weight)


def test_mismatched_model_names_file_and_keys(tmp_path):
    model, opt, sched = _objects()
    path = Checkpointer(str(tmp_path), model, opt, sched).save("model_0000001", iteration=1)
    other = nn.Sequential(nn.Linear(4, 8))
    with pytest.raises(CheckpointError, match=r"model_0000001\.pth' does not fit Sequential: missing keys \[\], "
                                              r"unexpected keys \['1.weight'"):
        Checkpointer(str(tmp_path), other).load(path)
    # resume expects the optimizer state to be there
    torch.save({"model": model.state_dict(), "iteration": 1}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="bare.pth' has no 'optimizer' state"):
        Checkpointer(str(tmp_path), model, opt).load(str(tmp_path / "bare.pth"))


def test_dangling_pointer_is_an_error(tmp_path):
    model, opt, sched = _objects()
    ck = Checkpointer(str(tmp_path), model)
    path = ck.save("model_0000001", iteration=1)
    os.remove(path)
    with pytest.raises(CheckpointError, match="last_checkpoint' names 'model_0000001.pth', which does not exist"):
        ck.latest()


def test_shape_mismatch_names_the_file(tmp_path):
    model, _, _ = _objects()
    path = Checkpointer(str(tmp_path), model).save("model_0000001", iteration=1)
    wider = nn.Sequential(nn.Linear(4, 9), nn.BatchNorm1d(9), nn.Linear(9, 2))
    with pytest.raises(CheckpointError, match=r"(?s)model_0000001\.pth' does not fit Sequential: .*size mismatch for 0.weight"):
        Checkpointer(str(tmp_path), wider).load_model(path)
