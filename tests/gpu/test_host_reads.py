"""Host reads on CUDA: one training step and one inference call stay within the budget of at most 8
host-device synchronisations (issue 9; counted on the CPU by resdet/utils/counting.py, here by CUDA's
own sync debug mode, which warns at every synchronising operation)."""
import itertools
import warnings

import pytest
import torch

from resdet.engine.trainer import Trainer

from .helpers import detector, photo_inputs

pytestmark = pytest.mark.gpu

BUDGET = 8


def _syncs(fn):
    """The number of synchronising CUDA operations `fn` makes (and where, for the message)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing" in str(w.message)]
    return len(syncs), "\n".join(f"{w.filename}:{w.lineno}" for w in syncs)


def test_training_step_and_inference_within_the_host_read_budget(cuda_only):
    device = cuda_only
    model, _ = detector()
    model = model.to(device)
    images, targets = photo_inputs(2, 320, 448, device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    trainer = Trainer(model, opt, itertools.repeat((images, targets)), max_iter=1, amp="fp16", device=device)
    trainer.train()  # warm-up: cuDNN / cuBLAS handles, the caching allocator, lazy initialisations
    count, where = _syncs(trainer.train)  # one step exactly as train_det runs it, its loss read included
    assert count <= BUDGET, f"{count} host syncs in one training step (budget {BUDGET}):\n{where}"

    model.eval()
    with torch.no_grad():
        model(images)
        count, where = _syncs(lambda: model(images))
    assert count <= BUDGET, f"{count} host syncs in one inference call (budget {BUDGET}):\n{where}"
