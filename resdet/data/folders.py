"""Classification data: image-folder trees, CIFAR-10 python batches, and CIFAR kept on the device.

Three ways in:
- `ImageFolderDataset(root, split, transform)`: `<root>/<split>/<class>/<image>` (ImageNet's layout, or
  CIFAR-10 exported as JPEGs), streamed from disk; an unreadable image raises `CorruptImageError`
  naming its path.
- `load_cifar10_python(root, train)`: CIFAR-10's `cifar-10-batches-py` pickles as uint8 tensors, read with a
  restricted unpickler (resdet/data/safe_pickle.py) that refuses any global but numpy's array ones.
- `decode_image_folder(dataset)`: a small fixed-size image-folder dataset decoded once into a uint8 tensor.

Decoded tensors feed `DeviceBatches` (training: index, pad-crop-flip, all batched on the device, exactly
resumable from the iteration number alone) and `iterate_in_order` (evaluation).
Missing data raises `MissingDatasetError`, which says where it looked and how to prepare the data.
"""
from __future__ import annotations

import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import ImageFolder

from .image_decode import to_rgb8
from resdet.utils.errors import UserInputError

from .safe_pickle import PickleDataError, load_restricted_pickle

__all__ = [
    "MissingDatasetError", "CorruptImageError", "CifarBatchError", "resolve_dataset_root", "dataset_format",
    "read_image_rgb", "ImageFolderDataset", "load_cifar10_python", "cifar10_class_names", "decode_image_folder",
    "split_holdout", "DeviceBatches", "mean_image", "iterate_in_order",
]

logger = logging.getLogger(__name__)

PREPARE_HINT = "See datasets/README.md for how to prepare it, or set CLS.DATA.ROOT / $RESDET_DATASETS."
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR_DIR = "cifar-10-batches-py"


class MissingDatasetError(FileNotFoundError):
    """The data is not where it was looked for; the message names the place and how to prepare it."""


class CorruptImageError(RuntimeError):
    """An image file that cannot be decoded; the message names the file."""


class CifarBatchError(CorruptImageError, UserInputError):
    """A CIFAR-10 python batch (or batches.meta) that is not what the format holds; names the file and key."""


def resolve_dataset_root(name: str, root: str = "") -> str:
    """`root` if given, else `$RESDET_DATASETS/<name>` (default `./datasets/<name>`)."""
    if root:
        return os.path.expanduser(root)
    base = os.environ.get("RESDET_DATASETS", "datasets")
    return os.path.join(os.path.expanduser(base), name)


def dataset_format(root: str, fmt: str = "auto") -> str:
    """'cifar-python' or 'folder'; "auto" picks python batches if they are present."""
    if fmt not in ("auto", "folder", "cifar-python"):
        raise ValueError(f"CLS.DATA.FORMAT must be 'auto', 'folder' or 'cifar-python'; got {fmt!r}")
    if fmt != "auto":
        return fmt
    if _cifar_dir(root) is not None:
        return "cifar-python"
    return "folder"


def read_image_rgb(path: str) -> Image.Image:
    """Open an image as RGB, or raise `CorruptImageError` naming the file (PIL's own error does not)."""
    try:
        with Image.open(path) as img:
            img.load()  # the full decode, so truncation shows here
            return to_rgb8(img)  # not convert("RGB"), which turns 16-bit greyscale all white
    except Exception as e:  # PIL raises several unrelated types (OSError, SyntaxError, ValueError)
        raise CorruptImageError(f"Cannot read image '{path}': {type(e).__name__}: {e}") from e


class ImageFolderDataset(ImageFolder):
    """torchvision's ImageFolder over `<root>/<split>`, with errors that say what is wrong where.

    Items are `(transform(loader(path)), class index)`; classes are the sorted sub-folder names. The
    default loader decodes a PIL RGB image; the fast classification input passes one that decodes,
    crops and resizes in one go (`resdet.classification.decode_crop`), since choosing the JPEG decode
    scale needs the crop. A loader signals an unreadable file with CorruptImageError naming it.
    """

    def __init__(self, root: str, split: str, transform: Optional[Callable] = None, skip_bad_images: bool = False,
                 loader: Callable[[str], Any] = read_image_rgb):
        self.skip_bad_images = skip_bad_images
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            raise MissingDatasetError(
                f"Image folder '{split_dir}' does not exist (expected {split_dir}/<class>/<image>). "
                + PREPARE_HINT
            )
        try:
            super().__init__(split_dir, transform=transform, loader=loader,
                             is_valid_file=lambda p: p.lower().endswith(IMAGE_EXTENSIONS))
        except FileNotFoundError as e:  # no class folders, or class folders with no images
            raise MissingDatasetError(f"No usable images under '{split_dir}': {e}. " + PREPARE_HINT) from e
        self.root_dir = root
        self.split = split

    @property
    def labels(self) -> List[int]:
        return list(self.targets)

    def __getitem__(self, index: int):
        # With skip_bad_images an unreadable file is reported by path and the next image is served;
        # without it the CorruptImageError naming the file stops the run.
        return get_skipping_bad_images(super().__getitem__, index, len(self.samples), CorruptImageError,
                                       self.skip_bad_images)


MAX_BAD_IMAGES_IN_A_ROW = 10


def get_skipping_bad_images(get: Callable[[int], Any], index: int, length: int, error: type, skip: bool):
    """`get(index)`; with `skip`, an `error` (an unreadable image) is logged and the next index served
    instead, up to MAX_BAD_IMAGES_IN_A_ROW times before the error is raised (DATALOADER.SKIP_BAD_IMAGES)."""
    for attempt in range(MAX_BAD_IMAGES_IN_A_ROW + 1):
        try:
            return get((index + attempt) % length)
        except error as e:
            if not skip or attempt == MAX_BAD_IMAGES_IN_A_ROW:
                raise
            logger.warning("Skipping a bad training image (DATALOADER.SKIP_BAD_IMAGES): %s", e)


def _cifar_dir(root: str) -> Optional[str]:
    for d in (os.path.join(root, CIFAR_DIR), root):
        if os.path.isfile(os.path.join(d, "test_batch")):
            return d
    return None


def load_cifar10_python(root: str, train: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 python batches -> (uint8 images [N, 3, 32, 32], int64 labels [N]).

    Written by hand rather than with torchvision.datasets.CIFAR10 because that class refuses files whose
    MD5 differs from the release's and wants to download otherwise; here any copy in the layout works.
    """
    d = _cifar_dir(root)
    if d is None:
        raise MissingDatasetError(
            f"CIFAR-10 python batches not found: looked for '{os.path.join(root, CIFAR_DIR, 'test_batch')}' "
            f"and '{os.path.join(root, 'test_batch')}'. " + PREPARE_HINT
        )
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = os.path.join(d, name)
        if not os.path.isfile(path):
            raise MissingDatasetError(f"CIFAR-10 batch file '{path}' is missing. " + PREPARE_HINT)
        # Never plain pickle.load: a crafted batch file would run code (see safe_pickle.py).
        data, lab = _checked_cifar_batch(_read_cifar_pickle(path), path)
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        labels.append(torch.from_numpy(lab))
    return torch.cat(images), torch.cat(labels)


CIFAR_CLASSES = 10
CIFAR_ROW = 3 * 32 * 32


def _read_cifar_pickle(path: str) -> Any:
    try:
        return load_restricted_pickle(path)
    except PickleDataError:
        raise  # names the file, and the refused global or what is malformed
    except OSError as e:
        raise CifarBatchError(f"Cannot read CIFAR-10 file '{path}': {type(e).__name__}: {e}") from e


def _batch_key(batch: dict, key: str, path: str) -> Any:
    """batch[key] under its bytes name (the official files, read with encoding="bytes") or its str name."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise CifarBatchError(f"CIFAR-10 file '{path}' has no '{key}' entry (it has {sorted(map(repr, batch))[:8]})")


def _checked_cifar_batch(batch: Any, path: str) -> Tuple[np.ndarray, np.ndarray]:
    """(data uint8 [N, 3072], labels int64 [N]) of an unpickled batch, or CifarBatchError naming the file
    and the key: exactly what the format holds, so nothing else reaches numpy or torch (issue 21)."""
    if not isinstance(batch, dict):
        raise CifarBatchError(f"CIFAR-10 batch '{path}' holds a {type(batch).__name__}, expected a dict with "
                              "'data' and 'labels'")
    data = _batch_key(batch, "data", path)
    if not (type(data) is np.ndarray and data.dtype == np.uint8 and data.dtype.names is None
            and data.ndim == 2 and data.shape[1] == CIFAR_ROW and data.flags.c_contiguous):
        what = (f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else f"a {type(data).__name__}")
        raise CifarBatchError(f"CIFAR-10 batch '{path}': 'data' must be a C-contiguous uint8 array of shape "
                              f"[N, {CIFAR_ROW}], got {what}")
    labels = _batch_key(batch, "labels", path)
    if type(labels) is np.ndarray:
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    else:
        ok = isinstance(labels, list) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                              for v in labels)
    if not ok:
        what = (f"a {labels.dtype} array of shape {labels.shape}" if isinstance(labels, np.ndarray)
                else f"a {type(labels).__name__}")
        raise CifarBatchError(f"CIFAR-10 batch '{path}': 'labels' must be a list of integers or a 1-D integer "
                              f"array, got {what}")
    lab = np.array([int(v) for v in labels] if isinstance(labels, list) else labels, dtype=np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= CIFAR_CLASSES):
        raise CifarBatchError(f"CIFAR-10 batch '{path}': 'labels' must lie in [0, {CIFAR_CLASSES}), got values "
                              f"{int(lab.min())}..{int(lab.max())}")
    if len(data) != len(lab):
        raise CifarBatchError(f"CIFAR-10 batch '{path}' has {len(data)} images but {len(lab)} labels")
    return data, lab


def cifar10_class_names(root: str) -> Optional[List[str]]:
    """The class names in `batches.meta` beside the python batches, or None when there is no such file.
    Read with the restricted unpickler: a meta file naming any other global raises UnsafePickleError; one
    whose 'label_names' is not a list of CIFAR_CLASSES strings raises CifarBatchError naming it."""
    meta = os.path.join(_cifar_dir(root) or root, "batches.meta")
    if not os.path.isfile(meta):
        return None
    content = _read_cifar_pickle(meta)
    if not isinstance(content, dict):
        raise CifarBatchError(f"CIFAR-10 class names file '{meta}' holds a {type(content).__name__}, expected a "
                              "dict with 'label_names'")
    names = _batch_key(content, "label_names", meta)
    if not (isinstance(names, list) and len(names) == CIFAR_CLASSES
            and all(isinstance(n, (bytes, str)) for n in names)):
        raise CifarBatchError(f"CIFAR-10 class names file '{meta}': 'label_names' must be a list of "
                              f"{CIFAR_CLASSES} strings, got {_describe(names)}")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError as e:
        raise CifarBatchError(f"CIFAR-10 class names file '{meta}': 'label_names' are not UTF-8 text: {e}") from e


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} ({', '.join(sorted({type(v).__name__ for v in value})) or 'nothing'})"
    return f"a {type(value).__name__}"


def decode_image_folder(dataset: ImageFolderDataset) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of a fixed-size image-folder dataset into uint8 [N, 3, H, W] and labels [N].

    PIL decodes (torchvision.io's decoders are deprecated as of torchvision 0.29). All images must have
    the size of the first one; the first that does not, or that cannot be decoded, is reported by path.
    """
    paths = [p for p, _ in dataset.samples]
    if not paths:
        raise MissingDatasetError(f"No images in '{dataset.root}'. " + PREPARE_HINT)

    def load(path: str) -> torch.Tensor:
        return torch.from_numpy(np.array(read_image_rgb(path))).permute(2, 0, 1)

    first = load(paths[0])
    out = torch.empty((len(paths),) + tuple(first.shape), dtype=torch.uint8)
    # PIL releases the GIL while decoding, so threads decode in parallel without worker processes.
    workers = max(1, min(8, (os.cpu_count() or 1)))
    with ThreadPoolExecutor(workers) as pool:
        for i, (path, img) in enumerate(zip(paths, pool.map(load, paths, chunksize=256))):
            if img.shape != first.shape:
                raise ValueError(
                    f"In-memory datasets need images of one size: '{path}' is {tuple(img.shape[1:])}, "
                    f"'{paths[0]}' is {tuple(first.shape[1:])}. Use CLS.DATA.IN_MEMORY False for this dataset."
                )
            out[i] = img
    return out, torch.as_tensor(dataset.targets, dtype=torch.int64)


def split_holdout(num: int, holdout: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held-out) for a fixed-seed random hold-out of `holdout` of `num` samples."""
    if not 0 <= holdout < num:
        raise ValueError(f"CLS.DATA.HOLDOUT must be in [0, {num}) for a dataset of {num} images; got {holdout}")
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return perm[holdout:].sort().values, perm[:holdout].sort().values


class DeviceBatches:
    """Training batches from a dataset held as a uint8 tensor on the device, augmented there.

    Each step takes the next `batch_size` indices of this process's shard of `sampler` (an endless index
    stream, e.g. the engine's InfiniteSampler), gathers the images, converts to float (0-255), and makes
    crop(flip(pad(x - m))) + m: `pad` pixels of zeros around the mean-subtracted image, a random `crop` x
    `crop` window, a random flip, then the mean `m` (`pad_value`) added back, because the model subtracts
    it. `m` is per channel [C] (padding then equals m) or a mean image [C, H, W] (the paper's per-pixel
    mean; then crop must equal H = W). All batched tensor ops, no per-image Python.

    The random crop offsets and flips for step t come from a generator seeded with (seed, t) and are
    drawn for the global batch (batch_size x world_size); this process takes every world_size-th row
    starting at its rank, the same interleaving as the sampler's shards, so N processes see exactly the
    augmented images one process would with the N-times-larger batch. Resuming at iteration t needs
    nothing but t and a sampler started at t * batch_size.

    Indices are taken from the sampler `prefetch_steps` batches at a time and copied to the device in one
    pinned, non-blocking copy: a per-step copy from a Python list would wait for the GPU every step (a
    pageable host-to-device copy synchronises), which stalls a CUDA-graph or compiled step.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, sampler: Iterator[int],
                 *, pad: int = 4, crop: Optional[int] = None, hflip: bool = True,
                 pad_value: Sequence[float] = (0.0, 0.0, 0.0), seed: int = 0, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1, prefetch_steps: int = 64):
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W]; got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [N={images.shape[0]}]; got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.images, self.labels = images, labels.to(images.device)
        self.device = images.device
        self.batch_size, self.pad, self.hflip = batch_size, pad, hflip
        self.crop = crop or images.shape[-1]
        if self.crop > images.shape[-1] + 2 * pad or self.crop > images.shape[-2] + 2 * pad:
            raise ValueError(f"crop {self.crop} is larger than the padded image {tuple(images.shape[-2:])} + 2*{pad}")
        m = torch.as_tensor(pad_value, dtype=torch.float32, device=self.device)
        if m.dim() == 1 and m.numel() == images.shape[1]:
            m = m.view(1, -1, 1, 1)
        elif m.shape == images.shape[1:]:
            if self.crop != images.shape[-1] or self.crop != images.shape[-2]:
                raise ValueError(f"a per-pixel mean needs crop == image size; got crop {self.crop} for images "
                                 f"{tuple(images.shape[-2:])}")
            m = m[None]
        else:
            raise ValueError(f"pad_value must be a mean per channel [{images.shape[1]}] or a mean image "
                             f"{list(images.shape[1:])}; got shape {list(m.shape)}")
        self.pad_value = m
        self.sampler = iter(sampler)
        self.seed, self.iteration = seed, start_iter
        self.rank, self.world_size = rank, world_size
        if prefetch_steps < 1:
            raise ValueError(f"prefetch_steps must be >= 1; got {prefetch_steps}")
        self.prefetch_steps = prefetch_steps
        self._indices, self._used = None, 0

    def __iter__(self):
        return self

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + self.iteration) % (2**63))
        return g

    def _next_indices(self) -> torch.Tensor:
        if self._indices is None or self._used == len(self._indices):
            n = self.batch_size * self.prefetch_steps
            host = torch.tensor(list(itertools.islice(self.sampler, n)), dtype=torch.int64)
            host = host[: len(host) // self.batch_size * self.batch_size]  # a finite sampler: whole batches only
            if len(host) == 0:
                raise StopIteration
            if self.device.type == "cuda":
                host = host.pin_memory()
            self._indices, self._used = host.to(self.device, non_blocking=True), 0
        idx = self._indices[self._used:self._used + self.batch_size]
        self._used += self.batch_size
        return idx

    def __next__(self) -> Tuple[torch.Tensor, torch.Tensor]:
        idx = self._next_indices()
        images = self.augment(self.images[idx], self._generator())
        self.iteration += 1
        return images, self.labels[idx]

    def augment(self, batch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float [B, C, crop, crop]: crop(flip(pad(x - m))) + m, random crop and flip."""
        b, c, h, w = batch.shape
        p, s = self.pad, self.crop
        # Pad in mean-subtracted space with zeros (the paper's padding); the mean goes back after the crop.
        padded = F.pad(batch.float() - self.pad_value, (p, p, p, p))
        hp, wp = h + 2 * p, w + 2 * p
        # Draw for the whole global batch, keep this rank's interleaved rows (see the class docstring).
        gb = b * self.world_size
        oy = torch.randint(0, hp - s + 1, (gb,), generator=g, device=self.device)
        ox = torch.randint(0, wp - s + 1, (gb,), generator=g, device=self.device)
        flip = torch.rand(gb, generator=g, device=self.device) < 0.5
        sl = slice(self.rank, gb, self.world_size)
        oy, ox, flip = oy[sl], ox[sl], flip[sl]
        ar = torch.arange(s, device=self.device)
        rows = oy[:, None] + ar                                     # [B, s]
        cols = ox[:, None] + ar                                     # [B, s]
        if self.hflip:
            cols = torch.where(flip[:, None], cols.flip(1), cols)   # a flipped crop reads columns backwards
        # One gather over the flattened padded images takes every crop at once.
        flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, s * s).expand(b, c, s * s)
        return padded.view(b, c, hp * wp).gather(2, flat).view(b, c, s, s) + self.pad_value


def mean_image(images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The per-pixel mean [C, H, W] (float32, 0-255) of uint8 images [N, C, H, W], in chunks (a float
    copy of all 50k CIFAR images at once would be 600 MB), accumulated in float64."""
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"mean_image needs images [N > 0, C, H, W]; got {tuple(images.shape)}")
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    for i in range(0, images.shape[0], chunk):
        total += images[i:i + chunk].to(torch.float64).sum(0)
    return (total / images.shape[0]).float()


def iterate_in_order(images: torch.Tensor, labels: torch.Tensor, batch_size: int, rank: int = 0,
                     world_size: int = 1) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Evaluation batches (float 0-255, labels) of this process's shard (every world_size-th image)."""
    idx = torch.arange(rank, images.shape[0], world_size, device=images.device)
    for i in range(0, len(idx), batch_size):
        j = idx[i:i + batch_size]
        yield images[j].float(), labels[j].to(images.device)
