"""tools/benchmark.py runs both models on the same inputs and prints the table with the ratio."""
import json

import pytest

from tools.benchmark import main

# one intra-op thread (tests/conftest.py): two spin-waiting threads on two shared cores cost CPU for nothing
pytestmark = pytest.mark.usefixtures("one_thread")


def test_benchmark_cpu_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    assert main(["--arch", "fasterrcnn", "--device", "cpu", "--size", "64x96", "--batch", "1", "--iters", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ratio = resdet img/s / torchvision img/s" in text
    lines = [l for l in text.splitlines() if l.startswith("fasterrcnn ")]
    assert [l.split()[1] for l in lines] == ["train", "infer"]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert {(r["model"], r["mode"]) for r in rows} == {(m, k) for m in ("resdet", "torchvision") for k in ("train", "infer")}
    assert all(r["img_per_s"] > 0 and r["size"] == "64x96" for r in rows)
    infer = {r["model"]: r["dets_per_image"] for r in rows if r["mode"] == "infer"}
    assert infer["resdet"] == infer["torchvision"] > 0  # same weights, same inputs: same detections


def test_benchmark_rejects_a_bad_size():
    with pytest.raises(SystemExit):
        main(["--size", "12x"])


def test_loader_imagenet_prints_the_ratio_line_per_core(tmp_path, capsys):
    """--loader imagenet on benchmark photographs made in a temp folder: both augmentations, ours and
    torchvision's pipeline on the same files, the ratio line last."""
    import re

    import torch

    pytest.importorskip("skimage", reason="the benchmark photos come from scikit-image")
    threads = torch.get_num_threads()
    out = tmp_path / "loader.jsonl"
    assert main(["--loader", "imagenet", "--n", "16", "--rounds", "1", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads   # one thread while timing, restored afterwards
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"loader imagenet: ratio ([\d.]+) \(resdet (\d+) img/s, torchvision (\d+) img/s per core\)", last)
    assert m, last
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["aug"] for r in rows] == ["rrc", "scale"] and all(r["resdet"] > 0 and r["torchvision"] > 0 for r in rows)
    worst = min(rows, key=lambda r: r["ratio"])
    assert float(m.group(1)) == pytest.approx(worst["ratio"], abs=0.01)


def test_loader_imagenet_gpu_decode_runs_on_the_cpu(capsys):
    pytest.importorskip("skimage", reason="the benchmark photos come from scikit-image")
    assert main(["--loader", "imagenet", "--decode", "gpu", "--device", "cpu", "--aug", "rrc", "--n", "8",
                 "--rounds", "1"]) == 0
    text = capsys.readouterr().out
    assert "not a GPU figure" in text and "loader imagenet rrc (decode gpu)" in text
