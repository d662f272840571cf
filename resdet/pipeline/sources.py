"""What tools/predict.py reads: image files, folders (recursive), globs, video files, cameras and streams.

    sources = open_sources(["photos/", "clip.mp4", "0", "rtsp://cam/live", "shots/**/*.png"])
    for src in sources:                      # ImageFiles, VideoFile or LiveSource, in the order given
        for unit in src.units(): ...         # image paths, or (frame number, BGR frame or None) for videos

Each `--input` item is, in this order of tests: a camera index (digits: what OpenCV's VideoCapture(N)
opens; a V4L2 device such as /dev/video0 too), a stream URL (scheme://..., opened by OpenCV's FFmpeg
backend: http, https, rtsp, rtmp, udp, tcp), a folder (its images, recursively, sorted), a file (an
image or a video by its extension), or a glob pattern (`*`, `?`, `[...]`; `**` recursive). A camera or
stream is a LiveSource and a video file a VideoFile: the same reading code (OpenCV's VideoCapture),
but a live source has no known length, and one that stops delivering frames is an error at the end of
the run (every frame read before that is processed and written). Every source is opened before any
frame is read: one that cannot be opened stops the command at once, naming it.
"""
from __future__ import annotations

import glob
import os
import re
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from resdet.utils.errors import UserInputError

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "SourceError", "ImageFiles", "VideoFile", "LiveSource",
           "open_sources", "classify_input", "images_in"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
STREAM_SCHEMES = ("http", "https", "rtsp", "rtsps", "rtmp", "udp", "tcp", "srt")
# A video frame that fails to decode is skipped when a later one decodes; this many failures in a row
# end the video (its end, or a file cut short).
MAX_FAILED_FRAMES_IN_A_ROW = 8


class SourceError(UserInputError, RuntimeError):
    """An input that cannot be opened or read as asked (a missing file, a camera that does not open, a
    stream that stops); the message names it. The tools print it as one line."""


def _quiet_opencv() -> None:
    import cv2

    # OpenCV logs a WARN line for every backend it tries on a camera index that is not there; the
    # SourceError says what failed
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # an OpenCV without the logging module
        pass


class ImageFiles:
    """Image files (from a folder, a glob or the command line); decoded later, in the pipeline's workers.
    `relative[i]` is where image i's outputs go under the output folder (its path inside the folder or
    below the glob's fixed part, else its name)."""

    kind = "images"

    def __init__(self, paths: Sequence[str], relative: Sequence[str], name: str):
        self.paths, self.relative, self.name = list(paths), list(relative), name
        self.relative_of = dict(zip(self.paths, self.relative))
        self.total: Optional[int] = len(self.paths)
        self.fps = 0.0

    def units(self) -> Iterator[str]:
        yield from self.paths

    def close(self) -> None:
        pass


class VideoFile:
    """A video file read frame by frame with OpenCV. `units()` yields (frame number, BGR frame), or
    (frame number, None) for a frame that failed to decode where later frames decode (reported and
    skipped by the pipeline); `ended_early` says where a file ended before the length it announces."""

    kind = "video"

    def __init__(self, target, name: str, capture=None):
        import cv2

        self.target, self.name = target, name
        self.cap = capture if capture is not None else cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(self._cannot_open())
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and fps > 0 else 0.0
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total: Optional[int] = count if count > 0 else None
        self.frames_read = 0
        self.ended_early: Optional[str] = None
        self._reading = threading.Lock()  # held during a read: never release the capture under it

    def _cannot_open(self) -> str:
        return (f"video file '{self.target}' cannot be opened by OpenCV (not a video, or a codec this OpenCV "
                "build lacks)")

    def units(self) -> Iterator[Tuple[int, Optional[np.ndarray]]]:
        failed: List[int] = []
        index = 0
        while True:
            with self._reading:
                ok, frame = self.cap.read()
            if ok and frame is not None:
                for f in failed:  # failures followed by a good frame: frames that did not decode
                    yield f, None
                failed = []
                self.frames_read += 1
                yield index, frame
            else:
                failed.append(index)
                if len(failed) >= MAX_FAILED_FRAMES_IN_A_ROW or not self._may_continue(index):
                    break
            index += 1
        self._finished(failed)

    def _may_continue(self, index: int) -> bool:
        # a file announces its length: a failure before it may be one bad frame
        return self.total is not None and index + 1 < self.total

    def _finished(self, failed: List[int]) -> None:
        if self.total is not None and failed and failed[0] < self.total:
            self.ended_early = (f"'{self.target}' ended at frame {failed[0]} of the {self.total} frames it "
                                "announces (the rest could not be read)")

    def close(self) -> None:
        # a stalled stream may still be inside read() in the feeder thread (which the run stopped waiting
        # for): OpenCV's capture is not thread-safe, so it is then left to the process's exit
        if self._reading.acquire(timeout=0.5):
            try:
                self.cap.release()
            finally:
                self._reading.release()


class LiveSource(VideoFile):
    """A camera or a stream: read as a video file, but with no length; when it stops delivering frames
    (a read fails, or nothing comes within the read timeout) `stopped` says so, and the run ends with
    that error after writing what it read."""

    def __init__(self, target, name: str, kind: str, timeout_s: float = 10.0, capture=None):
        import cv2

        self.kind = kind
        if capture is None:
            if kind == "stream":
                # the FFmpeg backend's own timeouts, so a silent stream ends the run instead of hanging it
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout_s * 1000),
                          cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(timeout_s * 1000)]
                capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            else:
                capture = cv2.VideoCapture(target)
        super().__init__(target, name, capture)
        self.total = None
        self.stopped: Optional[str] = None

    def _cannot_open(self) -> str:
        if self.kind == "camera":
            return (f"camera {self.target!r} cannot be opened (no such device, in use by another program, or "
                    "this OpenCV build cannot open cameras)")
        return f"stream '{self.target}' cannot be opened (unreachable, refused, or a format OpenCV cannot read)"

    def _may_continue(self, index: int) -> bool:
        return False  # a live source that fails to deliver a frame has stopped

    def _finished(self, failed: List[int]) -> None:
        what = f"camera {self.target!r}" if self.kind == "camera" else f"stream '{self.target}'"
        self.stopped = f"{what} stopped delivering frames after {self.frames_read} frames"


def classify_input(item: str) -> str:
    """"camera", "stream", "folder", "image", "video" or "glob" for one --input item (see the module)."""
    if re.fullmatch(r"\d+", item) or re.fullmatch(r"/dev/video\d+", item):
        return "camera"
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", item)
    if scheme:
        if scheme.group(1).lower() in STREAM_SCHEMES:
            return "stream"
        if scheme.group(1).lower() == "file":
            return classify_input(item[len("file://"):])
    if os.path.isdir(item):
        return "folder"
    if os.path.isfile(item):
        return "video" if item.lower().endswith(VIDEO_EXTENSIONS) else "image"
    if glob.has_magic(item):
        return "glob"
    return "missing"


def images_in(folder: str) -> List[str]:
    """The images in a folder and below it, sorted (folder by folder)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _stream_name(url: str) -> str:
    stem = os.path.splitext(os.path.basename(url.split("?")[0].rstrip("/")))[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "stream"


def open_sources(items: Sequence[str], stream_timeout_s: float = 10.0) -> List:
    """Sources for the --input items, in order (consecutive image files share one ImageFiles); each
    video, camera and stream opened now. A missing path, a glob or folder without images or videos, or
    a source that does not open is a SourceError naming it."""
    _quiet_opencv()
    sources: List = []
    loose: Tuple[List[str], List[str]] = ([], [])

    def flush_loose():
        if loose[0]:
            sources.append(ImageFiles(loose[0][:], loose[1][:], "images"))
            loose[0].clear()
            loose[1].clear()

    try:
        for item in items:
            kind = classify_input(item)
            if kind == "camera":
                flush_loose()
                target = int(item) if item.isdigit() else item
                sources.append(LiveSource(target, f"camera{item if item.isdigit() else os.path.basename(item)}",
                                          "camera"))
            elif kind == "stream":
                flush_loose()
                sources.append(LiveSource(item, _stream_name(item), "stream", stream_timeout_s))
            elif kind == "video":
                flush_loose()
                sources.append(VideoFile(item, os.path.splitext(os.path.basename(item))[0]))
            elif kind == "image":
                loose[0].append(item)
                loose[1].append(os.path.basename(item))
            elif kind == "folder":
                flush_loose()
                paths = images_in(item)
                if not paths:
                    raise SourceError(f"--input folder '{item}' holds no images ({', '.join(IMAGE_EXTENSIONS)}), "
                                      "in it or below")
                sources.append(ImageFiles(paths, [os.path.relpath(p, item) for p in paths], item))
            elif kind == "glob":
                flush_loose()
                matched = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
                images = [p for p in matched if p.lower().endswith(IMAGE_EXTENSIONS)]
                videos = [p for p in matched if p.lower().endswith(VIDEO_EXTENSIONS)]
                if not images and not videos:
                    raise SourceError(f"--input pattern '{item}' matches no image or video file")
                if images:
                    base = _glob_base(item)
                    sources.append(ImageFiles(images, [os.path.relpath(p, base) for p in images], item))
                sources += [VideoFile(v, os.path.splitext(os.path.basename(v))[0]) for v in videos]
            else:
                raise SourceError(f"--input '{item}' is not a file, a folder, a glob pattern that matches, a "
                                  "camera index or a stream URL")
        flush_loose()
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


def _glob_base(pattern: str) -> str:
    """The folder part of a glob pattern before its first wildcard ("shots/**/*.png" -> "shots")."""
    parts = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    base = os.sep.join(parts)
    return base if os.path.isdir(base) else (os.path.dirname(base) or ".")
