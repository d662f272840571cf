"""A tiny but complete training run through the engine's config-driven builders (shared by the tests)."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from resdet.config import get_cfg
from resdet.data.samplers import InfiniteSampler
from resdet.engine import (
    HookBase,
    build_trainer,
    build_training_state,
    default_setup,
    per_process_batch,
    prepare_model,
)


class TinyNet(nn.Module):
    def __init__(self, dropout=0.2):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 3))

    def forward(self, x):
        return self.body(x)


def dataset(n=40):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # learnable labels in 0..2
    return TensorDataset(x, y)


def loss_fn(model, batch):
    x, y = batch
    return {"loss_cls": F.cross_entropy(model(x), y)}


class KillAt(HookBase):
    """Simulates the process dying at the start of iteration `it`."""

    def __init__(self, it):
        self.it = it

    def before_step(self):
        if self.trainer.iter == self.it:
            raise KeyboardInterrupt(f"killed at {self.it}")


def make_cfg(output_dir, **solver):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.SEED = 0
    cfg.LOG_PERIOD = 1
    s = dict(BASE_LR=0.1, IMS_PER_BATCH=8, MAX_ITER=12, STEPS=(8,), WARMUP_ITERS=3, WARMUP_FACTOR=0.1,
             CHECKPOINT_PERIOD=4, WEIGHT_DECAY=1e-4)
    s.update(solver)
    for k, v in s.items():
        cfg.SOLVER[k] = v
    return cfg


def run(cfg, resume=False, kill_at=None, dropout=0.2, eval_fn=None, distributed=False, hooks=(), loss=loss_fn):
    """Train per cfg (extra `hooks`, another `loss` function if given); returns (unwrapped model, trainer, state)."""
    cfg, device = default_setup(cfg, distributed=distributed)
    model = prepare_model(TinyNet(dropout), cfg, device)
    state = build_training_state(cfg, model, resume=resume)
    data = dataset()
    sampler = InfiniteSampler(len(data), seed=cfg.SEED)
    if state.sampler_state is not None:
        sampler.load_state_dict(state.sampler_state)
    loader = DataLoader(data, batch_size=per_process_batch(cfg), sampler=sampler)
    hooks = list(hooks) + ([KillAt(kill_at)] if kill_at is not None else [])
    trainer = build_trainer(cfg, model, loader, state, loss_fn=loss, sampler=sampler, eval_fn=eval_fn,
                            extra_hooks=hooks, progress_bar=False)
    trainer.train()
    return getattr(model, "module", model), trainer, state
