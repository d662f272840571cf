"""Top-k error (resdet/evaluation/classification.py), including the sum over DDP processes."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from resdet.evaluation.classification import ClassificationEvaluator, topk_correct


def test_topk_correct_on_a_hand_made_example():
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0],    # label 1: top-1 hit
                           [0.3, 0.1, 0.2, 0.25, 0.05, 0.1],    # label 3: rank 2 -> top-5 hit only
                           [0.0, 0.1, 0.2, 0.3, 0.15, 0.25],    # label 0: rank 6 -> miss at 5
                           [0.9, 0.02, 0.02, 0.02, 0.02, 0.02]])
    labels = torch.tensor([1, 3, 0, 0])
    assert topk_correct(scores, labels, (1, 2, 5)) == {1: 2, 2: 3, 5: 3}


def test_evaluator_accumulates_batches_and_clamps_k():
    torch.manual_seed(0)
    scores, labels = torch.randn(50, 3), torch.randint(0, 3, (50,))
    ev = ClassificationEvaluator((1, 5))
    for i in range(0, 50, 7):
        ev.process(scores[i:i + 7], labels[i:i + 7])
    res = ev.evaluate()
    top1 = (scores.argmax(1) == labels).float().mean().item()
    assert res["num_samples"] == 50
    assert res["top1_err"] == pytest.approx(100 * (1 - top1))
    assert res["top5_err"] == 0.0          # k=5 > 3 classes: every label is in the "top 5"


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"scores must be \[N, num_classes\]"):
        topk_correct(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        topk_correct(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(RuntimeError, match="before any sample"):
        ClassificationEvaluator().evaluate()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, scores, labels, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        ev = ClassificationEvaluator((1, 5))
        ev.process(scores[rank::2], labels[rank::2])   # each process sees half the samples
        out[rank] = ev.evaluate()
    finally:
        dist.destroy_process_group()


def test_two_processes_sum_to_the_single_process_result():
    torch.manual_seed(1)
    scores, labels = torch.randn(31, 10), torch.randint(0, 10, (31,))
    ev = ClassificationEvaluator((1, 5))
    ev.process(scores, labels)
    want = ev.evaluate()
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), scores, labels, out), nprocs=2)
    assert out[0] == out[1] == want
