#!/usr/bin/env python
"""Training and test error against iterations for several runs in one PNG (the paper's CIFAR figure:
thin dashed lines training error, bold lines test error, one colour per run).

    python tools/plot_curves.py out/plain20 out/resnet20 --labels plain-20 ResNet-20 -o curves.png

Each run is an OUTPUT_DIR of tools/train_cls.py (or its metrics.jsonl); the errors are the
"train/top1_err" and "test/top1_err" values it records at each evaluation (TEST.EVAL_PERIOD).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def load_curves(run: str, metric: str = "top1_err"):
    """{"train": ([iters], [errors]), "test": (...)} from a run folder or metrics.jsonl."""
    from resdet.engine.logging import read_metrics

    path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No metrics file at '{path}' (expected a train_cls OUTPUT_DIR or its metrics.jsonl)")
    curves = {}
    for split in ("train", "test"):
        key = f"{split}/{metric}"
        pts = sorted((r["iteration"], float(r[key])) for r in read_metrics(path) if key in r)
        pts = list(dict(pts).items())  # a resumed run may repeat an iteration: keep the last value
        if pts:
            curves[split] = ([p[0] for p in pts], [p[1] for p in pts])
    if "test" not in curves and "train" not in curves:
        raise ValueError(f"'{path}' has no '{metric}' values for train or test; was TEST.EVAL_PERIOD set?")
    return curves


def plot_runs(runs, labels, out: str, metric: str = "top1_err", title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, label) in enumerate(zip(runs, labels)):
        c = colors[i % len(colors)]
        curves = load_curves(run, metric)
        if "train" in curves:
            ax.plot(*curves["train"], "--", color=c, linewidth=1.0, label=f"{label} train")
        if "test" in curves:
            ax.plot(*curves["test"], "-", color=c, linewidth=2.0, label=f"{label} test")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{'top-1' if metric == 'top1_err' else metric} error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="train_cls OUTPUT_DIRs (or metrics.jsonl files)")
    p.add_argument("--labels", nargs="+", help="a legend name per run (default: the folder names)")
    p.add_argument("-o", "--output", default="curves.png", help="PNG to write")
    p.add_argument("--metric", default="top1_err", help="top1_err (default) or top5_err")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"{len(args.runs)} runs but {len(labels)} labels")
    print(plot_runs(args.runs, labels, args.output, args.metric, args.title))
    return 0


if __name__ == "__main__":
    from resdet.runs.cli import run_tool  # user errors: one line, no traceback (--debug shows it)

    sys.exit(run_tool(main))
