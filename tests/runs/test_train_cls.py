"""Classification training on tiny real image files (resdet/runs/train_cls.py + the engine)."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from resdet.classification.model import load_backbone_export
from resdet.config import load_config
from resdet.engine.logging import read_metrics
from resdet.runs.train_cls import train_classifier
from tests.classification.helpers import make_image_tree

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def tiny_overrides(root, out, **extra):
    """The CIFAR recipe shrunk to seconds on a CPU: 3 classes, batch 8, a few dozen steps. lr 0.02: 0.05
    (8x the paper's 0.1 scaled to batch 8) made the last steps' loss jump around on 48 images."""
    opts = {
        "MODEL.DEVICE": "cpu", "SOLVER.AMP": "", "SOLVER.CHANNELS_LAST": False, "CLS.DATA.ROOT": root,
        "MODEL.CLASSIFIER.NUM_CLASSES": 3, "SOLVER.IMS_PER_BATCH": 8, "SOLVER.BASE_LR": 0.02,
        "SOLVER.MAX_ITER": 16, "SOLVER.STEPS": "(12,)", "SOLVER.CHECKPOINT_PERIOD": 8, "TEST.EVAL_PERIOD": 8,
        "LOG_PERIOD": 4, "CLS.TEST.TRAIN_SUBSET": 24, "OUTPUT_DIR": out,
    }
    opts.update(extra)
    return [str(x) for kv in opts.items() for x in kv]


# 16-pixel images (make_image_tree(size=16)) cost a quarter of CIFAR's 32 and are learnt as quickly
SMALL = {"CLS.INPUT.CROP_SIZE": 16, "CLS.INPUT.PAD": 2}


def cfg_for(root, out, **extra):
    return load_config(os.path.join(REPO, "configs", "cifar10_resnet20.yaml"), tiny_overrides(root, out, **extra))


def small_cfg(root, out, **extra):
    """cfg_for for the 16-pixel `tree`."""
    return cfg_for(root, out, **SMALL, **extra)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("cls_data"), {"train": 16, "test": 6}, num_classes=3, size=16)


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory):
    """One 16-step training run (lr drop at 12, checkpoints at 8 and 16) read by several tests:
    (config, output folder, returned results)."""
    out = tmp_path_factory.mktemp("trained")
    cfg = small_cfg(tree, str(out))
    return cfg, out, train_classifier(cfg)


def test_a_few_iterations_lower_the_loss_and_beat_chance(trained):
    _, out, results = trained
    losses = [r["loss_cls"] for r in read_metrics(str(out / "metrics.jsonl")) if "loss_cls" in r]
    assert len(losses) == 4
    assert losses[-1] < 0.5 * losses[0]
    assert results["test/num_samples"] == 18 and results["test/top1_err"] < 50.0   # chance: 66.7%
    for f in ("config.yaml", "final_results.json", "model_final.pth", "backbone_final.pth", "last_checkpoint"):
        assert (out / f).is_file(), f
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))


class _Interrupted(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted_run(tree, trained, tmp_path, monkeypatch):
    # the uninterrupted run is the shared one: 16 steps, the lr drop (12) after the resume point (8)
    full_dir, cut_dir = str(trained[1]), str(tmp_path / "cut")

    # Interrupt the second run during iteration 11: the newest checkpoint is iteration 8's, so steps
    # 8..10 are done twice, as after a real crash.
    import resdet.classification.data as data_mod

    real = data_mod.DeviceBatches.__next__

    def crashing_next(self):
        if self.iteration == 11:
            raise _Interrupted()
        return real(self)

    monkeypatch.setattr(data_mod.DeviceBatches, "__next__", crashing_next)
    with pytest.raises(_Interrupted):
        train_classifier(small_cfg(tree, cut_dir))
    monkeypatch.setattr(data_mod.DeviceBatches, "__next__", real)
    assert open(os.path.join(cut_dir, "last_checkpoint")).read().strip() == "model_0000008.pth"
    resumed = train_classifier(small_cfg(tree, cut_dir), resume=True)

    def by_iter(d):
        recs = {}
        for r in read_metrics(os.path.join(d, "metrics.jsonl")):
            recs.setdefault(r["iteration"], {}).update({k: v for k, v in r.items() if "time" not in k and "eta" not in k})
        return recs

    a, b = by_iter(full_dir), by_iter(cut_dir)
    assert sorted(a) == sorted(b) == [4, 8, 12, 16]
    for it in a:
        assert a[it].keys() == b[it].keys(), it
        for k in a[it]:
            assert a[it][k] == pytest.approx(b[it][k], rel=1e-6, abs=1e-7), (it, k)
    wa = torch.load(os.path.join(full_dir, "model_final.pth"), weights_only=True)["model"]
    wb = torch.load(os.path.join(cut_dir, "model_final.pth"), weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6), k
    assert resumed == json.load(open(os.path.join(full_dir, "final_results.json")))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_over_gloo_matches_one_process(tree, tmp_path):
    # GroupNorm normalises each image on its own, so two processes with 4 images each compute exactly
    # what one process with 8 does (BatchNorm statistics would differ per process by design).
    # A small lr keeps training out of the chaotic early phase, where float rounding differences
    # between one all-reduced sum and one big batch would be amplified step by step.
    extra = {"MODEL.BACKBONE.NORM": "GN", "MODEL.BACKBONE.GN_GROUPS": 4, "SOLVER.MAX_ITER": 6,
             "SOLVER.BASE_LR": 0.01, "SOLVER.STEPS": "(4,)", "TEST.EVAL_PERIOD": 3,
             "SOLVER.CHECKPOINT_PERIOD": 0, "LOG_PERIOD": 2}
    # the one-process reference runs in this process (the same train_classifier the tool calls); the two
    # processes are a real torchrun launch of tools/train_cls.py
    runs = {1: str(tmp_path / "np1"), 2: str(tmp_path / "np2")}
    train_classifier(small_cfg(tree, runs[1], **extra))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           os.path.join(REPO, "tools", "train_cls.py"), os.path.join(REPO, "configs", "cifar10_resnet20.yaml"),
           *tiny_overrides(tree, runs[2], **SMALL, **extra)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m1, m2 = (read_metrics(os.path.join(runs[n], "metrics.jsonl")) for n in (1, 2))
    l1 = [r["loss_cls"] for r in m1 if "loss_cls" in r]
    l2 = [r["loss_cls"] for r in m2 if "loss_cls" in r]
    assert len(l1) == 3 and l1 == pytest.approx(l2, rel=1e-5)
    e1 = [r for r in m1 if "test/top1_err" in r]
    e2 = [r for r in m2 if "test/top1_err" in r]
    assert [r["iteration"] for r in e1] == [r["iteration"] for r in e2] == [3, 6]
    assert e1[-1]["test/num_samples"] == e2[-1]["test/num_samples"] == 18   # the shards cover the test set
    for r1, r2 in zip(e1, e2):
        assert r1["test/top1_err"] == pytest.approx(r2["test/top1_err"], abs=100 / 18 + 1e-6)
    w1 = torch.load(os.path.join(runs[1], "model_final.pth"), weights_only=True)["model"]
    w2 = torch.load(os.path.join(runs[2], "model_final.pth"), weights_only=True)["model"]
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-5), k


def test_backbone_export_loads_into_the_detection_backbone(trained):
    from resdet.backbones import build_backbone
    from resdet.backbones.weights import load_backbone_weights

    cfg, out, _ = trained
    path = str(out / "backbone_final.pth")
    export = load_backbone_export(path)
    # VARIANT auto and SHORTCUT "" are recorded as built: v1.5 (nothing says otherwise), the CIFAR family's A
    assert cfg.MODEL.BACKBONE.VARIANT == "auto" and cfg.MODEL.BACKBONE.SHORTCUT == ""
    assert {k: export["meta"][k] for k in ("name", "variant", "shortcut", "norm")} == {
        "name": "cifar_resnet20", "variant": "v1.5", "shortcut": "A", "norm": "BN"}
    assert not any(k.startswith("fc.") for k in export["state_dict"])
    weights = torch.load(str(out / "model_final.pth"), weights_only=True)["model"]
    det = build_backbone("cifar_resnet20", out_features=("res2", "res3", "res4"), num_classes=None)
    load_backbone_weights(det, path, expected_name="cifar_resnet20", expected_variant="v1.5")
    for k, v in det.state_dict().items():
        assert torch.equal(v, weights["backbone." + k]), k
    with pytest.raises(ValueError, match="cifar_resnet20"):
        load_backbone_weights(build_backbone("cifar_resnet32", out_features=("res4",), num_classes=None), path,
                              expected_name="cifar_resnet32")


def test_timm_options_mixup_cutmix_label_smoothing_ema_randaugment(tree, tmp_path):
    # The streaming path (DataLoader + per-image transforms) with every timm option on.
    cfg = small_cfg(tree, str(tmp_path), **{
        "CLS.DATA.IN_MEMORY": False, "CLS.DATA.PER_PIXEL_MEAN": False, "DATALOADER.NUM_WORKERS": 0,
        "CLS.INPUT.TRAIN_AUG": "rrc",
        "CLS.INPUT.RANDAUGMENT": "rand-m9-mstd0.5", "CLS.INPUT.COLOR_AUG": "pca",
        "CLS.INPUT.MIXUP_ALPHA": 0.2, "CLS.INPUT.CUTMIX_ALPHA": 1.0, "MODEL.CLASSIFIER.LABEL_SMOOTHING": 0.1,
        "CLS.EMA.ENABLED": True, "CLS.EMA.DECAY": 0.9, "SOLVER.MAX_ITER": 6, "SOLVER.STEPS": "(4,)",
        "TEST.EVAL_PERIOD": 0, "SOLVER.CHECKPOINT_PERIOD": 0, "LOG_PERIOD": 3,
    })
    results = train_classifier(cfg)
    assert {"test/top1_err", "ema/test/top1_err", "train/top1_err"} <= set(results)
    ckpt = torch.load(str(tmp_path / "model_final.pth"), weights_only=True)
    assert "ema" in ckpt  # the EMA weights are checkpointed (and restored on resume)
    ema_w = ckpt["ema"]["module.backbone.fc.weight"] if "module.backbone.fc.weight" in ckpt["ema"] else None
    if ema_w is not None:
        assert not torch.equal(ema_w, ckpt["model"]["backbone.fc.weight"])


def test_class_count_mismatch_is_named(tree, tmp_path):
    with pytest.raises(ValueError, match="has 3 classes but MODEL.CLASSIFIER.NUM_CLASSES is 10"):
        train_classifier(small_cfg(tree, str(tmp_path), **{"MODEL.CLASSIFIER.NUM_CLASSES": 10}))


def test_missing_dataset_says_where_and_how(tmp_path):
    from resdet.data.folders import MissingDatasetError

    with pytest.raises(MissingDatasetError) as e:
        train_classifier(cfg_for(str(tmp_path / "nowhere"), str(tmp_path / "out")))
    assert str(tmp_path / "nowhere") in str(e.value) and "datasets/README.md" in str(e.value)


def test_cifar_python_batches_with_the_45k_5k_style_holdout(tmp_path):
    from tests.classification.helpers import make_cifar_batches
    from resdet.classification.data import build_classification_data

    root, expected = make_cifar_batches(tmp_path / "c10", per_batch=8)
    cfg = cfg_for(root, str(tmp_path / "out"), **{"MODEL.CLASSIFIER.NUM_CLASSES": 10, "CLS.DATA.HOLDOUT": 10,
                                                  "CLS.TEST.TRAIN_SUBSET": 0})
    data = build_classification_data(cfg, torch.device("cpu"))
    assert data.num_train == 30 and data.class_names[:2] == ["c0", "c1"]
    assert set(data.eval_sets) == {"test", "val"}
    val = torch.cat([y for _, y in data.eval_sets["val"]()])
    test = torch.cat([y for _, y in data.eval_sets["test"]()])
    assert len(val) == 10 and test.tolist() == expected["test_batch"][1]
    images, labels = next(iter(data.train_batches(0)))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.shape == (8,)
    results = train_classifier(load_config(os.path.join(REPO, "configs", "cifar10_resnet20.yaml"), tiny_overrides(
        root, str(tmp_path / "out"), **{"MODEL.CLASSIFIER.NUM_CLASSES": 10, "CLS.DATA.HOLDOUT": 10,
                                        "SOLVER.MAX_ITER": 2, "SOLVER.STEPS": "(1,)", "TEST.EVAL_PERIOD": 0})))
    assert results["val/num_samples"] == 10 and results["test/num_samples"] == 8


def test_per_pixel_mean_from_the_training_images_is_trained_with_and_checkpointed(tmp_path):
    """The CIFAR configs subtract the training set's mean image (the paper); --eval-only uses the
    checkpoint's copy, not a recomputed one."""
    from tests.classification.helpers import make_cifar_batches
    from resdet.classification.data import build_classification_data
    from resdet.runs.train_cls import evaluate_only

    root, expected = make_cifar_batches(tmp_path / "c10", per_batch=8)
    opts = {"MODEL.CLASSIFIER.NUM_CLASSES": 10, "CLS.TEST.TRAIN_SUBSET": 0, "SOLVER.MAX_ITER": 3,
            "SOLVER.STEPS": "(2,)", "TEST.EVAL_PERIOD": 0}
    cfg = cfg_for(root, str(tmp_path / "out"), **opts)
    assert cfg.CLS.DATA.PER_PIXEL_MEAN and tuple(cfg.MODEL.PIXEL_STD) == (1.0, 1.0, 1.0)
    data = build_classification_data(cfg, torch.device("cpu"))
    train = torch.cat([torch.from_numpy(expected[f"data_batch_{i}"][0]) for i in range(1, 6)]).double()
    torch.testing.assert_close(data.mean_image, train.mean(0).float())
    results = train_classifier(cfg)
    ckpt = torch.load(str(tmp_path / "out" / "model_final.pth"), weights_only=True)
    torch.testing.assert_close(ckpt["model"]["pixel_mean_image"][0], data.mean_image)
    again = evaluate_only(cfg_for(root, str(tmp_path / "eval"), **opts),
                          weights=str(tmp_path / "out" / "model_final.pth"))
    assert again["test"]["top1_err"] == results["test/top1_err"] and again["test"]["num_samples"] == 8
