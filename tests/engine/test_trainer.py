import glob
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from resdet.engine import HookBase, MetricWriter, Trainer, load_checkpoint, read_metrics
from resdet.engine.hooks import EvalHook, MetricsLogger

from .tiny_run import dataset, loss_fn, make_cfg, run

LOSS_KEYS = ("loss_cls", "total_loss", "lr")


def _losses(output_dir):
    return [{k: r[k] for k in LOSS_KEYS} | {"iteration": r["iteration"]}
            for r in read_metrics(os.path.join(output_dir, "metrics.jsonl")) if "loss_cls" in r]


def test_resume_after_kill_is_exact(tmp_path):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight, _, _ = run(make_cfg(straight_dir))

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(resumed_dir), kill_at=6)  # last checkpoint at 4; steps 4 and 5 are lost
    ckpt = load_checkpoint(str(resumed_dir / "model_0000004.pth"))
    assert ckpt["iteration"] == 4 and ckpt["sampler"]["position"] == 4 * 8
    assert "SEED: 0" in ckpt["config"]
    # resume in a new process, as after a real crash: nothing survives but the files
    script = ("from tests.engine.tiny_run import make_cfg, run; import sys; "
              "_, trainer, state = run(make_cfg(sys.argv[1]), resume=True); "
              "assert (state.start_iter, trainer.iter) == (4, 12), (state.start_iter, trainer.iter)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script, str(resumed_dir)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Resumed from" in (resumed_dir / "log.txt").read_text()
    resumed = load_checkpoint(str(resumed_dir / "model_final.pth"))["model"]

    for name, a in straight.state_dict().items():
        assert torch.equal(a, resumed[name]), name
    # metrics.jsonl reads like the uninterrupted run's: each iteration once, same losses and lr
    assert _losses(resumed_dir) == _losses(straight_dir)
    assert [r["iteration"] for r in _losses(straight_dir)] == list(range(1, 13))
    assert glob.glob(str(straight_dir / "events.out.tfevents.*"))
    assert sorted(f for f in os.listdir(straight_dir) if f.endswith(".pth")) == [
        "model_0000004.pth", "model_0000008.pth", "model_final.pth"]


def test_loss_falls_and_lr_follows_schedule(tmp_path):
    run(make_cfg(tmp_path, MAX_ITER=60, STEPS=(40,), CHECKPOINT_PERIOD=0), dropout=0.0)
    recs = _losses(tmp_path)
    first = sum(r["loss_cls"] for r in recs[:5]) / 5
    last = sum(r["loss_cls"] for r in recs[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    lrs = {r["iteration"]: r["lr"] for r in recs}  # the lr used by step iteration-1
    assert lrs[1] == pytest.approx(0.01) and lrs[4] == pytest.approx(0.1) and lrs[41] == pytest.approx(0.01)
    assert os.listdir(tmp_path).count("model_final.pth") == 1


def test_eval_hook_results_go_to_metrics(tmp_path):
    calls = []

    def eval_fn():
        calls.append(1)
        return {"top1": 0.5 + len(calls), "bbox": {"AP": 12.5, "per_class": [1, 2]}}

    cfg = make_cfg(tmp_path, MAX_ITER=10, CHECKPOINT_PERIOD=0)
    cfg.TEST.EVAL_PERIOD = 4
    _, trainer, _ = run(cfg, eval_fn=eval_fn)
    evals = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "top1" in r]
    assert [(r["iteration"], r["top1"], r["bbox/AP"]) for r in evals] == [(4, 1.5, 12.5), (8, 2.5, 12.5), (10, 3.5, 12.5)]
    assert all("bbox/per_class" not in r for r in evals)
    assert trainer.model.training  # back in train mode after evaluation
    png = (tmp_path / "training_curves.png").read_bytes()  # losses, lr and the evaluation results
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_evaluation_leaves_training_unchanged(tmp_path):
    # An evaluation that draws from every RNG, as a real one does (a DataLoader pass draws its base seed
    # from torch's generator); TinyNet's dropout and the loss draw from torch's generator in training.
    def eval_fn():
        for _ in torch.utils.data.DataLoader(dataset(), batch_size=8):
            pass
        torch.rand(3), np.random.rand(), random.random()
        return {"top1": 1.0}

    plain, _, _ = run(make_cfg(tmp_path / "plain", CHECKPOINT_PERIOD=0))
    cfg = make_cfg(tmp_path / "evaluated", CHECKPOINT_PERIOD=0)
    cfg.TEST.EVAL_PERIOD = 2
    evaluated, trainer, _ = run(cfg, eval_fn=eval_fn)
    assert trainer.iter == 12
    assert [r["iteration"] for r in read_metrics(str(tmp_path / "evaluated" / "metrics.jsonl")) if "top1" in r] == \
        [2, 4, 6, 8, 10, 12]
    assert _losses(tmp_path / "evaluated") == _losses(tmp_path / "plain")
    for name, a in plain.state_dict().items():
        assert torch.equal(a, evaluated.state_dict()[name]), name


def _plain_trainer(loss_fn, **kw):
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=kw.pop("lr", 0.1))
    data = dataset()
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    return model, opt, Trainer(model, opt, loader, loss_fn=loss_fn, **kw)


def test_non_finite_loss_names_iteration_and_loss():
    def bad_loss(model, batch):
        out = loss_fn(model, batch)
        out["loss_box"] = out["loss_cls"] * (float("nan") if trainer.iter == 3 else 1.0)
        return out

    class BrokenAfterTrain(HookBase):
        def after_train(self):
            raise OSError("cannot draw")

    _, _, trainer = _plain_trainer(bad_loss, max_iter=8, hooks=[BrokenAfterTrain()])
    # the error that stopped training is the one reported, not the hook's during clean-up
    with pytest.raises(FloatingPointError, match=r"non-finite at iteration 3: loss_box=nan"):
        trainer.train()


@pytest.mark.parametrize("amp", ["", "fp16"])
def test_grad_clipping_bounds_the_update(amp):
    def huge(model, batch):
        return {"loss": 100 * loss_fn(model, batch)["loss_cls"]}

    # fp16: the gradients are unscaled before clipping (clipping the 8x scaled ones would give a step of 0.01 / 8)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0) if amp else None
    model, _, trainer = _plain_trainer(huge, max_iter=1, clip_grad_norm=0.01, lr=1.0, amp=amp, grad_scaler=scaler)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer.train()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert trainer.step_metrics["grad_norm"] > 1.0  # the norm before clipping
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)  # plain SGD, lr 1: step = clipped grad


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_runs_on_cpu(amp, tmp_path):
    _, opt, trainer = _plain_trainer(loss_fn, max_iter=6, amp=amp, hooks=[MetricsLogger(2)],
                                     writer=MetricWriter(str(tmp_path)))
    trainer.train()
    recs = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["iteration"] for r in recs] == [2, 4, 6]
    assert all(math.isfinite(r["loss_cls"]) for r in recs)
    assert (trainer.grad_scaler is not None) == (amp == "fp16")


def test_trainer_input_checks():
    with pytest.raises(ValueError, match="unknown mode 'fp8'"):
        _plain_trainer(loss_fn, max_iter=1, amp="fp8")
    _, _, trainer = _plain_trainer(lambda m, b: [1.0], max_iter=1)
    with pytest.raises(TypeError, match="must return a non-empty dict"):
        trainer.train()
    with pytest.raises(ValueError, match="TEST.EVAL_PERIOD must be >= 0"):
        EvalHook(-1, dict)


def test_finite_loader_running_out_is_a_clear_error():
    _, _, trainer = _plain_trainer(loss_fn, max_iter=20)  # 40 samples / batch 4 = 10 batches
    with pytest.raises(RuntimeError, match="data loader ran out at iteration 10 \\(max_iter=20\\)"):
        trainer.train()
