"""tools/predict.py end to end on an untrained quick-start model: images, folders, globs, videos, a stream on the
loopback, a camera that is not there, Ctrl-C; its COCO results are eval.py's, with and without TTA."""
import json
import os
import shutil
import signal
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from resdet.config import load_config
from resdet.data.shapes import generate_shapes_dataset
from resdet.detection.rcnn import build_detection_model
from resdet.evaluation.coco import evaluate_results_file
from resdet.runs.cli import run_tool
from resdet.runs.evaluate import main as eval_main
from resdet.runs.predict import batch_note, main

from tests.pipeline.helpers import frames_in, serve_folder, write_video

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "quickstart_shapes.yaml")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    overrides = ["MODEL.DEVICE", "cpu", "DATASETS.SHAPES.ROOT", str(root / "shapes"), "DATASETS.SHAPES.NUM_VAL", "4",
                 "DATASETS.SHAPES.MIN_SIDE", "64", "DATASETS.SHAPES.MAX_SIDE", "80", "INPUT.MIN_SIZE_TEST", "64",
                 "INPUT.MAX_SIZE_TEST", "96", "TEST.DETECTIONS_PER_IMAGE", "20",
                 # an untrained model scores every class about equally: keep everything so there is output
                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    cfg = load_config(CONFIG, overrides)
    torch.manual_seed(0)
    weights = str(root / "weights.pth")
    torch.save(build_detection_model(cfg).state_dict(), weights)
    _, image_dir = generate_shapes_dataset(str(root / "shapes"), "val", 4, 0, (64, 80))
    video = write_video(str(root / "clip.mp4"), 12, size=(64, 80))
    return dict(root=root, weights=weights, overrides=overrides, images=image_dir, video=video,
                model=["--config", CONFIG, "--weights", weights, "--no-progress"])


def test_folders_globs_videos_and_a_bad_image(setup, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(setup["images"], photos / "sub")
    shutil.copy(os.path.join(setup["images"], "000001.jpg"), photos / "top.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:  # --threads: the model's torch threads (here one, as on a 2-core machine with decode and draw beside it)
        status = main(setup["model"] + ["--input", str(photos), setup["video"], str(photos / "sub" / "00000[12].jpg"),
                                        "--output", str(out), "--batch", "2", "--score", "0.0", "--threads", "1"]
                      + setup["overrides"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert status == 0
    assert "skipped" in printed and "broken.jpg" in printed and "1 skipped" in printed
    assert sorted(os.listdir(out / "sub")) == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert {"top.jpg", "000001.jpg", "000002.jpg", "clip.mp4", "clip.jsonl"} <= set(os.listdir(out))
    drawn, plain = cv2.imread(str(out / "top.jpg")), cv2.imread(str(photos / "top.jpg"))
    assert drawn.shape == plain.shape and np.abs(drawn.astype(int) - plain).mean() > 5  # boxes and masks on it
    assert frames_in(str(out / "clip.mp4")) == 12
    lines = [json.loads(line) for line in open(out / "clip.jsonl")]
    assert [line["frame"] for line in lines] == list(range(12)) and lines[3]["time"] == 0.3
    det = lines[0]["detections"][0]
    assert set(det) == {"bbox", "score", "category_id", "class_name", "segmentation"}
    assert det["segmentation"]["size"] == [64, 80] and det["class_name"] in ("circle", "square", "triangle")
    results = json.load(open(out / "coco_instances_results.json"))
    info = json.load(open(out / "images.json"))
    assert [c["name"] for c in info["categories"]] == ["circle", "square", "triangle"]
    assert len(info["images"]) == 7 and {r["image_id"] for r in results} == {i["id"] for i in info["images"]}
    assert "Time per stage" in printed and "<- the bottleneck" in printed
    # the quick start's GroupNorm backbone at --batch 2, tools/eval.py at TEST.IMS_PER_BATCH 1: said once
    assert printed.count("note: --batch 2 pads the images") == 1


@pytest.mark.parametrize("tta", [False, True])
def test_results_of_a_dataset_score_as_eval_py_scores_the_model(setup, tmp_path, tta):
    overrides = setup["overrides"] + (["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(56,)"] if tta else [])
    metrics = eval_main(["--config", CONFIG, "--weights", setup["weights"], "--output-dir", str(tmp_path / "eval")]
                        + overrides)
    assert main(setup["model"] + ["--dataset", "shapes_val", "--output", str(tmp_path / "pred"), "--no-draw"]
                + overrides) == 0
    ours = json.load(open(tmp_path / "pred" / "coco_instances_results.json"))
    assert ours == json.load(open(tmp_path / "eval" / "coco_instances_results.json"))
    assert not os.path.exists(tmp_path / "pred" / "images.json")  # the dataset's own ids
    gt = os.path.join(os.path.dirname(setup["images"]), "annotations.json")
    scored = evaluate_results_file(gt, str(tmp_path / "pred" / "coco_instances_results.json"))
    for t in ("bbox", "segm"):
        assert scored[t]["AP"] == pytest.approx(metrics[t]["AP"], nan_ok=True)
        assert scored[t]["AR100"] == pytest.approx(metrics[t]["AR100"], nan_ok=True)


def test_batch_note_only_where_group_norm_meets_another_batch():
    gn = load_config(CONFIG, ["TEST.IMS_PER_BATCH", "1"])
    bn = load_config(CONFIG, ["TEST.IMS_PER_BATCH", "1", "MODEL.BACKBONE.NORM", "FrozenBN"])
    assert "GroupNorm" in batch_note(gn, 4) and batch_note(gn, 1) == ""
    assert batch_note(bn, 4) == "" and batch_note(None, 4) == ""


def test_a_stream_on_the_loopback_and_a_missing_camera(setup, tmp_path, capsys):
    out = tmp_path / "out"
    with serve_folder(os.path.dirname(setup["video"])) as url:
        status = run_tool(main, setup["model"] + ["--input", f"{url}/clip.mp4", "--output", str(out)]
                          + setup["overrides"])
    err = capsys.readouterr().err
    # a stream is meant to run until Ctrl-C: its end ends the run with one line, after the outputs are whole
    assert status == 1 and "stopped delivering frames after 12 frames" in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [err.splitlines()[0]]
    assert frames_in(str(out / "clip.mp4")) == 12 and len(open(out / "clip.jsonl").readlines()) == 12
    status = run_tool(main, setup["model"] + ["--input", "9", "--output", str(out)] + setup["overrides"])
    assert status == 1 and "error: camera 9 cannot be opened" in capsys.readouterr().err


def test_ctrl_c_leaves_a_video_that_plays_to_its_last_frame(setup, tmp_path, capsys):
    # a real SIGINT to this process while tools/predict.py's main runs in the main thread (where the pipeline
    # handles it), sent once 3 frames are written: the run of a subprocess spent ~25 s importing on a busy machine
    video = write_video(str(tmp_path / "long.mp4"), 400, size=(64, 80))
    out = tmp_path / "out"
    lines, done = out / "long.jsonl", threading.Event()

    def interrupt_after_three_frames():
        deadline = time.time() + 300
        while time.time() < deadline and not done.is_set():
            if lines.exists() and len(lines.read_text().splitlines()) >= 3:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    sender = threading.Thread(target=interrupt_after_three_frames, daemon=True)
    sender.start()
    try:
        status = main(setup["model"] + ["--input", video, "--output", str(out)] + setup["overrides"])
    finally:
        done.set()
        sender.join()
    assert status == 130  # tools/predict.py exits with it
    written = len(lines.read_text().splitlines())
    assert 3 <= written < 400 and f"hold the {written} frames" in capsys.readouterr().out
    assert frames_in(str(out / "long.mp4")) == written  # OpenCV reads back every frame written


def test_arguments_that_cannot_work_together(setup, tmp_path):
    for extra in (["--no-draw", "--no-results", "--input", setup["video"]], [], ["--dataset", "x", "--input", "y"],
                  ["--threads", "-1", "--input", setup["video"]]):
        with pytest.raises(SystemExit):
            main(setup["model"] + ["--output", str(tmp_path)] + extra)
