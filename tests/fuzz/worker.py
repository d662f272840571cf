"""The child process that fuzzes one target (started by tests/fuzz/run.py; never by pytest directly).

    python -m tests.fuzz.worker TARGET --work DIR [--seconds S] [--engine atheris|hypothesis|both]
                                [--replay FILE_LIST] [--corpus DIR]

1. imports the target's readers and instruments their Python code for coverage (atheris);
2. caps its address space at what it maps now + RESDET_FUZZ_MEMORY_MB (harness.limit_memory);
3. replays the inputs listed in FILE_LIST (seeds, kept regression cases), one event line each;
4. fuzzes for S seconds: hypothesis (structure-aware edits drawn from strategies, shrunk on failure) and/or
   atheris (libFuzzer's coverage-guided loop, with the target's structure-aware mutator beside byte
   mutation), adding new inputs to --corpus.
It stops at the first finding (exit status 3; libFuzzer's own codes in its phase). The parent reads
DIR/events.jsonl, DIR/findings/, libFuzzer's DIR/artifacts/ and, after a signal, DIR/current.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import random
import sys
import time
import types

from .harness import Finding, Recorder, limit_memory, print_err, read, rss_mb
from .mutate import HypothesisChoices, RandomChoices
from .targets import get_target


def _have_atheris() -> bool:
    try:
        importlib.import_module("atheris")
        return True
    except ImportError:
        return False


def instrument_loaded(prefixes) -> int:
    """Instrument (atheris) every Python function of the loaded modules named by `prefixes`, in place:
    the modules are already imported (torch imports pickle, resdet imports PIL), so atheris' import hook
    would miss them."""
    import atheris

    done = 0
    seen = set()

    def instrument(fn):
        nonlocal done
        if isinstance(fn, (staticmethod, classmethod)):
            fn = fn.__func__
        if isinstance(fn, property):
            for f in (fn.fget, fn.fset):
                if f is not None:
                    instrument(f)
            return
        if isinstance(fn, types.FunctionType) and id(fn.__code__) not in seen:
            try:
                atheris.instrument_func(fn)
                seen.add(id(fn.__code__))
                done += 1
            except Exception:  # a few code objects atheris cannot patch: left uninstrumented
                pass

    for name, module in list(sys.modules.items()):
        if module is None or not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) != name:
                continue
            if inspect.isclass(value):
                for attr in list(vars(value).values()):
                    instrument(attr)
            else:
                instrument(value)
    return done


def _byte_mutation(data: bytes, choices) -> bytes:
    body = bytearray(data)
    for _ in range(choices.integer(1, 6)):
        if not body:
            body = bytearray(b"\0")
        i = choices.integer(0, len(body) - 1)
        op = choices.integer(0, 3)
        if op == 0:
            body[i] = choices.integer(0, 255)
        elif op == 1:
            del body[i:i + choices.integer(1, 16)]
        elif op == 2:
            body[i:i] = bytes(choices.integer(0, 255) for _ in range(choices.integer(1, 8)))
        else:
            j = choices.integer(0, len(body) - 1)
            body[i:i] = body[j:j + choices.integer(1, 32)]
    return bytes(body)


def replay(target, rec: Recorder, paths) -> int:
    n = 0
    for path in paths:
        data = read(path)
        rec.start(data, path)
        try:
            target.run(data)
            rec.event(event="replayed", input=path, ok=True)
        except Finding as f:
            rec.finding(target.name, data, f, label=path, suffix=target.suffix)
            rec.event(event="replayed", input=path, ok=False)
        n += 1
    return n


def fuzz_hypothesis(target, rec: Recorder, seeds, seconds: float) -> int:
    """Structure-aware edits of the seeds drawn through hypothesis, in rounds of 5 examples until the
    time is up; a failing example is shrunk by hypothesis before it is recorded."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    examples = 0

    @settings(max_examples=5, deadline=None, database=None, derandomize=False, print_blob=False,
              report_multiple_bugs=False,
              phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        nonlocal examples
        seed = data.draw(st.sampled_from(seeds))
        choices = HypothesisChoices(data)
        out = target.mutate(seed, choices) if data.draw(st.booleans()) else None
        if out is None:
            out = _byte_mutation(seed, choices)
        examples += 1
        rec.start(out, "hypothesis")
        target.run(out)

    end = time.time() + seconds
    while time.time() < end:
        try:
            one()
        except (Finding, Exception) as e:  # a Finding, or hypothesis' Flaky when an input fails only once
            f = e if isinstance(e, Finding) else Finding("flaky", f"{type(e).__name__}: {str(e)[:500]}")
            data = read(rec.current)  # the last input run: hypothesis replays the shrunk example last
            rec.finding(target.name, data, f, label="hypothesis (shrunk)", suffix=target.suffix)
            rec.event(event="hypothesis", examples=examples)
            sys.exit(3)
    rec.event(event="hypothesis", examples=examples)
    return examples


def fuzz_atheris(target, rec: Recorder, corpus: str, seed_dirs, seconds: float, work: str):
    import atheris

    for stale in (rec.current, rec.current + ".label"):  # libFuzzer watches time from here on, not the parent
        if os.path.exists(stale):
            os.remove(stale)
    artifacts = os.path.join(work, "artifacts") + os.sep
    os.makedirs(artifacts, exist_ok=True)
    os.makedirs(corpus, exist_ok=True)

    def test_one_input(data: bytes) -> None:
        try:
            target.run(data)
        except Finding as f:
            rec.finding(target.name, data, f, label="atheris", suffix=target.suffix)
            raise

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        if seed % 2:
            out = target.mutate(data, RandomChoices(seed))
            if out is not None and len(out) <= max_size:
                return out
        return atheris.Mutate(data, max_size)

    from .harness import MEMORY_MB, TIME_LIMIT_S

    here = os.path.dirname(os.path.abspath(__file__))
    argv = [sys.argv[0], corpus] + [d for d in seed_dirs if os.path.isdir(d)] + [
        f"-max_total_time={max(1, int(seconds))}", f"-rss_limit_mb={rss_mb() + MEMORY_MB}",
        f"-timeout={int(TIME_LIMIT_S) + 5}", f"-artifact_prefix={artifacts}", "-print_final_stats=1",
        f"-seed={random.randint(1, 2 ** 31 - 1)}", "-max_len=1000000", "-len_control=0"]
    dictionary = os.path.join(here, "dicts", f"{target.name}.dict")
    if os.path.isfile(dictionary):
        argv.append(f"-dict={dictionary}")
    kwargs = {}
    probe = RandomChoices(0)
    if any(target.mutate(read(p), probe) is not None for p in _files(seed_dirs)[:3]):
        kwargs["custom_mutator"] = custom_mutator
    rec.event(event="atheris", argv=argv[1:], structured=bool(kwargs))
    atheris.Setup(argv, test_one_input, **kwargs)
    atheris.Fuzz()  # libFuzzer's loop; exits the process


def _files(dirs):
    from .harness import list_inputs

    return list_inputs(dirs)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("--work", required=True)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--engine", default="both", choices=("atheris", "hypothesis", "both"))
    p.add_argument("--replay", default="", help="a file listing the inputs to replay first, one path a line")
    p.add_argument("--corpus", action="append", default=[], help="corpus folders (the first one takes new inputs)")
    args = p.parse_args(argv)

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    target = get_target(args.target)
    rec = Recorder(args.work)
    rec.event(event="launched", target=target.name)
    engine = args.engine
    if engine in ("atheris", "both") and not _have_atheris():
        print_err("atheris is not installed (pip install -e '.[fuzz]'): fuzzing with hypothesis only")
        engine = "hypothesis"
    from .harness import _user_errors

    _user_errors()  # the oracle's imports (resdet, torch) happen before the address space is capped
    target.setup(os.path.join(args.work, "files"))
    # import what the target calls before instrumenting: one replay of a seed does that
    seed_files = _files(args.corpus[1:] or args.corpus)
    if seed_files:
        try:
            target.run(read(seed_files[0]))
        except Finding:
            pass  # replayed (and recorded) below
    if engine in ("atheris", "both") and args.seconds > 0:
        t = time.time()
        n = instrument_loaded(target.instrument)
        rec.event(event="instrumented", functions=n, seconds=round(time.time() - t, 2))
    cap = limit_memory()
    rec.event(event="start", target=target.name, engine=engine, rss_mb=rss_mb(), address_space_cap_mb=cap >> 20)

    if args.replay:
        with open(args.replay) as f:
            paths = [line.rstrip("\n") for line in f if line.strip()]
        replay(target, rec, paths)
    if args.seconds <= 0:
        return 0
    seeds = [read(p) for p in seed_files] or [b""]
    hyp_seconds = args.seconds if engine == "hypothesis" else (args.seconds / 3 if engine == "both" else 0)
    if hyp_seconds:
        fuzz_hypothesis(target, rec, seeds, hyp_seconds)
    if engine in ("atheris", "both"):
        corpus = args.corpus[0] if args.corpus else os.path.join(args.work, "corpus")
        fuzz_atheris(target, rec, corpus, args.corpus[1:], args.seconds - hyp_seconds, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
