"""Crafted CIFAR-10 python batches (issue 21): pickles that numpy would turn into out-of-bounds reads,
object arrays or uninitialised memory, and batches of the wrong structure. Each case is the bytes of a
`test_batch` (or `batches.meta`) file; tests/data/test_safe_pickle.py loads them in a child process
(`python -m tests.data.cifar_crafted DIR`: one JSON line per case, so a segfault fails the test instead
of killing pytest), and tests/fuzz uses them as regression cases of the CIFAR harness.
"""
import json
import os
import pickle
import sys

import numpy as np

ROW = 3072


class Reduce:
    """Pickles as `fn(*args)` followed by BUILD `state`: any call numpy's names allow, with any state."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) + ((self.state,) if self.state is not None else ())


def _core():
    return getattr(np, "_core", None) or np.core


def dtype_rewritten_by_build(code: str, offset: int):
    """numpy.dtype(code) whose BUILD state makes it a structured dtype of item size 1 with one field at
    `offset`: reading the field reads `offset` bytes past each item."""
    return Reduce(np.dtype, (code, False, True),
                  (3, "|", None, ("f",), {"f": (np.dtype("u1"), offset)}, 1, 1, 16))


def array_with_dtype(dtype_obj, shape=(2, ROW), raw=None):
    raw = bytes(int(np.prod(shape))) if raw is None else raw
    return Reduce(_core().multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype_obj, False, raw))


def _dump(obj, protocol=2) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _batch(data, labels=(0, 1)) -> bytes:
    return _dump({b"data": data, b"labels": list(labels), b"batch_label": b"crafted"})


def _deeply_nested(depth: int) -> bytes:
    """{b"data": [[[...]]] `depth` lists deep}, written opcode by opcode (pickle.dumps would recurse)."""
    body = b"\x80\x02}C\x04data" + b"]" * depth + b"a" * (depth - 1) + b"s."
    return body


def cases():
    """name -> (file name, bytes, what must happen: "refused" or "loads")."""
    zeros = np.zeros((2, ROW), np.uint8)
    values = np.arange(2 * ROW, dtype=np.int64).reshape(2, ROW).astype(np.uint8)
    out = {}
    for code in ("V1", "u1"):
        for offset in (16, 5000, 10 ** 9, 2 ** 31 - 1, 10 ** 11):
            out[f"dtype_{code}_build_offset_{offset}"] = (
                "test_batch", _batch(array_with_dtype(dtype_rewritten_by_build(code, offset))), "refused")
    out["object_array"] = ("test_batch", _batch(np.array([[None] * ROW] * 2, dtype=object)), "refused")
    out["void_array"] = ("test_batch", _batch(np.zeros((2, ROW), "V1")), "refused")
    out["structured_array"] = ("test_batch", _batch(np.zeros((2, ROW), [("f", "u1")])), "refused")
    out["int64_array"] = ("test_batch", _batch(zeros.astype(np.int64)), "refused")
    out["shape_row_3071"] = ("test_batch", _batch(np.zeros((2, ROW - 1), np.uint8)), "refused")
    out["shape_flat"] = ("test_batch", _batch(np.zeros(2 * ROW, np.uint8)), "refused")
    out["shape_4d"] = ("test_batch", _batch(np.zeros((2, 3, 32, 32), np.uint8)), "refused")
    out["data_as_list"] = ("test_batch", _batch([[0] * ROW, [0] * ROW]), "refused")
    out["data_as_bytes"] = ("test_batch", _batch(bytes(2 * ROW)), "refused")
    out["bytes_short_of_shape"] = ("test_batch", _batch(array_with_dtype(np.dtype("u1"), raw=bytes(100))), "refused")
    out["shape_overflow"] = ("test_batch", _batch(array_with_dtype(np.dtype("u1"), shape=(2 ** 62, 2 ** 62), raw=b"")),
                             "refused")
    out["bare_ndarray_call"] = ("test_batch", _batch(Reduce(np.ndarray, ((2, ROW), "u1"))), "refused")
    out["ndarray_with_buffer_offset"] = ("test_batch", _batch(Reduce(np.ndarray, ((2, ROW), "u1", bytes(10), 10 ** 6))),
                                         "refused")
    out["scalar_wrong_length"] = ("test_batch", _batch(zeros, labels=[Reduce(_core().multiarray.scalar,
                                                                              (np.dtype("i8"), b"\x01"))] * 2), "refused")
    out["labels_out_of_range"] = ("test_batch", _batch(zeros, labels=[0, 10]), "refused")
    out["labels_negative"] = ("test_batch", _batch(zeros, labels=[-1, 0]), "refused")
    out["labels_strings"] = ("test_batch", _batch(zeros, labels=["a", "b"]), "refused")
    out["labels_bools"] = ("test_batch", _batch(zeros, labels=[True, False]), "refused")
    out["labels_count"] = ("test_batch", _batch(zeros, labels=[0, 1, 2]), "refused")
    out["labels_float_array"] = ("test_batch", _dump({b"data": zeros, b"labels": np.zeros(2)}), "refused")
    out["no_labels"] = ("test_batch", _dump({b"data": zeros}), "refused")
    out["not_a_dict"] = ("test_batch", _dump([zeros, [0, 1]]), "refused")
    out["deeply_nested"] = ("test_batch", _deeply_nested(100_000), "refused")
    out["truncated"] = ("test_batch", _batch(zeros)[:-40], "refused")
    out["memo_index_huge"] = ("test_batch", b"\x80\x02}r\xff\xff\xff\xff.", "refused")
    out["meta_names_not_list"] = ("batches.meta", _dump({b"label_names": b"abc"}), "refused")
    out["meta_names_count"] = ("batches.meta", _dump({b"label_names": [b"a"] * 3}), "refused")
    out["meta_names_not_utf8"] = ("batches.meta", _dump({b"label_names": [b"\xff"] * 10}), "refused")
    # arrays numpy writes from views: the data arrives contiguous and loads as a fresh C-contiguous copy
    out["negative_stride_view"] = ("test_batch", _batch(values[:, ::-1]), "loads")
    out["fortran_order"] = ("test_batch", _batch(np.asfortranarray(values)), "loads")
    out["protocol_5"] = ("test_batch", _dump({b"data": values, b"labels": np.array([3, 4])}, protocol=5), "loads")
    return out


def expected_array(name):
    values = np.arange(2 * ROW, dtype=np.int64).reshape(2, ROW).astype(np.uint8)
    return values[:, ::-1] if name == "negative_stride_view" else values


def write_case(root, file_name, data):
    """A cifar-10-batches-py folder whose `file_name` is `data` (the other file valid)."""
    os.makedirs(root, exist_ok=True)
    zeros = np.zeros((2, ROW), np.uint8)
    files = {"test_batch": _batch(zeros), "batches.meta": _dump({b"label_names": [b"c%d" % i for i in range(10)]})}
    files[file_name] = data
    for name, raw in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(raw)
    return os.path.join(root, file_name)


def main(work):
    """Load every case (in this process: run it as a child) and print one JSON line each."""
    from resdet.data.folders import cifar10_class_names, load_cifar10_python

    for name, (file_name, data, _) in cases().items():
        root = os.path.join(work, name)
        path = write_case(root, file_name, data)
        print(f"running {name}", file=sys.stderr, flush=True)
        out = {"case": name, "path": path, "error": None, "message": ""}
        try:
            if file_name == "batches.meta":
                cifar10_class_names(root)
            else:
                x, y = load_cifar10_python(root, train=False)
                flat = x.reshape(len(x), -1).numpy()
                out.update(equal=bool(np.array_equal(flat, expected_array(name))), writable=bool(x.numpy().flags.writeable),
                           contiguous=bool(x.is_contiguous()), labels=y.tolist())
        except Exception as e:  # noqa: BLE001 - the type is what the test checks
            out.update(error=type(e).__name__, message=str(e)[:2000],
                       user_error=_is_user_error(e))
        print(json.dumps(out), flush=True)


def _is_user_error(e):
    from resdet.runs.cli import USER_ERRORS

    return isinstance(e, USER_ERRORS)


if __name__ == "__main__":
    main(sys.argv[1])
