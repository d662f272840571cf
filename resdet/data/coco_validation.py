"""Checks on COCO-format annotation and results data, run before pycocotools or the model see it.

pycocotools trusts its input: duplicate annotation ids silently overwrite each other in its index, a
polygon of four numbers is read as a box, a polygon of two numbers or an RLE whose counts do not add up
to height*width reads past its buffer, a polygon coordinate of 4294967295.0 makes its rasteriser
allocate without bound (or crash), a missing `area` crashes COCOeval, and results for an image the
ground truth does not have fail with a bare assertion. Every check below turns one of these into an
error that names the file and the offending image, annotation or value; what is not an error but needs
saying (a polygon a pixel past the border, a box that disagrees with its mask, an id COCOeval misreads)
is collected in the ValidationReport with example ids. What happens to each kind of problem is listed in
datasets/README.md.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "CocoFormatError",
    "ValidationReport",
    "validate_coco_images",
    "validate_coco_dict",
    "validate_coco_results",
    "polygon_problem",
    "rle_problem",
    "box_tolerance",
    "image_pixel_limit",
    "has_mask",
    "examples",
]

# How many problems one error message lists before it says "... and N more".
_MAX_LISTED = 20


class CocoFormatError(ValueError):
    """Annotation or results data that cannot be used; the message names the file and the items."""


@dataclass
class ValidationReport:
    """What validation found that is not an error (counts, with a few example annotation ids)."""

    num_images: int = 0
    num_annotations: int = 0
    num_crowd: int = 0
    filled_area: int = 0  # annotations without an `area`, given one computed from the mask or box
    short_polygons: List[int] = field(default_factory=list)  # ann ids with a polygon of < 3 points
    # ann ids whose polygons all have < 3 points (no mask left once those are dropped)
    short_polygon_only: List[int] = field(default_factory=list)
    # ann ids with a polygon reaching past the image by less than box_tolerance: the rasteriser cuts
    # the mask at the border (pycocotools clips polygons correctly at that range)
    clipped_polygons: List[int] = field(default_factory=list)
    # non-crowd / crowd ann ids whose segmentation is missing, null or []
    without_mask: List[int] = field(default_factory=list)
    crowd_without_mask: List[int] = field(default_factory=list)
    missing_iscrowd: List[int] = field(default_factory=list)  # read as 0, as COCO means it
    nonpositive_ids: List[int] = field(default_factory=list)  # COCOeval reads id 0 as "unmatched"
    # (ann id, bbox xywh, mask's bounding box xywh) where the two are further apart than box_mask_tolerance
    box_mask_mismatch: List[Tuple[int, list, list]] = field(default_factory=list)


def examples(ids: Sequence[Any], n: int = 5) -> str:
    """The first `n` of `ids` for a message: "[3, 7, 9]" or "[3, 7, 9, ...]"."""
    shown = ", ".join(str(i) for i in list(ids)[:n])
    return f"[{shown}{', ...' if len(ids) > n else ''}]"


def _is_int(x: Any) -> bool:
    # bool is an int subclass in Python; an id of `True` is a JSON mistake, not an id. (The exact-type
    # test first: isinstance against the numbers ABCs is slow, and these run per annotation.)
    return type(x) is int or (isinstance(x, numbers.Integral) and not isinstance(x, bool))


def _is_finite_number(x: Any) -> bool:
    t = type(x)
    if t is float or t is int:
        return math.isfinite(x)
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def box_tolerance(size: float) -> float:
    """How far (pixels) a box may reach past an image side of `size` pixels and still be clipped.

    Rounding in annotation tools leaves boxes a fraction of a pixel outside; a box further out than
    this is a broken annotation (wrong image, swapped width/height), which is an error.
    """
    return 1.0 + 0.05 * size


def box_mask_tolerance(extent: float) -> float:
    """How far (pixels) an edge of a box may lie from the same edge of its mask's bounding box, for a
    box `extent` pixels across on that axis. COCO boxes are the bounds of their polygons (a pixel of
    rounding); further apart, the mask targets (cropped by boxes) teach the wrong mask."""
    return 2.0 + 0.1 * extent


def image_pixel_limit() -> Optional[int]:
    """The most pixels an image may have: what PIL opens (2 x PIL.Image.MAX_IMAGE_PIXELS; beyond it PIL
    raises DecompressionBombError), or None when the user has lifted PIL's limit. A JSON width x height
    above it is a typo or a decompression bomb, and masks of that size would exhaust memory."""
    from PIL import Image

    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def polygon_problem(poly: Any, height: Optional[int] = None, width: Optional[int] = None) -> Optional[str]:
    """Why one polygon (a flat list x1, y1, x2, y2, ...) is malformed, or None; "short" if it is
    well-formed but has fewer than 3 points (no area: dropped rather than an error).

    With the image's `height` and `width`, a coordinate further outside than box_tolerance is an error
    too: pycocotools' rasteriser walks every pixel step of every edge, so a coordinate like
    4294967295.0 allocates without bound or crashes the process."""
    return _check_polygon(poly, height, width)[0]


_JSON_NUMBER_TYPES = {int, float}


def _all_finite_numbers(values: Sequence[Any]) -> bool:
    # COCO files hold millions of coordinates: exact JSON types and one C-level sum are ~10x cheaper
    # than an isinstance(numbers.Real) call per value; anything else (numpy scalars, bools) takes the
    # careful path
    if set(map(type, values)) <= _JSON_NUMBER_TYPES:
        return math.isfinite(sum(values)) or all(math.isfinite(v) for v in values)  # huge finite sums overflow
    return all(_is_finite_number(v) for v in values)


def _check_polygon(poly: Any, height: Optional[int], width: Optional[int]
                   ) -> Tuple[Optional[str], Optional[Tuple[float, float, float, float]]]:
    """(polygon_problem's answer, the polygon's bounds x0, y0, x1, y1 when it has points and is sound)."""
    if not isinstance(poly, (list, tuple)):
        return f"a polygon must be a list of numbers, got {type(poly).__name__}", None
    if not _all_finite_numbers(poly):
        bad = next(v for v in poly if not _is_finite_number(v))
        return f"polygon has a non-finite or non-numeric coordinate {bad!r}", None
    if len(poly) % 2 != 0:
        return f"polygon has an odd number of coordinates ({len(poly)})", None
    if not poly:
        return "short", None
    x0, y0, x1, y1 = bounds = _polygon_bounds(poly)
    if height is not None and width is not None:
        tx, ty = box_tolerance(width), box_tolerance(height)
        if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty:
            far = next((x, y) for x, y in zip(poly[0::2], poly[1::2])
                       if x < -tx or y < -ty or x > width + tx or y > height + ty)
            return (f"polygon point ({far[0]:g}, {far[1]:g}) lies far outside the {width}x{height} image "
                    f"(more than {tx:g} px in x or {ty:g} px in y past its border)"), None
    return ("short" if len(poly) < 6 else None), bounds


def _polygon_bounds(poly: Sequence[float]) -> Tuple[float, float, float, float]:
    xs, ys = poly[0::2], poly[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def has_mask(segm: Any) -> bool:
    """Whether a segmentation gives a mask at all: not missing, null or [] (a list of only too-short
    polygons is a mask-less instance too, but is counted separately)."""
    return segm is not None and not (isinstance(segm, list) and len(segm) == 0)


def _rle_string_sum(counts: str) -> Optional[int]:
    """Sum of the run lengths of a compressed RLE string, or None if the string is not valid.

    pycocotools decodes these strings in C without bounds checks; we decode the same LEB128-like
    scheme (5 bits per character, offset 48, runs after the second stored as differences) in Python
    only to check that the runs are non-negative and add up to the image size.
    """
    runs: List[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                return None
            c = ord(counts[pos]) - 48
            if c < 0 or c > 63:
                return None
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and (c & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
    return sum(runs)


def rle_string_sums(counts: Sequence[bytes], chunk: int = 20000) -> "np.ndarray":
    """`_rle_string_sum` of many compressed RLE strings at once, in numpy: int64 sums, -1 where a string is
    invalid, has a negative run, or has a value of more than 8 characters (40 bits; a real mask's runs are
    far shorter), which the caller checks again one by one with the exact Python decoder.

    Per value (runs of characters ending at one without the 0x20 bit) rather than per character: values
    are mostly one or two characters, so eight masked passes over the values build them. `chunk` strings
    at a time: the int64 arrays of 500,000 masks' values at once would take gigabytes."""
    import numpy as np

    if len(counts) > chunk:
        return np.concatenate([_rle_string_sums(counts[i:i + chunk]) for i in range(0, len(counts), chunk)])
    return _rle_string_sums(counts)


def _rle_string_sums(counts: Sequence[bytes]) -> "np.ndarray":
    import numpy as np

    n = len(counts)
    out = np.full(n, -1, dtype=np.int64)
    lengths = np.fromiter((len(c) for c in counts), dtype=np.int64, count=n)
    out[lengths == 0] = 0
    filled = np.flatnonzero(lengths > 0)
    if not len(filled):
        return out
    c = np.frombuffer(b"".join(counts), dtype=np.uint8).astype(np.int16) - 48
    str_start = (np.cumsum(lengths) - lengths)[filled]
    str_last = str_start + lengths[filled] - 1
    bad = np.logical_or.reduceat((c < 0) | (c > 63), str_start)
    more = (c & 0x20) != 0
    bad |= more[str_last]                           # a value cut off at the end of its string
    end = ~more
    end[str_last] = True                            # values never run into the next string
    ends = np.flatnonzero(end)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    nchar = ends - starts + 1
    value = (c[starts] & 0x1F).astype(np.int64)
    for t in range(1, 8):
        sel = np.flatnonzero(nchar > t)
        if not len(sel):
            break
        value[sel] += (c[starts[sel] + t] & 0x1F).astype(np.int64) << (5 * t)
    neg = np.flatnonzero((c[ends] & 0x10) != 0)
    value[neg] -= np.left_shift(np.int64(1), 5 * np.minimum(nchar[neg], 8))
    per_string = np.add.reduceat(end.astype(np.int64), str_start)   # values per (non-empty) string
    first = np.cumsum(per_string) - per_string
    j = np.arange(len(value)) - np.repeat(first, per_string)
    long_value = np.logical_or.reduceat(nchar > 8, first)
    # runs: r[j] = v[j] for j <= 2, then r[j] = v[j] + r[j - 2]: running sums per string over odd j (from
    # 1) and over even j (from 2)
    runs = value.copy()
    for parity, j0 in ((1, 1), (0, 2)):
        sel = (j % 2 == parity) & (j >= j0)
        cs = np.cumsum(np.where(sel, value, 0))
        before = np.repeat(np.where(first > 0, cs[first - 1], 0), per_string)
        runs = np.where(sel, cs - before, runs)
    bad |= long_value | np.logical_or.reduceat(runs < 0, first)
    totals = np.add.reduceat(runs, first)
    ok = ~bad
    out[filled[ok]] = totals[ok]
    return out


def rle_problem(rle: Any, height: int, width: int) -> Optional[str]:
    """Why an RLE dict cannot describe a mask of an image of this size, or None."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        return "an RLE segmentation must be a dict with 'counts' and 'size'"
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) for s in size)):
        return f"RLE 'size' must be [height, width] integers, got {size!r}"
    if list(size) != [height, width]:
        return f"RLE size {list(size)} does not match the image's [height, width] = {[height, width]}"
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        total = _rle_string_sum(counts)
        if total is None:
            return "RLE 'counts' string is not a valid compressed RLE"
    elif isinstance(counts, (list, tuple)):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return "uncompressed RLE 'counts' must be non-negative integers"
        total = sum(counts)
    else:
        return f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"
    if total != height * width:
        return f"RLE runs add up to {total} pixels, the image has {height}x{width} = {height * width}"
    return None


def _box_problem(bbox: Any, height: int, width: int) -> Optional[str]:
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        return f"bbox must be [x, y, width, height], got {bbox!r}"
    if not all(_is_finite_number(v) for v in bbox):
        return f"bbox has a non-finite or non-numeric value: {bbox!r}"
    x, y, w, h = bbox
    if w < 0 or h < 0:
        return f"bbox has a negative width or height: {bbox!r}"
    tx, ty = box_tolerance(width), box_tolerance(height)
    if x < -tx or y < -ty or x + w > width + tx or y + h > height + ty:
        return f"bbox {bbox!r} lies outside the {width}x{height} image (width x height, as its JSON entry says)"
    return None


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: List[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        listed = "\n  ".join(self.items[:_MAX_LISTED])
        more = len(self.items) - _MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise CocoFormatError(f"{len(self.items)} problem(s) in {self.source}:\n  {listed}{tail}")


def _check_ids(items: Sequence[Any], kind: str, problems: _Problems) -> Dict[Any, Any]:
    by_id: Dict[Any, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.add(f"{kind} entry #{i} is a {type(item).__name__}, not an object")
            continue
        if "id" not in item:
            problems.add(f"{kind} entry #{i} has no 'id'")
            continue
        iid = item["id"]
        if not _is_int(iid):
            problems.add(f"{kind} entry #{i} has id {iid!r} of type {type(iid).__name__}; ids must be integers")
            continue
        if iid in by_id:
            problems.add(f"{kind} id {iid} appears more than once")
            continue
        by_id[iid] = item
    return by_id


def validate_coco_images(data: Any, source: str = "<dict>") -> Tuple[Dict[int, dict], Dict[int, dict]]:
    """Check the top level, the images and the categories of a COCO instances dict (not the
    annotations); return them by id. Loaders call this first, so that an image whose JSON size differs
    from its file can be reported as that (resdet/data/coco.py) before its boxes are blamed."""
    problems = _Problems(source)
    if not isinstance(data, dict):
        raise CocoFormatError(f"{source}: the top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise CocoFormatError(f"{source}: missing the top-level key '{key}'")
        if not isinstance(data[key], list):
            raise CocoFormatError(f"{source}: '{key}' must be a list, got {type(data[key]).__name__}")

    images = _check_ids(data["images"], "image", problems)
    categories = _check_ids(data["categories"], "category", problems)
    limit = image_pixel_limit()
    for iid, img in images.items():
        fname = img.get("file_name")
        if not isinstance(fname, str) or not fname:
            problems.add(f"image {iid} has no usable 'file_name' ({fname!r})")
        sides_ok = True
        for k in ("height", "width"):
            v = img.get(k)
            if not (_is_int(v) and v > 0):
                problems.add(f"image {iid} ({fname}) has {k} {v!r}; expected a positive integer")
                sides_ok = False
        if sides_ok and limit is not None and img["height"] * img["width"] > limit:
            problems.add(f"image {iid} ({fname}) is {img['width']}x{img['height']} (width x height) = "
                         f"{img['height'] * img['width']} pixels by its JSON entry, more than PIL opens "
                         f"(2 x PIL.Image.MAX_IMAGE_PIXELS = {limit}): a wrong width/height, or raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if such images are meant")
    for cid, cat in categories.items():
        if not isinstance(cat.get("name"), str):
            problems.add(f"category {cid} has no 'name' string")
    problems.raise_if_any()
    return images, categories


def validate_coco_dict(data: Any, source: str = "<dict>", fill_area: bool = True) -> ValidationReport:
    """Check a loaded COCO instances JSON in place; raise CocoFormatError listing every problem.

    With `fill_area`, annotations that lack an `area` get one (mask area, else box area), because
    COCOeval needs it for its small/medium/large ranges; the count is in the report. Nothing else is
    changed: what is not an error is listed in the report (ids), for the loaders to act on and report.
    """
    images, categories = validate_coco_images(data, source)  # annotations are checked against these
    problems = _Problems(source)
    report = ValidationReport(num_images=len(images))
    anns = _check_ids(data["annotations"], "annotation", problems)
    report.num_annotations = len(anns)
    for aid, ann in anns.items():
        where = f"annotation {aid}"
        img = images.get(ann.get("image_id")) if _is_int(ann.get("image_id")) else None  # a list is unhashable
        if img is None:
            problems.add(f"{where} points at image_id {ann.get('image_id')!r}, which is not in 'images'")
            continue
        where += f" (image {img['id']}, {img['file_name']})"
        if aid <= 0:
            report.nonpositive_ids.append(aid)
        if not _is_int(ann.get("category_id")) or ann.get("category_id") not in categories:
            problems.add(f"{where} has category_id {ann.get('category_id')!r}, which is not in 'categories'")
        if "iscrowd" not in ann:
            report.missing_iscrowd.append(aid)
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            problems.add(f"{where} has iscrowd {crowd!r}; expected 0 or 1")
        report.num_crowd += crowd == 1
        h, w = img["height"], img["width"]
        box_msg = _box_problem(ann.get("bbox"), h, w)
        if box_msg:
            problems.add(f"{where}: {box_msg}")
        segm = ann.get("segmentation")
        segm_ok = True
        if not has_mask(segm):
            (report.crowd_without_mask if crowd == 1 else report.without_mask).append(aid)
            segm_ok = False
        elif isinstance(segm, dict):
            msg = rle_problem(segm, h, w)
            if msg:
                problems.add(f"{where}: {msg}")
                segm_ok = False
        elif isinstance(segm, list):
            num_short, mask_bounds = 0, []
            for poly in segm:
                msg, bounds = _check_polygon(poly, h, w)
                if msg == "short":
                    num_short += 1
                elif msg:
                    problems.add(f"{where}: {msg}")
                    segm_ok = False
                else:
                    mask_bounds.append(bounds)
            if mask_bounds:
                mx0, my0 = min(b[0] for b in mask_bounds), min(b[1] for b in mask_bounds)
                mx1, my1 = max(b[2] for b in mask_bounds), max(b[3] for b in mask_bounds)
                if mx0 < 0 or my0 < 0 or mx1 > w or my1 > h:
                    report.clipped_polygons.append(aid)
                mask_bounds = [max(0.0, mx0), max(0.0, my0), min(float(w), mx1), min(float(h), my1)]
            if num_short:
                report.short_polygons.append(aid)
                if num_short == len(segm):
                    report.short_polygon_only.append(aid)
                    segm_ok = False
        else:
            problems.add(f"{where}: segmentation must be a polygon list or an RLE dict")
            segm_ok = False
        if segm_ok and not box_msg:
            _compare_box_and_mask(aid, ann, h, w, report, mask_bounds if isinstance(segm, list) else None)
        if "area" in ann:
            if not (_is_finite_number(ann["area"]) and ann["area"] >= 0):
                problems.add(f"{where} has area {ann['area']!r}; expected a finite number >= 0")
        elif fill_area and not problems.items:
            ann["area"] = _computed_area(ann, h, w)
            report.filled_area += 1
    problems.raise_if_any()
    return report


def _usable_polygons(segm: list) -> list:
    return [p for p in segm if len(p) >= 6]


def _compare_box_and_mask(aid: int, ann: dict, height: int, width: int, report: ValidationReport,
                          polygon_bounds: Optional[List[float]]) -> None:
    """Note (in the report) a bbox further from its mask's bounding box than box_mask_tolerance.
    `polygon_bounds`: the polygons' bounds clipped to the image (x0, y0, x1, y1); None for an RLE."""
    segm = ann["segmentation"]
    if polygon_bounds is not None:
        mx0, my0, mx1, my1 = polygon_bounds
    else:
        from pycocotools import mask as mask_util  # the RLE was checked by rle_problem: safe to decode

        rle = segm if isinstance(segm["counts"], (str, bytes)) else mask_util.frPyObjects(segm, height, width)
        mx0, my0, mw, mh = (float(v) for v in mask_util.toBbox(rle))
        mx1, my1 = mx0 + mw, my0 + mh
    x, y, w, h = (float(v) for v in ann["bbox"])
    bx0, by0 = max(0.0, x), max(0.0, y)
    bx1, by1 = min(float(width), x + w), min(float(height), y + h)
    tx = box_mask_tolerance(max(bx1 - bx0, mx1 - mx0))
    ty = box_mask_tolerance(max(by1 - by0, my1 - my0))
    if abs(bx0 - mx0) > tx or abs(bx1 - mx1) > tx or abs(by0 - my0) > ty or abs(by1 - my1) > ty:
        report.box_mask_mismatch.append((aid, [round(v, 2) for v in (x, y, w, h)],
                                         [round(float(v), 2) for v in (mx0, my0, mx1 - mx0, my1 - my0)]))


def _computed_area(ann: dict, height: int, width: int) -> float:
    from pycocotools import mask as mask_util  # every polygon and RLE reaching here was range-checked

    segm = ann.get("segmentation")
    if has_mask(segm):
        if isinstance(segm, dict):
            rle = segm if isinstance(segm["counts"], (str, bytes)) else mask_util.frPyObjects(segm, height, width)
            return float(mask_util.area(rle))
        polys = _usable_polygons(segm)
        if polys:
            return float(mask_util.area(mask_util.merge(mask_util.frPyObjects(polys, height, width))))
    x, y, w, h = ann["bbox"]
    return float(w * h)


def _rle_checked_at_once(results: list, images: Dict[Any, dict]) -> set:
    """Indices of the results whose segmentation is a compressed RLE of their image's size that
    rle_string_sums finds valid (the rest are checked one by one, with rle_problem's messages)."""
    idx, strings, sizes = [], [], []
    for i, r in enumerate(results):
        segm = r.get("segmentation") if isinstance(r, dict) else None
        if not (isinstance(segm, dict) and isinstance(segm.get("counts"), (str, bytes))):
            continue
        img = images.get(r.get("image_id")) if _is_int(r.get("image_id")) else None
        size = segm.get("size")
        if img is None or not (isinstance(size, list) and size == [img["height"], img["width"]]
                               and all(_is_int(v) for v in size)):
            continue
        counts = segm["counts"]
        if isinstance(counts, str):
            if not counts.isascii():
                continue
            counts = counts.encode("ascii")
        idx.append(i)
        strings.append(counts)
        sizes.append(img["height"] * img["width"])
    if not idx:
        return set()
    import numpy as np

    sums = rle_string_sums(strings)
    good = sums == np.asarray(sizes, dtype=np.int64)
    return {i for i, g in zip(idx, good.tolist()) if g}


def validate_coco_results(results: Any, gt: dict, iou_type: str, source: str = "<results>") -> None:
    """Check a COCO results list (detections) against its ground truth before pycocotools loads it.

    Every result is checked (not only the first). An empty list passes: no detections is a valid
    outcome, which the evaluator scores as such (resdet/evaluation/coco.py)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if not isinstance(results, list):
        raise CocoFormatError(f"{source}: a results file must be a JSON list, got {type(results).__name__}")
    if not results:
        return
    key = "bbox" if iou_type == "bbox" else "segmentation"
    if not any(isinstance(r, dict) and key in r for r in results):
        raise CocoFormatError(f"{source}: none of its {len(results)} results has a '{key}', so {iou_type} "
                              f"cannot be evaluated")
    images = {img["id"]: img for img in gt["images"]}
    categories = {c["id"] for c in gt["categories"]}
    problems = _Problems(source)
    checked = _rle_checked_at_once(results, images) if iou_type == "segm" else set()
    for i, r in enumerate(results):
        where = f"result #{i}"
        if not isinstance(r, dict):
            problems.add(f"{where} is a {type(r).__name__}, not an object")
            continue
        img = images.get(r.get("image_id")) if _is_int(r.get("image_id")) else None
        if img is None:
            problems.add(f"{where} has image_id {r.get('image_id')!r}, which the ground truth does not have")
            continue
        where += f" (image {img['id']})"
        if not _is_int(r.get("category_id")) or r["category_id"] not in categories:
            problems.add(f"{where} has category_id {r.get('category_id')!r}, which the ground truth does not have")
        if not _is_finite_number(r.get("score")):
            problems.add(f"{where} has score {r.get('score')!r}; expected a finite number")
        if iou_type == "bbox" or "bbox" in r:
            msg = _box_problem(r.get("bbox"), img["height"], img["width"])
            if msg:
                problems.add(f"{where}: {msg}")
        if iou_type == "segm" and i not in checked:
            segm = r.get("segmentation")
            msg = rle_problem(segm, img["height"], img["width"])
            if not msg and not isinstance(segm["counts"], (str, bytes)):
                msg = "a result's segmentation must be compressed RLE ('counts' a string), as pycocotools reads it"
            if msg:
                problems.add(f"{where}: {msg}")
    problems.raise_if_any()
