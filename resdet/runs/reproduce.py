"""`tools/reproduce.py cifar10`: the paper's CIFAR-10 study (Table 6 and Fig. 6) by one command.

    python tools/reproduce.py cifar10 [--depths 20 32 44 56 110 1202] [--plain 20 32 44 56 110] [--runs N]
        [--data ROOT] [--output DIR] [--jobs J] [--step-mode auto|eager|compiled|cuda_graph] [KEY VALUE ...]
    python tools/reproduce.py cifar10 --smoke --data ROOT      # the whole study at toy scale, CPU, < 1 minute
    python tools/reproduce.py cifar10 --report-only --output DIR

Every listed model (ResNet-d and plain-d) is trained with the paper's recipe, i.e. the existing
configs/cifar10_{resnet,plain}<d>.yaml, `--runs` times each (seeds 0..N-1), by train_cls, each run in its
own folder DIR/runs/<model>/run<k>/. Then DIR/report.md (Table 6 with ours beside the paper's: exact
parameter counts, mean, std and best of the N runs, the plain net's error, wall time per run),
DIR/report.json and DIR/fig6.png (Fig. 6: training error dashed, test error bold, against iterations;
plain nets left, ResNets right) are written from what is on disk.

Resumable: a rerun skips the finished runs (final_results.json present) and continues the unfinished
ones from their newest checkpoint (train_cls --resume, which resumes exactly). A run's wall time adds up
its segments; a segment that was killed ends at the last file its run wrote. DIR/study.json records the
study's settings, and a rerun with other data, recipe overrides or scale is refused.

Several at once (`--jobs J`): the runs go to J concurrent train_cls processes. Chosen over a batched
multi-model step because every run then keeps all of train_cls's promises unchanged (its own
checkpoints, exact resume, metrics, CUDA graph) and a failure stays in one process; small CIFAR nets
leave most of a GPU idle, so a few processes fill it (kernels of different processes interleave;
under NVIDIA MPS they also overlap). With `--jobs 1` (the default, and the CPU's choice) the runs go
one after another in this process. `--step-mode auto` is cuda_graph on a GPU, eager on the CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from resdet.config import load_config
from resdet.engine.checkpoint import atomic_write_text
from resdet.engine.logging import read_metrics

__all__ = ["PAPER_TABLE6", "plan_study", "collect_results", "write_report", "run_study", "main"]

logger = logging.getLogger(__name__)

CONFIGS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))

# The paper's Table 6 (CIFAR-10 test error, %, and parameters, millions). ResNet-110's 6.43 is the best of
# 5 runs, whose mean and std are 6.61 and 0.16. Plain nets' errors appear only in Fig. 6 (no table).
PAPER_TABLE6 = {20: (0.27, 8.75), 32: (0.46, 7.51), 44: (0.66, 7.17), 56: (0.85, 6.97), 110: (1.7, 6.43),
                1202: (19.4, 7.93)}
PAPER_RESNET110_RUNS = {"best": 6.43, "mean": 6.61, "std": 0.16, "runs": 5}
PLAIN_DEPTHS = (20, 32, 44, 56, 110)
JPEG_NOTE = ("a lossy JPEG copy of CIFAR-10 (image folder of .jpg files): errors trained on it sit above the "
             "paper's; on the JPEG copy this project tests with, one run of ResNet-20's recipe measured 12.05% "
             "(an H200 run, not this machine's) where the paper has 8.75%")

# --smoke: the whole study at toy scale, for a CPU in well under a minute per model (tests, a first try).
SMOKE = {"SOLVER.MAX_ITER": 8, "SOLVER.STEPS": "(4, 6)", "SOLVER.IMS_PER_BATCH": 16, "SOLVER.BASE_LR": 0.05,
         "SOLVER.WARMUP_ITERS": 2, "SOLVER.CHECKPOINT_PERIOD": 4, "TEST.EVAL_PERIOD": 4, "LOG_PERIOD": 4,
         "CLS.DATA.TRAIN_LIMIT": 256, "CLS.DATA.TEST_LIMIT": 128, "CLS.TEST.TRAIN_SUBSET": 128,
         "CLS.TEST.BATCH_SIZE": 128}
SMOKE_DEPTHS, SMOKE_PLAIN = (20, 32), (20,)
RUN_FILE = "study_run.json"


@dataclasses.dataclass
class RunSpec:
    """One training run of the study."""

    model: str          # "resnet20" or "plain20"
    depth: int
    residual: bool
    index: int          # 0 .. runs-1; the seed
    config: str         # configs/cifar10_<model>.yaml
    output_dir: str

    @property
    def label(self) -> str:
        return f"{'ResNet' if self.residual else 'plain'}-{self.depth}"


def plan_study(output_dir: str, depths: Sequence[int], plain: Sequence[int], runs: int) -> List[RunSpec]:
    """Every run, run 0 of every model first (a partial study already has a full table), smallest first."""
    if runs < 1:
        raise ValueError(f"--runs must be >= 1; got {runs}")
    models = [(d, True) for d in depths] + [(d, False) for d in plain]
    specs = []
    for k in range(runs):
        for depth, residual in sorted(models, key=lambda m: (m[0], not m[1])):
            name = f"{'resnet' if residual else 'plain'}{depth}"
            config = os.path.join(CONFIGS, f"cifar10_{name}.yaml")
            if not os.path.isfile(config):
                known = sorted(f[len("cifar10_"):-5] for f in os.listdir(CONFIGS) if f.startswith("cifar10_"))
                raise ValueError(f"No recipe for {name}: '{config}' does not exist (the paper's CIFAR models here: {known})")
            specs.append(RunSpec(name, depth, residual, k, config, os.path.join(output_dir, "runs", name, f"run{k}")))
    return specs


# ---------------------------------------------------------------------------------------------- runs
def _read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _last_sign_of_life(run_dir: str) -> Optional[float]:
    """mtime of the newest file a run writes as it goes (metrics, checkpoints, log)."""
    times = [os.path.getmtime(os.path.join(run_dir, f)) for f in os.listdir(run_dir)
             if f != RUN_FILE and os.path.isfile(os.path.join(run_dir, f))] if os.path.isdir(run_dir) else []
    return max(times) if times else None


def run_record(run_dir: str) -> Dict[str, Any]:
    """The run's study_run.json with its wall time: the sum of its segments; a segment without an end (the
    process was killed) ends at the last file the run wrote."""
    rec = _read_json(os.path.join(run_dir, RUN_FILE), {"segments": []})
    total = 0.0
    for seg in rec["segments"]:
        end = seg.get("end") or _last_sign_of_life(run_dir) or seg["start"]
        total += max(0.0, end - seg["start"])
    rec["wall_seconds"] = total
    rec["finished"] = os.path.isfile(os.path.join(run_dir, "final_results.json")) and rec.get("finished", False)
    return rec


def _write_record(run_dir: str, rec: Dict[str, Any]) -> None:
    rec = {k: v for k, v in rec.items() if k != "wall_seconds"}
    atomic_write_text(json.dumps(rec, indent=1) + "\n", os.path.join(run_dir, RUN_FILE))


def _begin_segment(spec: RunSpec) -> Dict[str, Any]:
    os.makedirs(spec.output_dir, exist_ok=True)
    rec = _read_json(os.path.join(spec.output_dir, RUN_FILE), {"segments": []})
    rec.update(model=spec.model, depth=spec.depth, residual=spec.residual, index=spec.index, finished=False)
    rec["segments"].append({"start": time.time(), "end": None,
                            "resumed": os.path.isfile(os.path.join(spec.output_dir, "last_checkpoint"))})
    _write_record(spec.output_dir, rec)
    return rec


def _end_segment(spec: RunSpec, rec: Dict[str, Any], finished: bool, error: str = "") -> None:
    rec["segments"][-1]["end"] = time.time()
    if error:
        rec["segments"][-1]["error"] = error
    rec["finished"] = finished
    _write_record(spec.output_dir, rec)


def run_overrides(spec: RunSpec, settings: Dict[str, Any]) -> List[str]:
    """KEY VALUE pairs for one run: its folder and seed, the study's device, step mode and data, the smoke
    scale, then the user's own pairs (which win)."""
    opts: Dict[str, Any] = {"OUTPUT_DIR": spec.output_dir, "SEED": spec.index, "MODEL.DEVICE": settings["device"],
                            "SOLVER.STEP_MODE": settings["step_mode"]}
    if settings["device"] == "cpu":
        # the configs' bf16 + channels_last are GPU speed settings, not the recipe; float32 is faster on CPUs
        opts.update({"SOLVER.AMP": "", "SOLVER.CHANNELS_LAST": False})
    if settings["data"]:
        opts["CLS.DATA.ROOT"] = settings["data"]
    if settings["smoke"]:
        opts.update(SMOKE)
    flat = [str(x) for kv in opts.items() for x in kv]
    return flat + [str(x) for x in settings["overrides"]]


def _release_memory(compiled: bool) -> None:
    if compiled:
        torch._dynamo.reset()  # else every model's graphs stay cached (and dynamo stops compiling after 8)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_in_process(spec: RunSpec, settings: Dict[str, Any]) -> Dict[str, Any]:
    from .train_cls import train_classifier

    cfg = load_config(spec.config, run_overrides(spec, settings))
    rec = _begin_segment(spec)
    try:
        results = train_classifier(cfg, resume=True)
    except BaseException as e:
        _end_segment(spec, rec, False, f"{type(e).__name__}: {e}")
        raise
    finally:
        _release_memory(cfg.SOLVER.STEP_MODE == "compiled" or cfg.SOLVER.COMPILE)
    _end_segment(spec, rec, True)
    return results


def _launch(spec: RunSpec, settings: Dict[str, Any]) -> subprocess.Popen:
    os.makedirs(spec.output_dir, exist_ok=True)
    code = "import sys; from resdet.runs.train_cls import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, spec.config, "--resume", *run_overrides(spec, settings)]
    repo = os.path.dirname(CONFIGS)
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(os.path.join(spec.output_dir, "stdout.txt"), "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log_file = log  # closed when the process ends
    return proc


def run_study(specs: Sequence[RunSpec], settings: Dict[str, Any], jobs: int = 1) -> List[RunSpec]:
    """Train every unfinished run (resuming each from its checkpoint); return the runs that failed.
    jobs == 1: one after another in this process; jobs > 1: that many train_cls processes at once."""
    todo = [s for s in specs if not run_record(s.output_dir)["finished"]]
    for s in specs:
        if s not in todo:
            print(f"[study] {s.label} run {s.index}: finished before, kept", flush=True)
    failed: List[RunSpec] = []
    if jobs <= 1:
        for i, s in enumerate(todo):
            print(f"[study] {s.label} run {s.index} ({i + 1}/{len(todo)} to train) in {s.output_dir}", flush=True)
            _run_in_process(s, settings)
        return failed
    running: List[tuple] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < jobs and not failed:
            s = queue.pop(0)
            print(f"[study] {s.label} run {s.index}: started (log {os.path.join(s.output_dir, 'stdout.txt')})", flush=True)
            running.append((s, _begin_segment(s), _launch(s, settings)))
        if failed and not running:
            break
        time.sleep(1.0)
        for item in list(running):
            s, rec, proc = item
            rc = proc.poll()
            if rc is None:
                continue
            proc.log_file.close()
            running.remove(item)
            ok = rc == 0 and os.path.isfile(os.path.join(s.output_dir, "final_results.json"))
            _end_segment(s, rec, ok, "" if ok else f"exit status {rc}")
            print(f"[study] {s.label} run {s.index}: {'done' if ok else f'FAILED (exit status {rc})'}", flush=True)
            if not ok:
                failed.append(s)
    return failed


# -------------------------------------------------------------------------------------------- report
def _params(config: str) -> int:
    from resdet.classification.model import build_classifier

    cfg = load_config(config, ["MODEL.DEVICE", "cpu"])
    return sum(p.numel() for p in build_classifier(cfg).parameters())


def _curves(run_dir: str) -> Dict[str, tuple]:
    path = os.path.join(run_dir, "metrics.jsonl")
    out = {}
    if not os.path.isfile(path):
        return out
    records = read_metrics(path)
    for split in ("train", "test"):
        pts = dict(sorted((r["iteration"], float(r[f"{split}/top1_err"])) for r in records if f"{split}/top1_err" in r))
        if pts:
            out[split] = (list(pts), list(pts.values()))
    return out


def _summary(errors: List[float]) -> Dict[str, Any]:
    if not errors:
        return {"mean": None, "std": None, "best": None, "n": 0}
    return {"mean": statistics.fmean(errors), "std": statistics.stdev(errors) if len(errors) > 1 else None,
            "best": min(errors), "n": len(errors)}


def describe_data(root: str) -> Dict[str, str]:
    """Which data the study ran on, in words (the JPEG copy is named as such)."""
    from resdet.data.folders import dataset_format

    fmt = dataset_format(root) if os.path.isdir(root) else "missing"
    if fmt == "cifar-python":
        words = "CIFAR-10's python batches (the official lossless release)"
    elif fmt == "folder":
        ext = ""
        for dirpath, _, files in os.walk(os.path.join(root, "train")):
            if files:
                ext = os.path.splitext(sorted(files)[0])[1].lower()
                break
        words = JPEG_NOTE if ext in (".jpg", ".jpeg") else f"an image folder of {ext or 'unknown'} files"
    else:
        words = "not found"
    return {"root": os.path.abspath(root), "format": fmt, "description": words}


def collect_results(output_dir: str) -> Dict[str, Any]:
    """Everything the report shows, from the study's files on disk."""
    study = _read_json(os.path.join(output_dir, "study.json"))
    if study is None:
        raise FileNotFoundError(f"No study in '{output_dir}' (no study.json): run tools/reproduce.py cifar10 first")
    specs = plan_study(output_dir, study["depths"], study["plain"], study["runs"])
    models: Dict[str, Dict[str, Any]] = {}
    test_images = None
    for s in specs:
        if s.model not in models:
            models[s.model] = {"model": s.model, "label": s.label, "depth": s.depth, "residual": s.residual,
                               "params": _params(s.config), "runs": [],
                               "config": os.path.relpath(s.config, os.path.dirname(CONFIGS))}
        m = models[s.model]
        rec = run_record(s.output_dir)
        final = _read_json(os.path.join(s.output_dir, "final_results.json"), {}) if rec["finished"] else {}
        if final.get("test/num_samples"):
            test_images = int(final["test/num_samples"])
        m["runs"].append({"index": s.index, "seed": s.index, "finished": rec["finished"],
                          "test_error": final.get("test/top1_err"), "train_error": final.get("train/top1_err"),
                          "wall_seconds": rec["wall_seconds"], "segments": len(rec["segments"]),
                          "dir": os.path.relpath(s.output_dir, output_dir)})
    for m in models.values():
        errs = [r["test_error"] for r in m["runs"] if r["test_error"] is not None]
        m.update(_summary(errs))
        walls = [r["wall_seconds"] for r in m["runs"] if r["finished"]]
        m["wall_seconds_per_run"] = statistics.fmean(walls) if walls else None
        if m["residual"] and m["depth"] in PAPER_TABLE6:
            m["paper_params_m"], m["paper_error"] = PAPER_TABLE6[m["depth"]]
    first = next((s for s in specs if os.path.isfile(os.path.join(s.output_dir, "config.yaml"))), None)
    recipe = {}
    if first is not None:
        cfg = load_config(os.path.join(first.output_dir, "config.yaml"))
        recipe = {"max_iter": cfg.SOLVER.MAX_ITER, "steps": list(cfg.SOLVER.STEPS), "batch": cfg.SOLVER.IMS_PER_BATCH,
                  "base_lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY,
                  "train_limit": cfg.CLS.DATA.TRAIN_LIMIT, "test_limit": cfg.CLS.DATA.TEST_LIMIT,
                  "holdout": cfg.CLS.DATA.HOLDOUT, "step_mode": cfg.SOLVER.STEP_MODE, "device": cfg.MODEL.DEVICE,
                  "amp": cfg.SOLVER.AMP}
    return {"study": "cifar10", "settings": study, "data": study.get("data_description", {}), "recipe": recipe,
            "test_images": test_images, "models": models, "paper": {"table6": {str(k): {"params_m": v[0], "error": v[1]} for k, v in PAPER_TABLE6.items()},
                                        "resnet110_5_runs": PAPER_RESNET110_RUNS}}


def _fmt_err(m: Optional[Dict[str, Any]]) -> str:
    if not m or m.get("n", 0) == 0:
        return "—"
    if m["n"] == 1:
        return f"{m['mean']:.2f}"
    return f"{m['best']:.2f} ({m['mean']:.2f}±{m['std']:.2f}, n={m['n']})"


def _fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def _markdown(report: Dict[str, Any]) -> str:
    models, settings, recipe = report["models"], report["settings"], report["recipe"]
    depths = sorted({m["depth"] for m in models.values()})
    lines = ["# CIFAR-10: the paper's Table 6 and Fig. 6, reproduced", ""]
    if settings.get("smoke"):
        lines += ["**Smoke run** (`--smoke`): toy scale, a check that the study runs end to end; the errors "
                  "below mean nothing.", ""]
    data = report["data"]
    lines += [f"Data: `{data.get('root', '?')}`, {data.get('description', '?')}.", ""]
    if recipe:
        lines += [f"Recipe: configs/cifar10_*.yaml ({recipe['max_iter']} iterations of {recipe['batch']}, lr "
                  f"{recipe['base_lr']} divided by 10 at {recipe['steps']}, weight decay {recipe['weight_decay']}"
                  + (f", training images limited to {recipe['train_limit']}" if recipe["train_limit"] else "")
                  + (f", test images limited to {recipe['test_limit']}" if recipe["test_limit"] else "")
                  + f"); device {recipe['device']}, SOLVER.STEP_MODE {recipe['step_mode']}"
                  + (f", AMP {recipe['amp']}" if recipe["amp"] else "") + ".", ""]
    n_test = report.get("test_images")
    lines += [f"Test error (%) on {'the' if not recipe.get('test_limit') else 'a fixed subset of'} "
              f"{n_test if n_test else '?'} test images"
              + ("; ours: one run per model" if settings["runs"] == 1 else
                 f"; ours: best (mean±std, n) of the {settings['runs']} runs (seeds 0..{settings['runs'] - 1}), "
                 "as the paper gives ResNet-110")
              + ". Parameters: exact counts of our models (classifier included). Wall time: per run, data "
              "loading and evaluations included.", "",
              "| layers | params (ours) | params (paper) | error, paper | error, ResNet (ours) | error, plain net (ours) "
              "| wall time per run (ResNet / plain) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for d in depths:
        res, pl = models.get(f"resnet{d}"), models.get(f"plain{d}")
        params = res["params"] if res else pl["params"]
        paper_p, paper_e = PAPER_TABLE6.get(d, (None, None))
        paper_e_txt = "—" if paper_e is None else f"{paper_e:.2f}"
        if d == 110 and paper_e is not None:
            r = PAPER_RESNET110_RUNS
            paper_e_txt = f"{r['best']:.2f} ({r['mean']:.2f}±{r['std']:.2f}, n={r['runs']})"
        lines.append(f"| {d} | {params / 1e6:.3f} M ({params:,}) | {'—' if paper_p is None else f'{paper_p} M'} | "
                     f"{paper_e_txt} | {_fmt_err(res)} | {_fmt_err(pl)} | "
                     f"{_fmt_time(res and res['wall_seconds_per_run'])} / {_fmt_time(pl and pl['wall_seconds_per_run'])} |")
    lines += ["", "The paper gives plain nets' errors only as curves (Fig. 6), so that column has no paper value.",
              "", "![Fig. 6](fig6.png)", "",
              "fig6.png: training error (dashed: CLS.TEST.TRAIN_SUBSET unaugmented training images) and test error "
              "(bold) against iterations, plain nets left, ResNets right, run 0 of each model.", ""]
    unfinished = [f"{m['label']} run {r['index']}" for m in models.values() for r in m["runs"] if not r["finished"]]
    if unfinished:
        lines += [f"Not finished yet (rerun the command to continue them): {', '.join(unfinished)}.", ""]
    return "\n".join(lines)


def plot_fig6(output_dir: str, report: Dict[str, Any], out_path: str) -> str:
    """Fig. 6: error against iterations, plain nets (left) and ResNets (right); training dashed, test bold."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    depths = sorted({m["depth"] for m in report["models"].values()})
    long_run = report["recipe"].get("max_iter", 0) >= 10000
    scale = 1e4 if long_run else 1.0   # the paper's axis: iterations in units of 10^4
    for ax, residual, title in ((axes[0], False, "plain"), (axes[1], True, "ResNet")):
        models = sorted((m for m in report["models"].values() if m["residual"] == residual), key=lambda m: m["depth"])
        for m in models:
            color = f"C{depths.index(m['depth']) % 10}"   # one colour per depth in both panels
            curves = _curves(os.path.join(output_dir, m["runs"][0]["dir"]))
            if "train" in curves:
                its, errs = curves["train"]
                ax.plot([i / scale for i in its], errs, "--", color=color, linewidth=1.0)
            if "test" in curves:
                its, errs = curves["test"]
                ax.plot([i / scale for i in its], errs, "-", color=color, linewidth=2.2, label=f"{title}-{m['depth']}")
        ax.set(title=f"{title} nets" if not residual else "ResNets",
               xlabel="iteration (1e4)" if long_run else "iteration")
        ax.grid(alpha=0.3)
        if models:
            ax.legend(fontsize="small", title="bold: test, dashed: train", title_fontsize="x-small")
    if long_run and not report["settings"].get("smoke"):
        axes[0].set_ylim(0, 20)   # the paper's range
    axes[0].set_ylabel("error (%)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    from resdet.engine.checkpoint import _atomic_write

    return _atomic_write(out_path, lambda f: f.write(buf.getvalue()))


def write_report(output_dir: str) -> Dict[str, Any]:
    """DIR/report.md, DIR/report.json and DIR/fig6.png from the study's files; returns the report dict."""
    report = collect_results(output_dir)
    plot_fig6(output_dir, report, os.path.join(output_dir, "fig6.png"))
    atomic_write_text(json.dumps(report, indent=1) + "\n", os.path.join(output_dir, "report.json"))
    atomic_write_text(_markdown(report), os.path.join(output_dir, "report.md"))
    return report


# ---------------------------------------------------------------------------------------------- CLI
_USAGE = __doc__


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=["cifar10"], help="the study to reproduce")
    p.add_argument("--depths", type=int, nargs="*", default=None, help="ResNet depths (default: 20 32 44 56 110 1202)")
    p.add_argument("--plain", type=int, nargs="*", default=None, help="plain-net depths (default: 20 32 44 56 110)")
    p.add_argument("--runs", type=int, default=1, help="runs per model (seeds 0..N-1); the paper: 5 for ResNet-110")
    p.add_argument("--data", default="", help="CIFAR-10 root: python batches or train/ test/ image folders "
                                              "(default: $RESDET_DATASETS/cifar10)")
    p.add_argument("--output", default="./output/reproduce_cifar10", help="study folder")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, as separate processes (GPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--step-mode", default="auto", choices=["auto", "eager", "compiled", "cuda_graph"],
                   help="SOLVER.STEP_MODE; auto: cuda_graph on a GPU, eager on the CPU")
    p.add_argument("--smoke", action="store_true", help="toy scale (8 iterations of 16, 256 images; default depths "
                                                        f"{' '.join(map(str, SMOKE_DEPTHS))}, plain "
                                                        f"{' '.join(map(str, SMOKE_PLAIN))})")
    p.add_argument("--report-only", action="store_true", help="only rewrite report.md/json and fig6.png")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides for every run")
    return p.parse_intermixed_args(argv)


def _settings(args) -> Dict[str, Any]:
    from resdet.data.folders import resolve_dataset_root

    if len(args.opts) % 2:
        raise SystemExit(f"KEY VALUE overrides come in pairs; got {args.opts}")
    for key in args.opts[::2]:
        if key in ("OUTPUT_DIR", "SEED"):
            raise SystemExit(f"{key} is set per run by the study (DIR/runs/<model>/run<k>, seed k); do not override it")
    depths = args.depths if args.depths is not None else (list(SMOKE_DEPTHS) if args.smoke else sorted(PAPER_TABLE6))
    plain = args.plain if args.plain is not None else (list(SMOKE_PLAIN) if args.smoke else list(PLAIN_DEPTHS))
    if not depths and not plain:
        raise SystemExit("nothing to train: --depths and --plain are both empty")
    step_mode = args.step_mode
    if step_mode == "auto":
        step_mode = "cuda_graph" if args.device.startswith("cuda") else "eager"
    root = resolve_dataset_root("cifar10", args.data)
    return {"depths": sorted(depths), "plain": sorted(plain), "runs": args.runs, "smoke": args.smoke,
            "data": args.data, "data_root": os.path.abspath(root), "device": args.device, "step_mode": step_mode,
            "overrides": list(args.opts), "data_description": describe_data(root)}


def _check_same_study(path: str, settings: Dict[str, Any]) -> None:
    old = _read_json(path)
    if old is None:
        return
    keys = ("smoke", "data_root", "overrides")
    diff = {k: (old.get(k), settings[k]) for k in keys if old.get(k) != settings[k]}
    if diff:
        raise SystemExit(f"'{path}' holds a study with other settings ({', '.join(f'{k}: {a!r} then, {b!r} now' for k, (a, b) in diff.items())}); "
                         "continuing it would mix recipes. Use another --output, or the same settings.")


def main(argv=None) -> int:
    args = parse_args(argv)
    out = os.path.abspath(args.output)
    if args.report_only:
        write_report(out)
        print(os.path.join(out, "report.md"))
        return 0
    settings = _settings(args)
    if settings["data_description"]["format"] == "missing":
        raise SystemExit(f"CIFAR-10 not found at '{settings['data_root']}' (from --data, or $RESDET_DATASETS/cifar10); "
                         "see datasets/README.md")
    os.makedirs(out, exist_ok=True)
    study_path = os.path.join(out, "study.json")
    _check_same_study(study_path, settings)
    old = _read_json(study_path, {})
    # a rerun may add models or runs: the study is the union of what was asked
    settings["depths"] = sorted(set(settings["depths"]) | set(old.get("depths", [])))
    settings["plain"] = sorted(set(settings["plain"]) | set(old.get("plain", [])))
    settings["runs"] = max(settings["runs"], old.get("runs", 0))
    atomic_write_text(json.dumps(settings, indent=1) + "\n", study_path)
    specs = plan_study(out, settings["depths"], settings["plain"], settings["runs"])
    print(f"[study] {len(specs)} runs in {out}; data: {settings['data_description']['description']}", flush=True)
    failed: List[RunSpec] = []
    try:
        failed = run_study(specs, settings, jobs=args.jobs)
    finally:
        try:  # also after an interruption: what is finished is reported
            write_report(out)
            print(f"[study] report: {os.path.join(out, 'report.md')}", flush=True)
        except Exception:  # never hide the error that stopped the study
            logger.exception("The report could not be written")
    if failed:
        raise SystemExit("Failed runs (see their stdout.txt / log.txt): " + ", ".join(s.output_dir for s in failed))
    return 0
