"""tools/benchmark.py --suite gpu, rehearsed on the CPU at tiny sizes: every part in its own process, a
part that fails (ResNet-50 on 16 px crops of batch 1: BatchNorm cannot train on one value per channel)
and a part that times out (cifar, limit 3 s) become rows that say so and why, and the other parts' rows
are all there, written to benchmark.json / benchmark.md as they came."""
import argparse
import json
import time

import pytest
import torch

from resdet.benchmarks import suite, suite_parts
from resdet.benchmarks.main import main

TINY = ["--device", "cpu", "--archs", "fasterrcnn", "--det-size", "32x48", "--det-batch", "1", "--cls-size", "64",
        "--cls-batch", "2", "--cifar-batch", "8", "--cifar-images", "64", "--iters", "1", "--rounds", "1",
        "--warmup", "1"]


def test_gpu_suite_rehearsal_on_cpu_with_a_failed_and_a_timed_out_part(tmp_path, one_thread, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the parts' processes: one thread each on a shared CPU
    argv = ["--suite", "gpu", *TINY, "--det-precisions", "fp32", "--cls-size", "16", "--cls-batch", "1",
            "--part-minutes", "cifar=0.05", "detection=30", "counts=30", "nms=30", "cascade=30", "--output", str(tmp_path),
            "--max-minutes", "60"]  # the whole run's limit: on a loaded machine the default once ran out before the cascade
    seen = {}
    parser = suite.build_parser()
    args = parser.parse_args(argv)

    def log(line):  # when a part starts, the report on disk already holds every row before it
        print(line)
        if line.startswith("[") and "so far" in line:
            seen[line[1:line.index("]")]] = json.loads((tmp_path / "benchmark.json").read_text())["rows"]

    report = suite.run_suite(args, log=log, argv=argv)
    rows = report["rows"]
    assert [(r["part"], r["status"]) for r in rows] == [
        ("detection", "ok"), ("detection", "ok"), ("resnet50", "failed"), ("cifar", "timed out"),
        ("counts", "ok"), ("counts", "ok"), ("counts", "ok"), ("counts", "ok"),
        ("nms", "ok"), ("nms", "ok"), ("nms", "ok"), ("nms", "ok"), ("cascade", "ok"), ("cascade", "ok")]
    assert {p: v["status"] for p, v in report["parts"].items()} == {
        "detection": "ok", "resnet50": "failed", "cifar": "timed out", "counts": "ok", "nms": "ok",
        "cascade": "ok"}
    failed, timed_out = rows[2], rows[3]
    assert "ValueError: Expected more than 1 value per channel when training" in failed["reason"]
    assert "stopped after its limit of 3 s" in timed_out["reason"]
    assert "Traceback" in (tmp_path / "logs" / "resnet50.log").read_text()  # the whole story, in its log
    # rows were on disk before the next part started
    assert [r["part"] for r in seen["resnet50"]] == ["detection"] * 2
    assert [r["part"] for r in seen["counts"]] == ["detection"] * 2 + ["resnet50", "cifar"]
    measured = [r for r in rows if r["status"] == "ok"]
    for r in measured:
        assert r["resdet"] > 0 and r["reference"] > 0 and r["ratio"] == pytest.approx(r["resdet"] / r["reference"])
    assert [(r["mode"], r["precision"]) for r in rows[:2]] == [("train", "fp32"), ("infer", "fp32")]
    for r in rows[:2]:  # same weights, same photographs: the same number of detections
        if r["mode"] == "infer":
            assert r["dets_per_image"][0] == r["dets_per_image"][1] > 0
    counts = {(r["mode"], r["unit"]): r for r in rows if r["part"] == "counts"}
    for mode in ("train step", "inference"):
        syncs = counts[(mode, "syncs")]
        assert syncs["resdet"] <= 8 < syncs["reference"]
        assert syncs["resdet"] == sum(kind[0] for kind in (syncs["host_reads"], syncs["h2d_copies"], syncs["nms_calls"]))
    assert counts[("inference", "aten ops")]["ratio"] < 1
    nms_rows = [r for r in rows if r["part"] == "nms"]  # the RPN's call (5 levels) and the box head's
    assert "RPN proposals (train)" in nms_rows[0]["model"] and "in 5 groups" in nms_rows[0]["model"]
    assert "box head (inference)" in nms_rows[2]["model"]
    assert report["device_name"] == "cpu" and report["finished"]
    table = (tmp_path / "benchmark.md").read_text()
    assert table.count("\n| detection | Faster R-CNN R50-FPN |") == 2 and table.count("\n| counts |") == 4
    assert "| resnet50 | - |" in table and "**failed**: ValueError" in table and "**timed out**: stopped" in table
    assert "- cifar: timed out" in table and "ratio = resdet / reference" in table
    assert table.count("\n| cascade | Cascade Mask R-CNN R50-FPN |") == 2
    assert rows[-1]["reference_name"] == "resdet Mask R-CNN R50-FPN (standard heads)"


def test_gpu_suite_skips_parts_past_its_time_limit(tmp_path):
    assert main(["--suite", "gpu", *TINY, "--max-minutes", "0", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert [(r["part"], r["status"]) for r in report["rows"]] == [(p, "skipped") for p in suite.PARTS]
    assert [s["part"] for s in report["skipped"]] == list(suite.PARTS)
    assert "**skipped**: --max-minutes 0.0 spent" in (tmp_path / "benchmark.md").read_text()


def test_a_part_starts_no_measurement_after_its_deadline():
    # --max-minutes inside a part: what the deadline leaves out becomes "skipped" rows, nothing is measured
    args = argparse.Namespace(deadline=time.time() - 1, archs=["fasterrcnn", "maskrcnn"], det_size=(64, 96),
                              det_batch=8, boxes=3)
    for part in ("detection", "counts"):
        emitted = []
        rows = suite_parts.PART_FUNCTIONS[part](args, torch.device("cpu"), print, emitted.append)
        assert rows == [] and emitted and all(r["status"] == "skipped" for r in emitted)
    assert len(emitted) == 4  # counts: two architectures at batch 1 and 8


def test_part_options_are_checked():
    with pytest.raises(SystemExit, match="PART=MINUTES"):
        main(["--suite", "gpu", *TINY, "--part-minutes", "detection"])
    with pytest.raises(SystemExit, match="not a number"):
        main(["--suite", "gpu", *TINY, "--part-minutes", "detection=soon"])


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
