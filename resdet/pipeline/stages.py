"""The inference pipeline: decoding, the model and drawing/writing run at the same time, frames in order.

    report = run_pipeline(sources, job, batch_size=4, decode_workers=2, draw_workers=2)

Four parts, joined by bounded queues (so memory stays flat whatever the input's length):
- a feeder thread walks the sources in order; video frames are read there (a video decodes
  sequentially), and every image or frame is handed to a pool of decode workers (`job.prepare`: read
  and decode an image, colour-convert a frame, the test-time resize);
- the model loop (the calling thread) takes the prepared items in their order, `batch_size` at a time,
  and makes one model call per batch (`job.infer`; images of different sizes padded as in training);
- a pool of draw workers (`job.render`: drawing, picture files, results records) runs each item once the
  model has seen it;
- a writer thread takes the drawn items in their order (`job.write`: video frames, JSON lines, results,
  the progress bar).
Order is kept by queueing each item's future in input order and waiting on them in that order, so
workers may finish out of order without reordering anything. An item whose preparation raises one of
`job.skippable` errors (an unreadable image, an undecodable frame) is reported by name and skipped;
any other error stops the run and is raised once what was under way is written. Each stage's busy time
is summed (`StageTimes`): the report says which stage bounds the frame rate.

Ctrl-C (in the main thread): the first stops reading and finishes the frames already past the model
(outputs closed as usual, so a video plays to its last frame); a second one stops writing at once (the
outputs are still closed); a third raises KeyboardInterrupt.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

__all__ = ["StageTimes", "PipelineReport", "run_pipeline"]

_END = object()
_POLL_S = 0.1


@dataclass
class StageTimes:
    """Busy seconds per stage (summed over its threads) and how many threads each had."""

    decode: float = 0.0
    model: float = 0.0
    draw: float = 0.0
    decode_threads: int = 1
    draw_threads: int = 1
    waited_for_input: float = 0.0  # the model loop, waiting for decoded items
    waited_for_output: float = 0.0  # the model loop, waiting for room in the draw queue
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            setattr(self, stage, getattr(self, stage) + seconds)


@dataclass
class PipelineReport:
    frames: int = 0  # items written
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (name, reason)
    wall: float = 0.0
    batches: int = 0
    interrupted: bool = False
    times: StageTimes = field(default_factory=StageTimes)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    def stage_lines(self, batch_size: int) -> List[str]:
        """Each stage's time per frame and how busy it kept its threads; the busiest bounds the rate."""
        t, n = self.times, max(self.frames + len(self.skipped), 1)
        rows = [("decode", t.decode, t.decode_threads, f"{t.decode_threads} thread{'s' * (t.decode_threads > 1)}"),
                ("model", t.model, 1, f"batch {batch_size}"),
                ("draw/write", t.draw, t.draw_threads, f"{t.draw_threads} thread{'s' * (t.draw_threads > 1)}")]
        busy = {name: sec / (max(self.wall, 1e-9) * threads) for name, sec, threads, _ in rows}
        top = max(busy, key=busy.get)
        lines = [f"  {name:<10} {1000 * sec / n:8.1f} ms/frame ({how}), busy {100 * busy[name]:3.0f}% of the run"
                 + ("  <- the bottleneck" if name == top else "") for name, sec, _, how in rows]
        lines.append(f"  the model waited {t.waited_for_input:.1f} s for decoded frames and {t.waited_for_output:.1f} s "
                     "for the draw/write stage")
        return lines


def _put(q: "queue.Queue", value, give_up: threading.Event) -> bool:
    """A blocking put that gives up (False) once `give_up` is set."""
    while True:
        try:
            q.put(value, timeout=_POLL_S)
            return True
        except queue.Full:
            if give_up.is_set():
                return False


def _timed(fn, times: StageTimes, stage: str):
    def run(*args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            times.add(stage, time.perf_counter() - start)
    return run


class _Interrupts:
    """SIGINT while the pipeline runs: stop, then abort, then the usual KeyboardInterrupt."""

    def __init__(self, stop: threading.Event, abort: threading.Event, say):
        self.stop, self.abort, self.say, self.previous = stop, abort, say, None
        self.requested = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        if not self.stop.is_set():
            self.stop.set()
            self.say("Ctrl-C: finishing the frames under way and closing the outputs (Ctrl-C again: stop now)")
        elif not self.abort.is_set():
            self.abort.set()
            self.say("Ctrl-C: stopping now; closing the outputs")
        else:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run_pipeline(sources: Sequence[Any], job, *, batch_size: int = 1, decode_workers: int = 2,
                 draw_workers: int = 2, progress: bool = True, queue_size: int = 0) -> PipelineReport:
    """Run `job` over every unit of `sources` (see the module). `job` provides `item(source, unit, index)`,
    `prepare(item)`, `infer(items)`, `render(item)`, `write(item)`, `skippable` (a tuple of exception
    types) and `skip_reason(item, error)`. Returns the report; the caller closes the job's outputs."""
    from tqdm import tqdm

    if batch_size < 1 or decode_workers < 1 or draw_workers < 1:
        raise ValueError(f"batch size and worker counts must be >= 1; got {batch_size}, {decode_workers}, {draw_workers}")
    times = StageTimes(decode_threads=decode_workers, draw_threads=draw_workers)
    report = PipelineReport(times=times)
    size = queue_size or max(4, 2 * batch_size + max(decode_workers, draw_workers))
    to_model: "queue.Queue" = queue.Queue(size)
    to_writer: "queue.Queue" = queue.Queue(size)
    stop, abort = threading.Event(), threading.Event()
    failures: List[BaseException] = []
    totals = [getattr(s, "total", None) for s in sources]
    bar = tqdm(total=sum(totals) if all(t is not None for t in totals) else None, unit="frame", desc="predict",
               disable=not progress, dynamic_ncols=True)
    say = bar.write if progress else print

    def fail(e: BaseException) -> None:
        failures.append(e)
        stop.set()

    decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="decode")
    draw_pool = ThreadPoolExecutor(draw_workers, thread_name_prefix="draw")
    prepare = _timed(job.prepare, times, "decode")
    render = _timed(job.render, times, "draw")

    def feed() -> None:
        index = 0
        try:
            for source in sources:
                units = iter(source.units())
                while not stop.is_set():
                    start = time.perf_counter()
                    unit = next(units, _END)  # a video frame is read (decoded) here
                    times.add("decode", time.perf_counter() - start)
                    if unit is _END:
                        break
                    item = job.item(source, unit, index)
                    index += 1
                    if not _put(to_model, (item, decode_pool.submit(prepare, item)), stop):
                        return
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 (handed to the main thread)
            fail(e)
        finally:
            _put(to_model, _END, stop)

    def write() -> None:
        while True:
            entry = to_writer.get()
            if entry is _END:
                return
            if abort.is_set() or failures:
                continue  # drain without writing
            item, fut = entry
            try:
                item = fut.result()
                start = time.perf_counter()
                job.write(item)
                times.add("draw", time.perf_counter() - start)
                report.frames += 1
                bar.update(1)
            except BaseException as e:  # noqa: BLE001
                fail(e)

    def infer(items: List) -> None:
        start = time.perf_counter()
        job.infer(items)
        times.add("model", time.perf_counter() - start)
        report.batches += 1
        for it in items:
            start = time.perf_counter()
            _put(to_writer, (it, draw_pool.submit(render, it)), abort)
            times.waited_for_output += time.perf_counter() - start

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)  # may block in a stalled stream's read
    writer = threading.Thread(target=write, name="writer")
    wall = time.perf_counter()
    with _Interrupts(stop, abort, say) as interrupts:
        feeder.start()
        writer.start()
        try:
            pending: List = []
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    entry = to_model.get(timeout=_POLL_S)
                except queue.Empty:
                    times.waited_for_input += time.perf_counter() - start
                    continue
                if entry is _END:
                    break
                item, fut = entry
                try:
                    prepared = _result(fut, stop)
                except job.skippable as e:
                    report.skipped.append((item.name, job.skip_reason(item, e)))
                    say(f"skipped {item.name}: {report.skipped[-1][1]}")
                    continue
                finally:
                    times.waited_for_input += time.perf_counter() - start
                if prepared is None:  # stopped while waiting
                    break
                pending.append(prepared)
                if len(pending) == batch_size:
                    infer(pending)
                    pending = []
            if pending and not failures:  # the last, partial batch (also after a first Ctrl-C)
                infer(pending)
        except BaseException as e:  # noqa: BLE001 (a model error: close what is open, then raise)
            fail(e)
        finally:
            stop.set()
            to_writer.put(_END)
            while writer.is_alive():
                writer.join(_POLL_S)
            decode_pool.shutdown(wait=False, cancel_futures=True)
            draw_pool.shutdown(wait=True, cancel_futures=True)
            feeder.join(timeout=1.0)
            report.wall = time.perf_counter() - wall
            bar.close()
    report.interrupted = interrupts.requested
    if failures:
        raise failures[0]
    return report


def _result(fut: Future, stop: threading.Event):
    """The future's result, or None once `stop` is set while waiting (its own exception is raised)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        try:
            return fut.result(timeout=_POLL_S)
        except FutureTimeout:
            if stop.is_set():
                return None
