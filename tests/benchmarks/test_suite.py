"""tools/benchmark.py --suite gpu, rehearsed on the CPU at tiny sizes: every part runs, every row has
ours, the reference from the same run and their ratio; benchmark.json and benchmark.md are written."""
import json

import pytest
import torch

from resdet.benchmarks.main import main

TINY = ["--device", "cpu", "--archs", "maskrcnn", "--det-size", "64x96", "--det-batch", "1", "--cls-size", "64",
        "--cls-batch", "2", "--cifar-batch", "8", "--cifar-images", "64", "--iters", "1", "--rounds", "1",
        "--warmup", "1"]



def test_gpu_suite_rehearsal_on_cpu(tmp_path, one_thread, capsys):
    # no time limit worth the name: on a loaded shared machine the default 8 minutes ran out before the last
    # part (the cascade) once, which was then skipped; skipping is tested below
    assert main(["--suite", "gpu", *TINY, "--max-minutes", "60", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    rows = report["rows"]
    assert [(r["part"], r["mode"], r["precision"]) for r in rows] == [
        ("detection", "train", "fp32"), ("detection", "infer", "fp32"),
        ("detection", "train", "bf16"), ("detection", "infer", "bf16"),
        ("resnet50", "train", "bf16+channels_last"), ("cifar", "train (eager step)", "fp32"),
        ("counts", "inference", "fp32"), ("counts", "inference", "fp32"),
        ("counts", "train step", "fp32"), ("counts", "train step", "fp32"),
        ("cascade", "train", "fp32"), ("cascade", "infer", "fp32")]
    for r in rows:
        assert r["resdet"] > 0 and r["reference"] > 0 and r["ratio"] == pytest.approx(r["resdet"] / r["reference"])
    counts = {(r["mode"], r["unit"]): r for r in rows if r["part"] == "counts"}
    assert counts[("train step", "host reads")]["resdet"] <= 8 and counts[("inference", "host reads")]["resdet"] <= 8
    assert counts[("train step", "aten ops")]["ratio"] < 1
    assert [r["reference_name"] for r in rows[:4]] == ["torchvision maskrcnn_resnet50_fpn"] * 4
    assert rows[4]["reference_name"].startswith("torchvision resnet50")
    for r in rows:  # same weights, same photographs: the same number of detections
        if r["mode"] == "infer":
            assert r["dets_per_image"][0] == r["dets_per_image"][1] > 0
    assert report["skipped"] == [] and report["device_name"] == "cpu"
    table = (tmp_path / "benchmark.md").read_text()
    assert table.count("\n| detection | Mask R-CNN R50-FPN |") == 4 and "| resnet50 |" in table and "| cifar |" in table
    assert table.count("\n| counts | Mask R-CNN R50-FPN |") == 4
    assert table.count("\n| cascade | Cascade Mask R-CNN R50-FPN |") == 2
    assert rows[-1]["reference_name"] == "resdet Mask R-CNN R50-FPN (standard heads)"
    assert "ratio = resdet / reference" in table
    assert "Saved" in capsys.readouterr().out


def test_gpu_suite_skips_parts_past_its_time_limit(tmp_path):
    assert main(["--suite", "gpu", *TINY, "--max-minutes", "0", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["rows"] == [] and [s["part"] for s in report["skipped"]] == ["detection", "resnet50", "cifar", "counts",
                                                                               "cascade"]
    assert "Skipped: detection (--max-minutes 0.0 spent" in (tmp_path / "benchmark.md").read_text()


def test_photo_batches_without_scikit_image(monkeypatch):
    """A bare GPU machine has no scikit-image: the photographs then come from matplotlib's sample data."""
    from resdet.benchmarks import photos as bench_photos

    def no_skimage():
        raise ImportError("no scikit-image here")

    monkeypatch.setattr(bench_photos, "skimage_photos", no_skimage)
    bench_photos.benchmark_photos.cache_clear()
    try:
        names = [n for n, _ in bench_photos.benchmark_photos()]
        assert names == ["grace_hopper", "Minduka_Present_Blue_Pack"]
        batch = bench_photos.photo_batch(3, 80, 120, seed=0)
        assert batch.shape == (3, 3, 80, 120) and batch.dtype == torch.uint8
        assert batch.float().std() > 20  # a photograph, not a flat fill
        assert not torch.equal(batch[0], batch[2])  # different crops of the same photograph
    finally:
        bench_photos.benchmark_photos.cache_clear()  # later calls read scikit-image's again
