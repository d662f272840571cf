"""What tools/predict.py writes: drawn images, drawn videos (.mp4), JSON lines per video frame, and a COCO
results file for images.

    codec, note = choose_codec()                 # the first of avc1 (H.264), mp4v this OpenCV can write
    video = VideoOutput("out/clip.mp4", fps=25, codec=codec); video.write(bgr); video.close()
    picture = draw_frame(rgb, instances, class_names, score_threshold=0.5)   # HxWx3 RGB uint8

Video files are written by OpenCV's VideoWriter. pip's opencv-python-headless has FFmpeg without an
H.264 encoder, so "avc1" (H.264: plays everywhere, browsers included) is tried first and "mp4v" (MPEG-4
Part 2: VLC, ffmpeg, most desktop players) is the fallback, with a message saying which was used. A
video is closed (its index written) when the run ends, is interrupted, or fails, so the file plays up
to the last frame written. JSON lines are flushed line by line for the same reason.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from resdet.utils.errors import UserInputError

__all__ = ["CODECS", "choose_codec", "VideoOutput", "JsonLines", "draw_frame", "write_picture", "save_json", "picture_path",
           "frame_record"]

# Tried in this order when no --codec is given.
CODECS = ("avc1", "mp4v")
_CODEC_NAMES = {"avc1": "H.264", "mp4v": "MPEG-4 Part 2", "MJPG": "Motion JPEG", "XVID": "MPEG-4 Part 2 (Xvid)"}
_chosen: Dict[str, Tuple[str, str]] = {}


@contextlib.contextmanager
def _stderr_silenced():
    """FFmpeg prints its own errors for an encoder it cannot open (on file descriptor 2, from C);
    a probe that is expected to fail on plain installs should not show them."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some embedded consoles): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _codec_works(fourcc: str) -> bool:
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.mp4")
        with _stderr_silenced():
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
            ok = writer.isOpened()
            if ok:
                writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.release()
        return ok and os.path.isfile(path) and os.path.getsize(path) > 0


def choose_codec(asked: str = "") -> Tuple[str, str]:
    """(fourcc, note) for the .mp4 videos of this run: `asked`, or the first of CODECS that this OpenCV
    can write; the note says which was used when it is not the first choice (empty otherwise)."""
    key = asked or ""
    if key in _chosen:
        return _chosen[key]
    tried = [asked] if asked else list(CODECS)
    for fourcc in tried:
        if len(fourcc) == 4 and _codec_works(fourcc):
            note = ""
            if fourcc != tried[0] or (not asked and fourcc != CODECS[0]):
                note = (f"videos: {_CODEC_NAMES.get(CODECS[0], CODECS[0])} ({CODECS[0]}) cannot be written by this "
                        f"OpenCV build; writing {_CODEC_NAMES.get(fourcc, fourcc)} ({fourcc}) .mp4 files instead "
                        "(they play in VLC, ffmpeg and most players; convert for browsers with "
                        "`ffmpeg -i in.mp4 -c:v libx264 out.mp4`)")
            _chosen[key] = (fourcc, note)
            return _chosen[key]
    raise UserInputError(f"this OpenCV build cannot write .mp4 videos with {' or '.join(tried)}; give another "
                         "--codec (a four-character code), or --no-draw for results only")


class VideoOutput:
    """One drawn video: opened at its first frame (the size is known then), closed by `close`."""

    def __init__(self, path: str, fps: float, codec: str):
        self.path, self.fps, self.codec = path, fps if fps > 0 else 25.0, codec
        self.writer = None
        self.frames_written = 0

    def write(self, bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            h, w = bgr.shape[:2]
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self.codec), self.fps, (w, h))
            if not self.writer.isOpened():
                raise UserInputError(f"cannot write the video '{self.path}' ({self.codec}, {w}x{h})")
        self.writer.write(bgr)
        self.frames_written += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()  # writes the file's index: without it the .mp4 does not play
            self.writer = None


class JsonLines:
    """One JSON object per line, flushed as written (a run that stops leaves whole lines)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.file = open(path, "w", encoding="utf-8")
        self.lines = 0

    def write(self, obj: dict) -> None:
        self.file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.file.flush()
        self.lines += 1

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


def save_json(obj, path: str) -> str:
    """Written to a temporary file beside it, then renamed: never a half-written file under its name."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)
    return path


def draw_frame(pixels: np.ndarray, instances: Dict, class_names: Sequence[str], score_threshold: float = 0.5,
               mask_threshold: float = 0.5) -> np.ndarray:
    """The detections scoring at least `score_threshold` drawn on an HxWx3 RGB uint8 image (returned as a
    new HxWx3 RGB uint8 array). Masks given as `mask_probs` (inside each box) are pasted for those only."""
    from resdet.detection.postprocess import paste_masks
    from resdet.utils.visualize import draw_instances

    h, w = pixels.shape[:2]
    keep = instances["scores"] >= score_threshold
    shown = {k: instances[k][keep] for k in ("boxes", "scores", "labels")}
    if "mask_probs" in instances:
        shown["masks"] = paste_masks(instances["mask_probs"][keep], shown["boxes"], (h, w))
    elif "masks" in instances:
        shown["masks"] = instances["masks"][keep]
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    return draw_instances(image, shown, class_names, score_threshold, mask_threshold).permute(1, 2, 0).numpy()


def write_picture(rgb: np.ndarray, path: str) -> str:
    """An HxWx3 RGB uint8 image to `path` (JPEG quality 95 for .jpg/.jpeg, else PNG by OpenCV)."""
    import cv2

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1]), params):
        raise OSError(f"could not write the picture '{path}'")
    return path


def picture_path(output_dir: str, relative: str, used: Optional[set] = None) -> str:
    """Where the drawing of an input image goes: its relative path under `output_dir`, as .jpg for JPEG
    inputs and .png otherwise; `used` (the paths given out so far) gets _2, _3, ... on a clash."""
    stem, ext = os.path.splitext(relative)
    ext = ".jpg" if ext.lower() in (".jpg", ".jpeg") else ".png"
    path = os.path.join(output_dir, stem + ext)
    if used is not None:
        n = 2
        while path in used:
            path = os.path.join(output_dir, f"{stem}_{n}{ext}")
            n += 1
        used.add(path)
    return path


def frame_record(frame: int, fps: float, size: Tuple[int, int], detections: List[dict]) -> dict:
    """A video frame's JSON line: its number, time (s, from the video's frame rate), size and detections."""
    for d in detections:
        d.pop("image_id", None)
    return {"frame": int(frame), "time": round(frame / fps, 4) if fps > 0 else None, "height": int(size[0]),
            "width": int(size[1]), "detections": detections}
