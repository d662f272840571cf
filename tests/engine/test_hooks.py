"""MetricsLogger's peak memory is the peak of each logging period, on the run's own GPU."""
from types import SimpleNamespace

import torch

from resdet.engine.hooks import MetricsLogger


class _FakeCudaMemory:
    """Stands in for the CUDA caching allocator's peak counter (no GPU here): `use(mib)` allocates."""

    def __init__(self):
        self.current = 0.0
        self.peak = 0.0
        self.devices = set()

    def use(self, mib):
        self.current = mib
        self.peak = max(self.peak, mib)

    def max_memory_allocated(self, device=None):
        self.devices.add(device)
        return self.peak * 2**20

    def reset_peak_memory_stats(self, device=None):
        self.devices.add(device)
        self.peak = self.current


class _Writer:
    def __init__(self):
        self.rows = []

    def write(self, iteration, **scalars):
        self.rows.append((iteration, scalars))


def test_peak_memory_is_reset_every_logging_period(monkeypatch):
    mem = _FakeCudaMemory()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", mem.max_memory_allocated)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", mem.reset_peak_memory_stats)
    mem.use(5000)  # start-up (e.g. weights loaded on the GPU and freed): not training's peak
    mem.use(100)
    trainer = SimpleNamespace(device=torch.device("cuda", 1), max_iter=4, writer=_Writer(), iter=0, step_metrics={})
    hook = MetricsLogger(period=2)
    hook.trainer = trainer
    hook.before_train()
    for it, used in enumerate([800, 300, 200, 250]):  # a large first period, a smaller second one
        mem.use(used)
        trainer.iter = it
        trainer.step_metrics = {"losses": {"loss": 1.0}, "total_loss": 1.0, "lr": 0.1, "data_time": 0.0, "time": 0.1}
        hook.after_step()
    logged = [(it, s["max_mem_mb"]) for it, s in trainer.writer.rows]
    # the second period starts holding 300 MiB (what was allocated at the reset), then peaks below it;
    # never reset, it would repeat 800 (and without the reset before training, 5000 twice)
    assert logged == [(2, 800.0), (4, 300.0)]
    assert mem.devices == {torch.device("cuda", 1)}  # the run's GPU, not the current device
