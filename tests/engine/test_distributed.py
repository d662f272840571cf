"""A real two-process DDP run over gloo on CPU, compared with one process and the same global batch."""
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp

from resdet.engine import distributed as d
from resdet.engine import Checkpointer, CheckpointError, load_checkpoint, read_metrics

from .tiny_run import make_cfg, run


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, output_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        run(make_cfg(output_dir, MAX_ITER=6, STEPS=(4,), CHECKPOINT_PERIOD=3), dropout=0.0, distributed=True)
        # the helpers, checked for real across the two processes
        assert d.is_distributed() and d.get_rank() == rank and d.get_world_size() == world
        assert d.all_gather_object({"rank": rank}) == [{"rank": r} for r in range(world)]
        reduced = d.reduce_dict({"a": torch.tensor(float(rank)), "b": torch.tensor(2.0 * rank)})
        assert reduced["a"].item() == pytest.approx((world - 1) / 2) and reduced["b"].item() == pytest.approx(world - 1)
        assert d.broadcast_object(f"from {rank}") == "from 0"
        # resuming: every rank must see the same checkpoint (on several machines OUTPUT_DIR is shared)
        shared = Checkpointer(output_dir, torch.nn.Linear(8, 3))
        assert shared._latest_on_every_rank() == os.path.join(output_dir, "model_final.pth")
        # rank 1 looks in a folder of its own, as on a machine without the shared folder: every rank
        # fails with the same message instead of rank 0 resuming while rank 1 starts afresh (a hang)
        own = output_dir if rank == 0 else output_dir + "_not_shared"
        os.makedirs(own, exist_ok=True)
        with pytest.raises(CheckpointError, match=r"rank 0: model_final\.pth; rank 1: no checkpoint\).*all share"):
            Checkpointer(own, torch.nn.Linear(8, 3)).resume_or_load(resume=True)
        d.synchronize()
    finally:
        d.cleanup()


def test_two_process_ddp_matches_one_process(tmp_path):
    one, _, _ = run(make_cfg(tmp_path / "one", MAX_ITER=6, STEPS=(4,), CHECKPOINT_PERIOD=3), dropout=0.0)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)

    ckpt = load_checkpoint(str(tmp_path / "ddp" / "model_final.pth"))
    assert ckpt["iteration"] == 6
    assert len(ckpt["rng"]) == 2  # each rank's RNG state, for exact resume
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # seeded SEED + rank
    for name, ref in one.state_dict().items():
        torch.testing.assert_close(ckpt["model"][name], ref, rtol=0, atol=1e-6, msg=name)
    # logged losses are the mean over both processes: the same as one process's
    ddp_losses = [r["loss_cls"] for r in read_metrics(str(tmp_path / "ddp" / "metrics.jsonl")) if "loss_cls" in r]
    one_losses = [r["loss_cls"] for r in read_metrics(str(tmp_path / "one" / "metrics.jsonl")) if "loss_cls" in r]
    assert len(ddp_losses) == 6 and ddp_losses == pytest.approx(one_losses, abs=1e-6)
    # resume the two-process checkpoint at iteration 3 with ONE process (same global batch): the sampler
    # position counts global images, so the data and the result are the same again
    resume_dir = tmp_path / "resume_one"
    resume_dir.mkdir()
    shutil.copy(tmp_path / "ddp" / "model_0000003.pth", resume_dir / "model_0000003.pth")
    (resume_dir / "last_checkpoint").write_text("model_0000003.pth\n")
    resumed, trainer, state = run(make_cfg(resume_dir, MAX_ITER=6, STEPS=(4,), CHECKPOINT_PERIOD=3), resume=True,
                                  dropout=0.0)
    assert state.start_iter == 3 and state.sampler_state["position"] == 3 * 8
    assert state.resumed["rng"] is None  # saved by 2 processes: not restorable in 1 (a warning says so)
    for name, ref in one.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], ref, rtol=0, atol=1e-6, msg=name)

    # rank 0 logs progress; rank 1 only warnings (here none: STEPS lies inside MAX_ITER)
    assert "iter 6/6" in (tmp_path / "ddp" / "log.txt").read_text()
    assert (tmp_path / "ddp" / "log.rank1.txt").read_text() == ""


def test_single_process_helpers_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert d.init_distributed() is False
    assert (d.get_rank(), d.get_world_size(), d.is_main_process()) == (0, 1, True)
    assert d.all_gather_object(3) == [3]
    model = torch.nn.Linear(2, 2)
    assert d.wrap_model(model, torch.device("cpu")) is model
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2 but the environment lacks \[.*'MASTER_ADDR'"):
        d.init_distributed()
