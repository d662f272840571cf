"""train_cls with SOLVER.STEP_MODE cuda_graph (on the CPU: the captured step's code, uncaptured) gives the
eager run's losses, errors and weights: the runner's data, loss, evaluation and checkpoints are wired to
the static step (its arithmetic against eager is tested in tests/engine/test_static_step.py).

The static step's update rounds in a different order than torch.optim.SGD's fused alpha add (last bit).
ResNet-20 on 48 images at batch 8 amplifies that quickly: with the recipe's lr 0.02 the losses drift
apart by percent after 5 steps (measured). A small lr and a scaled input (PIXEL_STD 60) keep the two runs
within 4e-5 over 8 steps (measured), so that a wiring fault (lr, BN, mean image, data) still shows."""
import json
import os

import pytest
import torch

from resdet.engine.logging import read_metrics
from resdet.runs.train_cls import train_classifier
from tests.classification.helpers import make_image_tree

from .test_train_cls import cfg_for


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cuda_graph_step_mode_trains_like_eager(tmp_path):
    tree = make_image_tree(tmp_path / "data", {"train": 16, "test": 6}, num_classes=3)
    short = {"SOLVER.MAX_ITER": 8, "SOLVER.STEPS": "(6,)", "SOLVER.CHECKPOINT_PERIOD": 4, "TEST.EVAL_PERIOD": 4,
             "LOG_PERIOD": 2, "SOLVER.BASE_LR": 0.002, "MODEL.PIXEL_STD": "[60.0, 60.0, 60.0]"}
    results = {}
    for mode in ("eager", "cuda_graph"):
        out = str(tmp_path / mode)
        results[mode] = train_classifier(cfg_for(tree, out, **short, **{"SOLVER.STEP_MODE": mode}))
    assert results["eager"].keys() == results["cuda_graph"].keys()
    for k, v in results["eager"].items():
        assert results["cuda_graph"][k] == pytest.approx(v, abs=100 / 18 + 1e-6), k   # at most one image
    logs = {m: [r for r in read_metrics(os.path.join(str(tmp_path / m), "metrics.jsonl")) if "loss_cls" in r]
            for m in results}
    assert [r["iteration"] for r in logs["cuda_graph"]] == [r["iteration"] for r in logs["eager"]] == [2, 4, 6, 8]
    for a, b in zip(logs["cuda_graph"], logs["eager"]):
        assert a["loss_cls"] == pytest.approx(b["loss_cls"], rel=2e-4) and a["lr"] == pytest.approx(b["lr"])
    wa = torch.load(str(tmp_path / "eager" / "model_final.pth"), weights_only=True)["model"]
    wb = torch.load(str(tmp_path / "cuda_graph" / "model_final.pth"), weights_only=True)["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-4, msg=k)
    assert json.load(open(tmp_path / "cuda_graph" / "final_results.json")) == results["cuda_graph"]


def test_mixup_with_a_static_step_is_refused(tmp_path):
    with pytest.raises(ValueError, match="MIXUP_ALPHA"):
        train_classifier(cfg_for(str(tmp_path), str(tmp_path / "out"),
                                 **{"SOLVER.STEP_MODE": "compiled", "CLS.INPUT.MIXUP_ALPHA": 0.2}))
