"""tools/benchmark.py --predict: the pipeline and the model alone on the same frames, and the results writer,
each with its ratio (a functional run on tiny inputs; the figures are the benchmark's, never a test's)."""
import json

import pytest
import torch

from resdet.benchmarks.main import main
from resdet.benchmarks.predict import _synthetic_detections
from resdet.data.shapes import generate_shapes_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_predict_benchmark_prints_each_ratio(tmp_path, capsys):
    _, images = generate_shapes_dataset(str(tmp_path / "shapes"), "val", 3, 0, (64, 80))
    out = tmp_path / "bench.jsonl"
    threads = torch.get_num_threads()
    assert main(["--predict", "--config", "configs/quickstart_shapes.yaml", "--folder", images, "--frames", "2",
                 "--rounds", "1", "--batch", "2", "--results-images", "4", "--results-dets", "10", "--reference-images", "1",
                 "--json", str(out), "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64"]) == 0
    assert torch.get_num_threads() == threads
    text = capsys.readouterr().out
    assert "video (batch 2, 2 frames, median of 1): pipeline" in text and "% of the model alone" in text
    assert "folder: batch 2 pipeline / batch 1 pipeline" in text
    assert "results JSON, 4 images x 10 detections with RLE masks" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r.get("batch")) for r in rows] == [("video", 2), ("folder", 1), ("folder", 2), ("results", None)]
    assert all(r["pipeline_fps"] > 0 and r["model_fps"] > 0 and 0 < r["model_busy"] <= 1 for r in rows[:3])
    assert "the model busy" in text
    assert rows[3]["ours_s"] > 0 and rows[3]["reference_s"] > 0


def test_synthetic_detections_are_inside_the_image():
    d = _synthetic_detections(200, 480, 640)
    assert d["boxes"].shape == (200, 4) and d["mask_probs"].shape == (200, 1, 28, 28)
    assert float(d["boxes"][:, :2].min()) >= 0 and float(d["boxes"][:, 2].max()) <= 640
    assert float(d["boxes"][:, 3].max()) <= 480
