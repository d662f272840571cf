"""`tools/benchmark.py --train-step CONFIG`: the training step a config makes, with its data loader, as
`tools/train_det.py` runs it, against a baseline (today's settings by default) on the same photographs
in the same process.

Each variant is the real loop: the model train_det builds (`runs/train_det.build_model`: device,
channels_last, torch.compile), the optimizer, lr schedule and gradient clipping of
`engine.build_training_state`, the training loader of `data/loader.py` with the config's workers, and
`Trainer.run_step`. A step is timed from asking the loader for its batch to the end of the optimizer
step, so a loader that starves the step or takes its cores shows in the time. The variants run in
alternating rounds (ABBA order), each round from a fresh loader at the same position of the same data
stream (both variants see the same images), its first steps untimed; medians over all timed steps. The
models start from the same weights (`--weights`: a checkpoint, e.g. a trained model, whose proposals make
the late-training step: more foreground RoIs for the mask head) and keep training across rounds; where the
baseline's model has other shapes (the recipe's mask head was 128 channels wide, now 64), the baseline
starts from a model of its own (`--baseline-weights`, e.g. the recipe trained with today's settings).

The data: `--data DIR` (annotations/train.json and images/, the layout of
photos.write_photo_detection_dataset) or, by default, photographs of 300-500 px written to a temporary
folder (about the sizes of the street photos of the recipe's README example).

    python tools/benchmark.py --train-step configs/custom_scratch_r18_gn.yaml --device cpu
    python tools/benchmark.py --train-step configs/custom_scratch_r18_gn.yaml --device cpu \\
        --weights /work/models/photos/model_final.pth --steps 6 --rounds 2

`--baseline "KEY VALUE ..."`: the baseline's overrides (default TODAY: the settings the scratch recipe
and the code had before issue 25); `--opts KEY VALUE ...`: overrides for both.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch

from resdet.data.loader import loader_workers
from resdet.engine.trainer import HookBase

__all__ = ["TODAY", "time_train_steps", "format_train_steps", "main_train_step"]

# The scratch recipe's settings before issue 25 (what "today" means for the ratio): torchvision's CPU
# RoIAlign, two loader workers, 256 RoIs sampled per image, a 128-channel mask head, training sizes
# 224-320, the RPN's 2000 / 1000 boxes per level before / after NMS. Other recipes: pass --baseline. The
# baseline's mask head also computes every class's logits through ConvTranspose2d and picks its class
# after (_all_classes_forward: the code before issue 25), unless time_train_steps(today_mask_head=False).
TODAY = ("MODEL.POOLER_CPU_KERNEL torchvision DATALOADER.NUM_WORKERS_ON_CPU -1 DATALOADER.NUM_WORKERS 2 "
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 256 MODEL.ROI_MASK_HEAD.CONV_DIM 128 "
         "INPUT.MIN_SIZE_TRAIN (224,256,288,320) MODEL.RPN.PRE_NMS_TOPK_TRAIN 2000 MODEL.RPN.POST_NMS_TOPK_TRAIN 1000")


class _StepTimer(HookBase):
    """Wall and process CPU seconds of each step (the loader's wait included), and its loss."""

    def __init__(self):
        self.wall: List[float] = []
        self.cpu: List[float] = []
        self.losses: List[float] = []

    def before_step(self):
        self._start = (time.perf_counter(), time.process_time())

    def after_step(self):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])
        self.losses.append(self.trainer.step_metrics["total_loss"])


def _photo_data(root: str, images: int) -> str:
    from .photos import write_photo_detection_dataset

    write_photo_detection_dataset(root, "train", images, min_side=300, max_side=500, seed=0)
    return root


def _config(config: str, data: str, device: str, out: str, opts: Sequence[str], weights: str):
    from resdet.config import load_config

    train_json = os.path.join(data, "annotations", "train.json")
    if not os.path.isfile(train_json):
        raise FileNotFoundError(f"--data {data}: no annotations/train.json (the layout of "
                                f"resdet/benchmarks/photos.write_photo_detection_dataset)")
    with open(train_json, encoding="utf-8") as f:
        classes = len(json.load(f)["categories"])
    base = ["DATASETS.CUSTOM_NAMES", ["bench_train"], "DATASETS.CUSTOM_JSONS", [train_json],
            "DATASETS.CUSTOM_IMAGE_DIRS", [os.path.join(data, "images")], "DATASETS.TRAIN", ("bench_train",),
            "DATASETS.TEST", (), "MODEL.ROI_HEADS.NUM_CLASSES", classes, "MODEL.DEVICE", device,
            "OUTPUT_DIR", out, "SOLVER.MAX_EPOCHS", 0.0, "SOLVER.MAX_ITER", 10 ** 6, "SOLVER.STEPS", (),
            "MODEL.WEIGHTS", weights, "MODEL.BACKBONE.WEIGHTS", ""]
    return load_config(config, base + _pairs(opts))


def _pairs(opts: Sequence[str]) -> List[str]:
    words = [w for o in opts for w in str(o).split()]
    if len(words) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs; got {' '.join(words)!r}")
    return words


def _all_classes_forward(head):
    """The mask head's forward as it ran before issue 25: the module's full path (ConvTranspose2d, the 1x1
    logits of every class), then each RoI's class picked by a gather. Same weights, same numbers."""
    full = type(head).forward.__get__(head)

    def forward(x, classes=None):
        logits = full(x)
        if classes is None:
            return logits
        m = logits.shape[-1]
        return logits.gather(1, classes[:, None, None, None].expand(-1, 1, m, m))

    return forward


class _Variant:
    """One config's model, optimizer and trainer; `round(start, steps)` trains on a fresh loader."""

    def __init__(self, name: str, cfg, device: torch.device, all_classes_mask_head: bool = False):
        from resdet.engine import Trainer, build_training_state
        from resdet.runs.train_det import build_model

        self.name, self.cfg = name, cfg
        torch.manual_seed(cfg.SEED)  # the same initial weights for every variant
        self.model = build_model(cfg, device)
        heads = getattr(self.model, "module", self.model).roi_heads  # (DDP / compile wrap the model)
        if all_classes_mask_head and heads.mask_head is not None:
            heads.mask_head.forward = _all_classes_forward(heads.mask_head)
        self.state = build_training_state(cfg, self.model)
        self.timer = _StepTimer()
        self.loader_cpu: List[float] = []
        self.trainer = Trainer(self.model, self.state.optimizer, [], max_iter=0, scheduler=self.state.scheduler,
                               amp=cfg.SOLVER.AMP, grad_scaler=self.state.scaler,
                               channels_last=cfg.SOLVER.CHANNELS_LAST, clip_grad_norm=cfg.SOLVER.CLIP_GRAD_NORM,
                               device=device, hooks=[self.timer])

    def round(self, start: int, warmup: int, steps: int) -> None:
        from resdet.data.loader import build_detection_train_loader

        loader = build_detection_train_loader(self.cfg, start_iter=start)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = self.trainer
        if warmup:  # untimed: loader start-up, first allocations
            t.data_loader, t.start_iter, t.max_iter = loader, start, start + warmup
            t.train()
            del self.timer.wall[-warmup:], self.timer.cpu[-warmup:], self.timer.losses[-warmup:]
        t.data_loader = loader
        t.start_iter, t.max_iter = start + warmup, start + warmup + steps
        t.train()
        del t._data_iter, t.data_loader, loader  # workers end here; their CPU time is then the children's
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent = (used.ru_utime - children.ru_utime) + (used.ru_stime - children.ru_stime)
        self.loader_cpu.append(max(0.0, spent) / (warmup + steps))


def time_train_steps(config: str, *, baseline: Sequence[str] = (TODAY,), opts: Sequence[str] = (),
                     data: str = "", images: int = 40, device: str = "cpu", steps: int = 6, warmup: int = 2,
                     rounds: int = 2, weights: str = "", baseline_weights: str = "", today_mask_head: bool = True,
                     progress=None) -> List[Dict[str, object]]:
    """Rows {variant, s_per_step, cpu_s_per_step, loader_cpu_s_per_step, last_loss, overrides, ...} for the
    baseline ("today": config + `baseline` overrides) and the config as it is ("new"), both with `opts`;
    the baseline starts from `baseline_weights` where given, else from `weights` as the new one does."""
    if steps < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"steps and rounds must be >= 1 and warmup >= 0; got {steps}, {rounds}, {warmup}")
    starts = (baseline_weights or weights, weights)  # today's, new's
    with tempfile.TemporaryDirectory(prefix="resdet_train_step_") as tmp:
        data = data or _photo_data(os.path.join(tmp, "photos"), images)
        variants = [_Variant("today", _config(config, data, device, os.path.join(tmp, "today"),
                                              list(opts) + list(baseline), starts[0]), torch.device(device),
                             all_classes_mask_head=today_mask_head),
                    _Variant("new", _config(config, data, device, os.path.join(tmp, "new"), opts, starts[1]),
                             torch.device(device))]
        position = 0
        for r in range(rounds):
            for v in (variants if r % 2 == 0 else variants[::-1]):  # ABBA: drift in load hits both alike
                v.round(position, warmup, steps)
                if progress:
                    progress(f"  round {r + 1}/{rounds} {v.name}: {statistics.median(v.timer.wall[-steps:]):.2f} s/step")
            position += warmup + steps
    rows = []
    for v, ov, start in zip(variants, (_pairs(list(opts) + list(baseline)), _pairs(opts)), starts):
        rows.append({"variant": v.name, "config": config, "device": device, "threads": torch.get_num_threads(),
                     "steps": len(v.timer.wall), "s_per_step": statistics.median(v.timer.wall),
                     "cpu_s_per_step": statistics.median(v.timer.cpu),
                     "loader_cpu_s_per_step": statistics.mean(v.loader_cpu),
                     "workers": loader_workers(v.cfg), "last_loss": v.timer.losses[-1],
                     "mask_head": "all classes" if v is variants[0] and today_mask_head else "own class",
                     "overrides": " ".join(map(str, ov)), "weights": start or None})
    return rows


def format_train_steps(rows: List[Dict[str, object]]) -> str:
    today, new = rows[0], rows[1]
    lines = [f"{'variant':<8}{'s/step':>9}{'CPU s/step':>12}{'loader CPU s/step':>19}{'workers':>9}"
             f"{'last loss':>11}  {'mask logits':<12} overrides"]
    for r in rows:
        lines.append(f"{r['variant']:<8}{r['s_per_step']:>9.3f}{r['cpu_s_per_step']:>12.3f}"
                     f"{r['loader_cpu_s_per_step']:>19.3f}{r['workers']:>9}{r['last_loss']:>11.4f}  "
                     f"{r['mask_head']:<12} {r['overrides'] or '-'}")
    lines.append(f"train step {os.path.basename(str(new['config']))}: ratio {today['s_per_step'] / new['s_per_step']:.2f}x "
                 f"(today {today['s_per_step']:.3f} s/step, new {new['s_per_step']:.3f} s/step; medians of "
                 f"{new['steps']} steps each, {new['threads']} threads)")
    # on a machine shared with other jobs the wall time follows their load; the CPU a step costs (the
    # loader's workers included) does much less
    cost = [r["cpu_s_per_step"] + r["loader_cpu_s_per_step"] for r in rows]
    lines.append(f"train step CPU: ratio {cost[0] / cost[1]:.2f}x (today {cost[0]:.3f} CPU s/step, new "
                 f"{cost[1]:.3f}; the process and its loader workers)")
    return "\n".join(lines)


def main_train_step(args) -> int:
    rows = time_train_steps(args.train_step, baseline=[args.baseline], opts=args.opts or (), data=args.data or "",
                            images=args.images, device=args.device, steps=args.steps, warmup=args.warmup,
                            rounds=args.rounds, weights=args.weights, baseline_weights=args.baseline_weights,
                            progress=lambda line: print(line, flush=True))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(f"device: {args.device}, torch {torch.__version__}, {os.cpu_count()} CPUs; ratio = today s/step / new s/step")
    print(format_train_steps(rows))
    return 0
