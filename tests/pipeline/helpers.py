"""Small real inputs for the pipeline's tests: videos written by OpenCV, a local HTTP server."""
import contextlib
import functools
import http.server
import os
import threading

import cv2
import numpy as np


def write_video(path: str, frames: int, size=(72, 96), fourcc: str = "mp4v", fps: float = 10.0) -> str:
    """A video whose frame k is a gradient with a disc that moves (frame k's mean grows with k)."""
    h, w = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for k in range(frames):
        frame = np.full((h, w, 3), (20 + 9 * k) % 256, np.uint8)
        cv2.circle(frame, (10 + (4 * k) % (w - 20), h // 2), min(h, w) // 5, (40, 200, 90), -1)
        writer.write(frame)
    writer.release()
    return path


def frames_in(path: str) -> int:
    cap = cv2.VideoCapture(path)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def corrupt_mjpeg_frame(path: str, frame: int) -> None:
    """Zero one frame's JPEG data in a Motion-JPEG AVI (from its SOI marker to its EOI marker)."""
    data = bytearray(open(path, "rb").read())
    start = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8][frame]
    end = data.index(b"\xff\xd9", start) + 2
    data[start:end] = bytes(end - start)
    with open(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def serve_folder(folder: str):
    """A read-only HTTP server of `folder` on 127.0.0.1 (a free port); yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def write_images(folder: str, names, size=(40, 52)) -> list:
    paths = []
    for k, name in enumerate(names):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        img = np.full(size + (3,), 30 * k % 256, np.uint8)
        cv2.rectangle(img, (5, 5), (20, 25), (200, 60, 60), -1)
        assert cv2.imwrite(path, img)
        paths.append(path)
    return paths
