"""The vectorised RLE check of results (validate_coco_results) accepts exactly what the Python decoder
accepts, with the same sums, and bad masks still get their own message."""
import numpy as np
import pytest
from pycocotools import mask as mask_util

from resdet.data.coco_validation import CocoFormatError, _rle_string_sum, rle_string_sums, validate_coco_results


def _strings(seed=0, n=600):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = np.zeros((int(rng.integers(1, 70)), int(rng.integers(1, 70))), np.uint8)
        for _ in range(int(rng.integers(0, 4))):
            y, x = int(rng.integers(0, m.shape[0])), int(rng.integers(0, m.shape[1]))
            m[y:y + int(rng.integers(1, 30)), x:x + int(rng.integers(1, 30))] = 1
        if rng.random() < 0.2:
            m = (rng.random(m.shape) < 0.5).astype(np.uint8)
        out.append(mask_util.encode(np.asfortranarray(m))["counts"])
    return out


def _corrupt(strings, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for s in strings:
        b = bytearray(s)
        p = int(rng.integers(0, len(b)))
        kind = int(rng.integers(0, 5))
        if kind == 0:
            b[p] = int(rng.integers(0, 256))          # any byte
        elif kind == 1:
            b = b[:p]                                 # cut
        elif kind == 2:
            b.insert(p, int(rng.integers(48, 112)))   # a value too many
        elif kind == 3:
            b[p] = int(rng.integers(48, 112))         # another valid character
        else:
            b += bytes([int(rng.integers(80, 112))])  # a dangling "more" character
        out.append(bytes(b))
    return out + [b"", b"0", b"`", b"o", b"_", b"O", b"``````````0", b"N3", b"\x00", b"0000", b"1O"]


def test_same_verdicts_and_sums_as_the_python_decoder():
    strings = _strings()
    strings += _corrupt(strings[:400])
    fast = rle_string_sums(strings, chunk=97)  # chunks that split the list anywhere
    slow = [_rle_string_sum(s.decode("latin-1")) for s in strings]
    accepted = 0
    for s, f, p in zip(strings, fast, slow):
        if f >= 0:  # accepted here: the Python decoder accepts it with the same sum
            assert p == f, s
            accepted += 1
        else:  # refused (or left to the Python check): nearly always invalid there too
            pass
    assert accepted >= sum(p is not None for p in slow) - 3  # the fast path leaves almost nothing to Python
    assert (fast[:600] >= 0).all()  # every real mask passes the fast path


def test_bad_masks_keep_their_message():
    gt = {"images": [{"id": 1, "height": 4, "width": 5}], "categories": [{"id": 1}]}
    good = mask_util.encode(np.asfortranarray(np.eye(4, 5, dtype=np.uint8)))
    good["counts"] = good["counts"].decode("ascii")
    res = [{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": good}]
    validate_coco_results(res, gt, "segm")
    cut = dict(good, counts=good["counts"][:-1] + "`")
    with pytest.raises(CocoFormatError, match="result #1 .*not a valid compressed RLE"):
        validate_coco_results(res + [{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": cut}], gt, "segm")
    short = mask_util.encode(np.asfortranarray(np.eye(4, 4, dtype=np.uint8)))
    short = {"size": [4, 5], "counts": short["counts"].decode("ascii")}
    with pytest.raises(CocoFormatError, match="RLE runs add up to 16 pixels, the image has 4x5 = 20"):
        validate_coco_results([{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": short}], gt, "segm")
