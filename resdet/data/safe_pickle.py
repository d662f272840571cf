"""Reading CIFAR's python batches (pickles made elsewhere) without running any code they name.

    batch = load_restricted_pickle(path, what="CIFAR-10 batch")   # dict of bytes/str/int/lists/arrays

A pickle is a small program: its GLOBAL / STACK_GLOBAL opcodes import any callable by name and its REDUCE
opcode calls it, so `pickle.load` on a downloaded file can run `os.system`. The official CIFAR-10 files
(`data_batch_1` ... `test_batch`, `batches.meta`) hold only dicts, lists, bytes, str, ints and numpy
arrays; this unpickler resolves only the globals those need and refuses every other one with an
`UnsafePickleError` that names the file and the refused global, before anything is called.

The globals allowed, and why (pickles name them, so the names differ with the writer):
- numpy arrays: `numpy.core.multiarray._reconstruct` (numpy 1.x writers, e.g. the official files) or
  `numpy._core.multiarray._reconstruct` (numpy 2.x), called with `numpy.ndarray` and a `numpy.dtype`;
  protocol 5 writes `numpy.core.numeric._frombuffer` / `numpy._core.numeric._frombuffer` instead; numpy
  scalars are `numpy.(_)core.multiarray.scalar`. Each is resolved to numpy's own function behind a check
  (exactly ndarray, no object dtype), whatever numpy version is installed here.
- `_codecs.encode`: Python 3 writes bytes in protocol 2 as `_codecs.encode(text, "latin1")`; only
  latin-1 is accepted.
Python's `pickle.Unpickler.find_class` is the documented hook for this ("Restricting Globals" in the
pickle docs); nothing else in the standard library or numpy restricts what a pickle may import.
"""
from __future__ import annotations

import codecs
import pickle
from typing import Any, Callable, Dict, Tuple

import numpy as np

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "load_restricted_pickle", "ALLOWED_GLOBALS"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global outside the allowed set (or misuses an allowed one); nothing was called."""


def _numpy_core():
    # numpy 2 moved numpy.core to numpy._core (numpy.core is a deprecated alias there).
    return getattr(np, "_core", None) or np.core


def _plain_dtype(dtype: Any, where: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        # Object arrays would unpickle their items as well; CIFAR has none, so they are refused outright.
        raise UnsafePickleError(f"{where}: object arrays are not allowed (dtype {dtype})")
    return dtype


def _make_allowed() -> Dict[Tuple[str, str], Callable[..., Any]]:
    core = _numpy_core()

    def reconstruct(subtype, shape, dtype):
        if subtype is not np.ndarray:
            raise UnsafePickleError(f"numpy _reconstruct of {subtype!r}: only numpy.ndarray is allowed")
        return core.multiarray._reconstruct(subtype, shape, _plain_dtype(dtype, "numpy _reconstruct"))

    def make_dtype(*args):
        # BUILD then calls the dtype's __setstate__ with the byte order and flags
        return _plain_dtype(np.dtype(*args), "numpy.dtype")

    def scalar(dtype, *args):
        return core.multiarray.scalar(_plain_dtype(dtype, "numpy scalar"), *args)

    def frombuffer(buf, dtype, shape, order):
        return core.numeric._frombuffer(buf, _plain_dtype(dtype, "numpy _frombuffer"), shape, order)

    def latin1_encode(text, encoding="utf-8", *rest):
        if codecs.lookup(encoding).name != "iso8859-1" or rest:
            raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r}: only latin-1 is allowed")
        return codecs.encode(text, "latin1")

    allowed: Dict[Tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): make_dtype,
        ("_codecs", "encode"): latin1_encode,
    }
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{pkg}.multiarray", "scalar")] = scalar
        allowed[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
    return allowed


ALLOWED_GLOBALS = _make_allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only ALLOWED_GLOBALS; `source` names the file in errors."""

    def __init__(self, file, source: str, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str):
        fn = ALLOWED_GLOBALS.get((module, name))
        if fn is None:
            raise UnsafePickleError(
                f"'{self.source}' refers to the global '{module}.{name}', which a CIFAR-10 python batch never "
                "contains (only dicts, lists, bytes, str, numbers and numpy arrays are allowed); refused without "
                "running it. Do not open this file with plain pickle if you did not make it yourself."
            )
        return fn


def load_restricted_pickle(path: str, encoding: str = "bytes") -> Any:
    """Unpickle `path` with RestrictedUnpickler. `encoding="bytes"` reads Python 2 strings (the official
    CIFAR files') as bytes, as torchvision and the CIFAR page's own snippet do."""
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, path, encoding=encoding).load()
        except UnsafePickleError as e:
            if path in str(e):
                raise
            raise UnsafePickleError(f"'{path}': {e}") from None
