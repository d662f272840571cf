"""Distributed faults end cleanly: real two-process torchrun jobs over gloo (tests/engine/fault_worker.py).

- an exception on rank 1 ends the whole job within seconds (torchrun stops rank 0, which is blocked in a
  collective), with one message naming the rank and the iteration, although the process-group timeout
  is the default 30 minutes;
- rank 1 SIGKILLed ends the job likewise, and a resume continues exactly: the final weights and the
  losses are those of an uninterrupted run with the same global batch;
- (in the resume's launch, to save one) a NaN loss on rank 1 stops BOTH ranks at the same iteration
  with the same message naming rank 1, logged once (rank 0's log); and the other two-process contracts:
  evaluation results gathered to rank 0 only, DDP buffer broadcasting off for detection, buffers
  broadcast on request.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resdet.engine import load_checkpoint, read_metrics

from .tiny_run import make_cfg, run

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORKER = HERE / "fault_worker.py"
TIMEOUT_S = 150  # a hang fails the test instead of blocking the suite
ENDS_WITHIN_S = 20  # from the fault to the end of the job; the process-group timeout is 30 minutes
SOLVER = dict(IMS_PER_BATCH=8, MAX_ITER=6, STEPS=(4,), CHECKPOINT_PERIOD=3)  # as in fault_worker.py


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(output_dir, scenario, *extra):
    """Run the worker under torchrun (2 processes); (exit code, end time, combined output)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "--max_restarts=0", str(WORKER), str(output_dir), scenario, *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun {scenario}: no end after {TIMEOUT_S} s (a rank waits for the timeout?)\n"
                    + output.decode(errors="replace")[-4000:])
    return proc.returncode, time.time(), output.decode(errors="replace")


def _seconds_after_fault(output_dir, ended):
    return ended - json.loads((output_dir / "fault_time.json").read_text())["time"]


def test_exception_on_one_rank_ends_the_job_within_seconds(tmp_path):
    out = tmp_path / "raise"
    code, ended, output = _torchrun(out, "raise")
    assert code != 0
    assert _seconds_after_fault(out, ended) < ENDS_WITHIN_S, output[-4000:]
    message = "Training stopped during iteration 2 on rank 1 of 2: RuntimeError: injected failure"
    assert output.count(message) == 1, output[-4000:]
    log0 = (out / "log.txt").read_text()
    assert message in (out / "log.rank1.txt").read_text() and message not in log0
    if "Rank 0 stopped" in log0:  # rank 0 saw its collective fail before torchrun stopped it: it defers to rank 1
        assert "Rank 0 stopped during iteration 2 after rank 1 did" in log0 and "ERROR" not in log0
    # torchrun's summary names the failed rank and, through @record, its error
    assert "rank: 1" in output and "injected failure" in output.split("Root Cause")[-1]


def test_sigkill_ends_the_job_resume_continues_exactly_and_a_nan_stops_every_rank(tmp_path):
    out = tmp_path / "kill"
    code, ended, output = _torchrun(out, "kill")
    assert code != 0 and "Signal 9 (SIGKILL)" in output, output[-4000:]
    assert _seconds_after_fault(out, ended) < ENDS_WITHIN_S
    assert (out / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert not (out / "model_final.pth").exists()

    code, _, output = _torchrun(out, "resume")  # then the NaN run and the other checks, same launch
    assert code == 0, output[-4000:]
    assert f"Resumed from {out / 'model_0000003.pth'} at iteration 3" in (out / "log.txt").read_text()
    # the reference: one process, the same global batch, never interrupted (a two-process run equals
    # it to 1e-6: tests/engine/test_distributed.py)
    one, _, _ = run(make_cfg(tmp_path / "one", **SOLVER), dropout=0.0)
    ckpt = load_checkpoint(str(out / "model_final.pth"))
    assert ckpt["iteration"] == 6
    for name, ref in one.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], ref, rtol=0, atol=1e-6, msg=name)
    resumed = {r["iteration"]: r["loss_cls"] for r in read_metrics(str(out / "metrics.jsonl")) if "loss_cls" in r}
    straight = {r["iteration"]: r["loss_cls"] for r in read_metrics(str(tmp_path / "one" / "metrics.jsonl"))
                if "loss_cls" in r}
    assert sorted(resumed) == list(range(1, 7))
    assert [resumed[i] for i in range(1, 7)] == pytest.approx([straight[i] for i in range(1, 7)], abs=1e-6)

    # a NaN loss on rank 1: both ranks stopped at iteration 2 with the same message naming rank 1
    nan = out / "nan"
    reports = [json.loads((nan / f"report{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["error"] == reports[1]["error"]
    assert reports[0]["error"].startswith("Loss became non-finite at iteration 2 on rank 1 (rank 1: loss_cls=nan")
    assert "all 2 ranks stop here" in reports[0]["error"]
    fault = json.loads((nan / "fault_time.json").read_text())["time"]
    assert all(r["stopped_at"] - fault < ENDS_WITHIN_S for r in reports)
    # one message: rank 0 logs it; rank 1 (whose log holds its warnings and errors) does not repeat it
    log0 = (nan / "log.txt").read_text()
    assert log0.count("Training stopped during iteration 2: FloatingPointError: Loss became non-finite") == 1
    assert "non-finite" not in (nan / "log.rank1.txt").read_text()
    assert not (nan / "model_final.pth").exists()

    # results gathered to rank 0 only (all_gather_object would give rank 1 everything too)
    assert reports[0]["gathered"] == [{"rank": 0}, {"rank": 1}] and reports[1]["gathered"] is None
    assert reports[1]["evaluator_gathered_images"] is None and reports[1]["bbox_AP"] is None
    assert len(reports[0]["evaluator_gathered_images"]) == 4 and reports[0]["bbox_AP"] == pytest.approx(100.0)
    # DDP buffers: with broadcast_buffers=False rank 1 keeps its own; broadcast_buffers() copies rank 0's;
    # DDP's default copies rank 0's at every forward; detection's model is wrapped without it
    assert [r["buffer_without_broadcast"] for r in reports] == [0.0, 1.0]
    assert [r["buffer_after_broadcast_buffers"] for r in reports] == [0.0, 0.0]
    assert [r["buffer_with_broadcast"] for r in reports] == [0.0, 0.0]
    assert [r["detection_syncs_buffers"] for r in reports] == [False, False]
    assert [r["default_syncs_buffers"] for r in reports] == [True, True]
