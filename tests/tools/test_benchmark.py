"""tools/benchmark.py runs both models on the same inputs and prints the table with the ratio."""
import json

import pytest

from tools.benchmark import main


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
