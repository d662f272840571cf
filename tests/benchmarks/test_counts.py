"""tools/benchmark.py --counts: host reads and aten ops of ours and torchvision's, with the ratio."""
import json

import pytest

from resdet.benchmarks.main import main

# one intra-op thread (tests/conftest.py): two spin-waiting threads on two shared cores cost CPU for nothing
pytestmark = pytest.mark.usefixtures("one_thread")


def test_counts_table_and_json(tmp_path, capsys):
    out = tmp_path / "counts.jsonl"
    assert main(["--counts", "--arch", "fasterrcnn", "--device", "cpu", "--size", "32x48", "--count-batches", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ratio = ours / torchvision's aten ops" in text
    # the three kinds of synchronisation, each named, and their sum
    header = next(line for line in text.splitlines() if line.startswith("arch"))
    assert all(k in header for k in ("syncs ours/tv", "reads ours/tv", "h2d ours/tv", "nms ours/tv"))
    assert "host reads + blocking host-to-device copies (h2d) + NMS calls" in text
    assert [l.split()[1] for l in text.splitlines() if l.startswith("fasterrcnn ")] == ["infer", "train"]
    assert "resdet fasterrcnn train batch 1:" in text  # where our reads come from
    rows = {(r["model"], r["mode"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {(m, k) for m in ("resdet", "torchvision") for k in ("train", "infer")}
    for mode in ("train", "infer"):
        ours, tv = rows[("resdet", mode)], rows[("torchvision", mode)]
        assert ours["syncs"] <= 8 < tv["syncs"] and ours["undeclared"] == 0
        assert ours["syncs"] == ours["host_reads"] + ours["h2d_copies"] + ours["nms_calls"]
        assert ours["nms_calls"] == 0 and ours["h2d_copies"] == 0  # the GPU branch: one batched NMS, no copy
        assert 0 < ours["aten_ops"] < tv["aten_ops"]
        assert sum(ours["reads_by_kind"].values()) == ours["host_reads"]
