"""The pipeline's threads: order kept whatever order workers finish in, bad items skipped and counted, errors
raised after the outputs are drained, Ctrl-C (a real SIGINT) stops cleanly."""
import os
import random
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from resdet.pipeline.stages import run_pipeline


class Numbers:
    kind = "images"

    def __init__(self, name, n):
        self.name, self.total, self.n = name, n, n

    def units(self):
        yield from range(self.n)


class Job:
    skippable = (ValueError,)

    def __init__(self, bad=(), fail_render_at=None, interrupt_after_batches=None):
        self.bad, self.fail_render_at, self.interrupt_after = set(bad), fail_render_at, interrupt_after_batches
        self.batches, self.written, self.model_threads = [], [], set()
        self.rng = random.Random(0)

    def item(self, source, unit, index):
        return SimpleNamespace(source=source, unit=unit, index=index, name=f"{source.name}#{unit}")

    def prepare(self, item):
        time.sleep(self.rng.random() * 0.004)  # workers finish out of order
        if (item.source.name, item.unit) in self.bad:
            raise ValueError("cannot be decoded")
        item.value = item.unit * 10
        return item

    def skip_reason(self, item, error):
        return str(error)

    def infer(self, items):
        self.model_threads.add(threading.current_thread().name)
        self.batches.append([(it.source.name, it.unit) for it in items])
        for it in items:
            it.out = it.value + 1
        if self.interrupt_after and len(self.batches) == self.interrupt_after:
            os.kill(os.getpid(), signal.SIGINT)

    def render(self, item):
        time.sleep(self.rng.random() * 0.004)
        if (item.source.name, item.unit) == self.fail_render_at:
            raise OSError("disk full")
        return item

    def write(self, item):
        assert item.out == item.unit * 10 + 1
        self.written.append((item.source.name, item.unit))


def test_order_batches_and_skips():
    sources = [Numbers("a", 11), Numbers("b", 6)]
    job = Job(bad=[("a", 3), ("b", 5)])
    report = run_pipeline(sources, job, batch_size=3, decode_workers=3, draw_workers=3, progress=False)
    expected = [(s.name, u) for s in sources for u in range(s.n) if (s.name, u) not in job.bad]
    assert job.written == expected and report.frames == len(expected)
    assert [x for b in job.batches for x in b] == expected and [len(b) for b in job.batches] == [3, 3, 3, 3, 3]
    assert report.skipped == [("a#3", "cannot be decoded"), ("b#5", "cannot be decoded")]
    assert job.model_threads == {threading.main_thread().name}  # the model runs in the calling thread
    assert report.times.decode > 0 and report.times.model >= 0 and report.times.draw > 0
    assert not report.interrupted and len(report.stage_lines(3)) == 4


def test_an_error_while_drawing_stops_the_run_and_is_raised():
    job = Job(fail_render_at=("a", 5))
    with pytest.raises(OSError, match="disk full"):
        run_pipeline([Numbers("a", 30)], job, batch_size=2, progress=False)
    assert job.written == [("a", u) for u in range(5)]  # everything before it, in order


def test_ctrl_c_finishes_what_passed_the_model_and_stops():
    job = Job(interrupt_after_batches=3)
    report = run_pipeline([Numbers("a", 200)], job, batch_size=2, progress=False)
    assert report.interrupted
    n = len(job.written)
    assert 6 <= n < 200 and job.written == [("a", u) for u in range(n)] and report.frames == n
