"""Constructed COCO ground truth and results with known answers, for the analysis tests."""
import numpy as np
import pytest


def make_ground_truth(num_images=12, num_categories=4, per_image=(2, 7), size=(120, 160), seed=0, crowd_every=0,
                      supercategories=True, masks=True, max_box=36):
    """Images with non-overlapping boxes on a 3 x 4 grid of cells (so each detection's best match is
    unambiguous), with polygon masks (a diamond inside each box), categories with supercategories (two per
    supercategory)."""
    rng = np.random.default_rng(seed)
    h, w = size
    ch, cw = h // 3, w // 4
    images, anns = [], []
    cats = [{"id": 10 + 3 * k, "name": f"cat{k}"} for k in range(num_categories)]
    if supercategories:
        for k, c in enumerate(cats):
            c["supercategory"] = f"super{k // 2}"
    aid = 1
    for i in range(num_images):
        images.append({"id": 100 + i, "file_name": f"img{i}.jpg", "height": h, "width": w})
        n = int(rng.integers(per_image[0], per_image[1] + 1))
        cells = rng.permutation(12)[:n]
        for c in cells:
            cy, cx = divmod(int(c), 4)
            bw = float(rng.integers(8, min(max_box, cw - 4)))
            bh = float(rng.integers(8, min(max_box, ch - 4)))
            x = cx * cw + 2.0 + float(rng.integers(0, cw - 3 - int(bw)))
            y = cy * ch + 2.0 + float(rng.integers(0, ch - 3 - int(bh)))
            ann = {"id": aid, "image_id": 100 + i, "category_id": cats[int(rng.integers(num_categories))]["id"],
                   "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0}
            if masks:
                ann["segmentation"] = [[x + bw / 2, y, x + bw, y + bh / 2, x + bw / 2, y + bh, x, y + bh / 2]]
                ann["area"] = bw * bh / 2
            if crowd_every and aid % crowd_every == 0:
                ann["iscrowd"] = 1
            anns.append(ann)
            aid += 1
    return {"images": images, "annotations": anns, "categories": cats}


def perfect_results(gt, seed=0, with_masks=True):
    """One detection per non-crowd ground truth, exact, with distinct scores."""
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)
    imgs = {im["id"]: im for im in gt["images"]}
    res = []
    for a in gt["annotations"]:
        if a.get("iscrowd"):
            continue
        r = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
             "score": float(rng.uniform(0.3, 1.0))}
        if with_masks:
            im = imgs[a["image_id"]]
            rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], im["height"], im["width"]))
            rle["counts"] = rle["counts"].decode("ascii")
            r["segmentation"] = rle
        res.append(r)
    return res


def write_images(gt, folder):
    """Pictures for the ground truth's entries: a gradient with some noise, at the entries' sizes."""
    import os

    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        y, x = np.mgrid[0:h, 0:w]
        pix = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 120)], -1)
        pix = (pix + rng.integers(0, 20, pix.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pix).save(os.path.join(folder, im["file_name"]), quality=90)


def transpose_images(gt, every=2):
    """Every `every`-th image turned portrait (its x and y swapped, boxes and polygons too), in place."""
    turned = {im["id"] for im in gt["images"][1::every]}
    for im in gt["images"]:
        if im["id"] in turned:
            im["height"], im["width"] = im["width"], im["height"]
    for a in gt["annotations"]:
        if a["image_id"] in turned:
            x, y, bw, bh = a["bbox"]
            a["bbox"] = [y, x, bh, bw]
            if "segmentation" in a:
                a["segmentation"] = [[p[i ^ 1] for i in range(len(p))] for p in a["segmentation"]]
    return gt


@pytest.fixture(scope="session")
def report_case(tmp_path_factory):
    """One whole analysis with figures and pictures (bbox and segm), shared by the report's tests:
    (folder, ground truth, results, report folder, numbers)."""
    import json

    from resdet.evaluation.analysis.analyze import analyze_results

    root = tmp_path_factory.mktemp("analysis")
    gt = transpose_images(make_ground_truth(num_images=14, seed=21, crowd_every=11))  # landscape and portrait
    res = noisy_results(gt, seed=22, wrong_class=0.3)
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "results.json").write_text(json.dumps(res))
    write_images(gt, str(root / "images"))
    out = root / "report"
    numbers = analyze_results(str(root / "gt.json"), str(root / "results.json"), output_dir=str(out),
                              image_root=str(root / "images"), gallery_size=3)
    return root, gt, res, out, numbers


def _rle(box, im):
    from pycocotools import mask as mask_util

    x, y, bw, bh = box
    poly = [[x + bw / 2, y, x + bw, y + bh / 2, x + bw / 2, y + bh, x, y + bh / 2]]
    rle = mask_util.merge(mask_util.frPyObjects(poly, im["height"], im["width"]))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def noisy_results(gt, seed=0, per_object=3, background=60, score_decimals=None, wrong_class=0.25, with_masks=True):
    """Detections of every kind: jittered copies of each object (some of another class), and boxes on
    background; masks are the diamonds of the boxes."""
    rng = np.random.default_rng(seed)
    imgs = {im["id"]: im for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    out = []

    def add(image_id, cat, box):
        im = imgs[image_id]
        x, y, bw, bh = box
        x, y = min(max(x, 0.0), im["width"] - 2.0), min(max(y, 0.0), im["height"] - 2.0)
        bw, bh = max(1.0, min(bw, im["width"] - x)), max(1.0, min(bh, im["height"] - y))
        score = float(rng.random())
        if score_decimals is not None:
            score = round(score, score_decimals)
        r = {"image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh], "score": score}
        if with_masks:
            r["segmentation"] = _rle(r["bbox"], im)
        out.append(r)

    for a in gt["annotations"]:
        for _ in range(int(rng.integers(0, per_object + 1))):
            b = np.array(a["bbox"]) + rng.normal(0, 0.15, 4) * np.r_[a["bbox"][2:], a["bbox"][2:]]
            cat = a["category_id"] if rng.random() > wrong_class else cats[int(rng.integers(len(cats)))]
            add(a["image_id"], cat, [float(v) for v in b])
    for _ in range(background):
        im = gt["images"][int(rng.integers(len(gt["images"])))]
        add(im["id"], cats[int(rng.integers(len(cats)))],
            [float(rng.integers(0, im["width"] - 10)), float(rng.integers(0, im["height"] - 10)),
             float(rng.integers(4, 30)), float(rng.integers(4, 30))])
    return out
