"""README.md's "Your own dataset", followed end to end on a small generated dataset of photos.

The YAML and the three commands are read from the README itself and run as written (from a folder
laid out as the README says), with only the dataset's category count filled in and, for the training
command, sizes and a schedule small enough for a test. Then: eval.py on the checkpoint alone gives the
training's numbers, into a new folder; the user's config, which differs from what was trained, is
refused naming the keys; demo.py draws the validation images.
"""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

pytest.importorskip("skimage", reason="the photos come from scikit-image (pip install -e '.[dev]')")

from resdet.benchmarks.photos import write_photo_detection_dataset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Only what makes the README's training command a test: small images, 6 steps of 1 image (2 epochs of 3).
TINY = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "80", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "80", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_EPOCHS", "2.0",
        "SOLVER.WARMUP_ITERS", "2", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
        "DATALOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1", "TEST.DETECTIONS_PER_IMAGE", "10",
        "SOLVER.CHECKPOINT_PERIOD_FRACTION", "1.0"]  # the final checkpoint only: fewer 100 MB writes


def readme_section():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Your own dataset"):]
    section = section[: section.index("\n## ", 3)]
    yaml_text = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()]
    return yaml_text, [c for c in commands if c]


def _run(command, cwd, extra=()):
    assert command[0] == "python" and command[1].startswith("tools/")
    env = dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    env.pop("RESDET_DEBUG", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, command[1]), *command[2:], *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _strict_json(path):
    def refuse(name):
        raise ValueError(f"{path}: bare {name}")
    return json.loads(open(path, encoding="utf-8").read(), parse_constant=refuse)


def test_readme_own_dataset_end_to_end(tmp_path, monkeypatch):
    yaml_text, (train, evaluate, demo) = readme_section()
    # the README's layout: datasets/mydata/images + annotations/{train,val}.json, two categories here
    for split, n, seed in (("train", 3, 0), ("val", 2, 1)):
        write_photo_detection_dataset(str(tmp_path / "datasets" / "mydata"), split, n, min_side=64, max_side=80, seed=seed)
    assert "NUM_CLASSES: 1" in yaml_text and "_BASE_: custom_scratch_r18_gn.yaml" in yaml_text
    yaml_text = yaml_text.replace("NUM_CLASSES: 1", "NUM_CLASSES: 2").replace(
        "_BASE_: custom_scratch_r18_gn.yaml", f"_BASE_: {os.path.join(ROOT, 'configs', 'custom_scratch_r18_gn.yaml')}")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mydata.yaml").write_text(yaml_text)
    out = tmp_path / "output" / "mydata"

    proc = _run(train, tmp_path, TINY)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Training length from SOLVER.MAX_EPOCHS 2 of 3 images at 1 per step: SOLVER.MAX_ITER 6" in log
    evals = [r["iteration"] for r in map(json.loads, open(out / "metrics.jsonl")) if "bbox/AP" in r]
    assert evals == [2, 4, 6]  # TEST.EVAL_PERIOD_FRACTION 0.25 of 6 steps
    final = _strict_json(out / "final_metrics.json")  # valid JSON: NaN written as null
    trained = _strict_json(out / "inference" / "mydata_val" / "coco_eval.json")
    assert final["bbox/AP"] == pytest.approx(trained["bbox"]["AP"]) and "segm/AP" in final
    for name in ("predictions.png", "training_curves.png", "model_final.pth", "config.yaml"):
        assert (out / name).is_file(), name
    before = (out / "inference" / "mydata_val" / "coco_eval.json").read_bytes()

    # eval.py with the checkpoint alone: the training's config, the training's numbers, a new folder
    proc = _run(evaluate, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    again = _strict_json(out / "eval" / "model_final_mydata_val" / "coco_eval.json")
    for iou_type in ("bbox", "segm"):
        assert again[iou_type]["AP"] == trained[iou_type]["AP"] and again[iou_type]["AP50"] == trained[iou_type]["AP50"]
    assert (out / "inference" / "mydata_val" / "coco_eval.json").read_bytes() == before  # never overwritten

    proc = _run(demo, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert sorted(os.listdir(out / "demo")) == ["val_000001.png", "val_000002.png"]  # the test set's images

    # in-process (the same main as the tool; tests/runs/test_cli.py shows how a tool prints these):
    # the user's own YAML, without the overrides the model was trained with, is refused naming the keys;
    # a wrong class count is named by its key; a second evaluation gets a folder of its own
    from resdet.config import ConfigError
    from resdet.engine.checkpoint import CheckpointError
    from resdet.runs import evaluate as evaluate_run

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        evaluate_run.main(evaluate[2:] + ["--config", "configs/mydata.yaml"])
    assert "configs/mydata.yaml differs from the config checkpoint" in str(refused.value)
    assert "INPUT.MIN_SIZE_TEST: checkpoint 64, configs/mydata.yaml 288" in str(refused.value)
    with pytest.raises(CheckpointError, match="has 2 classes, MODEL.ROI_HEADS.NUM_CLASSES is 5"):
        evaluate_run.main(evaluate[2:] + ["MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    assert evaluate_run.new_output_dir(str(out), "model_final_mydata_val").endswith("model_final_mydata_val_2")
