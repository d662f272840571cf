"""The fuzzing oracle and the worker process that runs one target (tests/fuzz/README.md).

A target (tests/fuzz/targets.py) turns the bytes of one input into the file(s) a reader opens and calls
the reader(s). The property checked for every input, whatever made it (a seed, a kept regression case,
atheris' coverage-guided mutation, a hypothesis strategy):
- the reader returns, or raises one of the project's user errors (resdet.runs.cli.USER_ERRORS: the
  UserInputError family and the named errors the tools print as one line) whose message names the file;
- any other exception (an untyped KeyError, IndexError, TypeError, ValueError, RecursionError,
  MemoryError, ...) is a finding; so is a rejection that does not name the file;
- within TIME_LIMIT_S seconds per input (a Python-level alarm here; libFuzzer's -timeout and the parent's
  watchdog for time spent inside C code) and MEMORY_MB megabytes of address space beyond what the worker
  held when it started fuzzing (RLIMIT_AS; libFuzzer's -rss_limit_mb too);
- without a signal: the worker is a child process (`python -m tests.fuzz.worker`), so a segfault ends it,
  not the test runner, and the parent (tests/fuzz/run.py) names the input that was running.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
from typing import Callable, List, Optional

TIME_LIMIT_S = float(os.environ.get("RESDET_FUZZ_INPUT_SECONDS", "10"))
MEMORY_MB = int(os.environ.get("RESDET_FUZZ_MEMORY_MB", "2048"))


class InputTimeout(BaseException):
    """Raised by the alarm inside a reader that runs too long (BaseException: readers' `except Exception`
    must not swallow it)."""


class Finding(Exception):
    """An input broke the property; `kind` is one of: exception, unnamed-file, timeout, memory."""

    def __init__(self, kind: str, message: str, where: str = ""):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.where = kind, message, where


def _user_errors():
    from resdet.runs.cli import USER_ERRORS

    return USER_ERRORS


def _alarm(signum, frame):
    raise InputTimeout()


def _innermost_frame(tb) -> str:
    """file:line of the innermost frame in resdet (else the innermost at all): what a finding is filed under."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if f"{os.sep}resdet{os.sep}" in f.filename] or frames
    f = ours[-1] if ours else None
    return f"{os.path.relpath(f.filename)}:{f.lineno} ({f.name})" if f else "?"


def check_call(fn: Callable[[], object], names: List[str]) -> None:
    """Run one reader call; raise Finding unless it returns or raises a user error naming one of `names`
    (the files the input was written to)."""
    user_errors = _user_errors()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' summaries; stdout belongs to the worker
            fn()
    except InputTimeout:
        raise Finding("timeout", f"no answer within {TIME_LIMIT_S:g} s", "") from None
    except MemoryError as e:
        raise Finding("memory", f"MemoryError beyond the {MEMORY_MB} MB limit: {e}", _innermost_frame(e.__traceback__)) from None
    except user_errors as e:
        message = str(e)
        if isinstance(e, FileNotFoundError) and e.filename:
            message += f" '{e.filename}'"
        if not any(n in message for n in names):
            raise Finding("unnamed-file", f"{type(e).__name__} does not name the file {names[0]!r}: {message[:500]}",
                          _innermost_frame(e.__traceback__)) from None
    except RecursionError as e:
        raise Finding("exception", f"RecursionError: {str(e)[:300]}", _innermost_frame(e.__traceback__)) from None
    except Exception as e:  # noqa: BLE001 - every other type is what the fuzzer is looking for
        raise Finding("exception", f"{type(e).__name__}: {str(e)[:500]}", _innermost_frame(e.__traceback__)) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def vm_size_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def limit_memory(extra_mb: int = MEMORY_MB) -> int:
    """Cap this process's address space at what it maps now plus `extra_mb`; returns the cap in bytes."""
    cap = vm_size_bytes() + extra_mb * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file in the repository
    return cap


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


class Recorder:
    """What the worker tells its parent: JSON lines in `work/events.jsonl`, and the input being run in
    `work/current` (so that the parent can name the input of a crash or a time-out)."""

    def __init__(self, work: str):
        self.work = work
        os.makedirs(os.path.join(work, "findings"), exist_ok=True)
        self.events = open(os.path.join(work, "events.jsonl"), "a", buffering=1)
        self.current = os.path.join(work, "current")

    def start(self, data: bytes, label: str) -> None:
        # written in place (no rename): a few microseconds for small inputs; the parent reads its content
        # only after this process is gone, and its modification time to see an input that runs too long
        with open(self.current + ".label", "w") as f:
            f.write(label)
        with open(self.current, "wb") as f:
            f.write(data)

    def event(self, **row) -> None:
        row.setdefault("time", round(time.time(), 3))
        self.events.write(json.dumps(row) + "\n")

    def finding(self, target: str, data: bytes, finding: Finding, label: str, suffix: str) -> str:
        name = f"{target}-{finding.kind}-{digest(data)}{suffix}"
        path = os.path.join(self.work, "findings", name)
        with open(path, "wb") as f:
            f.write(data)
        self.event(event="finding", target=target, kind=finding.kind, message=finding.message, where=finding.where,
                   input=path, label=label)
        return path


def list_inputs(folders: List[str]) -> List[str]:
    out = []
    for d in folders:
        if os.path.isdir(d):
            out += [os.path.join(d, n) for n in sorted(os.listdir(d))
                    if not n.startswith(".") and not n.endswith(".md") and os.path.isfile(os.path.join(d, n))]
    return out


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def print_err(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
