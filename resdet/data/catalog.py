"""Detection datasets registered by name: a name -> (annotation JSON, image folder).

Built in:
  coco_2017_train, coco_2017_val   <root>/coco/annotations/instances_{train,val}2017.json, <root>/coco/{train,val}2017/
  shapes_train, shapes_val         the generated quick-start data (resdet/data/shapes.py), made on first use
where <root> is $RESDET_DATASETS, or ./datasets when it is unset. Custom COCO-format datasets come from
the config (DATASETS.CUSTOM_NAMES / CUSTOM_JSONS / CUSTOM_IMAGE_DIRS) or `register_coco_instances`.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Tuple

from ..config import ConfigError
from .coco import DatasetMetadata, load_coco_json

__all__ = [
    "datasets_root",
    "register_coco_instances",
    "register_shapes",
    "register_from_config",
    "list_datasets",
    "dataset_files",
    "get_detection_dataset",
    "UnknownDatasetError",
]

class UnknownDatasetError(KeyError):
    """A dataset name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError's own str() would print the message in quotes
        return str(self.args[0]) if self.args else ""


# name -> a function returning (json_file, image_root); a function so that paths follow
# $RESDET_DATASETS at the time of use and generated data is made only when asked for.
_CATALOG: Dict[str, Callable[[], Tuple[str, str]]] = {}
# name -> where its image folder comes from (a config key), for messages about missing images.
_IMAGE_ROOT_SOURCES: Dict[str, str] = {}


def datasets_root() -> str:
    return os.environ.get("RESDET_DATASETS", "datasets")


def register_coco_instances(name: str, json_file: str, image_root: str, overwrite: bool = False,
                            image_root_source: str = "") -> None:
    """Make `name` mean this annotation JSON and image folder (`image_root_source`: the config key it
    came from, named when its images are missing)."""
    if not name:
        raise ValueError("A dataset needs a non-empty name")
    if name in _CATALOG and not overwrite:
        raise KeyError(f"Dataset '{name}' is already registered")
    _CATALOG[name] = lambda: (json_file, image_root)
    _IMAGE_ROOT_SOURCES[name] = image_root_source


def _register_coco_2017() -> None:
    for split in ("train", "val"):
        def files(split=split):
            root = os.path.join(datasets_root(), "coco")
            return (os.path.join(root, "annotations", f"instances_{split}2017.json"),
                    os.path.join(root, f"{split}2017"))
        _CATALOG[f"coco_2017_{split}"] = files
        _IMAGE_ROOT_SOURCES[f"coco_2017_{split}"] = (f"the images of 'coco_2017_{split}' ($RESDET_DATASETS/coco/"
                                                     f"{split}2017, default ./datasets/coco/{split}2017)")


def register_shapes(num_train: int = 300, num_val: int = 50, min_side: int = 128, max_side: int = 256,
                    seed: int = 0, root: str = "") -> None:
    """(Re)define shapes_train / shapes_val with these generation settings."""
    from .shapes import generate_shapes_dataset

    for split, n in (("train", num_train), ("val", num_val)):
        def files(split=split, n=n):
            where = root or os.path.join(datasets_root(), "shapes")
            return generate_shapes_dataset(where, split, n, seed, (min_side, max_side))
        _CATALOG[f"shapes_{split}"] = files


_register_coco_2017()
register_shapes()


def register_from_config(cfg) -> None:
    """Register the config's custom datasets and its shapes settings."""
    d = cfg.DATASETS
    names, jsons, dirs = list(d.CUSTOM_NAMES), list(d.CUSTOM_JSONS), list(d.CUSTOM_IMAGE_DIRS)
    if not (len(names) == len(jsons) == len(dirs)):
        raise ConfigError(
            f"DATASETS.CUSTOM_NAMES ({len(names)}), CUSTOM_JSONS ({len(jsons)}) and CUSTOM_IMAGE_DIRS "
            f"({len(dirs)}) must have the same length: one JSON and one image folder per name"
        )
    for k, (n, j, i) in enumerate(zip(names, jsons, dirs)):
        register_coco_instances(n, j, i, overwrite=True, image_root_source=f"DATASETS.CUSTOM_IMAGE_DIRS[{k}] of '{n}'")
    s = d.SHAPES
    register_shapes(s.NUM_TRAIN, s.NUM_VAL, s.MIN_SIDE, s.MAX_SIDE, s.SEED, s.ROOT)


def list_datasets() -> List[str]:
    return sorted(_CATALOG)


def dataset_files(name: str) -> Tuple[str, str]:
    """(annotation JSON, image folder) of a registered dataset (generating it if it is generated)."""
    if name not in _CATALOG:
        raise UnknownDatasetError(f"Unknown dataset '{name}'. Registered: {', '.join(list_datasets())} "
                       "(custom ones go in DATASETS.CUSTOM_NAMES/CUSTOM_JSONS/CUSTOM_IMAGE_DIRS)")
    return _CATALOG[name]()


def get_detection_dataset(name: str, filter_empty: bool = True, check_images: str = "header",
                          skip_bad_images: bool = False,
                          instances_without_mask: str = "error") -> Tuple[List[dict], DatasetMetadata]:
    """Dataset dicts and metadata of a registered dataset (arguments: resdet.data.coco.load_coco_json)."""
    json_file, image_root = dataset_files(name)
    return load_coco_json(json_file, image_root, dataset_name=name, filter_empty=filter_empty,
                          check_images=check_images, skip_bad_images=skip_bad_images,
                          instances_without_mask=instances_without_mask,
                          image_root_source=_IMAGE_ROOT_SOURCES.get(name, "") or f"dataset '{name}'")
