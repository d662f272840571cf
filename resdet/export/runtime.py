"""Running an exported file: onnxruntime for .onnx, torch.export.load for an ExportedProgram (.pt2),
torch._inductor.aoti_load_package for an AOTInductor package; the metadata read back from the file.

    model = load_exported("mask_rcnn.onnx")            # an ExportedDetector (or ExportedClassifier)
    outs = model(images, original_sizes=[(h, w), ...])  # as GeneralizedRCNN in eval: one dict per image
    raw = model.run(batch, image_sizes)                 # the file's own outputs, as torch tensors

An ExportedDetector pads the images (list of CHW float 0-255 tensors) into one batch, runs the file,
and turns its fixed-shape outputs into the eager model's output dicts (`paste_detections`): boxes
scaled to `original_sizes`, mask probabilities pasted into the image with resdet's `paste_masks`.
`DetectionPredictor.from_exported` builds the predictor on it.

Which files may be untrusted: an `.onnx` file is a protobuf graph of standard operators that onnxruntime
interprets (resdet registers no custom-operator library, so a model cannot load one), and reading its
metadata parses only protobuf and JSON; an ExportedProgram `.pt2` is JSON plus pickled tensors, and
`check_pt2_pickles` refuses any archive whose pickles hold more than tensors and plain values before
`torch.export.load` (which has no safe mode of its own) reads it. Neither runs code from the file. An
AOTInductor package (format "aoti") is compiled machine code by nature: loading it runs that code, so
load only packages you made yourself or trust like a program you would run.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from resdet.detection.postprocess import paste_masks, scale_boxes
from resdet.utils.errors import UserInputError

from .exporter import METADATA_KEY, sidecar_path

__all__ = ["ExportedFileError", "read_metadata", "check_pt2_pickles", "load_exported", "ExportedDetector", "ExportedClassifier", "paste_detections",
           "onnx_providers"]


class ExportedFileError(UserInputError, ValueError):
    """An exported file that cannot be used as asked (no resdet metadata, another kind of model, another
    device, an image its fixed input shape cannot take); the message names the file and says what to do.
    The tools print it as one line, as they do a wrong config key."""


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Exported model file '{path}' does not exist")


def read_metadata(path: str) -> Dict[str, Any]:
    """The metadata an exported file carries (ONNX metadata_props, or the .pt2's extra file, or the
    JSON beside it): a JSON object with string "kind" and "format", or ExportedFileError naming the file.
    Reading it runs no code from the file: protobuf parsing, zip reading and JSON only."""
    _check_file(path)
    where = path
    try:
        if path.endswith(".onnx"):
            import onnx

            model = onnx.load(path, load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            if METADATA_KEY not in props:
                raise ExportedFileError(f"'{path}' carries no '{METADATA_KEY}' metadata: not written by tools/export.py")
            return _checked_metadata(json.loads(props[METADATA_KEY]), path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if name.endswith(f"extra/{METADATA_KEY}.json"):
                        return _checked_metadata(json.loads(z.read(name)), path)
        side = sidecar_path(path)
        if os.path.isfile(side):
            where = side
            with open(side, encoding="utf-8") as f:
                return _checked_metadata(json.load(f), side)
    except ExportedFileError:
        raise
    except Exception as e:  # protobuf's DecodeError, zipfile's BadZipFile/zlib errors, JSON and UTF-8 errors, ...
        raise ExportedFileError(f"Cannot read the resdet metadata of '{where}': {type(e).__name__}: "
                                f"{str(e)[:300]}") from e
    raise ExportedFileError(f"'{path}' carries no '{METADATA_KEY}' metadata and has no '{side}' beside it: "
                            "not written by tools/export.py")


def _checked_metadata(meta: Any, where: str) -> Dict[str, Any]:
    if not isinstance(meta, dict):
        raise ExportedFileError(f"The resdet metadata of '{where}' is a {type(meta).__name__}, expected a JSON object")
    for key in ("kind", "format"):
        if not isinstance(meta.get(key), str):
            raise ExportedFileError(f"The resdet metadata of '{where}' has no '{key}' string (got {meta.get(key)!r}): "
                                    "not written by tools/export.py")
    return meta


def check_pt2_pickles(path: str) -> None:
    """Refuse an ExportedProgram archive (.pt2) that `torch.export.load` would run code from.

    torch.export.load has no safe mode (its docstring: "uses pickle under the hood ... never load data
    from an untrusted source"): it reads pickled weights and constants (`use_pickle` in the payload
    configs), legacy `.pt` members and the sample inputs with `torch.load(weights_only=False)` (the
    sample inputs after a weights_only=True attempt fails), custom objects with TorchScript's unpickler
    and opaque objects with plain `pickle.loads`; the graph itself is JSON. So every member it would
    unpickle must load with `torch.load(weights_only=True)` here first (tensors and plain values: what
    tools/export.py writes), and custom or opaque objects are refused: after this check the unpickling
    inside torch.export.load can only rebuild tensors and plain values. ExportedFileError names the file
    and the member."""
    def refuse(member: str, why: str):
        return ExportedFileError(f"'{path}': its member '{member}' {why}; torch.export.load would unpickle it with "
                                 "code execution allowed, so it is refused (export the model again with "
                                 "tools/export.py, or load it with torch.export.load yourself if you trust the file)")

    try:
        z = zipfile.ZipFile(path)
    except Exception as e:  # BadZipFile, OSError, ...
        raise ExportedFileError(f"'{path}' is not a readable .pt2 archive: {type(e).__name__}: {e}") from e
    with z:
        names = z.namelist()

        def loads_safely(member: str) -> None:
            try:
                torch.load(io.BytesIO(z.read(member)), map_location="cpu", weights_only=True)
            except Exception as e:
                raise refuse(member, f"holds more than tensors and plain values ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None

        for member in names:
            base = member.rsplit("/", 1)[-1]
            if "data/constants/" in member and base.startswith(("custom_obj_", "opaque_obj_")):
                raise refuse(member, "is a custom or opaque object (TorchScript / pickle)")
            if member.endswith(".pt"):
                loads_safely(member)
            if base.endswith("_config.json") and ("data/weights/" in member or "data/constants/" in member):
                try:
                    config = json.loads(z.read(member))["config"]
                    pickled = [meta["path_name"] for meta in config.values() if meta.get("use_pickle")]
                except Exception as e:
                    raise ExportedFileError(f"'{path}': its payload config '{member}' is not readable: "
                                            f"{type(e).__name__}: {e}") from e
                folder = member.rsplit("/", 1)[0]
                for name in pickled:
                    if f"{folder}/{name}" not in names:
                        raise ExportedFileError(f"'{path}': '{member}' names '{name}', which the archive lacks")
                    loads_safely(f"{folder}/{name}")


def onnx_providers(device: str) -> List[str]:
    """onnxruntime's CUDA provider first where the device asks for it and the build has it; the CPU always."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in have:
            raise RuntimeError(f"device {device!r} asked for, but this onnxruntime has no CUDAExecutionProvider "
                               f"(it has {have}); install onnxruntime-gpu or run on the CPU")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class _Backend:
    """Runs the file on tensors and returns tensors, whatever the format."""

    def __init__(self, path: str, metadata: Dict[str, Any], device: Optional[str], threads: int = 0):
        self.path, self.metadata = path, metadata
        self.format = metadata["format"]
        traced = metadata.get("device", "cpu")
        device = device or ("cpu" if traced == "any" else traced)  # default: where the file was traced
        self.device = torch.device(device)
        if self.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(path, options, providers=onnx_providers(device))
            self.input_names = [i.name for i in self.session.get_inputs()]
        elif self.format in ("exported-program", "aoti"):
            traced = metadata.get("device", "cpu")
            if self.device.type != traced:
                raise ExportedFileError(f"'{path}' was traced on {traced} and runs there only (asked for {device}); "
                                        f"export it again with MODEL.DEVICE {self.device.type}, or use the ONNX format")
            import torchvision  # noqa: F401  (registers the nms / roi_align ops the program calls)

            if self.format == "exported-program":
                check_pt2_pickles(path)  # torch.export.load itself would unpickle them with code execution allowed
                self.module = torch.export.load(path).module()
            else:
                from torch._inductor import aoti_load_package

                self.module = aoti_load_package(path)
        else:
            raise ExportedFileError(f"'{path}': unknown export format {self.format!r} in its metadata")

    def __call__(self, *inputs: Tensor) -> List[Tensor]:
        if self.format == "onnx":
            feed = {n: x.detach().cpu().numpy() for n, x in zip(self.input_names, inputs)}
            return [torch.from_numpy(o) for o in self.session.run(None, feed)]
        with torch.no_grad():
            out = self.module(*(x.to(self.device) for x in inputs))
        return list(out) if isinstance(out, (tuple, list)) else [out]


def _fixed(dim) -> Optional[int]:
    return dim if isinstance(dim, int) else None


def paste_detections(raw: Dict[str, Tensor], image_sizes: Tensor,
                     original_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                     paste: bool = True) -> List[Dict[str, Tensor]]:
    """The exported detector's fixed-shape outputs as the eager model's per-image dicts.

    raw: boxes [N, D, 4], scores [N, D], labels [N, D], num_detections [N] (and mask_probs
    [N, D, 1, M, M]) for images of image_sizes [N, 2] (h, w). Boxes are scaled to original_sizes when
    given (as GeneralizedRCNN.postprocess does) and each detection's M x M probabilities are resized
    into its box and placed in an image of the output size with resdet's paste_masks (torchvision's
    paste_masks_in_image, batched): masks [n_i, 1, H, W] per image. Host work is one read of the counts.
    `paste=False` leaves them as `mask_probs` [n_i, 1, M, M], as GeneralizedRCNN(paste_masks=False) does.
    """
    boxes = raw["boxes"]
    out_sizes = image_sizes.to(torch.int64)
    if original_sizes is not None:
        if len(original_sizes) != image_sizes.shape[0]:
            raise ValueError(f"original_sizes has {len(original_sizes)} entries for {image_sizes.shape[0]} images")
        out_sizes = torch.as_tensor([list(s) for s in original_sizes], dtype=torch.int64)
        boxes = scale_boxes(boxes, image_sizes.to(boxes.device), out_sizes.to(boxes.device))
    counts = raw["num_detections"].to(torch.int64).tolist()
    outputs = [{"boxes": boxes[i, :c], "scores": raw["scores"][i, :c], "labels": raw["labels"][i, :c].to(torch.int64)}
               for i, c in enumerate(counts)]
    if "mask_probs" in raw:
        d = raw["mask_probs"].shape[1]
        valid = torch.arange(d)[None, :] < torch.as_tensor(counts)[:, None]
        img, idx = valid.nonzero(as_tuple=True)
        if not paste:
            for o, part in zip(outputs, raw["mask_probs"][img, idx].split(counts)):
                o["mask_probs"] = part
            return outputs
        canvas = out_sizes.max(dim=0).values.tolist()
        pasted = paste_masks(raw["mask_probs"][img, idx], boxes[img, idx], canvas)
        for i, (o, part) in enumerate(zip(outputs, pasted.split(counts))):
            h, w = out_sizes[i].tolist()
            o["masks"] = part[:, :, :h, :w]
    return outputs


class ExportedDetector:
    """An exported Faster / Mask R-CNN with GeneralizedRCNN's inference interface."""

    def __init__(self, path: str, device: Optional[str] = None, threads: int = 0, metadata: Optional[Dict[str, Any]] = None):
        self.metadata = metadata or read_metadata(path)
        if self.metadata.get("kind") != "detector":
            raise ExportedFileError(f"'{path}' holds a {self.metadata.get('kind')}, not a detector")
        self.path = path
        self.backend = _Backend(path, self.metadata, device, threads)
        self.device = self.backend.device
        self.size_divisibility = int(self.metadata["size_divisibility"])
        n, _, h, w = self.metadata["input_shapes"]["images"]
        self.fixed_batch, self.fixed_size = _fixed(n), (_fixed(h), _fixed(w))
        self.class_names = list(self.metadata.get("class_names", []))

    def eval(self) -> "ExportedDetector":
        return self

    def _padded(self, images: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        sizes = torch.tensor([[im.shape[-2], im.shape[-1]] for im in images], dtype=torch.int64)
        div = self.size_divisibility
        h = -(-int(sizes[:, 0].max()) // div) * div
        w = -(-int(sizes[:, 1].max()) // div) * div
        fh, fw = self.fixed_size
        if fh is not None:
            if int(sizes[:, 0].max()) > fh or int(sizes[:, 1].max()) > fw:
                raise ExportedFileError(f"'{self.path}' was exported for fixed {fh}x{fw} inputs; an image of "
                                        f"{int(sizes[:, 0].max())}x{int(sizes[:, 1].max())} does not fit (export "
                                        "with --dynamic, or with a --size that holds it)")
            h, w = fh, fw
        batch = torch.zeros((len(images), 3, h, w), dtype=torch.float32)
        for i, im in enumerate(images):  # a copy per image, as pad_images does
            batch[i, :, : im.shape[-2], : im.shape[-1]] = im.detach().to("cpu", torch.float32)
        return batch, sizes

    def run(self, images: Tensor, image_sizes: Tensor) -> Dict[str, Tensor]:
        """The file's outputs by name for a padded batch [N, 3, H, W] and its sizes [N, 2]."""
        fb = self.fixed_batch
        if fb is not None and images.shape[0] != fb:
            return self._run_fixed_batch(images, image_sizes, fb)
        outs = self.backend(images, image_sizes)
        return {name: o.cpu() for name, o in zip(self.metadata["outputs"], outs)}

    def _run_fixed_batch(self, images: Tensor, image_sizes: Tensor, fb: int) -> Dict[str, Tensor]:
        """A fixed-batch file run on chunks of its batch size (the last chunk padded with copies)."""
        parts = []
        for s in range(0, images.shape[0], fb):
            chunk, sizes = images[s: s + fb], image_sizes[s: s + fb]
            k = chunk.shape[0]
            if k < fb:
                chunk = torch.cat([chunk, chunk[-1:].expand(fb - k, -1, -1, -1)])
                sizes = torch.cat([sizes, sizes[-1:].expand(fb - k, -1)])
            outs = self.backend(chunk, sizes)
            parts.append([o.cpu()[:k] for o in outs])
        return {name: torch.cat([p[j] for p in parts]) for j, name in enumerate(self.metadata["outputs"])}

    def __call__(self, images: Sequence[Tensor], original_sizes: Optional[Sequence[Tuple[int, int]]] = None,
                 paste_masks: bool = True):
        if isinstance(images, Tensor) and images.dim() == 4:
            images = list(images)
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError("images must be a non-empty list of [3, H, W] float tensors (RGB, 0-255)")
        for i, im in enumerate(images):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"images[{i}] must be a [3, H, W] RGB tensor (0-255); got "
                                 f"{tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__}")
        batch, sizes = self._padded(images)
        return paste_detections(self.run(batch, sizes), sizes, original_sizes, paste_masks)


class ExportedClassifier:
    """An exported ImageClassifier: images [N, 3, H, W] (0-255 RGB) in, logits out."""

    def __init__(self, path: str, device: Optional[str] = None, threads: int = 0, metadata: Optional[Dict[str, Any]] = None):
        self.metadata = metadata or read_metadata(path)
        if self.metadata.get("kind") != "classifier":
            raise ExportedFileError(f"'{path}' holds a {self.metadata.get('kind')}, not a classifier")
        self.path = path
        self.backend = _Backend(path, self.metadata, device, threads)
        self.class_names = list(self.metadata.get("class_names", []))

    def __call__(self, images: Tensor) -> Tensor:
        return self.backend(images.to(torch.float32))[0].cpu()


def load_exported(path: str, device: Optional[str] = None, threads: int = 0):
    """An ExportedDetector or ExportedClassifier for a file written by tools/export.py.

    `.onnx` and ExportedProgram `.pt2` files load without running code from the file (the .pt2's pickles
    are checked first: `check_pt2_pickles`). An AOTInductor package is compiled code: loading it runs
    that code, so give only a trusted file (one you exported, or would run as a program)."""
    metadata = read_metadata(path)
    cls = ExportedDetector if metadata.get("kind") == "detector" else ExportedClassifier
    return cls(path, device, threads, metadata)
