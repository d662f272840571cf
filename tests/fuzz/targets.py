"""One fuzz target per reader of user files: how the bytes of an input become the file(s) a reader opens,
which readers are called on them, and which seeds (valid small files made by the tests' own generators)
start the corpus. Every call goes through `harness.check_call`, the property of tests/fuzz/README.md.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from typing import Callable, Dict, List, Optional

from .harness import check_call
from .mutate import Choices, mutate_text, mutate_tree


class Target:
    name = ""
    suffix = ""
    # module name prefixes whose Python code atheris instruments for coverage (the readers and what they
    # parse with, where that is Python)
    instrument: tuple = ("resdet",)

    def setup(self, work: str) -> None:
        """Fixed files the readers need besides the input (images, a base config, models), once."""
        self.work = work
        os.makedirs(work, exist_ok=True)

    def run(self, data: bytes) -> None:
        raise NotImplementedError

    def seeds(self) -> Dict[str, bytes]:
        raise NotImplementedError

    def mutate(self, data: bytes, choices: Choices) -> Optional[bytes]:
        """A structure-aware mutation of `data`, or None where only byte mutation applies."""
        return None

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.work, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


class JsonTarget(Target):
    def mutate(self, data: bytes, choices: Choices) -> Optional[bytes]:
        try:
            tree = json.loads(data)
        except (ValueError, RecursionError):
            return None
        return json.dumps(mutate_tree(tree, choices)).encode()


# ---------------------------------------------------------------------------------------------------
class CifarTarget(Target):
    """A CIFAR-10 python batch: the bytes as `test_batch` (load_cifar10_python) and as `batches.meta`
    (cifar10_class_names), read with the restricted unpickler."""

    name = "cifar"
    instrument = ("resdet", "pickle")

    def setup(self, work):
        super().setup(work)
        from tests.data.cifar_crafted import write_case

        self.root = os.path.join(work, "cifar")
        write_case(self.root, "test_batch", b"")

    def run(self, data):
        from resdet.data.folders import cifar10_class_names, load_cifar10_python

        batch = self._write(os.path.join("cifar", "test_batch"), data)
        check_call(lambda: load_cifar10_python(self.root, train=False), [batch])
        meta = self._write(os.path.join("cifar", "batches.meta"), data)
        check_call(lambda: cifar10_class_names(self.root), [meta])
        self._write(os.path.join("cifar", "batches.meta"), b"")

    def seeds(self):
        import pickle

        import numpy as np

        from tests.data import cifar_crafted

        out = {}
        rng = np.random.default_rng(0)
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        for protocol in (2, 4, 5):
            out[f"batch_p{protocol}"] = pickle.dumps({b"data": data, b"labels": [1, 2, 3], b"batch_label": b"b",
                                                      b"filenames": [b"a.png", b"b.png", b"c.png"]}, protocol=protocol)
        raw = pickle.dumps({b"data": data, b"labels": [np.int64(1), 2, 3]}, protocol=2)
        out["batch_numpy1_names"] = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        out["meta_p2"] = pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072}, protocol=2)
        out["labels_array_p4"] = pickle.dumps({"data": data, "labels": np.array([0, 9, 4])}, protocol=4)
        out["crafted_dtype_build"] = cifar_crafted._batch(cifar_crafted.array_with_dtype(
            cifar_crafted.dtype_rewritten_by_build("V1", 16)))
        return out


# ---------------------------------------------------------------------------------------------------
def _coco_images(work: str) -> str:
    from tests.data.coco_fixtures import coco_dict, write_images

    image_dir = os.path.join(work, "images")
    if not os.path.isdir(image_dir):
        write_images(image_dir, coco_dict())
    return image_dir


def _coco_seeds() -> Dict[str, bytes]:
    from tests.data.coco_fixtures import coco_dict

    d = coco_dict()
    small = {"images": d["images"][:2], "categories": d["categories"],
             "annotations": [a for a in d["annotations"] if a["image_id"] in (1, 2)]}
    boxes_only = json.loads(json.dumps(small))
    for a in boxes_only["annotations"]:
        a.pop("segmentation", None)
        a.pop("area", None)
    return {"fixture.json": json.dumps(d).encode(), "two_images.json": json.dumps(small).encode(),
            "boxes_only.json": json.dumps(boxes_only).encode()}


class CocoTrainTarget(JsonTarget):
    """An annotation JSON through training's path: load_coco_json (image headers checked against the
    JSON, annotations validated and repaired) and the training mapper on every record (image read, boxes,
    masks rasterised at the output size)."""

    name = "coco"
    suffix = ".json"

    def setup(self, work):
        super().setup(work)
        from resdet.data.transforms import DetectionMapper

        self.image_dir = _coco_images(work)
        self.mapper = DetectionMapper(is_train=True, min_size_train=(48,), max_size=96, flip_prob=0.5)

    def run(self, data):
        from resdet.data.coco import load_coco_json

        path = self._write("instances.json", data)

        def load_and_map():
            dicts, _ = load_coco_json(path, self.image_dir, check_images="header", instances_without_mask="ignore")
            for record in dicts:
                self.mapper(record)

        check_call(load_and_map, [path])

    def seeds(self):
        return _coco_seeds()


class CocoEvalTarget(JsonTarget):
    """An annotation JSON through evaluation's path: the ground truth validated and repaired per IoU
    type (data/coco_eval_gt.py), then scored by COCOeval (bbox and segm) against two fixed detections."""

    name = "coco_eval"
    suffix = ".json"

    def setup(self, work):
        super().setup(work)
        import numpy as np
        from pycocotools import mask as mask_util

        self.results = []
        for image_id, cat, (h, w), (x, y, bw, bh) in ((1, 1, (60, 80), (10, 10, 20, 20)), (2, 9, (64, 48), (4, 8, 20, 30))):
            m = np.zeros((h, w), np.uint8)
            m[y:y + bh, x:x + bw] = 1
            rle = mask_util.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            self.results.append({"image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh], "score": 0.9,
                                 "segmentation": rle})

    def run(self, data):
        from resdet.evaluation.coco import evaluate_coco_results, load_eval_ground_truth

        path = self._write("ground_truth.json", data)

        def prepare_and_score():
            gt = load_eval_ground_truth(path, ("bbox", "segm"), instances_without_mask="ignore")
            # the fixed detections where the fuzzed ground truth still has their image, size and category
            dets = [dict(r) for r in self.results if r["image_id"] in gt.imgs and r["category_id"] in gt.cats
                    and [gt.imgs[r["image_id"]].get("height"), gt.imgs[r["image_id"]].get("width")]
                    == r["segmentation"]["size"]]
            evaluate_coco_results(gt, dets, ("bbox", "segm"), source="fixed detections")

        check_call(prepare_and_score, [path])

    def seeds(self):
        return _coco_seeds()


class ResultsTarget(JsonTarget):
    """A results file for tools/eval.py --results: evaluate_results_file against a fixed ground truth."""

    name = "results"
    suffix = ".json"

    def setup(self, work):
        super().setup(work)
        from tests.data.coco_fixtures import coco_dict

        self.gt = self._write("gt.json", json.dumps(coco_dict()).encode())

    def run(self, data):
        from resdet.evaluation.coco import evaluate_results_file

        path = self._write("results.json", data)
        check_call(lambda: evaluate_results_file(self.gt, path), [path])

    def seeds(self):
        import numpy as np
        from pycocotools import mask as mask_util

        m = np.zeros((60, 80), np.uint8)
        m[10:30, 10:30] = 1
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        both = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9, "segmentation": rle},
                {"image_id": 2, "category_id": 9, "bbox": [4, 8, 20, 30], "score": 0.4}]
        boxes = [{"image_id": 2, "category_id": 5, "bbox": [30, 30, 10, 10], "score": 0.7},
                 {"image_id": 1, "category_id": 5, "bbox": [40, 5, 30, 40], "score": 0.2}]
        return {"boxes_and_masks.json": json.dumps(both).encode(), "boxes.json": json.dumps(boxes).encode(),
                "empty.json": b"[]"}


# ---------------------------------------------------------------------------------------------------
class ImageTarget(Target):
    """An image file through every decoder path: coco.read_image / check_image_file (PIL, EXIF),
    jpeg.read_image_fast (simplejpeg, PIL fallback), folders.read_image_rgb, and the ImageNet loader's
    header-only jpeg.probe and decode_rgb at each DCT scale with each backend (simplejpeg, PIL)."""

    name = "image"
    instrument = ("resdet", "PIL")

    def run(self, data):
        from resdet.data import coco, folders, jpeg

        path = self._write("input.img", data)
        check_call(lambda: coco.read_image(path), [path])
        check_call(lambda: folders.read_image_rgb(path), [path])
        size = []

        def probe():
            info = jpeg.probe(data, path, "pil")
            size.append((info.width, info.height))
            jpeg.probe(data, path, "simplejpeg")

        check_call(probe, [path])
        w, h = size[0] if size else (64, 48)
        check_call(lambda: coco.check_image_file(path, w, h, decode=True), [path])
        check_call(lambda: jpeg.read_image_fast(path, w, h), [path])
        for backend in ("simplejpeg", "pil"):
            for shrink in (0, 2):
                check_call(lambda: jpeg.decode_rgb(data, path, shrink, backend), [path])

    def seeds(self):
        import numpy as np
        from PIL import Image

        from resdet.benchmarks.photos import photo_batch

        rgb = photo_batch(1, 48, 64, seed=3)[0].permute(1, 2, 0).numpy()  # a photograph, as the benchmarks use
        out = {}

        def save(name, img, fmt, **kw):
            buf = io.BytesIO()
            img.save(buf, fmt, **kw)
            out[name] = buf.getvalue()

        im = Image.fromarray(rgb)
        save("baseline.jpg", im, "JPEG", quality=90)
        save("progressive.jpg", im, "JPEG", quality=80, progressive=True)
        save("grey.jpg", im.convert("L"), "JPEG")
        save("cmyk.jpg", im.convert("CMYK"), "JPEG")
        exif = Image.Exif()
        exif[0x0112] = 6
        save("exif_rotated.jpg", im, "JPEG", exif=exif.tobytes())
        save("rgb.png", im, "PNG")
        save("palette_alpha.png", im.convert("P"), "PNG", transparency=0)
        save("grey16.png", Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257)), "PNG")
        save("rgba.png", im.convert("RGBA"), "PNG")
        save("image.bmp", im, "BMP")
        save("image.tiff", im, "TIFF")
        save("image.gif", im.convert("P"), "GIF")
        save("image.webp", im, "WEBP", quality=80)
        return out

    def mutate(self, data, choices):
        """Rewrite the size fields of a JPEG SOF or PNG IHDR (CRC kept valid): sizes are what allocates."""
        w, h = choices.choice([0, 1, 7, 65535, 65500, 30000, 2 ** 15]), choices.choice([0, 1, 9, 65535, 40000, 2 ** 14])
        for sof in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
            i = data.find(sof)
            if i >= 0 and i + 9 <= len(data):
                return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]
        i = data.find(b"IHDR")
        if i >= 4 and i + 17 <= len(data):
            body = b"IHDR" + struct.pack(">II", w, h) + data[i + 12:i + 17]
            return data[:i] + body + struct.pack(">I", zlib.crc32(body)) + data[i + 21:]
        return None


# ---------------------------------------------------------------------------------------------------
class ConfigTarget(Target):
    """A config YAML (with a `_BASE_` that exists beside it) loaded with load_config and command-line
    overrides, and the same text as a checkpoint's stored config (load_config_text). An input is the
    YAML, optionally followed by a line `#--overrides` and `KEY VALUE` tokens, one per line."""

    name = "config"
    suffix = ".yaml"
    instrument = ("resdet", "fvcore", "yaml")
    SEPARATOR = b"\n#--overrides\n"

    def setup(self, work):
        super().setup(work)
        self._write("base.yaml", b"MODEL:\n  MASK_ON: False\nSOLVER:\n  BASE_LR: 0.01\n")

    def run(self, data):
        from resdet.config import load_config, load_config_text

        text, _, over = data.partition(self.SEPARATOR)
        overrides = [t for t in over.decode("utf-8", "replace").split("\n") if t] if over else []
        path = self._write("config.yaml", text)
        check_call(lambda: load_config(path), [path])
        # an override's error names the override (the command line, the key), not the file
        names = [path, "command line", "Overrides"] + [k for k in overrides[0::2] if k]
        if overrides:
            check_call(lambda: load_config(path, overrides), names)

        def from_text():
            try:
                decoded = text.decode("utf-8")
            except UnicodeDecodeError:
                return  # a checkpoint's config is str already: torch.load gives text
            load_config_text(decoded, source=f"checkpoint '{path}'", overrides=overrides)

        check_call(from_text, names)

    def seeds(self):
        here = os.path.dirname(os.path.abspath(__file__))
        repo = os.path.dirname(os.path.dirname(here))
        out = {"base_chain.yaml": b"_BASE_: base.yaml\nSOLVER:\n  MAX_ITER: 10\n",
               "overrides.yaml": b"MODEL:\n  DEVICE: cpu\n" + self.SEPARATOR
               + b"SOLVER.BASE_LR\n0.02\nINPUT.MIN_SIZE_TRAIN\n(640, 672)\nMODEL.ROI_HEADS.NUM_CLASSES\n3\n"}
        for name in ("quickstart_shapes.yaml", "custom_scratch_r18_gn.yaml", "cifar10_resnet20.yaml"):
            p = os.path.join(repo, "configs", name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    out[name] = f.read().replace(b"_BASE_: ", b"# _BASE_: ")
        return out

    def mutate(self, data, choices):
        import yaml

        text, sep, over = data.partition(self.SEPARATOR)
        if choices.integer(0, 1):
            try:
                tree = yaml.safe_load(text.decode("utf-8"))
                return yaml.safe_dump(mutate_tree(tree, choices)).encode() + sep + over
            except Exception:  # not YAML: line edits below
                pass
        return mutate_text(text.decode("utf-8", "replace"), choices).encode() + sep + over


# ---------------------------------------------------------------------------------------------------
class _TinyDetector:
    """Modules whose state dict has the detector's class-score key (what detection.weights checks)."""

    @staticmethod
    def build():
        from torch import nn

        model = nn.Module()
        model.roi_heads = nn.Module()
        model.roi_heads.box_predictor = nn.Module()
        model.roi_heads.box_predictor.cls_score = nn.Linear(4, 3)
        model.roi_heads.box_predictor.bbox_pred = nn.Linear(4, 8)
        return model


def _tiny_backbone():
    """A feature backbone with torchvision's ResNet names (conv1, bn1, layer1.0.*), a few hundred weights:
    load_backbone_weights takes any module, and a real ResNet's megabyte of weights would slow every run."""
    from torch import nn

    block = nn.Module()
    block.conv1 = nn.Conv2d(4, 4, 3, bias=False)
    block.bn1 = nn.BatchNorm2d(4)
    model = nn.Module()
    model.conv1 = nn.Conv2d(3, 4, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(4)
    model.layer1 = nn.Sequential(block)
    return model


class WeightsTarget(Target):
    """A weights file (torch zip archive) read as a detector checkpoint (load_checkpoint, the class-count
    check, Checkpointer.load_model, the stored config: read_checkpoint_config) and as backbone weights
    (read_weights_file, load_backbone_weights with the name check, into a module with a ResNet's names)."""

    name = "weights"
    suffix = ".pth"
    instrument = ("resdet", "torch._weights_only_unpickler", "torch.serialization")

    def setup(self, work):
        super().setup(work)
        import torch

        torch.set_num_threads(1)
        self.detector = _TinyDetector.build()
        self.backbone = _tiny_backbone()

    def run(self, data):
        from resdet.backbones.weights import load_backbone_weights
        from resdet.detection.weights import load_detection_weights
        from resdet.engine.checkpoint_config import read_checkpoint_config

        path = self._write("weights.pth", data)
        check_call(lambda: load_detection_weights(self.detector, path), [path])
        check_call(lambda: read_checkpoint_config(path), [path])
        check_call(lambda: load_backbone_weights(self.backbone, path, expected_name="cifar_resnet20"), [path])

    def seeds(self):
        import torch

        from resdet.backbones.weights import BACKBONE_EXPORT_FORMAT

        out = {}
        det = _TinyDetector.build()

        def save(name, obj):
            buf = io.BytesIO()
            torch.save(obj, buf)
            out[name] = buf.getvalue()

        save("detector_checkpoint.pth", {"model": det.state_dict(), "iteration": 3, "config": "SOLVER:\n  MAX_ITER: 5\n",
                                         "meta": {"classes": ["a", "b"]}})
        save("plain_state_dict.pth", det.state_dict())
        bb = _tiny_backbone()
        save("backbone_export.pth", {"format": BACKBONE_EXPORT_FORMAT, "meta": {"name": "cifar_resnet20", "variant": "v1",
                                                                                 "shortcut": "A", "norm": "BN"},
                                     "state_dict": bb.state_dict()})
        save("torchvision_classifier.pth", dict(bb.state_dict(), **{"fc.weight": torch.zeros(2, 4),
                                                                     "fc.bias": torch.zeros(2)}))
        return out

    def mutate(self, data, choices):
        import torch

        if choices.integer(0, 2) == 0:
            return _mutate_zip_pickle(data, choices)
        try:
            tree = torch.load(io.BytesIO(data), weights_only=True)
        except Exception:
            return None
        tree = _tensors_to_lists(tree)
        mutated = _lists_to_tensors(mutate_tree(tree, choices, leaf=_tensor_leaf))
        buf = io.BytesIO()
        try:
            torch.save(mutated, buf)
        except Exception:
            return None
        return buf.getvalue()


_TENSOR_TAG = "__tensor__"


def _tensors_to_lists(obj, depth=0):
    """Tensors as tagged dicts, so that mutate_tree can reach into them (shape, dtype) and back."""
    import torch

    if isinstance(obj, torch.Tensor):
        return {_TENSOR_TAG: str(obj.dtype).replace("torch.", ""), "shape": list(obj.shape)}
    if isinstance(obj, dict) and depth < 20:
        return {k: _tensors_to_lists(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and depth < 20:
        return [_tensors_to_lists(v, depth + 1) for v in obj]
    return obj


def _lists_to_tensors(obj, depth=0):
    import torch

    if isinstance(obj, dict) and _TENSOR_TAG in obj and depth < 20:
        dtype = getattr(torch, str(obj[_TENSOR_TAG]), None)
        shape = obj.get("shape")
        if isinstance(dtype, torch.dtype) and isinstance(shape, list) and all(type(s) is int and 0 <= s <= 64 for s in shape) \
                and len(shape) <= 6:
            try:
                return torch.zeros(shape, dtype=dtype)
            except Exception:
                return obj
        return obj
    if isinstance(obj, dict) and depth < 20:
        return {k: _lists_to_tensors(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list) and depth < 20:
        return [_lists_to_tensors(v, depth + 1) for v in obj]
    return obj


def _tensor_leaf(choices: Choices):
    return {_TENSOR_TAG: choices.choice(["float32", "float16", "int64", "uint8", "bool", "complex64", "bfloat16"]),
            "shape": [choices.integer(0, 12) for _ in range(choices.integer(0, 4))]}


def _mutate_zip_pickle(data: bytes, choices: Choices) -> Optional[bytes]:
    """Flip bytes inside the archive's data.pkl (or another member) and re-zip with valid CRCs: reaches the
    weights-only unpickler and the archive's record checks instead of the zip reader's CRC check."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [(i, z.read(i)) for i in z.infolist()]
    except Exception:
        return None
    if not members:
        return None
    k = choices.integer(0, len(members) - 1)
    pkl = [j for j, (i, _) in enumerate(members) if i.filename.endswith("data.pkl")]
    if pkl and choices.integer(0, 1):
        k = pkl[0]
    info, body = members[k]
    body = bytearray(body)
    for _ in range(choices.integer(1, 4)):
        if not body:
            break
        op = choices.integer(0, 3)
        i = choices.integer(0, len(body) - 1)
        if op == 0:
            body[i] = choices.integer(0, 255)
        elif op == 1:
            del body[i:i + choices.integer(1, 8)]
        elif op == 2:
            body[i:i] = bytes([choices.integer(0, 255)]) * choices.integer(1, 4)
        else:
            body[i:i + 4] = struct.pack("<I", choices.choice([0, 1, 2 ** 31 - 1, 2 ** 32 - 1, 65536]))
    members[k] = (info, bytes(body))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for i, b in members:
            z.writestr(i.filename, b)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------
class ExportMetaTarget(Target):
    """An exported model's metadata read back (export/runtime.read_metadata): the bytes as an .onnx file
    (ONNX metadata_props), as a .pt2 (the archive's extra file) and as the JSON beside a file that is
    neither."""

    name = "export_meta"
    instrument = ("resdet", "onnx")

    def setup(self, work):
        super().setup(work)
        self._write("model_without_meta.bin", b"not an exported model")

    def run(self, data):
        from resdet.export.runtime import read_metadata

        onnx_path = self._write("model.onnx", data)
        check_call(lambda: read_metadata(onnx_path), [onnx_path])
        pt2_path = self._write("model.pt2", data)
        check_call(lambda: read_metadata(pt2_path), [pt2_path])
        side = self._write("model_without_meta.bin.json", data)
        bin_path = os.path.join(self.work, "model_without_meta.bin")
        check_call(lambda: read_metadata(bin_path), [bin_path, side])

    def seeds(self):
        import onnx
        from onnx import TensorProto, helper

        meta = {"kind": "detector", "format": "onnx", "architecture": "GeneralizedRCNN", "class_names": ["a", "b"],
                "input": {"layout": "NCHW"}, "device": "cpu"}
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        helper.set_model_props(model, {"resdet": json.dumps(meta), "kind": "detector"})
        out = {"identity.onnx": model.SerializeToString(), "sidecar.json": json.dumps(meta).encode()}
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("model/extra/resdet.json", json.dumps(dict(meta, format="exported-program")))
            z.writestr("model/version", "1")
        out["archive.pt2"] = buf.getvalue()
        return out

    def mutate(self, data, choices):
        try:
            tree = json.loads(data)
        except (ValueError, RecursionError):
            tree = None
        if tree is not None:
            return json.dumps(mutate_tree(tree, choices)).encode()
        if data[:2] == b"PK":
            return _mutate_zip_pickle(data, choices)
        return None


class SelfTestTarget(Target):
    """Planted failures, to show that the harness catches and reports each kind instead of dying with it
    (tests/fuzz/test_fuzz.py): b"segv" dies of SIGSEGV, b"hang" loops in Python, b"chang" sleeps in C with
    the alarm blocked, b"mem" allocates 3 GB, b"key" raises KeyError, b"unnamed" a user error without the
    file, anything else returns."""

    name = "_selftest"
    instrument = ("tests.fuzz.targets",)

    def run(self, data):
        path = self._write("input", data)
        check_call(lambda: self._planted(data, path), [path])

    @staticmethod
    def _planted(data, path):
        import signal
        import time

        if data.startswith(b"segv"):  # what a crash in C code does (address 0 may be mapped in a sandbox)
            os.kill(os.getpid(), signal.SIGSEGV)
        elif data.startswith(b"hang"):
            while True:
                pass
        elif data.startswith(b"chang"):
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
            time.sleep(3600)
        elif data.startswith(b"mem"):
            bytearray(3 * 2 ** 30)
        elif data.startswith(b"key"):
            {}["missing"]
        elif data.startswith(b"unnamed"):
            from resdet.config import ConfigError

            raise ConfigError("something is wrong, but the message does not say where")
        elif data.startswith(b"named"):
            from resdet.config import ConfigError

            raise ConfigError(f"'{path}' is wrong")

    def seeds(self):
        return {"ok": b"ok"}


TARGETS: Dict[str, Callable[[], Target]] = {t.name: t for t in (
    CifarTarget, CocoTrainTarget, CocoEvalTarget, ResultsTarget, ImageTarget, ConfigTarget, WeightsTarget,
    ExportMetaTarget, SelfTestTarget)}
# what --all and CI fuzz: the readers (the self-test target only checks the harness)
READER_TARGETS = sorted(n for n in TARGETS if not n.startswith("_"))


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; the targets are {sorted(TARGETS)}")
    return TARGETS[name]()


def corpus_dirs(name: str) -> List[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, "corpus", name), os.path.join(here, "regressions", name)]
