"""`tools/benchmark.py --suite gpu`: the GPU acceptance benchmark, one command, that returns its numbers
whatever fails.

    python tools/benchmark.py --suite gpu                         # one H100/H200: about 10 minutes at most
    python tools/benchmark.py --suite gpu --device cpu --det-size 32x48 --det-batch 1 --cls-size 64 \\
        --cls-batch 2 --cifar-batch 8 --iters 1 --rounds 1        # a CPU rehearsal (what the tests run)

Each part runs in a process of its own (suite_parts.py: detection, resnet50, cifar, counts, nms), one
after the other, each under its own time limit (--part-minutes, default PART_MINUTES; never more than
what --max-minutes leaves of the whole run). A part writes every row the moment it is measured, and this
driver rewrites OUTPUT/benchmark.json and OUTPUT/benchmark.md after every row, so nothing measured is
lost. A part that raises or dies becomes a row "failed" with the error's last line (its full output is
in OUTPUT/logs/<part>.log); one that runs past its limit is stopped and becomes a row "timed out"; either
way the next part runs. Between measurements a part checks what --max-minutes leaves and writes
"skipped" rows for what it no longer starts; parts that would start with no time left are skipped whole.

The rows (suite_parts.py says how each is measured):
- detection: Faster and Mask R-CNN R50-FPN against torchvision's, same weights, same photographs and
  targets, training and inference images/s and peak memory, batch 8 at 800x1216, in TF32 and AMP fp16
  on CUDA (fp32 and bf16 on a CPU);
- resnet50: classification training images/s, batch 256 at 224, bf16, channels_last, ours as train_cls
  runs it against torchvision's resnet50 in a bare loop;
- cifar: the CIFAR-10 ResNet-20 recipe's eager step (and compiled / CUDA-graph steps on CUDA) against a
  bare eager loop over the same network;
- counts: synchronisations (host reads + blocking host-to-device copies + NMS calls) and aten ops per
  training step and inference call, ours vs torchvision's (resdet/benchmarks/counts.py);
- nms: the RPN's NMS at batch 8, ours batched (the GPU branch) against one torchvision call per group
  and against torchvision's batched_nms.
- cascade: Cascade Mask R-CNN R50-FPN against resdet's own Mask R-CNN R50-FPN (torchvision has no
  cascade), training and inference images/s, AMP fp16 on CUDA (resdet/benchmarks/cascade.py).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from resdet.engine.checkpoint import atomic_write_text
from .suite_parts import PART_MINUTES, PARTS, build_parser, status_row

__all__ = ["PARTS", "PART_MINUTES", "run_suite", "format_markdown", "build_parser", "main"]

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_markdown(report: Dict[str, Any]) -> str:
    lines = [f"# resdet GPU acceptance benchmark ({report['device_name']})", "",
             f"torch {report['torch']}, torchvision {report['torchvision']}, {report['started']}, "
             f"{report['seconds']:.0f} s in all{'' if report.get('finished') else ' (still running)'}. ratio = "
             "resdet / reference, measured in the same run on the same inputs: above 1, resdet is faster (for "
             "counts: below 1, resdet syncs and launches less). Peak memory: one step of each model after both "
             "warmed up (what the step added, plus the model's weights and optimizer state).",
             "",
             "| part | model | mode | precision | batch | size | resdet | reference | ratio | peak GiB resdet / ref "
             "| reference is | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        status = r.get("status", "ok")
        if status != "ok":
            status = f"**{status}**: {r.get('reason', '')}".replace("|", "/").replace("\n", " ")
        batch = "-" if r.get("batch") is None else r["batch"]
        lines.append(f"| {r['part']} | {r['model']} | {r['mode']} | {r['precision']} | {batch} | {r['size']} | "
                     f"{_fmt(r['resdet'])} {r['unit']} | {_fmt(r['reference'])} {r['unit']} | "
                     f"**{_fmt(r['ratio'])}x** | {_fmt(r['resdet_peak_gib'], 1)} / {_fmt(r['reference_peak_gib'], 1)} | "
                     f"{r['reference_name']} | {status} |")
    lines.append("")
    for name, p in report["parts"].items():
        lines.append(f"- {name}: {p['status']}, {p['seconds']:.0f} s, {p['rows']} rows"
                     + (f" ({p['reason']})" if p.get("reason") else ""))
    return "\n".join(lines) + "\n"


def _write(report: Dict[str, Any], output: str) -> None:
    os.makedirs(output, exist_ok=True)
    atomic_write_text(json.dumps(report, indent=1) + "\n", os.path.join(output, "benchmark.json"))
    atomic_write_text(format_markdown(report), os.path.join(output, "benchmark.md"))


def _part_limit(args, part: str) -> float:
    """Seconds: --part-minutes PART=MIN if given, else PART_MINUTES."""
    minutes = dict(PART_MINUTES)
    for item in args.part_minutes or []:
        name, _, value = item.partition("=")
        minutes[name] = float(value)
    return minutes.get(part, 5.0) * 60


def _child_argv(argv: List[str], part: str, rows_file: str, deadline: float) -> List[str]:
    return [sys.executable, "-m", "resdet.benchmarks.suite_parts", *argv, "--part", part, "--rows-file", rows_file,
            "--deadline", repr(deadline)]


def _stop(proc: subprocess.Popen) -> None:
    """End the part's process group: SIGTERM, then SIGKILL if it is still there after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_part(part: str, argv: List[str], args, report: Dict[str, Any], limit: float, soft_deadline: float,
              log: Callable[[str], None]) -> None:
    """One part in its own process; its rows join the report (rewritten after each) as they come."""
    logs = os.path.join(args.output, "logs")
    os.makedirs(logs, exist_ok=True)
    rows_file, log_file = os.path.join(logs, f"{part}.rows.jsonl"), os.path.join(logs, f"{part}.log")
    open(rows_file, "w").close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    start = time.perf_counter()
    with open(log_file, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(_child_argv(argv, part, rows_file, min(soft_deadline, time.time() + limit)),
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    done, error, status, printed = 0, None, None, 0
    entry = {"status": "running", "seconds": 0.0, "rows": 0}
    report["parts"][part] = entry
    while True:
        rc = proc.poll()
        for obj in _read_lines(rows_file)[done:]:
            done += 1
            if "row" in obj:
                report["rows"].append(obj["row"])
                entry["rows"] += 1
            elif "error" in obj:
                error = obj["error"]
            elif "device_name" in obj:
                report["device_name"], report["device"] = obj["device_name"], obj["device"]
            entry["seconds"] = time.perf_counter() - start
            report["seconds"] = time.perf_counter() - report["_clock"]
            _write(_public(report), args.output)
        printed = _echo(log_file, printed, log)
        if rc is not None:
            break
        if time.perf_counter() - start > limit:
            _stop(proc)
            status = "timed out"
            break
        time.sleep(0.2)
    for obj in _read_lines(rows_file)[done:]:  # what came in before the end
        if "row" in obj:
            report["rows"].append(obj["row"])
            entry["rows"] += 1
        elif "error" in obj:
            error = obj["error"]
    _echo(log_file, printed, log)
    entry["seconds"] = time.perf_counter() - start
    if status == "timed out":
        entry.update(status="timed out", reason=f"stopped after its limit of {limit:.0f} s "
                                                f"(--part-minutes {part}=...)")
    elif proc.returncode != 0:
        reason = error or f"the process ended with status {proc.returncode}: " + _last_line(log_file)
        entry.update(status="failed", reason=reason)
    else:
        entry["status"] = "ok"
    if entry["status"] != "ok":
        report["rows"].append(status_row(part, entry["status"], entry["reason"] + f" (log: logs/{part}.log)"))
        log(f"[{part}] {entry['status']}: {entry['reason']}")


def _read_lines(path: str) -> List[Dict[str, Any]]:
    """The complete JSON lines written so far (a line still being written is left for the next read)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")[:-1] if not text.endswith("\n") else text.split("\n")
    out = []
    for line in lines:
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"error": f"unreadable row line: {line[:200]}"})
    return out


def _echo(path: str, printed: int, log: Callable[[str], None]) -> int:
    """Print the part's new output lines; returns how many characters have been printed."""
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(printed)
        text = f.read()
    complete = text[: text.rfind("\n") + 1]
    for line in complete.splitlines():
        log("    " + line)
    return printed + len(complete.encode("utf-8"))


def _last_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else "(no output)"


def _public(report: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def run_suite(args, log: Callable[[str], None] = print, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Every part of args.parts, each in its own process (see the module docstring); returns the report
    (as benchmark.json holds it). `argv`: the options the parts get (default: rebuilt from args)."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} was asked for but no GPU is visible; use --device cpu")
    argv = list(argv) if argv is not None else _argv_from(args)
    clock = time.perf_counter()
    report: Dict[str, Any] = {
        "device": args.device, "device_name": args.device, "torch": torch.__version__,
        "torchvision": _torchvision_version(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": 0.0,
        "finished": False, "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "rows": [], "parts": {}, "skipped": [], "_clock": clock,
    }
    end = time.time() + args.max_minutes * 60
    _write(_public(report), args.output)
    for part in args.parts:
        spent = time.perf_counter() - clock
        if time.time() >= end:
            reason = f"--max-minutes {args.max_minutes} spent ({spent:.0f} s)"
            report["skipped"].append({"part": part, "reason": reason})
            report["parts"][part] = {"status": "skipped", "seconds": 0.0, "rows": 0, "reason": reason}
            report["rows"].append(status_row(part, "skipped", reason))
            log(f"[{part}] skipped: {reason}")
            _write(_public(report), args.output)
            continue
        limit = min(_part_limit(args, part), end - time.time() + args.grace_seconds)
        log(f"[{part}] ({spent:.0f} s so far; limit {limit:.0f} s)")
        _run_part(part, argv, args, report, limit, end, log)
        report["seconds"] = time.perf_counter() - clock
        _write(_public(report), args.output)
    report["finished"] = True
    report["seconds"] = time.perf_counter() - clock
    _write(_public(report), args.output)
    return _public(report)


def _argv_from(args) -> List[str]:
    """The suite's options as a command line for the parts (the defaults spelled out)."""
    out = ["--suite", "gpu", "--device", args.device, "--output", args.output, "--archs", *args.archs,
           "--det-size", f"{args.det_size[0]}x{args.det_size[1]}", "--det-precisions", args.det_precisions]
    for name in ("det_batch", "boxes", "cls_size", "cls_batch", "cifar_batch", "cifar_images", "iters", "warmup",
                 "rounds", "max_minutes"):
        out += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.cifar_iters is not None:
        out += ["--cifar-iters", str(args.cifar_iters)]
    return out


def _torchvision_version() -> str:
    import torchvision

    return torchvision.__version__


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parser.description = __doc__
    args = parser.parse_args(argv)
    for name in ("det_batch", "cls_batch", "cifar_batch", "cifar_images", "iters", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    if args.cifar_iters is not None and args.cifar_iters < 1:
        raise SystemExit(f"--cifar-iters must be at least 1; got {args.cifar_iters}")
    for item in args.part_minutes or []:
        name, sep, value = item.partition("=")
        if not sep or name not in PARTS:
            raise SystemExit(f"--part-minutes takes PART=MINUTES with PART one of {', '.join(PARTS)}; got {item!r}")
        try:
            float(value)
        except ValueError:
            raise SystemExit(f"--part-minutes {item!r}: {value!r} is not a number of minutes") from None
    report = run_suite(args, argv=_argv_from(args))
    print(format_markdown(report))
    print(f"Saved {os.path.join(args.output, 'benchmark.json')} and benchmark.md")
    return 0
