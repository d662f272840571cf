"""COCO-format instance annotations -> the dataset dicts of resdet/DESIGN.md.

The image files are checked first (a JSON size that differs from the file is named as such), then the
JSON is validated (resdet/data/coco_validation.py), then turned into one plain dict per image:
`{"file_name", "image_id", "height", "width", "annotations": [{"bbox" xyxy absolute, "category_id"
contiguous 1..K, "segmentation" polygons or RLE, "iscrowd", "id"}]}`.
Crowd regions are kept in the dicts (the evaluator needs them; the training mapper leaves them out).
Images are decoded to 8-bit RGB with their EXIF orientation applied (read_image; any PIL mode).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from PIL import Image, ImageOps

from .coco_validation import CocoFormatError, ValidationReport, examples, validate_coco_dict, validate_coco_images
from .image_decode import to_rgb8

__all__ = [
    "DatasetMetadata",
    "load_coco_json",
    "read_image",
    "check_image_file",
    "ImageFileError",
    "check_image_folder",
    "CocoFormatError",
]

logger = logging.getLogger(__name__)


class ImageFileError(OSError):
    """An image that is missing, cannot be decoded, or does not match the size its JSON states."""


@dataclass
class DatasetMetadata:
    """What the rest of the toolkit needs to know about a detection dataset besides its images."""

    name: str
    json_file: str = ""
    image_root: str = ""
    thing_classes: List[str] = field(default_factory=list)  # index k-1 is contiguous label k
    dataset_id_to_contiguous: Dict[int, int] = field(default_factory=dict)  # category id -> 1..K
    stats: Dict[str, int] = field(default_factory=dict)  # what loading dropped or changed, by kind

    @property
    def contiguous_to_dataset_id(self) -> Dict[int, int]:
        return {v: k for k, v in self.dataset_id_to_contiguous.items()}

    @property
    def num_classes(self) -> int:
        return len(self.thing_classes)


def _decode_error(path: str, e: Exception) -> str:
    msg = f"Cannot decode image '{path}': {type(e).__name__}: {e}"
    if isinstance(e, Image.DecompressionBombError):
        msg += (" (PIL refuses images over 2 x PIL.Image.MAX_IMAGE_PIXELS pixels; raise that limit if the "
                "image is meant to be this large)")
    return msg


def _oriented_size(img: Image.Image) -> Tuple[int, int]:
    """(width, height) after the EXIF orientation tag is applied (5-8 swap the sides)."""
    orientation = img.getexif().get(0x0112, 1)
    w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def check_image_file(path: str, width: int, height: int, decode: bool = True) -> None:
    """Raise ImageFileError naming `path` unless it exists, decodes whole (with `decode`) and is
    `width` x `height` once its EXIF orientation is applied, as the JSON says."""
    if not os.path.isfile(path):
        raise ImageFileError(f"Image file not found: '{path}'")
    try:
        with Image.open(path) as img:  # reads the header only; PIL refuses decompression bombs here
            size = _oriented_size(img)
            raw = img.size
            if decode:
                img.load()  # a truncated or corrupt file raises here (PIL does not pad it by default)
    except Exception as e:  # PIL raises many unrelated types (OSError, SyntaxError, ValueError, struct.error, ...)
        raise ImageFileError(_decode_error(path, e)) from e
    if size != (width, height):
        hint = ""
        if raw == (width, height):
            hint = (" (the JSON matches the stored pixels before the EXIF orientation tag is applied; "
                    "resdet applies EXIF orientation, as annotation tools display the image)")
        raise ImageFileError(
            f"Image '{path}' is {size[0]}x{size[1]} (width x height, EXIF orientation applied) "
            f"but its annotation JSON says {width}x{height}{hint}"
        )


def read_image(path: str, width: Optional[int] = None, height: Optional[int] = None):
    """Decode an image as an HxWx3 uint8 RGB numpy array with its EXIF orientation applied.

    With `width`/`height`, the decoded size must match (the JSON's size), or ImageFileError names the file.
    """
    import numpy as np

    if not os.path.isfile(path):
        raise ImageFileError(f"Image file not found: '{path}'")
    try:
        with Image.open(path) as img:
            img.load()
            # to_rgb8, not convert("RGB"): PIL's conversion turns 16-bit greyscale all white
            img = to_rgb8(ImageOps.exif_transpose(img))
            arr = np.array(img)  # writable: torch.from_numpy warns on read-only arrays
    except Exception as e:  # PIL raises many unrelated types (OSError, SyntaxError, ValueError, struct.error, ...)
        raise ImageFileError(_decode_error(path, e)) from e
    if width is not None and height is not None and arr.shape[:2] != (height, width):
        raise ImageFileError(
            f"Image '{path}' decodes to {arr.shape[1]}x{arr.shape[0]} (width x height, EXIF orientation "
            f"applied) but its annotation JSON says {width}x{height}"
        )
    return arr


def _metadata_from_categories(name: str, json_file: str, image_root: str, categories: List[dict]) -> DatasetMetadata:
    cats = sorted(categories, key=lambda c: c["id"])
    return DatasetMetadata(
        name=name,
        json_file=json_file,
        image_root=image_root,
        thing_classes=[c["name"] for c in cats],
        dataset_id_to_contiguous={c["id"]: i + 1 for i, c in enumerate(cats)},
    )


def check_image_folder(images: List[dict], image_root: str, json_file: str, where: str = "") -> str:
    """Called when an image of the JSON is missing: is the folder wrong rather than a few files?

    Raises MissingDatasetError when `image_root` does not exist or holds none of the JSON's files (even
    with DATALOADER.SKIP_BAD_IMAGES: leaving out every image is never what was asked); otherwise
    returns a note counting the files found, for the missing file's own message. `where` names the
    folder's origin, e.g. "DATASETS.CUSTOM_IMAGE_DIRS[1] of 'pennfudan_val'".
    """
    from .folders import MissingDatasetError

    prefix = f"{where}: " if where else ""
    if not os.path.isdir(image_root):
        raise MissingDatasetError(f"{prefix}image folder '{image_root}' does not exist (the images of '{json_file}' "
                                  f"are looked for there, by each image's file_name)")
    names = [img["file_name"] for img in images]
    missing = [n for n in names if not os.path.isfile(os.path.join(image_root, n))]
    found = len(names) - len(missing)
    if found == 0:
        present = sorted(os.listdir(image_root))[:3]
        raise MissingDatasetError(
            f"{prefix}0 of {len(names)} files of '{json_file}' found in image folder '{image_root}' (missing e.g. "
            f"{missing[:3]}; the folder holds {present or 'nothing'}{' ...' if present else ''}): is it the "
            "right folder, and are the file_names relative to it?")
    return f"{prefix}{found} of {len(names)} files of '{json_file}' found in image folder '{image_root}'"


MASK_POLICIES = ("error", "ignore", "keep")


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: str = "",
    filter_empty: bool = True,
    check_images: str = "header",
    skip_bad_images: bool = False,
    instances_without_mask: str = "error",
    image_root_source: str = "",
) -> Tuple[List[dict], DatasetMetadata]:
    """Read a COCO instances JSON into dataset dicts and metadata.

    Args:
        json_file: the annotation JSON.
        image_root: folder that the images' `file_name`s are relative to.
        filter_empty: drop images with no usable non-crowd annotation (for training).
        check_images: "none", "header" (exists, and the header's size with EXIF orientation matches the
            JSON: cheap) or "decode" (also decodes every image whole: slow on big datasets). Images are
            checked before the annotations, so a JSON width/height that differs from the file is
            reported as that (both sizes named), not as boxes or masks outside the image.
        skip_bad_images: leave out images that fail the check (each named in a warning) instead of raising.
        instances_without_mask: what a non-crowd instance whose segmentation is missing, null or [] does
            (DATASETS.INSTANCES_WITHOUT_MASK): "error" (masks are needed: Mask R-CNN training), "ignore"
            (left out, as crowd regions are, with a warning naming a few), "keep" (boxes are enough:
            Faster R-CNN, evaluation loaders). Instances whose polygons all have < 3 points are left out
            under "error" and "ignore" (counted and named), kept without a mask under "keep".
        image_root_source: where `image_root` came from (a config key), named when images are missing.
    Raises CocoFormatError / ImageFileError naming the file and the offending items.
    """
    if check_images not in ("none", "header", "decode"):
        raise ValueError(f"check_images must be 'none', 'header' or 'decode', got {check_images!r}")
    if instances_without_mask not in MASK_POLICIES:
        raise ValueError(f"DATASETS.INSTANCES_WITHOUT_MASK must be one of {MASK_POLICIES}, "
                         f"got {instances_without_mask!r}")
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Annotation file not found: '{json_file}' (registered COCO datasets live under "
                                f"$RESDET_DATASETS, default ./datasets; datasets/README.md says how to lay them out)")
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # not UTF-8, nested too deep
        raise CocoFormatError(f"Annotation file '{json_file}' is not valid JSON: {e}") from e
    images, _ = validate_coco_images(data, source=f"'{json_file}'")
    where = image_root_source or (f"dataset '{dataset_name}'" if dataset_name else "")
    paths, bad_images = _check_image_files(images, image_root, json_file, check_images, skip_bad_images, where)
    if bad_images:  # left out before the annotations are checked: their sizes are not to be trusted
        data["images"] = [img for img in data["images"] if img["id"] not in bad_images]
        data["annotations"] = [a for a in data["annotations"]
                               if not (isinstance(a, dict) and isinstance(a.get("image_id"), int)
                                       and a.get("image_id") in bad_images)]
    report = validate_coco_dict(data, source=f"'{json_file}'")
    if report.filled_area:
        logger.info("%s: computed 'area' for %d annotations that had none", json_file, report.filled_area)
    log_validation_report(report, json_file, for_masks=instances_without_mask != "keep")
    if instances_without_mask == "error" and report.without_mask:
        raise CocoFormatError(
            f"'{json_file}': {len(report.without_mask)} non-crowd annotations have no segmentation (missing, "
            f"null or []), e.g. ids {examples(report.without_mask)}, and masks are needed (MODEL.MASK_ON). "
            "Give them masks, or set DATASETS.INSTANCES_WITHOUT_MASK ignore to leave them out of mask "
            "training (and make them ignore regions in segm evaluation)")

    meta = _metadata_from_categories(dataset_name or os.path.basename(json_file), json_file, image_root,
                                     data["categories"])
    by_image: Dict[int, List[dict]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    dicts: List[dict] = []
    num_degenerate = num_clipped = num_empty = 0
    degenerate_examples: List[int] = []
    short_only: List[int] = []
    maskless: List[int] = []
    for img_id in sorted(images):
        if img_id in bad_images:
            continue
        img = images[img_id]
        W, H = img["width"], img["height"]
        annotations = []
        for ann in by_image.get(img_id, []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            x0, y0 = min(max(x, 0.0), W), min(max(y, 0.0), H)
            x1, y1 = min(max(x + w, 0.0), W), min(max(y + h, 0.0), H)
            if (x0, y0, x1, y1) != (x, y, x + w, y + h):
                num_clipped += 1  # within box_tolerance (validated): rounding at the border
            crowd = int(ann.get("iscrowd", 0))
            if not crowd and (x1 <= x0 or y1 <= y0):
                num_degenerate += 1
                if len(degenerate_examples) < 5:
                    degenerate_examples.append(ann["id"])
                continue
            segm = ann.get("segmentation")
            if isinstance(segm, list):
                kept = [p for p in segm if len(p) >= 6]  # validated: all sound, these have >= 3 points
                if segm and not kept and not crowd and instances_without_mask != "keep":
                    short_only.append(ann["id"])  # only polygons of < 3 points: no mask to learn from
                    continue
                segm = kept
            elif segm is None:
                segm = []
            if not crowd and not segm and instances_without_mask == "ignore":
                maskless.append(ann["id"])
                continue
            annotations.append({
                "id": ann["id"],
                "bbox": [x0, y0, x1, y1],
                "category_id": meta.dataset_id_to_contiguous[ann["category_id"]],
                "segmentation": segm,
                "iscrowd": crowd,
                "area": float(ann["area"]),
            })
        if filter_empty and not any(a["iscrowd"] == 0 for a in annotations):
            num_empty += 1
            continue
        dicts.append({"file_name": paths[img_id], "image_id": img_id, "height": H, "width": W,
                      "annotations": annotations})

    logger.info(
        "Loaded %d images from %s (%d annotations, %d crowd); clipped %d boxes to the image; %s %d images "
        "without non-crowd annotations",
        len(dicts), json_file, report.num_annotations, report.num_crowd, num_clipped,
        "skipped" if filter_empty else "kept", num_empty,
    )
    if num_degenerate:
        logger.warning("%s: left out %d annotations whose box has no area after clipping to the image, e.g. "
                       "ids %s", json_file, num_degenerate, examples(degenerate_examples))
    if short_only:
        logger.warning("%s: left out %d instances whose polygons all have fewer than 3 points (no mask), e.g. "
                       "annotation ids %s", json_file, len(short_only), examples(short_only))
    if maskless:
        logger.warning("%s: left out %d non-crowd instances without a segmentation (DATASETS.INSTANCES_WITHOUT_MASK "
                       "ignore: they are treated as crowd regions), e.g. annotation ids %s", json_file,
                       len(maskless), examples(maskless))
    if bad_images:
        logger.warning("Left out %d unreadable images of %s (DATALOADER.SKIP_BAD_IMAGES), e.g. %s",
                       len(bad_images), json_file, list(bad_images.values())[:5])
    meta.stats = {
        "degenerate_boxes": num_degenerate, "short_polygon_instances": len(short_only),
        "clipped_boxes": num_clipped, "empty_images_skipped": num_empty if filter_empty else 0,
        "filled_area": report.filled_area, "bad_images_skipped": len(bad_images),
        "instances_without_mask_ignored": len(maskless),
    }
    return dicts, meta


def _check_image_files(images: Dict[int, dict], image_root: str, json_file: str, check_images: str,
                       skip_bad_images: bool, where: str = "") -> Tuple[Dict[int, str], Dict[int, str]]:
    """Paths of the images by id, and the images that failed their check (id -> path) when skipping.
    At the first missing file the folder itself is checked (`check_image_folder`; `where` names its origin)."""
    paths: Dict[int, str] = {}
    bad: Dict[int, str] = {}
    outside: List[str] = []
    folder_note: Optional[str] = None
    root = os.path.abspath(image_root)
    for img_id in sorted(images):
        img = images[img_id]
        path = os.path.join(image_root, img["file_name"])  # an absolute file_name replaces image_root
        rel = os.path.relpath(os.path.abspath(path), root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            outside.append(img["file_name"])
        paths[img_id] = path
        if folder_note is None and not os.path.isfile(path):
            # the first missing image: a wrong folder is an error of its own, else count what is there
            folder_note = check_image_folder(list(images.values()), image_root, json_file, where)
        try:
            if check_images == "none":
                if not os.path.isfile(path):
                    raise ImageFileError(f"Image file not found: '{path}' (image {img_id} of '{json_file}')")
            else:
                check_image_file(path, img["width"], img["height"], decode=check_images == "decode")
        except ImageFileError as e:
            if folder_note and not os.path.isfile(path):
                e = ImageFileError(f"{e}; {folder_note}")
            elif json_file not in str(e):  # the JSON's entry may be what is wrong: name it too
                e = ImageFileError(f"{e} (image {img_id} of '{json_file}')")
            if not skip_bad_images:
                raise e
            logger.warning("Skipping image %d (DATALOADER.SKIP_BAD_IMAGES): %s", img_id, e)
            bad[img_id] = path
    if outside:
        logger.warning("%s: %d images have a file_name outside the image folder '%s' (absolute, or with '..'), "
                       "e.g. %s; they are read from there", json_file, len(outside), image_root, outside[:3])
    return paths, bad


def validation_warnings(report: ValidationReport, source: str, for_masks: bool = True,
                        for_evaluation: bool = False) -> List[str]:
    """What validation found that is not an error but changes what the model or evaluator sees: one
    message per kind, with a count and example annotation ids (mask matters only `for_masks`), worded
    for training or, `for_evaluation`, for scoring."""
    out = []
    if not for_masks:
        return out
    only_short = set(report.short_polygon_only)
    partly_short = [a for a in report.short_polygons if a not in only_short]  # whole instances: said elsewhere
    if partly_short:
        out.append(f"{source}: dropped the polygons with fewer than 3 points of {len(partly_short)} annotations "
                   f"(their other polygons stay), e.g. ids {examples(partly_short)}")
    if report.clipped_polygons:
        out.append(f"{source}: {len(report.clipped_polygons)} annotations have a polygon reaching up to 1 px + 5% "
                   f"past the image; their masks are cut at the border, e.g. ids {examples(report.clipped_polygons)}")
    if report.box_mask_mismatch:
        shown = "; ".join(f"id {a}: bbox {b} vs mask {m}" for a, b, m in report.box_mask_mismatch[:3])
        why = ("bbox evaluation scores detections against the box and segm evaluation against the mask, so "
               "the two scores measure different regions of these objects" if for_evaluation else
               "mask targets are cut by boxes, so these teach the wrong mask")
        out.append(f"{source}: {len(report.box_mask_mismatch)} annotations have a bbox (x, y, w, h) that disagrees "
                   f"with the bounding box of their mask by more than 2 px + 10% of the box ({why}), e.g. {shown}")
    return out


def log_validation_report(report: ValidationReport, source: str, for_masks: bool = True) -> None:
    for msg in validation_warnings(report, source, for_masks):
        logger.warning("%s", msg)
