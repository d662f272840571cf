"""tools/reproduce.py cifar10 (resdet/runs/reproduce.py) at smoke scale on miniature CIFAR python batches.

One study (ResNet-20 and plain-20, 2 runs each, in this process) is the reference; the same study
interrupted in the middle of a run and rerun (the rest then in train_cls processes, --jobs 2) must give
its numbers exactly.
"""
import json
import os

import pytest
import torch

import resdet.classification.data as data_mod
from resdet.runs import reproduce
from resdet.runs.reproduce import main, run_record
from tests.classification.helpers import make_cifar_batches


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root, _ = make_cifar_batches(tmp_path_factory.mktemp("c10"), per_batch=40)
    return root


def _args(data, out, *extra):
    return ["cifar10", "--smoke", "--data", data, "--output", str(out), "--depths", "20", "--plain", "20",
            "--device", "cpu", *extra]


def _final(out, model, k=0):
    d = os.path.join(out, "runs", model, f"run{k}")
    return (json.load(open(os.path.join(d, "final_results.json"))),
            torch.load(os.path.join(d, "model_final.pth"), weights_only=True)["model"])


@pytest.fixture(scope="module")
def reference(cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    assert main(_args(cifar, out, "--runs", "2")) == 0
    return str(out)


def test_the_smoke_study_writes_table_6_and_fig_6(reference):
    out = reference
    md = open(os.path.join(out, "report.md")).read()
    rep = json.load(open(os.path.join(out, "report.json")))
    assert "Smoke run" in md and "CIFAR-10's python batches" in md
    res, plain = rep["models"]["resnet20"], rep["models"]["plain20"]
    # exact parameter counts from the models; the paper's 0.27 M and 8.75 % beside ours
    assert res["params"] == plain["params"] == 269_722 and res["paper_params_m"] == 0.27 and res["paper_error"] == 8.75
    assert "| 20 | 0.270 M (269,722) | 0.27 M | 8.75 |" in md
    for m in (res, plain):
        errs = [r["test_error"] for r in m["runs"]]
        assert len(errs) == 2 and all(r["finished"] and r["wall_seconds"] > 0 for r in m["runs"])
        assert m["best"] == min(errs) and m["mean"] == pytest.approx(sum(errs) / 2) and m["n"] == 2
        assert m["std"] == pytest.approx(abs(errs[0] - errs[1]) / 2 ** 0.5)
        assert f"{m['best']:.2f} ({m['mean']:.2f}±{m['std']:.2f}, n=2)" in md
    assert rep["recipe"]["max_iter"] == 8 and rep["recipe"]["step_mode"] == "eager" and rep["test_images"] == 40
    png = open(os.path.join(out, "fig6.png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # each run is an ordinary train_cls folder with the recipe's config, its seed and the smoke scale
    cfg = open(os.path.join(out, "runs", "plain20", "run1", "config.yaml")).read()
    assert "cifar_plain20" in cfg and "SEED: 1" in cfg and "MAX_ITER: 8" in cfg


class _Killed(BaseException):
    pass


def test_an_interrupted_study_continues_where_it_stopped(cifar, reference, tmp_path, monkeypatch):
    out = str(tmp_path / "study")
    real = data_mod.DeviceBatches.__next__
    seen = {"n": 0}

    def dying_next(self):   # plain-20 (the second run) dies during iteration 6, after the checkpoint at 4
        if self.iteration == 6:
            seen["n"] += 1
            if seen["n"] == 2:
                raise _Killed()
        return real(self)

    monkeypatch.setattr(data_mod.DeviceBatches, "__next__", dying_next)
    with pytest.raises(_Killed):
        main(_args(cifar, out, "--runs", "1"))
    monkeypatch.setattr(data_mod.DeviceBatches, "__next__", real)
    res_dir, plain_dir = (os.path.join(out, "runs", m, "run0") for m in ("resnet20", "plain20"))
    assert run_record(res_dir)["finished"] and not run_record(plain_dir)["finished"]
    assert "plain-20 run 0" in open(os.path.join(out, "report.md")).read()   # listed as not finished
    res_log = open(os.path.join(res_dir, "log.txt")).read()

    # the rerun takes the other path: train_cls processes (--jobs 2; one run is left, resumed there)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(_args(cifar, out, "--runs", "1", "--jobs", "2")) == 0
    assert os.path.getsize(os.path.join(plain_dir, "stdout.txt")) > 0
    assert open(os.path.join(res_dir, "log.txt")).read() == res_log       # the finished run was not touched
    assert len(run_record(res_dir)["segments"]) == 1
    rec = run_record(plain_dir)
    assert rec["finished"] and [s["resumed"] for s in rec["segments"]] == [False, True]
    assert "Resumed from" in open(os.path.join(plain_dir, "log.txt")).read()
    for model in ("resnet20", "plain20"):   # the numbers of the uninterrupted study (exact resume)
        (r_ref, w_ref), (r, w) = _final(reference, model), _final(out, model)
        assert r == r_ref
        for k in w_ref:
            assert torch.equal(w[k], w_ref[k]), (model, k)


def test_wall_time_of_a_killed_segment_ends_at_the_runs_last_file(tmp_path):
    run = tmp_path / "run0"
    run.mkdir()
    (run / "study_run.json").write_text(json.dumps({"segments": [{"start": 1000.0, "end": 1010.0},
                                                                 {"start": 2000.0, "end": None}]}))
    (run / "metrics.jsonl").write_text("{}\n")
    os.utime(run / "metrics.jsonl", (2030.0, 2030.0))
    rec = run_record(str(run))
    assert rec["wall_seconds"] == pytest.approx(10.0 + 30.0) and not rec["finished"]


def test_a_rerun_with_other_settings_is_refused(cifar, reference):
    with pytest.raises(SystemExit, match="other settings"):
        main(_args(cifar, reference, "SOLVER.BASE_LR", "0.2"))
    with pytest.raises(SystemExit, match="set per run"):
        main(_args(cifar, reference, "SEED", "3"))
    with pytest.raises(SystemExit, match="not found"):
        main(_args(os.path.join(cifar, "nowhere"), reference + "_x"))
    with pytest.raises(ValueError, match="No recipe for resnet26"):
        reproduce.plan_study(reference, [26], [], 1)
