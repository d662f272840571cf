"""`tools/benchmark.py --loader imagenet`: our ImageNet training input against torchvision's standard one.

Both read the same files (an image folder: class sub-folders of JPEGs, e.g. imagenet/train; without
--data, photographs made by `photos.write_imagenet_style_folder`) and make training batches:

- torchvision: `torchvision.datasets.ImageFolder` (PIL decode) + `RandomResizedCrop(224)` (or the paper's
  scale augmentation: `RandomShortestSize(256..480)` + `RandomCrop(224)`) + `RandomHorizontalFlip()` +
  `ToTensor()` + `Normalize(...)`, torch's default collate: the textbook pipeline.
- resdet: `ImageFolderDataset` with the CLS.DATA.DECODE "cpu" loader (`classification/decode_crop.py`:
  reduced-size JPEG decoding, crop, resize, flip, uint8 channels_last batches), or with "gpu" the byte
  reader + the device decoder (`classification/gpu_decode.py`, timed to the end of the device work).
  Normalisation is in the model on the GPU, so it is not a loader cost here.

`--workers 0` times one core: one process, torch and OpenCV at one thread, the DataLoader in the main
process; the figure is images per second per core. `--workers N` times N DataLoader workers from the
first batch on (worker start-up excluded): images per second in total. The two pipelines alternate
round by round on the same images (the machine may be shared) and the medians are compared.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Subset

from resdet.classification.crops import CropSampler
from resdet.classification.decode_crop import DecodeCrop, collate_channels_last
from resdet.classification.gpu_decode import ReadEncoded, collate_encoded, decode_batch
from resdet.data.folders import ImageFolderDataset
from resdet.data.jpeg import decode_rgb, read_file

__all__ = ["torchvision_train_transform", "time_imagenet_loaders", "time_decoders", "imagenet_folder"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_train_transform(aug: str, size: int = 224, short_side: Sequence[int] = (256, 480)) -> Callable:
    """torchvision's standard ImageNet training transform on PIL images (normalised float out)."""
    from torchvision import transforms as T
    from torchvision.transforms import v2

    if aug == "rrc":
        crop = [T.RandomResizedCrop(size)]
    elif aug == "scale":  # torchvision has no "scale" preset; v2's RandomShortestSize is its building block
        crop = [v2.RandomShortestSize(list(range(short_side[0], short_side[1] + 1)), antialias=True),
                T.RandomCrop(size)]
    else:
        raise ValueError(f"aug must be 'rrc' or 'scale'; got {aug!r}")
    return T.Compose(crop + [T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_folder(data_dir: Optional[str], n: int, tmp: str) -> str:
    """`data_dir`, or a folder of `min(n, 500)` benchmark photographs made under `tmp`."""
    if data_dir:
        if not os.path.isdir(data_dir):
            raise SystemExit(f"--data '{data_dir}' is not a folder (expected <dir>/<class>/<image>.jpg)")
        return data_dir
    from .photos import write_imagenet_style_folder

    return write_imagenet_style_folder(os.path.join(tmp, "imagenet_style"), max(1, min(n, 500)))


def _indices(num: int, n: int) -> List[int]:
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(0)).tolist()
    return [perm[i % num] for i in range(n)]


def _warm_file_cache(paths: Sequence[str]) -> None:
    for p in paths:  # both pipelines then read from the page cache; the first would pay the disk otherwise
        with open(p, "rb") as f:
            f.read()


class _Pipeline:
    """One way of making batches from the chosen images; `run()` returns images per second. `stage`
    (the device decoder) runs on each batch in the main process and `finish` waits for the device."""

    def __init__(self, name: str, dataset, indices: List[int], collate, workers: int, batch: int,
                 stage: Optional[Callable] = None, finish: Optional[Callable] = None):
        self.name, self.workers, self.stage, self.finish = name, workers, stage, finish
        self.loader_args = dict(dataset=Subset(dataset, indices), batch_size=batch, shuffle=False, num_workers=workers,
                                collate_fn=collate, persistent_workers=False, drop_last=False,
                                prefetch_factor=2 if workers else None)

    def run(self) -> float:
        start = time.perf_counter()
        it = iter(DataLoader(**self.loader_args))
        count = 0
        if self.workers:  # worker start-up is not loader throughput: start the clock at the first batch
            self._consume(next(it))
            start = time.perf_counter()
        for batch in it:
            count += self._consume(batch)
        if self.finish is not None:
            self.finish()
        if self.workers and count == 0:   # a single batch: nothing to time after it
            raise ValueError("--workers needs several batches per round: raise --n")
        return count / max(time.perf_counter() - start, 1e-9)

    def _consume(self, batch) -> int:
        images, labels = batch
        if self.stage is not None:
            images, labels = self.stage(images, labels)
        return int(labels.shape[0])


def time_imagenet_loaders(data_dir: Optional[str], n: int = 500, workers: int = 0, decode: str = "cpu",
                          augs: Sequence[str] = ("rrc", "scale"), rounds: int = 3, batch: int = 32,
                          device: str = "cuda", progress: Optional[Callable[[str], None]] = None) -> List[Dict]:
    """Rows {aug, resdet, torchvision (img/s), ratio, per} for each augmentation, timed alternately."""
    if decode not in ("cpu", "gpu"):
        raise ValueError(f"decode must be 'cpu' or 'gpu'; got {decode!r}")
    with _threads(1 if workers == 0 else None):
        return _time_imagenet(data_dir, n, workers, decode, augs, rounds, batch, device, progress)


@contextlib.contextmanager
def _threads(n: Optional[int]):
    """torch and OpenCV at `n` threads inside (None: unchanged), restored afterwards."""
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    if n is not None:
        torch.set_num_threads(n)
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def _time_imagenet(data_dir, n, workers, decode, augs, rounds, batch, device, progress) -> List[Dict]:
    import torchvision

    rows = []
    with tempfile.TemporaryDirectory(prefix="resdet_loader_") as tmp:
        root = imagenet_folder(data_dir, n, tmp)
        for aug in augs:
            sampler = CropSampler(aug, 224)
            tv_ds = torchvision.datasets.ImageFolder(root, transform=torchvision_train_transform(aug))
            if decode == "cpu":
                ours_ds = ImageFolderDataset(root, "", loader=DecodeCrop(sampler))
                collate, stage, finish = collate_channels_last, None, None
            else:
                dev = torch.device(device)
                ours_ds = ImageFolderDataset(root, "", loader=ReadEncoded(sampler))
                collate = collate_encoded
                stage = lambda images, labels, dev=dev: decode_batch(images, labels, dev)  # noqa: E731
                finish = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
            idx = _indices(len(tv_ds), n)
            _warm_file_cache({tv_ds.samples[i][0] for i in idx})
            # with workers, several batches per worker per round, so that steady state is what is timed
            b = batch if workers == 0 else max(1, min(batch, n // (4 * workers)))
            ours = _Pipeline("resdet", ours_ds, idx, collate, workers, b, stage, finish)
            theirs = _Pipeline("torchvision", tv_ds, idx, None, workers, b)
            times: Dict[str, List[float]] = {"resdet": [], "torchvision": []}
            for r in range(rounds):
                for p in ((ours, theirs) if r % 2 == 0 else (theirs, ours)):
                    times[p.name].append(p.run())
                    if progress:
                        progress(f"  {aug} round {r + 1}/{rounds} {p.name}: {times[p.name][-1]:.0f} img/s")
            a, b = statistics.median(times["resdet"]), statistics.median(times["torchvision"])
            rows.append(dict(kind="imagenet", aug=aug, decode=decode, workers=workers, n=n, resdet=a,
                             torchvision=b, ratio=a / b, per="per core" if workers == 0 else "in total",
                             rounds={k: [round(v, 1) for v in vs] for k, vs in times.items()}))
    return rows


def time_decoders(data_dir: Optional[str], n: int = 200, rounds: int = 5) -> Dict[str, float]:
    """Median img/s of each JPEG decoder at full and half size on one thread (the figures quoted in
    resdet/data/jpeg.py); decoders that are not installed are left out."""
    import io
    import warnings

    import cv2
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="resdet_decoders_") as tmp:
        root = imagenet_folder(data_dir, n, tmp)
        paths = [p for p, _ in ImageFolderDataset(root, "").samples]
        blobs = [read_file(paths[i]) for i in _indices(len(paths), n)]

    def pil(b, half=False):
        with Image.open(io.BytesIO(b)) as im:
            if half:
                im.draft("RGB", (im.width // 2, im.height // 2))
            return np.asarray(im.convert("RGB"))

    fns = {"PIL": pil, "PIL draft 1/2": lambda b: pil(b, True),
           "OpenCV": lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR),
           "OpenCV reduced 1/2": lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)}
    try:
        import simplejpeg

        fns["simplejpeg"] = lambda b: simplejpeg.decode_jpeg(b, "RGB")
        fns["simplejpeg 1/2"] = lambda b: decode_rgb(b, "", 1, "simplejpeg")[0]   # header read included
    except ImportError:
        pass
    from torchvision.io import decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]

    def tv_all():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for t in tensors:
                decode_jpeg(t)

    times: Dict[str, List[float]] = {k: [] for k in list(fns) + ["torchvision.io"]}
    with _threads(1):
        for _ in range(rounds):
            _decoder_round(fns, blobs, tv_all, times)
    return {k: statistics.median(v) for k, v in times.items()}


def _decoder_round(fns, blobs, tv_all, times) -> None:
    for name, f in fns.items():
        t0 = time.perf_counter()
        for b in blobs:
            f(b)
        times[name].append(len(blobs) / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    tv_all()
    times["torchvision.io"].append(len(blobs) / (time.perf_counter() - t0))
