"""Two torchrun "machines" on this host: a real multi-node DDP run over gloo, launched as a user would.

Each node is its own `torchrun` (elastic agent) process, exactly as on two machines; only the address
is 127.0.0.1. We use torchrun's static rendezvous (--nnodes/--node_rank/--master_addr/--master_port),
not `--rdzv_backend=c10d --rdzv_endpoint`: with c10d the node ranks are handed out in order of arrival,
so which machine holds global rank 0 (the one that writes checkpoints and logs) would change from run
to run, and the test could not pin "node 1's first process has RANK 1 but LOCAL_RANK 0". Static is the
form resdet documents for fixed-size jobs (DESIGN.md, Engine, Multi-node); c10d buys elasticity and
fault tolerance, which the engine does not use (it resumes from checkpoints instead).

Node 0 runs one process, node 1 two, so global and local ranks differ on node 1 (RANK 1, 2 with
LOCAL_RANK 0, 1): code that took LOCAL_RANK for the rank would make two "rank 0"s (the process group
never forms: the test's timeout fires), shard the data wrongly (weights differ from the one-process
run) or write rank 0's files from node 1 (the log checks fail).
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
WORKER = HERE / "multinode_worker.py"
TIMEOUT_S = 150  # a hang (e.g. a rendezvous that never completes) fails the test instead of blocking CI
SOLVER = dict(IMS_PER_BATCH=6, MAX_ITER=6, STEPS=(4,), CHECKPOINT_PERIOD=3)  # as in multinode_worker.py


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_node(node_rank, nproc, port, output_dir, log_path):
    """Start one "machine": the torchrun command line a user types there (see DESIGN.md)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node_rank}",
           f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1", f"--master_port={port}",
           "--max_restarts=0", str(WORKER), str(output_dir)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    log = open(log_path, "wb")
    # A session of its own, so that on a timeout the agent AND its workers can be killed together.
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log


def _kill(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _run_two_nodes(output_dir, logs_dir):
    port = _free_port()
    nodes = [_torchrun_node(rank, nproc, port, output_dir, logs_dir / f"node{rank}.log")
             for rank, nproc in ((0, 1), (1, 2))]
    procs = [p for p, _ in nodes]
    deadline = time.monotonic() + TIMEOUT_S
    failure = None
    try:
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                failure = "a node failed"  # the other would wait for it until the timeout: stop now
                break
            if time.monotonic() > deadline:
                failure = f"timed out after {TIMEOUT_S} s"
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            _kill(p)
        for _, log in nodes:
            log.close()
    codes = [p.returncode for p in procs]
    if failure or any(codes):
        outputs = "\n".join(f"--- node {i} (exit {c}) ---\n{(logs_dir / f'node{i}.log').read_text()[-4000:]}"
                            for i, c in enumerate(codes))
        pytest.fail(f"two-node torchrun run: {failure or 'non-zero exit'}\n{outputs}")


def test_two_torchrun_nodes_match_one_process(tmp_path):
    out = tmp_path / "multinode"
    started = time.monotonic()
    _run_two_nodes(out, tmp_path)
    print(f"two-node torchrun run: {time.monotonic() - started:.1f} s")

    # who was who: torchrun numbered node 0's process first, then node 1's; the helpers agreed with it
    procs = json.loads((out / "processes.json").read_text())
    assert [(p["env"]["GROUP_RANK"], p["rank"], p["local_rank"]) for p in procs] == [(0, 0, 0), (1, 1, 0), (1, 2, 1)]
    assert all(p["world_size"] == 3 and p["env"]["WORLD_SIZE"] == 3 for p in procs)
    assert [p["env"]["LOCAL_WORLD_SIZE"] for p in procs] == [1, 2, 2]
    assert [p["is_main"] for p in procs] == [True, False, False]

    # the same result as one process with the same global batch (6 = 3 processes x 2 images)
    one, _, _ = run(make_cfg(tmp_path / "one", **SOLVER), dropout=0.0)
    ckpt = load_checkpoint(str(out / "model_final.pth"))
    assert ckpt["iteration"] == 6
    for name, ref in one.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], ref, rtol=0, atol=1e-6, msg=name)
    multi_losses = [r["loss_cls"] for r in read_metrics(str(out / "metrics.jsonl")) if "loss_cls" in r]
    one_losses = [r["loss_cls"] for r in read_metrics(str(tmp_path / "one" / "metrics.jsonl")) if "loss_cls" in r]
    assert len(multi_losses) == 6 and multi_losses == pytest.approx(one_losses, abs=1e-6)

    # every rank's RNG state is saved under its GLOBAL rank (seeded SEED + rank: all three differ)
    rng = [s["torch"] for s in ckpt["rng"]]
    assert len(rng) == 3 and not any(torch.equal(rng[i], rng[j]) for i, j in ((0, 1), (0, 2), (1, 2)))

    # files by global rank: rank 0 alone writes log.txt; node 1's processes write log.rank1/2.txt
    main_log = (out / "log.txt").read_text()
    assert "world size 3, rank 0," in main_log and "iter 6/6" in main_log
    assert "rank 1," not in main_log and "rank 2," not in main_log
    assert (out / "log.rank1.txt").exists() and (out / "log.rank2.txt").exists()
    assert not (out / "log.rank0.txt").exists()
