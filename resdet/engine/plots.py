"""Training curves as a PNG, drawn from a run's metrics.jsonl.

    plot_training_curves("output/metrics.jsonl", "output/training_curves.png")

Three panels against iterations: the losses (log scale), the learning rate, and the evaluation results,
the last panel only when there are some. That panel draws the headline numbers only (`EVAL_CURVES`:
detection's "bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50", classification's "test/top1_err" ...),
not every number an evaluation logs (AP by object size, recalls, image counts, seconds), with its
legend below the plot, where it covers neither curves nor title.
`PlotHook` redraws the picture during training; tools/plot_curves.py compares several runs.
Drawn with matplotlib's object API on an Agg canvas, so it never touches pyplot's global backend.
"""
from __future__ import annotations

import io
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from .checkpoint import _atomic_write
from .distributed import is_main_process
from .logging import read_metrics
from .trainer import HookBase

__all__ = ["plot_training_curves", "training_curves_figure", "evaluation_curves", "EVAL_CURVES", "PlotHook"]

logger = logging.getLogger(__name__)

# Per-step bookkeeping, not worth a curve.
_SKIP = {"iteration", "time", "data_time", "eta_seconds", "max_mem_mb", "grad_norm"}


def _series(records: Sequence[dict]) -> Dict[str, Tuple[List[int], List[float]]]:
    series: Dict[str, Tuple[List[int], List[float]]] = defaultdict(lambda: ([], []))
    for r in records:
        it = r.get("iteration")
        for k, v in r.items():
            if k in _SKIP or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            series[k][0].append(it)
            series[k][1].append(float(v))
    return dict(series)


# The last part of an evaluation metric's name that gets a curve: box and mask AP (COCO's AP@[.5:.95]
# and AP50, in percent) and classification error.
EVAL_CURVES = ("AP", "AP50", "top1_err", "top5_err")


def evaluation_curves(series: Dict[str, Tuple[List[int], List[float]]]) -> Dict[str, Tuple[List[int], List[float]]]:
    """The evaluation series worth a curve: names ending in one of EVAL_CURVES ("bbox/AP", "segm/AP50",
    "mydata_val/bbox/AP" with several test sets, "test/top1_err")."""
    return {k: v for k, v in series.items() if k.split("/")[-1] in EVAL_CURVES}


def training_curves_figure(records: Sequence[dict], title: Optional[str] = None, source: str = "metrics"):
    """The matplotlib Figure of plot_training_curves (for tests and notebooks)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = _series(records)
    losses = {k: v for k, v in series.items() if k.startswith("loss") or k == "total_loss"}
    if not losses:
        raise ValueError(f"{source} has no loss values to plot (keys: {sorted(series)})")
    evals = evaluation_curves(series)
    panels = 3 if evals else 2
    fig = Figure(figsize=(6 * panels, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    for name, (its, vals) in sorted(losses.items()):
        axes[0].plot(its, vals, label=name, linewidth=2.0 if name == "total_loss" else 1.0)
    axes[0].set(title="training losses", xlabel="iteration", yscale="log")
    axes[0].legend(fontsize="small")
    if "lr" in series:
        axes[1].plot(*series["lr"], color="tab:green")
    axes[1].set(title="learning rate", xlabel="iteration", yscale="log")
    if evals:
        # one colour per evaluated thing ("bbox", "segm", "test"), solid for AP / top-1, dashed for AP50 / top-5
        groups = sorted({k.rsplit("/", 1)[0] if "/" in k else "" for k in evals})
        for name, (its, vals) in sorted(evals.items()):
            group, metric = name.rsplit("/", 1) if "/" in name else ("", name)
            axes[2].plot(its, vals, marker="o", markersize=4, color=f"C{groups.index(group) % 10}",
                         linestyle="-" if metric in ("AP", "top1_err") else "--", label=name)
        detection = any(k.split("/")[-1].startswith("AP") for k in evals)
        axes[2].set(title="evaluation", xlabel="iteration", ylabel="AP (%)" if detection else "error (%)")
        # below the plot (constrained layout makes room): never over the curves or the title
        axes[2].legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(metrics_path: str, out_path: str, title: Optional[str] = None) -> str:
    """Draw `metrics_path`'s losses, lr and evaluation results into `out_path` (PNG, written atomically)."""
    fig = training_curves_figure(read_metrics(metrics_path), title, source=metrics_path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return _atomic_write(out_path, lambda f: f.write(buf.getvalue()))


class PlotHook(HookBase):
    """Redraw `<output_dir>/training_curves.png` every `period` iterations and at the end (rank 0)."""

    def __init__(self, output_dir: str, period: int = 0, filename: str = "training_curves.png"):
        self.metrics_path = os.path.join(output_dir, "metrics.jsonl")
        self.out_path = os.path.join(output_dir, filename)
        self.period = period

    def _draw(self) -> None:
        if not is_main_process() or not os.path.isfile(self.metrics_path):
            return
        if self.trainer.writer is not None:
            self.trainer.writer.flush()
        try:
            plot_training_curves(self.metrics_path, self.out_path)
        except ValueError as e:  # e.g. no loss logged yet; a picture is never worth stopping training
            logger.warning("Training curves not drawn: %s", e)

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self.period > 0 and next_iter % self.period == 0 and next_iter < self.trainer.max_iter:
            self._draw()

    def after_train(self) -> None:
        self._draw()
