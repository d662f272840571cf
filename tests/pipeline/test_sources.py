"""Inputs: every kind is recognised and read through OpenCV or the image decoders, and a source that cannot be
opened, or that stops, says which."""
import os

import pytest

from resdet.pipeline.sources import ImageFiles, LiveSource, SourceError, VideoFile, classify_input, open_sources

from .helpers import corrupt_mjpeg_frame, serve_folder, write_images, write_video


def test_kinds(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "v.MP4").write_bytes(b"x")
    assert [classify_input(i) for i in ["0", "/dev/video2", "rtsp://cam/live", "http://h/v.mp4", str(tmp_path),
                                        str(tmp_path / "a.jpg"), str(tmp_path / "v.MP4"), str(tmp_path / "*.jpg"),
                                        str(tmp_path / "none.jpg")]] == \
        ["camera", "camera", "stream", "stream", "folder", "image", "video", "glob", "missing"]


def test_folders_globs_and_files_in_order(tmp_path):
    write_images(str(tmp_path / "photos"), ["b.jpg", "a.png", "sub/c.jpg", "notes.txt.jpg"])
    (tmp_path / "photos" / "readme.txt").write_text("not an image")
    video = write_video(str(tmp_path / "clip.mp4"), 5)
    sources = open_sources([str(tmp_path / "photos"), video, str(tmp_path / "photos" / "sub" / "*.jpg"),
                            str(tmp_path / "photos" / "a.png")])
    try:
        assert [s.kind for s in sources] == ["images", "video", "images", "images"]
        folder = sources[0]
        assert folder.relative == ["a.png", "b.jpg", "notes.txt.jpg", os.path.join("sub", "c.jpg")]
        assert sources[2].relative == ["c.jpg"] and sources[3].relative == ["a.png"]
        assert sources[1].total == 5 and sources[1].fps == 10.0
        frames = list(sources[1].units())
        assert [f for f, _ in frames] == list(range(5)) and all(img.shape == (72, 96, 3) for _, img in frames)
        assert sources[1].ended_early is None
    finally:
        for s in sources:
            s.close()


@pytest.mark.parametrize("item, message", [
    ("missing.jpg", "is not a file, a folder, a glob pattern that matches"),
    ("*.nothing", "matches no image or video file"),
    ("9", "camera 9 cannot be opened"),
])
def test_what_cannot_be_opened_is_named(tmp_path, item, message):
    with pytest.raises(SourceError, match=message):
        open_sources([str(tmp_path / item) if not item.isdigit() else item])


def test_an_empty_folder_and_a_broken_video_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_sources([str(tmp_path / "empty")])
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot be opened by OpenCV"):
        open_sources([str(tmp_path / "bad.mp4")])


def test_a_frame_that_does_not_decode_is_passed_on_as_such(tmp_path):
    path = write_video(str(tmp_path / "clip.avi"), 10, fourcc="MJPG")
    corrupt_mjpeg_frame(path, 4)
    video = VideoFile(path, "clip")
    got = [(f, img is None) for f, img in video.units()]
    video.close()
    assert got == [(f, f == 4) for f in range(10)]


def test_a_camera_simulated_by_a_file_reports_that_it_stopped(tmp_path):
    # the camera path of the code (LiveSource, kind "camera") on a file OpenCV opens as it opens a device
    path = write_video(str(tmp_path / "cam.mp4"), 6)
    camera = LiveSource(path, "camera0", "camera")
    assert camera.total is None
    assert len(list(camera.units())) == 6
    camera.close()
    assert camera.stopped == f"camera '{path}' stopped delivering frames after 6 frames"


def test_a_stream_over_http_on_the_loopback(tmp_path):
    write_video(str(tmp_path / "live.mp4"), 7)
    with serve_folder(str(tmp_path)) as url:
        [stream] = open_sources([f"{url}/live.mp4"], stream_timeout_s=5)
        assert stream.kind == "stream" and stream.name == "live"
        assert len(list(stream.units())) == 7
        stream.close()
        assert "stopped delivering frames after 7 frames" in stream.stopped
        with pytest.raises(SourceError, match="stream '.*/gone.mp4' cannot be opened"):
            open_sources([f"{url}/gone.mp4"], stream_timeout_s=5)


def test_image_files_keep_their_paths():
    files = ImageFiles(["x/a.jpg", "x/b.jpg"], ["a.jpg", "b.jpg"], "x")
    assert list(files.units()) == ["x/a.jpg", "x/b.jpg"] and files.relative_of["x/b.jpg"] == "b.jpg"
