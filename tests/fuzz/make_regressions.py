"""Write the regression cases (tests/fuzz/regressions/<target>/): each finding of the fuzzer, minimised,
that once broke the property (tests/fuzz/README.md lists them with their fixes). Replayed by every short
run and campaign; the files are kept in the repository, this script only says how each was made.

    python -m tests.fuzz.make_regressions
"""
import io
import json
import os
import pickle
import struct

from .targets import ConfigTarget, ImageTarget, corpus_dirs


def _coco_small():
    from tests.data.coco_fixtures import coco_dict

    d = coco_dict()
    return {"images": d["images"][:2], "categories": d["categories"],
            "annotations": [dict(a) for a in d["annotations"] if a["image_id"] in (1, 2)]}


def _torch_bytes(obj):
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def cases():
    import torch

    deep_json = b"[" * 5000 + b"]" * 5000
    unhashable = _coco_small()
    unhashable["annotations"][0]["image_id"] = [1]
    unhashable_cat = _coco_small()
    unhashable_cat["annotations"][1]["category_id"] = {"id": 1}
    jpeg = ImageTarget().seeds()["baseline.jpg"]
    i = jpeg.find(b"\xff\xc0")
    huge_jpeg = jpeg[:i + 5] + struct.pack(">HH", 40000, 65500) + jpeg[i + 9:]
    sep = ConfigTarget.SEPARATOR
    tiny_state = {"roi_heads.box_predictor.cls_score.weight": torch.zeros(3, 4)}
    return {
        "results": {
            "not_utf8.json": b'[{"image_id": 1, "\x95": 2}]',        # UnicodeDecodeError escaped
            "nested_too_deep.json": deep_json,                         # RecursionError escaped
        },
        "coco": {
            "not_utf8.json": b"\x80{}",
            "nested_too_deep.json": deep_json,
            "image_id_a_list.json": json.dumps(unhashable).encode(),   # TypeError: unhashable type: 'list'
            "category_id_a_dict.json": json.dumps(unhashable_cat).encode(),
        },
        "coco_eval": {
            "not_utf8.json": b"\x80{}",
            "image_id_a_list.json": json.dumps(unhashable).encode(),
        },
        "config": {
            "not_utf8.yaml": b"MODEL:\n  DEVICE: \x80\n",             # UnicodeDecodeError from fvcore
            "empty.yaml": b"",                                         # TypeError: argument of type 'NoneType'
            "a_list.yaml": b"- 1\n- 2\n",
            "a_scalar.yaml": b"5\n",
            "own_base.yaml": b"_BASE_: config.yaml\n",                 # RecursionError (fvcore)
            "base_a_number.yaml": b"_BASE_: 3\n",                      # AttributeError (fvcore)
            "base_a_url.yaml": b"_BASE_: http://127.0.0.1:9/base.yaml\n",   # refused: no request (fvcore: iopath)
            "base_value_vs_section.yaml": b"_BASE_: base.yaml\nSOLVER:\n  BASE_LR:\n    X: 1\n",  # AssertionError
            "int_key_nested.yaml": b"MODEL:\n  1:\n    counts: 2\n",    # TypeError building fvcore's CfgNode
            # the oracle's rule for overrides: their errors name the override, not the file
            "override_odd.yaml": b"MODEL:\n  DEVICE: cpu\n" + sep + b"SOLVER.BASE_LR\n",
            "override_deep_literal.yaml": b"MODEL:\n  DEVICE: cpu\n" + sep + b"SOLVER.BASE_LR\n" + b"(" * 300 + b"\n",
        },
        "image": {
            "jpeg_header_40000x65500.jpg": huge_jpeg,                  # MemoryError in decode_rgb (simplejpeg)
        },
        "export_meta": {
            "not_protobuf.onnx": b"\x08\x07\x12\xff\xff\xff",          # protobuf DecodeError escaped
            "sidecar_not_utf8.json": b'{"kind": "\x9d"}',              # UnicodeDecodeError escaped
            "sidecar_a_list.json": b"[1, 2]",                          # a list reached .get()
            "sidecar_without_format.json": b'{"kind": "detector"}',    # KeyError 'format' in the backend
        },
        "weights": {
            "config_a_bare_string.pth": _torch_bytes({"model": tiny_state, "config": "float32"}),  # AttributeError
            "class_score_a_string.pth": _torch_bytes({"model": {"roi_heads.box_predictor.cls_score.weight": "x"}}),
            "int_keys.pth": _torch_bytes({"model": {1: torch.zeros(2)}}),              # AttributeError in torch
            "not_a_state_dict.pth": _torch_bytes([torch.zeros(2)]),                    # untyped ValueError
            "other_architecture.pth": _torch_bytes({"fc.weight": torch.zeros(2, 2)}),  # untyped ValueError
            "pickled_object.pth": pickle.dumps(os.getcwd),                             # untyped ValueError
        },
        "cifar": {
            # the defect of issue 21 (SIGSEGV) and its relatives, from tests/data/cifar_crafted.py
            **{f"{name}": data for name, (file_name, data, outcome) in __import__(
                "tests.data.cifar_crafted", fromlist=["cases"]).cases().items()
               if outcome == "refused" and file_name == "test_batch" and len(data) < 20000},
        },
    }


def main():
    for target, files in cases().items():
        folder = corpus_dirs(target)[1]
        os.makedirs(folder, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(files)} regression cases in {folder}")


if __name__ == "__main__":
    main()
