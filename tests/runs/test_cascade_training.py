"""Cascade Mask R-CNN through tools/train_det.py's main (the quick-start recipe with the cascade heads, tiny):
a run resumed from its step-2 checkpoint ends with the weights of the uninterrupted run, bit for bit, and the
metrics name every stage's losses."""
import os
import shutil

import torch

from resdet.engine.checkpoint import load_checkpoint
from resdet.engine.logging import read_metrics
from resdet.runs.train_det import main

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = ["MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True",
        "DATASETS.TEST", "()", "DATASETS.SHAPES.NUM_TRAIN", "6", "DATASETS.SHAPES.MIN_SIDE", "64",
        "DATASETS.SHAPES.MAX_SIDE", "80", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2",
        "DATALOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1"]


def test_cascade_resume_is_exact(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path / "datasets"))
    config = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main([config, *TINY, "OUTPUT_DIR", str(straight)])
    os.makedirs(resumed)  # what a run killed after step 2 leaves: its checkpoint and the pointer to it
    shutil.copy(straight / "model_0000002.pth", resumed / "model_0000002.pth")
    (resumed / "last_checkpoint").write_text("model_0000002.pth")
    main([config, "--resume", *TINY, "OUTPUT_DIR", str(resumed)])
    a = load_checkpoint(str(straight / "model_final.pth"))["model"]
    b = load_checkpoint(str(resumed / "model_final.pth"))["model"]
    assert any(k.startswith("roi_heads.box_heads.2.") for k in a)
    for name, value in a.items():
        assert torch.equal(value, b[name]), name
    last = [r for r in read_metrics(str(straight / "metrics.jsonl")) if "total_loss" in r][-1]
    assert {f"loss_{n}_stage{k}" for n in ("classifier", "box_reg") for k in range(3)} <= set(last)
