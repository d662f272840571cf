"""tools/benchmark.py --arch cascade and --counts --arch cascade: Cascade Mask R-CNN against resdet's own
Mask R-CNN (same shared weights, same photographs), timed and counted in the same run. Narrow models
(ResNet-18, 32-channel FPN, small heads) keep the CPU test short; the code paths are the R50 ones."""
import functools
import json

from resdet.benchmarks import cascade as bench_cascade
from resdet.benchmarks.main import main

SHRINK = dict(pre_nms_topk=100, post_nms_topk=50, roi_batch=32)
NARROW = ["MODEL.BACKBONE.NAME", "resnet18", "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
          "MODEL.ROI_MASK_HEAD.CONV_DIM", 32]


def test_pair_shares_every_common_weight():
    models = bench_cascade.build_cascade_pair(num_classes=4, shrink=SHRINK, overrides=NARROW)
    cascade, standard = models["cascade"].state_dict(), models["standard"].state_dict()
    common = set(cascade) & set(standard)
    assert any(k.startswith("backbone.") for k in common) and any(k.startswith("roi_heads.mask_head.") for k in common)
    assert all(cascade[k].equal(standard[k]) for k in common)
    assert all(k.startswith(("roi_heads.box_heads.", "roi_heads.box_predictors.")) for k in set(cascade) - common)


def test_counts_command_two_more_reads_than_the_standard_heads(tmp_path, capsys, monkeypatch, one_thread):
    # the command's own code, on the narrow pair (the R50 pair is what it builds on a GPU)
    monkeypatch.setattr(bench_cascade, "build_cascade_pair",
                        functools.partial(bench_cascade.build_cascade_pair, shrink=SHRINK, overrides=NARROW))
    out = tmp_path / "counts.jsonl"
    assert main(["--counts", "--arch", "cascade", "--device", "cpu", "--size", "64x64", "--count-batches", "2",
                 "--boxes", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ratio = cascade / standard aten ops" in text and "cascade train batch 2:" in text
    by = {(r["mode"], r["model"]): r for r in map(json.loads, out.read_text().splitlines())}
    for mode in ("train", "infer"):
        cascade, standard = by[(mode, "cascade")], by[(mode, "standard")]
        assert cascade["host_reads"] == standard["host_reads"] + 2 <= 8, (mode, cascade["reads_by_kind"])
        assert cascade["aten_ops"] > standard["aten_ops"]


def test_timing_command(tmp_path, capsys, monkeypatch, one_thread):
    # the command's own code, on the narrow pair (the R50 pair is what it builds on a GPU)
    monkeypatch.setattr(bench_cascade, "build_cascade_pair",
                        functools.partial(bench_cascade.build_cascade_pair, shrink=SHRINK, overrides=NARROW))
    out = tmp_path / "cascade.jsonl"
    assert main(["--arch", "cascade", "--device", "cpu", "--size", "64x64", "--batch", "1", "--iters", "1",
                 "--warmup", "0", "--boxes", "2", "--json", str(out)]) == 0
    assert "ratio = cascade img/s / standard heads' img/s" in capsys.readouterr().out
    rows = {(r["model"], r["mode"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {(m, k) for m in ("cascade", "standard") for k in ("train", "infer")}
    assert all(r["img_per_s"] > 0 for r in rows.values())
    assert rows[("cascade", "infer")]["dets_per_image"] == rows[("standard", "infer")]["dets_per_image"] == 100
