"""tools/train_cls.py and tools/plot_curves.py as a user runs them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.classification.helpers import make_image_tree
from tests.runs.test_train_cls import SMALL, tiny_overrides

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
import plot_curves  # noqa: E402


def run_tool(*args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", args[0]), *args[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_then_eval_only_then_export(tmp_path):
    root = make_image_tree(tmp_path / "data", {"train": 8, "test": 4}, num_classes=3, size=16)
    out = str(tmp_path / "run")
    cfg = os.path.join(REPO, "configs", "cifar10_resnet20.yaml")
    opts = tiny_overrides(root, out, **SMALL, **{"SOLVER.MAX_ITER": 6, "SOLVER.STEPS": "(4,)", "TEST.EVAL_PERIOD": 3})
    p = run_tool("train_cls.py", cfg, *opts)
    assert p.returncode == 0, p.stderr[-3000:]
    final = json.load(open(os.path.join(out, "final_results.json")))
    assert final["test/num_samples"] == 12

    p = run_tool("train_cls.py", cfg, "--eval-only", *opts, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"))
    assert p.returncode == 0, p.stderr[-3000:]
    evaluated = json.load(open(os.path.join(out, "eval_results.json")))
    assert evaluated["test"]["top1_err"] == pytest.approx(final["test/top1_err"])
    assert evaluated["train"]["top5_err"] == pytest.approx(final["train/top5_err"])

    exported = str(tmp_path / "r20_backbone.pth")
    p = run_tool("train_cls.py", cfg, "--export-backbone", exported, *opts,
                 "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"))
    assert p.returncode == 0, p.stderr[-3000:]
    meta = torch.load(exported, weights_only=True)["meta"]
    assert meta["name"] == "cifar_resnet20"

    png = str(tmp_path / "curves.png")
    plot_curves.main([out, out, "--labels", "a", "b", "-o", png])
    img = Image.open(png)
    assert img.size[0] > 400 and len(np.unique(np.asarray(img.convert("L")))) > 10   # a drawn figure, not blank
    curves = plot_curves.load_curves(out)
    assert curves["test"][0] == [3, 6] and curves["train"][0] == [3, 6]


def test_plot_curves_reads_several_runs_and_names_bad_input(tmp_path):
    runs = []
    for name, errs in (("plain", [(100, 80, 78), (200, 60, 61)]), ("resnet", [(100, 70, 71), (200, 40, 45)])):
        d = tmp_path / name
        d.mkdir()
        with open(d / "metrics.jsonl", "w") as f:
            for it, train, test in errs:
                f.write(json.dumps({"iteration": it, "loss_cls": 1.0}) + "\n")
                f.write(json.dumps({"iteration": it, "train/top1_err": train, "test/top1_err": test}) + "\n")
        runs.append(str(d))
    assert plot_curves.load_curves(runs[1]) == {"train": ([100, 200], [70.0, 40.0]), "test": ([100, 200], [71.0, 45.0])}
    png = plot_curves.plot_runs(runs, ["plain-20", "ResNet-20"], str(tmp_path / "fig" / "c.png"))
    assert os.path.getsize(png) > 5000
    with pytest.raises(FileNotFoundError, match="No metrics file"):
        plot_curves.load_curves(str(tmp_path / "nothing"))
    (tmp_path / "noeval").mkdir()
    (tmp_path / "noeval" / "metrics.jsonl").write_text(json.dumps({"iteration": 5, "loss_cls": 1.0}) + "\n")
    with pytest.raises(ValueError, match="TEST.EVAL_PERIOD"):
        plot_curves.load_curves(str(tmp_path / "noeval"))


def test_cli_missing_data_names_the_path(tmp_path):
    missing = str(tmp_path / "no_cifar_here")
    p = run_tool("train_cls.py", os.path.join(REPO, "configs", "cifar10_resnet20.yaml"),
                 *tiny_overrides(missing, str(tmp_path / "out")))
    assert p.returncode != 0
    assert missing in p.stderr and "datasets/README.md" in p.stderr
