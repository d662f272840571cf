"""tools/benchmark.py --counts: host reads and aten ops of ours and torchvision's, with the ratio."""
import json

from resdet.benchmarks.main import main


def test_counts_table_and_json(tmp_path, capsys):
    out = tmp_path / "counts.jsonl"
    assert main(["--counts", "--arch", "fasterrcnn", "--device", "cpu", "--size", "64x64", "--count-batches", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ratio = ours / torchvision's aten ops" in text
    assert [l.split()[1] for l in text.splitlines() if l.startswith("fasterrcnn ")] == ["infer", "train"]
    assert "resdet fasterrcnn train batch 1:" in text  # where our reads come from
    rows = {(r["model"], r["mode"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {(m, k) for m in ("resdet", "torchvision") for k in ("train", "infer")}
    for mode in ("train", "infer"):
        ours, tv = rows[("resdet", mode)], rows[("torchvision", mode)]
        assert ours["host_reads"] <= 8 < tv["host_reads"]
        assert 0 < ours["aten_ops"] < tv["aten_ops"]
        assert sum(ours["reads_by_kind"].values()) == ours["host_reads"]
