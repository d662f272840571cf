"""tools/predict.py's work per frame, as the stages of resdet/pipeline/stages.py run it.

    job = PredictionJob(predictor, "out/", draw=True, category_ids={1: 1, 2: 2, 3: 3})
    report = run_pipeline(sources, job, batch_size=4)
    written = job.close()                     # videos closed, JSON files written; paths by kind

- prepare (decode workers): an image file decoded (`read_any_image_fast`: read_image's pixels, JPEGs by
  simplejpeg) or a video frame colour-converted, then the predictor's test-time resize (`prepare`);
- infer (the model loop): one `predict_batch` call per batch, masks left box-sized (`mask_probs`);
- render (draw workers): the drawing (only the detections at or above the score threshold pasted), the
  picture file of an image, and the results of the frame: COCO results (RLE masks by
  resdet/evaluation/rle.py, equal to the evaluator's) for images, a JSON line for a video frame;
- write (the writer thread, in order): video frames, JSON lines, the COCO results list.

Outputs under `output_dir`: the drawn image at its path relative to its input folder (.jpg for JPEG
inputs, else .png); per video `<name>.mp4` (drawn) and `<name>.jsonl` (one line per frame: frame, time,
size, detections with bbox xywh, score, category_id, class_name and an RLE segmentation);
`coco_instances_results.json` (every image's detections in COCO's results format, as tools/eval.py
--results and the COCO test server read it) and, where the image ids were numbered here,
`images.json` (the COCO "images" list with those ids, and the categories).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .outputs import JsonLines, VideoOutput, draw_frame, frame_record, picture_path, save_json, write_picture

__all__ = ["Item", "PredictionJob", "RESULTS_FILE", "IMAGES_FILE"]

RESULTS_FILE = "coco_instances_results.json"
IMAGES_FILE = "images.json"


@dataclass
class Item:
    """One image or video frame on its way through the pipeline."""

    index: int  # position in the run
    source: Any
    unit: Any  # an image path, or (frame number, BGR frame) of a video
    name: str  # for messages: the path, or "<video> frame N"
    image_id: int = 0  # an image's COCO id
    pixels: Optional[np.ndarray] = None  # RGB uint8, as decoded
    tensor: Any = None
    size: Tuple[int, int] = (0, 0)
    instances: Optional[Dict] = None
    drawn: Optional[np.ndarray] = None  # BGR, for a video frame
    records: List[dict] = field(default_factory=list)


class PredictionJob:
    """The four stage functions of a prediction run and the outputs they fill (see the module)."""

    def __init__(self, predictor, output_dir: str, *, draw: bool = True, results: bool = True, codec: str = "mp4v",
                 category_ids: Optional[Dict[int, int]] = None, image_ids: Optional[Dict[str, int]] = None,
                 paste_masks: bool = False):
        from resdet.data.coco import ImageFileError
        from resdet.data.folders import CorruptImageError

        self.predictor, self.output_dir = predictor, output_dir
        self.draw, self.results, self.codec = draw, results, codec
        self.category_ids = category_ids
        self.image_ids = image_ids  # path -> COCO image id (from --dataset / --coco-json); None: numbered here
        self.paste_masks = paste_masks  # False: box-sized masks (faster; drawing pastes what it draws)
        self.skippable = (ImageFileError, CorruptImageError, OSError, _FrameError)
        self.coco_results: List[dict] = []
        self.images: List[dict] = []  # the images numbered here (COCO "images" entries)
        self.videos: Dict[int, VideoOutput] = {}
        self.lines: Dict[int, JsonLines] = {}
        self.pictures: List[str] = []
        self._picture_paths: Dict[int, str] = {}
        self._used: set = set()
        self._lock = threading.Lock()
        self._images_seen = 0
        os.makedirs(output_dir, exist_ok=True)

    # -- the stages -------------------------------------------------------------------------------
    def item(self, source, unit, index: int) -> Item:
        if source.kind == "images":  # called by the feeder thread alone: the numbering is sequential
            self._images_seen += 1
            image_id = self.image_ids[unit] if self.image_ids is not None else self._images_seen
            return Item(index, source, unit, unit, image_id=image_id)
        return Item(index, source, unit, f"{source.name} frame {unit[0]}")

    def prepare(self, item: Item) -> Item:
        import cv2

        from resdet.data.jpeg import read_any_image_fast

        if item.source.kind == "images":
            item.pixels = read_any_image_fast(item.unit)
        else:
            frame = item.unit[1]
            if frame is None:
                raise _FrameError("the frame could not be decoded")
            item.pixels = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            item.unit = (item.unit[0], None)  # the BGR copy is not needed any more
        item.tensor, item.size = self.predictor.prepare(item.pixels)
        return item

    def skip_reason(self, item: Item, error: BaseException) -> str:
        return str(error)

    def infer(self, items: List[Item]) -> None:
        outs = self.predictor.predict_batch([it.tensor for it in items], [it.size for it in items],
                                            paste_masks=self.paste_masks)
        for it, out in zip(items, outs):
            it.instances, it.tensor = out, None

    def render(self, item: Item) -> Item:
        import cv2

        p, inst = self.predictor, item.instances
        drawn = draw_frame(item.pixels, inst, p.class_names, p.score_threshold, p.mask_threshold) if self.draw else None
        if item.source.kind == "images":
            if drawn is not None:
                write_picture(drawn, self._picture_path(item))
            if self.results:
                item.records = self._coco_results(inst, item.image_id, item.size)
        else:
            if drawn is not None:
                item.drawn = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
            if self.results:
                item.records = [frame_record(item.unit[0], item.source.fps, item.size,
                                             self._coco_results(inst, 0, item.size))]
        item.pixels = None
        return item

    def write(self, item: Item) -> None:
        key = id(item.source)
        if item.source.kind == "images":
            self.coco_results += item.records
            if self.draw:
                self.pictures.append(self._picture_paths.pop(item.index))
            if self.image_ids is None:
                self.images.append({"id": item.image_id, "file_name": item.unit, "height": item.size[0],
                                    "width": item.size[1]})
            return
        if item.drawn is not None:
            if key not in self.videos:
                self.videos[key] = VideoOutput(os.path.join(self.output_dir, item.source.name + ".mp4"),
                                               item.source.fps, self.codec)
            self.videos[key].write(item.drawn)
        if self.results:
            if key not in self.lines:
                self.lines[key] = JsonLines(os.path.join(self.output_dir, item.source.name + ".jsonl"))
            for r in item.records:
                self.lines[key].write(r)

    # -- outputs ----------------------------------------------------------------------------------
    def _picture_path(self, item: Item) -> str:
        rel = item.source.relative_of.get(item.unit, os.path.basename(item.unit))
        with self._lock:  # draw workers claim names at the same time
            path = picture_path(self.output_dir, rel, self._used)
            self._picture_paths[item.index] = path
        return path

    def _coco_results(self, instances: Dict, image_id: int, size: Tuple[int, int]) -> List[dict]:
        from resdet.evaluation.rle import compact_instances_to_coco_results

        out = {k: v for k, v in instances.items() if k != "class_names"}
        records = compact_instances_to_coco_results(out, image_id, size, self.category_ids,
                                                    self.predictor.mask_threshold)
        names = instances["class_names"]
        for r, name in zip(records, names):
            r["class_name"] = name
        return records

    def close(self, categories: Optional[List[dict]] = None) -> Dict[str, List[str]]:
        """Closes every video and JSON lines file and writes the COCO results (what was done, also after
        an interruption). Returns the paths written, by kind."""
        written: Dict[str, List[str]] = {"pictures": list(self.pictures), "videos": [], "jsonl": [], "json": []}
        for v in self.videos.values():
            v.close()
            written["videos"].append(v.path)
        for f in self.lines.values():
            f.close()
            written["jsonl"].append(f.path)
        if self.results and (self.coco_results or self.images):
            results = [{k: v for k, v in r.items() if k != "class_name"} for r in self.coco_results]
            written["json"].append(save_json(results, os.path.join(self.output_dir, RESULTS_FILE)))
            if self.image_ids is None:
                info = {"images": sorted(self.images, key=lambda i: i["id"]), "categories": categories or []}
                written["json"].append(save_json(info, os.path.join(self.output_dir, IMAGES_FILE)))
        return written


class _FrameError(RuntimeError):
    """A video frame that could not be decoded (skipped, reported with its number)."""

