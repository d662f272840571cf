"""tools/train_det.py end to end on tiny shapes data: train, kill, --resume; two-process DDP over gloo;
--eval-only. Real processes, real checkpoints, a real (tiny) Mask R-CNN on resnet18."""
import json
import os
import socket
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny(tmp_path, out, max_iter=4):
    return [
        "MODEL.DEVICE", "cpu", "DATASETS.SHAPES.ROOT", str(tmp_path / "shapes"),
        "DATASETS.SHAPES.NUM_TRAIN", "8", "DATASETS.SHAPES.NUM_VAL", "2",
        "DATASETS.SHAPES.MIN_SIDE", "64", "DATASETS.SHAPES.MAX_SIDE", "80",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", "(3,)",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.BASE_LR", "0.01",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
        "TEST.DETECTIONS_PER_IMAGE", "10",
        "DATALOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1", "OUTPUT_DIR", str(out),
    ]


def _free_port() -> int:
    # a port the OS says is free now: a fixed one clashes with another DDP test running beside this one
    # (the README's test command runs files in parallel processes)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(*args, torchrun=False):
    script = os.path.join(ROOT, "tools", "train_det.py")
    config = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")
    if torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
                script, config, *args]
    return [sys.executable, script, config, *args]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")


def _losses(out):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted 4-iteration run (data in <base>/shapes, output in <base>/full), shared by the
    kill/resume test (its reference) and the --eval-only test (its checkpoint): (base folder, output)."""
    base = tmp_path_factory.mktemp("det")
    proc = subprocess.run(_cmd(*_tiny(base, base / "full")), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, base / "full"


def test_train_kill_resume_continues_at_the_same_iteration(full_run, tmp_path):
    base, full = full_run
    cut = tmp_path / "cut"
    reference = _losses(full)
    assert sorted(reference) == [1, 2, 3, 4]
    assert os.path.isfile(full / "predictions.png") and os.path.isfile(full / "inference" / "shapes_val" / "coco_eval.json")

    # the same run, killed (SIGKILL: no clean-up at all) once the iteration-2 checkpoint is on disk
    proc = subprocess.Popen(_cmd(*_tiny(base, cut)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    pointer = cut / "last_checkpoint"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if pointer.exists() and pointer.read_text().strip() == "model_0000002.pth":
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed after iteration 2"
    assert not (cut / "model_final.pth").exists()

    resumed = subprocess.run(_cmd("--resume", *_tiny(base, cut)), env=_env(), capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f"Resumed from {cut / 'model_0000002.pth'} at iteration 2" in log
    assert "Training from iteration 2 to 4" in log
    losses = _losses(cut)
    # iterations 3 and 4 after the resume are those of the uninterrupted run: same data, same
    # augmentation, same weights and optimizer state, same random numbers
    for it in (3, 4):
        assert losses[it] == pytest.approx(reference[it], rel=1e-4, abs=1e-5)


def test_two_process_ddp_over_gloo(tmp_path):
    out = tmp_path / "ddp"
    args = _tiny(tmp_path, out, max_iter=2)
    proc = subprocess.run(_cmd(*args, torchrun=True), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "world size 2" in proc.stdout + proc.stderr
    assert sorted(_losses(out)) == [1, 2]
    assert os.path.isfile(out / "model_final.pth")
    metrics = json.load(open(out / "inference" / "shapes_val" / "coco_eval.json"))
    assert "AP" in metrics["bbox"] and "AP" in metrics["segm"]


def test_eval_only_scores_a_checkpoint(full_run, tmp_path):
    base, out = full_run  # the shared run's final checkpoint
    args = _tiny(base, out)
    proc = subprocess.run(_cmd("--eval-only", *args, "MODEL.WEIGHTS", str(out / "model_final.pth"),
                               "OUTPUT_DIR", str(tmp_path / "eval")),
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in proc.stdout or \
        "No detections" in proc.stdout + proc.stderr
    assert os.path.isfile(tmp_path / "eval" / "inference" / "shapes_val" / "coco_instances_results.json")
    # tools/eval.py with a model gives the same numbers as --eval-only on the same checkpoint
    evald = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), "--config",
                            os.path.join(ROOT, "configs", "quickstart_shapes.yaml"), "--weights",
                            str(out / "model_final.pth"), "--output-dir", str(tmp_path / "evaltool"), *args],
                           env=_env(), capture_output=True, text=True, timeout=900)
    assert evald.returncode == 0, evald.stderr[-3000:]
    assert '"images_per_second"' in evald.stdout
    a = json.load(open(tmp_path / "eval" / "inference" / "shapes_val" / "coco_eval.json"))
    b = json.load(open(tmp_path / "evaltool" / "coco_eval.json"))
    assert a["bbox"]["AP"] == b["bbox"]["AP"] and a["segm"]["AP"] == b["segm"]["AP"]


def test_bad_evaluation_ground_truth_stops_the_run_before_training(tmp_path):
    from tests.data.coco_fixtures import coco_dict, write_case

    data = coco_dict()
    data["annotations"][0].pop("segmentation")  # annotation 10: pycocotools' segm evaluation would raise KeyError
    json_path, image_dir, _ = write_case(tmp_path / "val", data)
    out = tmp_path / "run"
    proc = subprocess.run(_cmd(*_tiny(tmp_path, out), "DATASETS.CUSTOM_NAMES", "['bad_val']",
                               "DATASETS.CUSTOM_JSONS", f"['{json_path}']", "DATASETS.CUSTOM_IMAGE_DIRS",
                               f"['{image_dir}']", "DATASETS.TEST", "('bad_val',)"),
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert ("1 non-crowd annotations have no segmentation (missing, null or []), e.g. ids [10], so segm "
            "evaluation cannot score them") in proc.stderr
    assert not (out / "metrics.jsonl").exists() and not (out / "model_final.pth").exists()
    assert not (tmp_path / "shapes").exists()  # stopped before even the training data was made
