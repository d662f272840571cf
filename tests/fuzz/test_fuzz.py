"""The fuzz harnesses in the normal test run (issue 21): every reader's target replays its seed corpus
and kept regression cases, then fuzzes for RESDET_FUZZ_SECONDS (default 1.5 s: tests/fuzz/README.md says
why), in a child process; the harness itself is checked on planted failures."""
import os

import pytest

from tests.fuzz.harness import list_inputs
from tests.fuzz.run import DEFAULT_SHORT_SECONDS, run_target
from tests.fuzz.targets import READER_TARGETS, corpus_dirs

SECONDS = float(os.environ.get("RESDET_FUZZ_SECONDS", DEFAULT_SHORT_SECONDS))


def _report(summary):
    return "\n".join(f"{f['kind']}: {f['message'][:400]} [{f['where']}] input {f['input']} ({f['label']})"
                     for f in summary["findings"])


@pytest.mark.parametrize("name", READER_TARGETS)
def test_reader_survives_its_corpus_and_a_short_fuzz_run(tmp_path, name):
    inputs = list_inputs(corpus_dirs(name))
    assert inputs, f"no seeds for {name}: python -m tests.fuzz.make_seeds {name}"
    summary = run_target(name, SECONDS, str(tmp_path / name))
    assert not summary["findings"], _report(summary)
    assert summary["replayed"] == len(inputs) and not summary["not_replayed"], summary
    if SECONDS > 0:
        assert summary["execs"] + summary["hypothesis_examples"] > 0, summary


def test_the_harness_reports_crashes_hangs_memory_and_untyped_errors_and_goes_on(tmp_path, monkeypatch):
    """Each planted failure becomes a finding naming its input; the runner (this test) is not harmed, and
    replay continues after a segfault and after a hang inside C code (the worker is restarted)."""
    monkeypatch.setenv("RESDET_FUZZ_INPUT_SECONDS", "2")
    monkeypatch.setenv("RESDET_FUZZ_STARTUP_SECONDS", "60")
    monkeypatch.setenv("RESDET_FUZZ_STUCK_SLACK_SECONDS", "2")
    # replayed in name order; the two that end the worker come last, so it starts only twice
    planted = {"a_hang": b"hang", "b_mem": b"mem", "c_key": b"key", "d_unnamed": b"unnamed", "e_named": b"named",
               "f_ok": b"ok", "g_chang": b"chang", "h_segv": b"segv"}
    folder = tmp_path / "planted"
    folder.mkdir()
    for name, data in planted.items():
        (folder / name).write_bytes(data)
    import importlib

    import tests.fuzz.harness as harness
    import tests.fuzz.run as run

    importlib.reload(harness)
    importlib.reload(run)
    try:
        summary = run.run_target("_selftest", 0, str(tmp_path / "work"), replay_only=True,
                                 extra_inputs=sorted(str(p) for p in folder.iterdir()))
    finally:
        monkeypatch.undo()
        importlib.reload(harness)
        importlib.reload(run)
    kinds = {open(f["input"], "rb").read(): f["kind"] for f in summary["findings"]}
    assert kinds == {b"segv": "signal", b"hang": "timeout", b"chang": "timeout", b"mem": "memory",
                     b"key": "exception", b"unnamed": "unnamed-file"}, _report(summary)
    assert not summary["not_replayed"], summary
