"""Reading CIFAR's python batches (pickles made elsewhere) without running any code they name.

    batch = load_restricted_pickle(path)   # dicts, lists, tuples, bytes, str, numbers, plain numpy arrays

A pickle is a small program: its GLOBAL / STACK_GLOBAL opcodes import any callable by name, REDUCE calls
it and BUILD hands it a state to install, so `pickle.load` on a downloaded file can run `os.system`. The
official CIFAR-10 files (`data_batch_1` ... `test_batch`, `batches.meta`) hold only dicts, lists, bytes,
str, ints and numpy arrays of plain numbers; this unpickler resolves only the names those need and
refuses every other one with an `UnsafePickleError` naming the file and the global, before anything is
called.

Arrays are never built by numpy from the pickle's instructions. Checking numpy's own functions at the
door is not enough: BUILD installs a state *after* the check, and a dtype's state can turn a checked
`uint8` into a structured dtype whose field lies far past its one-byte item (numpy then reads, or
segfaults on, memory outside the buffer), and `numpy.ndarray`'s state can carry object items. So every
numpy name resolves to a stand-in that only records what the pickle asks for:
- `numpy.dtype(code, align, copy)` + its BUILD state: accepted only for the plain numeric codes
  (`b1`, `i1`..`i8`, `u1`..`u8`, `f2`..`f8`) with the state numpy itself writes for them,
  `(3, byteorder, None, None, None, -1, -1, 0)`: no fields, no sub-array, no object, no void.
- `numpy(._)core.multiarray._reconstruct(numpy.ndarray, ...)` + its BUILD state `(1, shape, dtype,
  is_fortran, raw bytes)` (numpy 1.x writers such as the official files name `numpy.core`, numpy 2
  `numpy._core`), and protocol 5's `numpy(._)core.numeric._frombuffer(bytes, dtype, shape, order)`:
  the array is made here, by `np.frombuffer` over the raw bytes with the accepted dtype, after checking
  that the shape's item count times the item size is exactly the number of bytes, and copied into a
  new C-contiguous array.
- `numpy(._)core.multiarray.scalar(dtype, bytes)`: one item of an accepted dtype from exactly its bytes.
- `_codecs.encode(text, "latin1")`: how Python 3 writes bytes in protocol 2 (only latin-1 accepted).
After loading, the result is walked once (at most MAX_DEPTH containers deep) and every stand-in replaced
by what it made; one left unfinished (an array whose data never came) is refused.

The file is read whole first, so no opcode can make the reader allocate more than the file's size.
Every failure is a `PickleDataError` (malformed) or `UnsafePickleError` (refused), both UserInputErrors
naming the file. `pickle.Unpickler.find_class` is the documented hook for restricting globals
("Restricting Globals" in the pickle docs); nothing in the standard library or numpy restricts BUILD.
"""
from __future__ import annotations

import codecs
import io
import math
import pickle
from typing import Any, Callable, Dict, Tuple

import numpy as np

from resdet.utils.errors import UserInputError

__all__ = ["PickleDataError", "UnsafePickleError", "RestrictedUnpickler", "load_restricted_pickle",
           "ALLOWED_GLOBALS", "PLAIN_DTYPE_CODES", "MAX_DEPTH"]

# The numeric dtype codes an array or scalar may have (numpy's own pickle spelling of each).
PLAIN_DTYPE_CODES = ("b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8")
# How deeply containers may nest in the result (CIFAR's files: a dict of lists, depth 2).
MAX_DEPTH = 64
MAX_ARRAY_DIMS = 32   # numpy's own limit (NPY_MAXDIMS in numpy 1.x)


class PickleDataError(UserInputError, pickle.UnpicklingError):
    """A pickle that is malformed or holds something other than plain data; the message names the file."""


class UnsafePickleError(PickleDataError):
    """A pickle names a global outside the allowed set (or misuses an allowed one); nothing was called."""


class _NdarrayName:
    """What the global `numpy.ndarray` resolves to: only a marker for `_reconstruct`'s first argument."""

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError("numpy.ndarray called directly: only numpy's own _reconstruct path is allowed")

    def __reduce__(self):  # never pickled back
        raise TypeError("not picklable")


_NDARRAY = _NdarrayName()


class _DtypeSpec:
    """A `numpy.dtype(code, align, copy)` the pickle asks for; `dtype` once its state is accepted."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        if isinstance(code, bytes):
            code = code.decode("latin-1")
        if not isinstance(code, str) or code not in PLAIN_DTYPE_CODES:
            raise UnsafePickleError(f"numpy.dtype({_short(code)}): only plain numeric dtypes {PLAIN_DTYPE_CODES} are "
                                    "allowed (no object, void, structured or string dtypes)")
        self.code, self.byteorder = code, "="

    def __setstate__(self, state: Any) -> None:
        # numpy writes (3, byteorder, subarray, names, fields, elsize, alignment, flags); for a plain numeric
        # dtype the last six are always None, None, None, -1, -1, 0. Anything else would rebuild the dtype.
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3
                and state[1] in ("<", ">", "|", "=") and state[2:] == (None, None, None, -1, -1, 0)):
            raise UnsafePickleError(f"numpy.dtype({self.code!r}) with the state {_short(state)}: only the state numpy "
                                    "writes for a plain numeric dtype is allowed (no fields, sub-arrays or sizes)")
        self.byteorder = state[1]

    @property
    def dtype(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt if self.byteorder in ("|", "=") else dt.newbyteorder(self.byteorder)


class _ArraySpec:
    """A `_reconstruct(numpy.ndarray, ...)` call; the array is made here when BUILD hands over its data."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise UnsafePickleError(f"numpy array state {_short(state)}: expected (version 1, shape, dtype, "
                                    "is_fortran, raw bytes) as numpy writes it")
        shape, spec, fortran, raw = state
        if not isinstance(fortran, bool):
            raise UnsafePickleError(f"numpy array state: is_fortran must be True or False, got {_short(fortran)}")
        self.array = _array_from_bytes(raw, spec, shape, "F" if fortran else "C")


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value) if not isinstance(value, (_DtypeSpec, _ArraySpec)) else type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _array_from_bytes(raw: Any, spec: Any, shape: Any, order: Any) -> np.ndarray:
    """A new C-contiguous array of `spec`'s dtype over exactly the bytes `raw`."""
    if not isinstance(spec, _DtypeSpec):
        raise UnsafePickleError(f"a numpy array's dtype must be a plain numpy.dtype, got {_short(spec)}")
    if isinstance(raw, str):  # protocol 0-2 bytes read with encoding="latin1"
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)):
        # numpy writes a list of items here for object arrays, whose items would be unpickled objects
        raise UnsafePickleError(f"a numpy array's data must be raw bytes, got {type(raw).__name__} "
                                "(object arrays are not allowed)")
    if not (isinstance(shape, tuple) and len(shape) <= MAX_ARRAY_DIMS
            and all(type(s) is int and s >= 0 for s in shape)):
        raise UnsafePickleError(f"a numpy array's shape must be a tuple of at most {MAX_ARRAY_DIMS} non-negative "
                                f"integers, got {_short(shape)}")
    if order not in ("C", "F"):
        raise UnsafePickleError(f"a numpy array's order must be 'C' or 'F', got {_short(order)}")
    dtype = spec.dtype
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise UnsafePickleError(f"a numpy array of shape {shape} and dtype {dtype} needs "
                                f"{math.prod(shape) * dtype.itemsize} bytes, the pickle gives {len(raw)}")
    # a copy (np.array copies): writable, C-contiguous, owning its memory, whatever order the pickle used
    return np.array(np.frombuffer(raw, dtype=dtype).reshape(shape, order=order), order="C")


def _make_allowed() -> Dict[Tuple[str, str], Callable[..., Any]]:
    def reconstruct(subtype, shape=None, typecode=None):
        if subtype is not _NDARRAY:
            raise UnsafePickleError(f"numpy _reconstruct of {_short(subtype)}: only numpy.ndarray is allowed")
        return _ArraySpec()

    def scalar(spec, data=None):
        if not isinstance(spec, _DtypeSpec):
            raise UnsafePickleError(f"numpy scalar of {_short(spec)}: only plain numeric dtypes are allowed")
        if isinstance(data, str):
            data = data.encode("latin-1")
        dtype = spec.dtype
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise UnsafePickleError(f"numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes, got {_short(data)}")
        return np.frombuffer(data, dtype=dtype)[0]

    def frombuffer(buf, spec, shape, order):
        return _array_from_bytes(buf, spec, shape, order)

    def latin1_encode(text, encoding="utf-8", *rest):
        if not isinstance(text, str) or not isinstance(encoding, str) or rest:
            raise UnsafePickleError(f"_codecs.encode({_short(text)}, {_short(encoding)}): only text with "
                                    "latin-1 is allowed")
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            name = ""
        if name != "iso8859-1":
            raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r}: only latin-1 is allowed")
        try:
            return codecs.encode(text, "latin1")
        except UnicodeEncodeError as e:
            raise PickleDataError(f"_codecs.encode: {e}") from None

    allowed: Dict[Tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _DtypeSpec,
        ("_codecs", "encode"): latin1_encode,
    }
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{pkg}.multiarray", "scalar")] = scalar
        allowed[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
    return allowed


ALLOWED_GLOBALS = _make_allowed()


class RestrictedUnpickler(pickle._Unpickler):
    """The standard library's pure-Python unpickler, resolving only ALLOWED_GLOBALS (stand-ins for numpy's
    names, see the module docstring) and refusing BUILD on anything but those stand-ins; `source` names the
    file in errors. Use `load_restricted_pickle`, which also checks the opcodes first and replaces the
    stand-ins by what they made.

    The pure-Python class, not the C one, because only its opcode table can be changed: BUILD on any other
    object sets attributes (a tuple state's second part is applied with setattr), which could rewrite the
    allowed functions' defaults or a stand-in's class for the rest of the process. CIFAR's files have a
    few tens of thousands of opcodes: milliseconds either way."""

    dispatch = dict(pickle._Unpickler.dispatch)

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

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (_DtypeSpec, _ArraySpec)):
            raise UnsafePickleError(f"BUILD (installing a state) on a {type(inst).__name__}: only numpy dtypes and "
                                    "arrays take a state")
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build


def _materialise(root: Any) -> Any:
    """`root` with every stand-in replaced by what it made; containers at most MAX_DEPTH deep."""
    def final(value: Any) -> Any:
        if isinstance(value, _ArraySpec):
            if value.array is None:
                raise UnsafePickleError("a numpy array without its data (BUILD missing)")
            return value.array
        if isinstance(value, _DtypeSpec):
            return value.dtype
        if value is _NDARRAY:
            raise UnsafePickleError("a bare numpy.ndarray global in the data")
        return value

    root = final(root)
    seen = set()
    stack = [(root, 1)]
    while stack:
        obj, depth = stack.pop()
        if not isinstance(obj, (dict, list, tuple, set, frozenset)) or id(obj) in seen:
            continue
        if depth > MAX_DEPTH:
            raise PickleDataError(f"containers nested more than {MAX_DEPTH} deep")
        seen.add(id(obj))
        if isinstance(obj, dict):
            for k in obj:
                if isinstance(k, (_ArraySpec, _DtypeSpec, _NdarrayName)):
                    raise UnsafePickleError("a numpy object used as a dict key")
            for k, v in list(obj.items()):
                obj[k] = final(v)
                stack.append((obj[k], depth + 1))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                obj[i] = final(v)
                stack.append((obj[i], depth + 1))
        else:  # tuples, sets: immutable, so a stand-in inside one cannot be replaced in place
            for v in obj:
                if isinstance(v, (_ArraySpec, _DtypeSpec, _NdarrayName)):
                    raise UnsafePickleError(f"a numpy array inside a {type(obj).__name__} (CIFAR's files have none)")
                stack.append((v, depth + 1))
    return root


def load_restricted_pickle(path: str, encoding: str = "bytes") -> Any:
    """Unpickle `path` with RestrictedUnpickler. `encoding="bytes"` reads Python 2 strings (the official
    CIFAR files') as bytes, as torchvision and the CIFAR page's own snippet do. Every failure is a
    PickleDataError / UnsafePickleError naming `path`."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), path, encoding=encoding).load()
        return _materialise(obj)
    except PickleDataError as e:
        if path in str(e):
            raise
        raise type(e)(f"'{path}': {e}") from None
    except (Exception, RecursionError) as e:  # malformed data: pickle raises many types (EOFError, KeyError, ...)
        raise PickleDataError(f"'{path}' is not a readable pickle of plain data: {type(e).__name__}: "
                              f"{_short(str(e), 300)}") from None
