"""Run a fuzz target: a short run (CI) or a long campaign, in a child process that may crash.

    python -m tests.fuzz.run --target coco --minutes 30          # a campaign (tests/fuzz/README.md)
    python -m tests.fuzz.run --all --seconds 6                   # every target, briefly (what CI runs)
    python -m tests.fuzz.run --target cifar --replay-only        # seeds and regression cases only
    python -m tests.fuzz.run --target image --inputs DIR         # replay some files, e.g. a finding

Each round starts `python -m tests.fuzz.worker` (the child: instrumented readers, capped address space)
and waits for it with a wall-clock limit. When the child dies (a signal, libFuzzer stopping at a
finding, the wall-clock limit), the input it was running is taken from its files and recorded as a
finding, and in a campaign the next round starts where the last left off (libFuzzer's corpus folder
is kept; replay goes on after the input that crashed). At the end: one JSON summary (executions,
coverage, corpus size, findings) in <work>/summary.json and on the last line of stdout with --json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List

from .harness import TIME_LIMIT_S, describe_exit, digest, list_inputs, read
from .targets import READER_TARGETS, TARGETS, corpus_dirs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SHORT_SECONDS = 1.5
# how long a worker may take to start (imports, instrumentation, setup) before the wall-clock limit applies
STARTUP_SECONDS = float(os.environ.get("RESDET_FUZZ_STARTUP_SECONDS", "120"))
# how much longer than RESDET_FUZZ_INPUT_SECONDS one input may run (in C code, past the worker's alarm)
STUCK_SLACK_SECONDS = float(os.environ.get("RESDET_FUZZ_STUCK_SLACK_SECONDS", "10"))
_STATS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_DONE = re.compile(r"^Done (\d+) runs in")
_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak)-[0-9a-f]+$")


def _events(path: str, offset: int):
    if not os.path.isfile(path):
        return [], offset
    with open(path) as f:
        f.seek(offset)
        text = f.read()
        end = f.tell()
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows, end


def _libfuzzer_stats(log_text: str, stats: Dict) -> None:
    for line in log_text.splitlines():
        m = _STATS.match(line)
        if m:
            stats["cov"] = max(stats.get("cov", 0), int(m.group(2)))
            stats["ft"] = max(stats.get("ft", 0), int(m.group(3)))
            stats["last_execs"] = int(m.group(1))
        m = _DONE.match(line)
        if m:
            stats["execs"] = stats.get("execs", 0) + int(m.group(1))
            stats.pop("last_execs", None)


def _crash_summary(log_text: str) -> str:
    """libFuzzer's / Python's own words about a crash: the lines after its ERROR marker."""
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        if "ERROR: libFuzzer" in line or "Uncaught Python exception" in line or "Fatal Python error" in line:
            return " | ".join(l.strip() for l in lines[i:i + 6])[:600]
    return ""


def _wait(proc: subprocess.Popen, limit: float, current: str):
    """Wait for the worker; kill its process group past `limit` seconds, or when one input (the file
    `current`, rewritten before each replayed or hypothesis input) has run for TIME_LIMIT_S +
    STUCK_SLACK_SECONDS:
    time spent inside C code, where the worker's own alarm cannot interrupt it. (In libFuzzer's phase
    `current` is not written; its own -timeout watches each input.)"""
    start = time.time()
    while True:
        try:
            return proc.wait(timeout=0.5), False
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        stuck = False
        try:
            stuck = now - os.path.getmtime(current) > TIME_LIMIT_S + STUCK_SLACK_SECONDS
        except OSError:
            pass
        if now - start > limit or stuck:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), True


def run_target(name: str, seconds: float, work: str, engine: str = "both", replay_only: bool = False,
               extra_inputs: List[str] = (), keep_going: bool = False) -> Dict:
    """Fuzz `name` for `seconds` (after replaying its seeds, regression cases and `extra_inputs`);
    with `keep_going`, restart after each finding until the time is up (a campaign)."""
    os.makedirs(work, exist_ok=True)
    findings_dir = os.path.join(work, "findings")
    os.makedirs(findings_dir, exist_ok=True)
    seeds, regressions = corpus_dirs(name)
    corpus = os.path.join(work, "corpus")
    to_replay = list_inputs([seeds, regressions]) + list(extra_inputs)
    events_path = os.path.join(work, "events.jsonl")
    log_path = os.path.join(work, "worker.log")
    offset = os.path.getsize(events_path) if os.path.isfile(events_path) else 0
    stats: Dict = {"target": name, "engine": engine, "seconds": seconds, "rounds": 0, "replayed": 0,
                   "hypothesis_examples": 0, "execs": 0}
    findings: List[Dict] = []
    replayed_ok: List[str] = []
    start = time.time()
    deadline = start + (0 if replay_only else seconds)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NO_ALBUMENTATIONS_UPDATE="1", PYTHONHASHSEED="0",
               HYPOTHESIS_STORAGE_DIRECTORY=os.path.join(work, ".hypothesis"))  # not in the repository
    while True:
        remaining = max(0.0, deadline - time.time())
        if stats["rounds"] and (not keep_going or remaining < 2) and not to_replay:
            break
        stats["rounds"] += 1
        list_file = os.path.join(work, "replay.txt")
        with open(list_file, "w") as f:
            f.write("\n".join(to_replay) + ("\n" if to_replay else ""))
        cmd = [sys.executable, "-m", "tests.fuzz.worker", name, "--work", work, "--engine", engine,
               "--seconds", str(0 if replay_only else remaining), "--replay", list_file,
               "--corpus", corpus, "--corpus", seeds, "--corpus", regressions]
        limit = remaining + len(to_replay) * (TIME_LIMIT_S + 2) + STARTUP_SECONDS
        for stale in ("current", "current.label"):
            if os.path.exists(os.path.join(work, stale)):
                os.remove(os.path.join(work, stale))
        log_start = os.path.getsize(log_path) if os.path.isfile(log_path) else 0
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            rc, timed_out = _wait(proc, limit, os.path.join(work, "current"))
        with open(log_path, "rb") as f:
            f.seek(log_start)
            log_text = f.read().decode("utf-8", "replace")
        _libfuzzer_stats(log_text, stats)
        if "last_execs" in stats:  # killed before libFuzzer's final line: its last status line counts
            stats["execs"] += stats.pop("last_execs")
        rows, offset = _events(events_path, offset)
        round_findings = []
        for row in rows:
            if row.get("event") == "replayed":
                stats["replayed"] += 1
                if row["input"] in to_replay:
                    replayed_ok.append(row["input"])
            elif row.get("event") == "hypothesis":
                stats["hypothesis_examples"] += row.get("examples", 0)
            elif row.get("event") == "finding":
                round_findings.append({k: row.get(k) for k in ("kind", "message", "where", "input", "label")})
            elif row.get("event") == "instrumented":
                stats["instrumented_functions"] = row.get("functions")
        done = set(replayed_ok)
        # libFuzzer's artifacts: signals, its own time-outs and memory limit, Python exceptions
        art_dir = os.path.join(work, "artifacts")
        seen_inputs = {digest(read(f["input"])) for f in round_findings if f.get("input") and os.path.isfile(f["input"])}
        for a in sorted(os.listdir(art_dir)) if os.path.isdir(art_dir) else []:
            path = os.path.join(art_dir, a)
            m = _ARTIFACT.match(a)
            if not m:
                continue
            kept = os.path.join(findings_dir, f"{name}-{m.group(1)}-{digest(read(path))}")
            shutil.move(path, kept)
            if digest(read(kept)) in seen_inputs:
                os.remove(kept)
                continue
            round_findings.append({"kind": {"crash": "signal-or-exception", "timeout": "timeout", "oom": "memory",
                                            "leak": "leak"}[m.group(1)], "message": _crash_summary(log_text),
                                   "where": "", "input": kept, "label": "atheris"})
        current = os.path.join(work, "current")
        died = rc is not None and rc < 0 or timed_out
        if died and os.path.isfile(current) and not round_findings:
            label = open(current + ".label").read() if os.path.isfile(current + ".label") else ""
            data = read(current)
            kept = os.path.join(findings_dir, f"{name}-{'timeout' if timed_out else 'signal'}-{digest(data)}")
            shutil.copy(current, kept)
            round_findings.append({"kind": "timeout" if timed_out else "signal", "where": "", "input": kept,
                                   "label": label, "message": f"the worker was {describe_exit(rc)}"
                                   + (" (wall-clock limit)" if timed_out else "") + "; " + _crash_summary(log_text)})
            done.add(label)
        elif rc not in (0, None) and not round_findings and not died:
            round_findings.append({"kind": "worker-error", "where": "", "input": "", "label": "",
                                   "message": f"the worker ended with {describe_exit(rc)}: " + log_text[-1500:]})
        findings += round_findings
        before = len(to_replay)
        to_replay = [p for p in to_replay if p not in done]
        if to_replay and len(to_replay) == before:  # the worker made no progress: another round would not either
            break
        if round_findings and not keep_going and not to_replay:
            break
        if replay_only and not to_replay:
            break
        if not round_findings and not to_replay and time.time() >= deadline - 2:
            break
    corpus_files = list_inputs([corpus])
    stats.update(wall_seconds=round(time.time() - start, 1), corpus_size=len(corpus_files),
                 corpus_bytes=sum(os.path.getsize(p) for p in corpus_files), findings=findings,
                 not_replayed=to_replay)
    with open(os.path.join(work, "summary.json"), "w") as f:
        json.dump(stats, f, indent=1)
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", choices=sorted(TARGETS))
    which.add_argument("--all", action="store_true", help="every target, one after another")
    how_long = p.add_mutually_exclusive_group()
    how_long.add_argument("--minutes", type=float, help="a campaign: fuzz this long, restarting after findings")
    how_long.add_argument("--seconds", type=float, help="a short run (default $RESDET_FUZZ_SECONDS or "
                                                        f"{DEFAULT_SHORT_SECONDS:g}); stops at the first finding")
    p.add_argument("--engine", default="both", choices=("atheris", "hypothesis", "both"))
    p.add_argument("--replay-only", action="store_true", help="replay seeds, regression cases and --inputs only")
    p.add_argument("--inputs", action="append", default=[], help="a file or folder of inputs to replay too")
    p.add_argument("--work", default="", help="working folder (default output/fuzz/<target>; its corpus is kept)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    args = p.parse_args(argv)
    names = READER_TARGETS if args.all else [args.target]
    seconds = args.minutes * 60 if args.minutes else (
        args.seconds if args.seconds is not None else float(os.environ.get("RESDET_FUZZ_SECONDS", DEFAULT_SHORT_SECONDS)))
    extra = []
    for item in args.inputs:
        extra += list_inputs([item]) if os.path.isdir(item) else [os.path.abspath(item)]
    summaries = []
    for name in names:
        work = os.path.abspath(os.path.join(args.work, name) if args.all and args.work else
                               args.work or os.path.join(REPO, "output", "fuzz", name))
        s = run_target(name, seconds, work, args.engine, args.replay_only, extra, keep_going=bool(args.minutes))
        summaries.append(s)
        print(f"{name}: {s['execs']} executions (+{s['hypothesis_examples']} hypothesis examples, {s['replayed']} "
              f"replayed) in {s['wall_seconds']} s; coverage {s.get('cov', '-')} edges, {s.get('ft', '-')} features; "
              f"corpus {s['corpus_size']} files; {len(s['findings'])} findings", flush=True)
        for f in s["findings"]:
            print(f"  {f['kind']}: {f['message'][:300]} [{f['where']}] input {f['input']}", flush=True)
    if args.json:
        print(json.dumps(summaries))
    return 1 if any(s["findings"] for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
