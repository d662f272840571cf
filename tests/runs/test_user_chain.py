"""The user's chain with no backbone overrides, as the README shows it, on small real photographs:

  python tools/train_cls.py configs/imagenet_r50.yaml        -> output/imagenet_r50/backbone_final.pth (v1)
  python tools/train_det.py configs/coco_r50.yaml            -> picks it up (VARIANT auto -> v1)
  python tools/eval.py --weights output/coco_r50/model_final.pth

and the same with torchvision's classifier converted into that file (v1.5). Only sizes, iteration
counts, the device and the class count are overridden; datasets sit where the configs look for them
($RESDET_DATASETS/imagenet/{train,val}, $RESDET_DATASETS/coco/...).
"""
import os
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("skimage", reason="the photographs come from scikit-image (pip install -e '.[dev]')")

from resdet.data.shapes import generate_shapes_dataset  # noqa: E402
from resdet.benchmarks.photos import write_imagenet_style_folder  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CLS_SMALL = ["MODEL.DEVICE", "cpu", "SOLVER.AMP", "", "SOLVER.CHANNELS_LAST", "False", "SOLVER.IMS_PER_BATCH", "4",
             "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0",
             "CLS.INPUT.TRAIN_SHORT_SIDE", "(36, 48)", "CLS.INPUT.CROP_SIZE", "32", "CLS.INPUT.TEST_SHORT_SIDE", "36",
             "CLS.TEST.BATCH_SIZE", "4", "CLS.TEST.TRAIN_SUBSET", "0", "MODEL.CLASSIFIER.NUM_CLASSES", "9", "DATALOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1"]
DET_SMALL = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "3", "SOLVER.IMS_PER_BATCH", "2",
             "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "0",
             "SOLVER.CHECKPOINT_PERIOD", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "80",
             "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "80", "DATALOADER.NUM_WORKERS", "0",
             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "LOG_PERIOD", "1",
             # 10 detections per image, not 100: with every score kept the mask head ran on 100 boxes per
             # image, over half of the evaluation's time
             "TEST.DETECTIONS_PER_IMAGE", "10"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """ImageNet's layout of (small) photographs, and a COCO-layout detection set (the generated shapes, 3 classes)."""
    root = tmp_path_factory.mktemp("datasets")
    write_imagenet_style_folder(str(root / "imagenet" / "train"), 18, min_side=48, max_side=64, seed=0)
    write_imagenet_style_folder(str(root / "imagenet" / "val"), 9, min_side=48, max_side=64, seed=1)
    for split, n in (("train", 4), ("val", 3)):
        ann, images = generate_shapes_dataset(str(root / "shapes"), split, n, seed=0, size_range=(64, 80))
        os.makedirs(root / "coco" / "annotations", exist_ok=True)
        shutil.copy(ann, root / "coco" / "annotations" / f"instances_{split}2017.json")
        shutil.copytree(images, root / "coco" / f"{split}2017")
    return str(root)


def _run(tool, args, cwd, datasets_root):
    # one thread: under pytest-xdist the other core runs another test, and two threads spin-waiting
    # for a shared core cost several times the CPU of one
    env = {**os.environ, "RESDET_DATASETS": datasets_root, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{tool} {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def _detection_then_eval(work, datasets_root, expected_variant):
    config = os.path.join(REPO, "configs", "coco_r50.yaml")
    log = _run("train_det.py", [config, *DET_SMALL], work, datasets_root)
    assert f"MODEL.BACKBONE.VARIANT auto -> {expected_variant}" in log
    saved = open(os.path.join(work, "output", "coco_r50", "config.yaml")).read()
    assert f"VARIANT: {expected_variant}" in saved and "backbone_final.pth" in saved
    ckpt = os.path.join("output", "coco_r50", "model_final.pth")
    # as the README writes it: the checkpoint alone (its config, with this run's overrides, travels in it)
    out = _run("eval.py", ["--weights", ckpt], work, datasets_root)
    for iou_type in ("bbox", "segm"):
        assert f"Evaluating {iou_type} with pycocotools COCOeval" in out
    assert out.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]") == 2


def test_pretrained_v1_backbone_feeds_the_coco_config_as_it_stands(datasets, tmp_path):
    work = str(tmp_path)
    _run("train_cls.py", [os.path.join(REPO, "configs", "imagenet_r50.yaml"), *CLS_SMALL], work, datasets)
    export = os.path.join(work, "output", "imagenet_r50", "backbone_final.pth")
    meta = torch.load(export, weights_only=True)["meta"]
    assert (meta["name"], meta["variant"], meta["shortcut"]) == ("resnet50", "v1", "B")
    _detection_then_eval(work, datasets, "v1")


def test_converted_torchvision_backbone_feeds_the_coco_config_as_it_stands(datasets, tmp_path):
    import torchvision

    work = str(tmp_path)
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50-0676ba61.pth")
    out = _run("convert_weights.py", ["resnet50-0676ba61.pth", "output/imagenet_r50/backbone_final.pth",
                                      "--backbone"], work, datasets)
    assert "variant v1.5" in out
    _detection_then_eval(work, datasets, "v1.5")


def test_without_the_pretraining_file_train_det_says_how_to_make_it(datasets, tmp_path):
    env = {**os.environ, "RESDET_DATASETS": datasets, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_det.py"),
                        os.path.join(REPO, "configs", "coco_r50.yaml"), *DET_SMALL], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "output/imagenet_r50/backbone_final.pth' does not exist" in r.stderr
    assert "tools/train_cls.py configs/imagenet_r50.yaml" in r.stderr and "tools/convert_weights.py" in r.stderr
