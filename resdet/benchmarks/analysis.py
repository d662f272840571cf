"""`tools/benchmark.py --analysis`: the evaluation analysis (tools/analyze.py) against pycocotools' own
evaluation of the same files, at COCO val2017's size, with peak memory.

    python tools/benchmark.py --analysis [--data DIR] [--images 5000] [--rounds 1] [--jobs 1]

`write_coco_val_sized` makes (once; cached in --data, default datasets/analysis_benchmark) a ground truth
and a results file the size of COCO val2017's: 5,000 images of 640x480, about 36,000 objects (polygon
masks, 80 categories in 12 supercategories with COCO-like frequencies and sizes, 1% crowd regions) and
100 detections per image with boxes and RLE masks (copies of the objects, shifted, resized and sometimes
of another class; duplicates; detections on background), so that every error type is there. The
pictures of the worst and best images are drawn from real photographs (benchmark photos: the image
entries name 16 of them in turn).

Each side runs in a fresh process of its own (so that its peak resident memory is its own), one after the
other and alternating per round: pycocotools' COCO + loadRes + COCOeval evaluate/accumulate/summarize for
bbox and segm, against `tools/analyze.py --gt --results --images` as a user runs it (reading and checking
both files, bbox and segm, figures, pictures, index.html). The ratio is ours / pycocotools' wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["write_coco_val_sized", "time_analysis", "main"]

SUPERCATEGORIES = 12
NUM_PHOTOS = 16


def _star_polygon(rng, x, y, w, h, points: int) -> List[float]:
    """A star-shaped polygon inside the box (x, y, w, h): COCO's polygons have about this many points."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, points))
    r = rng.uniform(0.55, 1.0, points)
    px = x + w / 2 + np.cos(ang) * r * w / 2
    py = y + h / 2 + np.sin(ang) * r * h / 2
    return np.round(np.stack([px, py], 1).ravel(), 2).tolist()


def write_coco_val_sized(folder: str, num_images: int = 5000, objects_per_image: float = 7.3,
                         dets_per_image: int = 100, seed: int = 0) -> Dict[str, str]:
    """gt.json, results.json and images/ (photographs) in `folder`; reused when their settings match."""
    from pycocotools import mask as mask_util

    params = {"num_images": num_images, "objects_per_image": objects_per_image, "dets_per_image": dets_per_image,
              "seed": seed, "version": 2}
    paths = {k: os.path.join(folder, f) for k, f in (("gt", "gt.json"), ("results", "results.json"),
                                                    ("images", "images"), ("params", "params.json"))}
    if os.path.isfile(paths["params"]) and os.path.isfile(paths["results"]):
        with open(paths["params"], encoding="utf-8") as f:
            if json.load(f) == params:
                return paths
    os.makedirs(paths["images"], exist_ok=True)
    _write_photos(paths["images"], min(NUM_PHOTOS, num_images))
    rng = np.random.default_rng(seed)
    H, W, K = 480, 640, 80
    freq = 1.0 / np.arange(1, K + 1) ** 0.9  # a few frequent classes (COCO's person is ~30%), a long tail
    freq /= freq.sum()
    sup = np.sort(rng.integers(0, SUPERCATEGORIES, K))
    sup[:SUPERCATEGORIES] = np.arange(SUPERCATEGORIES)  # every supercategory used
    cats = [{"id": int(i + 1 + i // 10), "name": f"class{i:02d}", "supercategory": f"super{sup[i]:02d}"}
            for i in range(K)]
    cat_ids = np.array([c["id"] for c in cats])
    same_super = {k: np.flatnonzero(sup == sup[k]) for k in range(K)}
    images, anns, results = [], [], []
    aid = 1
    for i in range(num_images):
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"photo_{i % min(NUM_PHOTOS, num_images):02d}.jpg", "height": H,
                       "width": W})
        n = int(rng.poisson(objects_per_image))
        side = np.exp(rng.uniform(np.log(8), np.log(420), n))        # COCO-like: ~40% small, ~35% medium
        aspect = np.exp(rng.normal(0, 0.45, n))
        bw = np.clip(side * aspect, 4, W - 2)
        bh = np.clip(side / aspect, 4, H - 2)
        bx = rng.uniform(0, W - bw)
        by = rng.uniform(0, H - bh)
        ks = rng.choice(K, n, p=freq)
        polys, boxes, labels = [], [], []
        for j in range(n):
            poly = _star_polygon(rng, bx[j], by[j], bw[j], bh[j], int(rng.integers(10, 24)))
            rle = mask_util.merge(mask_util.frPyObjects([poly], H, W))
            crowd = int(rng.random() < 0.01)
            xs, ys = poly[0::2], poly[1::2]  # the box of the polygon, as COCO's boxes are
            anns.append({"id": aid, "image_id": image_id, "category_id": int(cat_ids[ks[j]]),
                         "bbox": [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2),
                                  round(max(ys) - min(ys), 2)],
                         "area": float(mask_util.area(rle)), "iscrowd": crowd, "segmentation": [poly]})
            aid += 1
            polys.append(poly)
            boxes.append((bx[j], by[j], bw[j], bh[j]))
            labels.append(ks[j])
        results += _detections(rng, image_id, polys, boxes, labels, same_super, cat_ids, dets_per_image, H, W)
    gt = {"images": images, "annotations": anns, "categories": cats}
    with open(paths["gt"], "w", encoding="utf-8") as f:
        json.dump(gt, f)
    with open(paths["results"], "w", encoding="utf-8") as f:
        json.dump(results, f)
    with open(paths["params"], "w", encoding="utf-8") as f:
        json.dump(params, f)
    return paths


def _detections(rng, image_id, polys, boxes, labels, same_super, cat_ids, n_dets, H, W) -> List[dict]:
    """`n_dets` detections of one image: 0-3 copies of each object (moved and resized by a random amount,
    10% of another class of its supercategory, 5% of any class), the rest on background, low-scoring."""
    from pycocotools import mask as mask_util

    K = len(cat_ids)
    dets = []  # (polygon, label, score)
    for poly, (x, y, w, h), k in zip(polys, boxes, labels):
        for _ in range(int(rng.choice(4, p=[0.15, 0.55, 0.2, 0.1]))):
            if len(dets) >= n_dets:
                break
            quality = rng.beta(4, 1.5)
            shift = (1 - quality) * 0.6
            dx, dy = rng.normal(0, shift * w), rng.normal(0, shift * h)
            s = np.exp(rng.normal(0, shift))
            p = np.asarray(poly).reshape(-1, 2)
            c = np.array([x + w / 2, y + h / 2])
            q = (p - c) * s + c + (dx, dy)
            q[:, 0] = q[:, 0].clip(0, W - 1)
            q[:, 1] = q[:, 1].clip(0, H - 1)
            u = rng.random()
            label = int(rng.choice(same_super[k])) if u < 0.10 else int(rng.integers(K)) if u < 0.15 else int(k)
            dets.append((np.round(q.ravel(), 2).tolist(), label, float(np.clip(quality * rng.uniform(0.6, 1.0), 0, 1))))
    while len(dets) < n_dets:
        w, h = np.exp(rng.uniform(np.log(6), np.log(250), 2))
        x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
        dets.append((_star_polygon(rng, x, y, w, h, 12), int(rng.integers(K)), float(rng.beta(1.2, 6))))
    rles = mask_util.frPyObjects([d[0] for d in dets], H, W)
    boxes = mask_util.toBbox(rles)
    out = []
    for (poly, label, score), rle, box in zip(dets, rles, boxes):
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": image_id, "category_id": int(cat_ids[label]), "score": round(score, 5),
                    "bbox": [round(float(v), 2) for v in box], "segmentation": rle})
    return out


def _write_photos(folder: str, count: int) -> None:
    from PIL import Image

    from .photos import benchmark_photos, random_crop_resized

    rng = np.random.default_rng(0)
    photos = benchmark_photos()
    for i in range(count):
        path = os.path.join(folder, f"photo_{i:02d}.jpg")
        if os.path.isfile(path):
            continue
        crop = random_crop_resized(photos[i % len(photos)][1], rng, 640, 640)
        Image.fromarray(crop).resize((640, 480)).save(path, quality=90)


_REFERENCE = """
import contextlib, io, json, resource, sys, time
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt, res = sys.argv[1], sys.argv[2]
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO(gt)
    results = json.load(open(res))
    for iou_type in ("bbox", "segm"):
        dets = [dict(r) for r in results]
        if iou_type == "segm":
            for d in dets:
                d.pop("bbox", None)
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
        ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# the tool as a user runs it (its imports included: the command line's error handling brings torch)
_OURS = """
import json, os, resource, runpy, sys, time
gt, res, out, images, tool, jobs = sys.argv[1:7]
sys.argv = [tool, "--gt", gt, "--results", res, "--images", images, "--output-dir", out, "--jobs", jobs]
t = time.perf_counter()
try:
    runpy.run_path(tool, run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
seconds = time.perf_counter() - t
timings = json.load(open(os.path.join(out, "analysis.json")))["timings"]
print(json.dumps({"seconds": seconds, "timings": timings,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool() -> str:
    return os.path.join(_root(), "tools", "analyze.py")


def _child(code: str, args: List[str], env: Optional[dict] = None) -> dict:
    root = _root()
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code] + args, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_analysis(paths: Dict[str, str], rounds: int = 1, jobs: Sequence[int] = (1,), progress=print) -> List[dict]:
    """Alternating rounds of pycocotools' evaluation and the analysis (once per entry of `jobs`: processes);
    one row per round and jobs."""
    rows = []
    for r in range(rounds):
        ref = _child(_REFERENCE, [paths["gt"], paths["results"]])
        progress(f"  round {r + 1}: pycocotools bbox + segm {ref['seconds']:.1f} s, peak {ref['peak_mib']:.0f} MiB")
        for j in jobs:
            with tempfile.TemporaryDirectory() as out:
                ours = _child(_OURS, [paths["gt"], paths["results"], out, paths["images"], _tool(), str(j)])
            workers = f", each worker's peak {ours['worker_peak_mib']:.0f} MiB" if j > 1 else ""
            progress(f"  round {r + 1}: analysis bbox + segm, --jobs {j}: {ours['seconds']:.1f} s, peak "
                     f"{ours['peak_mib']:.0f} MiB{workers}")
            rows.append({"round": r + 1, "jobs": j, "pycocotools_s": ref["seconds"],
                         "pycocotools_peak_mib": ref["peak_mib"], "analysis_s": ours["seconds"],
                         "analysis_peak_mib": ours["peak_mib"], "worker_peak_mib": ours["worker_peak_mib"],
                         "ratio": ours["seconds"] / ref["seconds"],
                         "analysis_timings": ours["timings"]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join("datasets", "analysis_benchmark"),
                   help="where the generated files are kept (made on first use)")
    p.add_argument("--images", type=int, default=5000, help="images (COCO val2017: 5000)")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds")
    p.add_argument("--jobs", type=int, nargs="+", default=[1],
                   help="processes of the analysis to time, each in turn (e.g. 1 2: is a second process worth it)")
    p.add_argument("--json", help="append one JSON line per round to this file")
    args = p.parse_args(argv)
    t = time.perf_counter()
    paths = write_coco_val_sized(args.data, num_images=args.images)
    with open(paths["gt"], encoding="utf-8") as f:
        gt = json.load(f)
    print(f"data: {len(gt['images'])} images, {len(gt['annotations'])} objects, 100 detections per image "
          f"(boxes and masks) in {args.data} ({time.perf_counter() - t:.0f} s)")
    del gt
    rows = time_analysis(paths, args.rounds, args.jobs)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    for r in rows:
        print(f"analysis --jobs {r['jobs']} {r['analysis_s']:.1f} s (peak {r['analysis_peak_mib']:.0f} MiB) vs "
              f"pycocotools "
              f"{r['pycocotools_s']:.1f} s (peak {r['pycocotools_peak_mib']:.0f} MiB): ratio {r['ratio']:.2f}")
        print("  analysis stages: " + ", ".join(f"{k} {v:.1f}" for k, v in r["analysis_timings"].items()))
    return 0
