"""CIFAR python batches are read without running code (issue 16): resdet/data/safe_pickle.py."""
import os
import pickle
import pickletools

import numpy as np
import pytest

from resdet.classification.data import _cifar_class_names
from resdet.data.folders import cifar10_class_names, load_cifar10_python
from resdet.data.safe_pickle import UnsafePickleError, load_restricted_pickle
from tests.classification.helpers import make_cifar_batches


def _globals_named(path):
    with open(path, "rb") as f:
        ops = list(pickletools.genops(f.read()))
    names = {arg.replace(" ", ".") for op, arg, _ in ops if op.name == "GLOBAL"}
    return names, any(op.name == "STACK_GLOBAL" for op, _, _ in ops)


@pytest.mark.parametrize("protocol", [2, 4])
def test_real_layout_batches_load_in_protocol_2_and_4(tmp_path, protocol):
    root, expected = make_cifar_batches(tmp_path, per_batch=5, protocol=protocol)
    d = os.path.join(root, "cifar-10-batches-py")
    names, stack_global = _globals_named(os.path.join(d, "data_batch_1"))
    if protocol == 2:   # the file really goes through numpy's and _codecs' globals
        assert {"_codecs.encode", "numpy.ndarray", "numpy.dtype"} <= names
        assert any(n.endswith("multiarray._reconstruct") for n in names)
    else:
        assert stack_global
    batch = load_restricted_pickle(os.path.join(d, "data_batch_1"))
    assert set(batch) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (5, 3072)
    assert batch[b"batch_label"] == b"data_batch_1" and batch[b"filenames"][0] == b"data_batch_1_00000.png"
    x, y = load_cifar10_python(root, train=True)
    assert x.shape == (25, 3, 32, 32)
    assert np.array_equal(x[:5].numpy(), expected["data_batch_1"][0]) and y[:5].tolist() == expected["data_batch_1"][1]
    assert cifar10_class_names(root) == [f"c{i}" for i in range(10)]


def test_numpy_scalars_and_protocol_5_arrays_load(tmp_path):
    path = str(tmp_path / "b")
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [np.int64(3), 4], "s": "x"}
    for protocol in (2, 5):
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
        out = load_restricted_pickle(path)
        assert np.array_equal(out[b"data"], obj[b"data"]) and out[b"labels"] == [3, 4] and out["s"] == "x"


def test_numpy_1x_names_of_the_official_files_load(tmp_path):
    """The official files were written by numpy 1.x, whose pickles name numpy.core.multiarray._reconstruct
    (numpy 2 writes numpy._core); both resolve to the installed numpy's function."""
    path = str(tmp_path / "data_batch_1")
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")   # GLOBAL lines end with newlines
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    with open(path, "wb") as f:
        f.write(raw)
    out = load_restricted_pickle(path)
    assert np.array_equal(out[b"data"], data) and out[b"labels"] == [1, 2]


class _RunsCode:
    """Unpickling this calls os.system (or anything else named), which must never happen."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _write(path, obj, protocol):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_batch_that_calls_os_system_is_refused_and_nothing_runs(tmp_path, protocol, name):
    root, _ = make_cifar_batches(tmp_path / "c10", per_batch=2)
    path = os.path.join(root, "cifar-10-batches-py", name)
    marker = tmp_path / "pwned"
    payload = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1],
               b"label_names": [b"a"] * 10, b"x": _RunsCode(os.system, f"touch {marker}")}
    _write(path, payload, protocol)
    with pytest.raises(UnsafePickleError) as e:
        if name == "batches.meta":
            _cifar_class_names(root)          # what train_cls calls; a refused meta file is not skipped
        else:
            load_cifar10_python(root, train=name != "test_batch")
    msg = str(e.value)
    assert path in msg and f"'{os.system.__module__}.system'" in msg, msg   # posix.system
    assert not marker.exists()


@pytest.mark.parametrize("target", [
    (eval, ("1+1",)), (os.getcwd, ()), (pickle.loads, (b"N.",)),
    (np.load, ("/nonexistent",)), (np.frombuffer, (b"\x00",)),
])
def test_every_other_global_is_refused_by_name(tmp_path, target):
    fn, args = target
    path = str(tmp_path / "b")
    _write(path, {b"x": _RunsCode(fn, *args)}, 4)
    with pytest.raises(UnsafePickleError, match=rf"\.{fn.__name__}', which"):
        load_restricted_pickle(path)


def test_allowed_globals_are_checked_too(tmp_path):
    path = str(tmp_path / "b")
    # an object array would unpickle arbitrary items; only plain numeric arrays are allowed
    _write(path, {b"data": np.array([1, "a"], dtype=object)}, 2)
    with pytest.raises(UnsafePickleError, match="object"):
        load_restricted_pickle(path)
    # _codecs.encode is allowed for latin-1 only (what protocol 2 writes for bytes)
    import _codecs

    _write(path, _RunsCode(_codecs.encode, "x", "rot13"), 2)
    with pytest.raises(UnsafePickleError, match="latin-1"):
        load_restricted_pickle(path)
    # a subclass of ndarray is not reconstructed
    _write(path, np.ma.masked_array([1, 2]), 2)
    with pytest.raises(UnsafePickleError):
        load_restricted_pickle(path)


# --- issue 21: check what comes out, not only what goes in -------------------------------------------
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from tests.data import cifar_crafted  # noqa: E402

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def crafted_outcomes(tmp_path_factory):
    """Every crafted batch loaded in one child process (a segfault there fails these tests, not pytest)."""
    work = tmp_path_factory.mktemp("crafted")
    proc = subprocess.run([sys.executable, "-m", "tests.data.cifar_crafted", str(work)], cwd=_REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
    outcomes = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            outcomes[row["case"]] = row
    last = [line for line in proc.stderr.splitlines() if line.startswith("running ")][-1:]
    return outcomes, proc.returncode, last


@pytest.mark.parametrize("name", [n for n, c in cifar_crafted.cases().items() if c[2] == "refused"])
def test_a_crafted_batch_is_refused_by_name_without_crashing(crafted_outcomes, name):
    outcomes, rc, last = crafted_outcomes
    assert name in outcomes, f"the child died (exit status {rc}) at {last}: {name} never returned"
    row = outcomes[name]
    assert row["error"] is not None, f"{name} was accepted: {row}"
    assert row["user_error"], f"{name}: {row['error']} is not one of the named user errors: {row['message']}"
    assert row["path"] in row["message"], row["message"]


@pytest.mark.parametrize("name", [n for n, c in cifar_crafted.cases().items() if c[2] == "loads"])
def test_arrays_numpy_writes_from_views_load_as_fresh_c_contiguous_copies(crafted_outcomes, name):
    outcomes, rc, last = crafted_outcomes
    assert name in outcomes, f"the child died (exit status {rc}) at {last}"
    row = outcomes[name]
    assert row["error"] is None, row["message"]
    assert row["equal"] and row["writable"] and row["contiguous"], row


def test_the_dtype_rewrite_is_refused_before_any_array_exists(tmp_path):
    """The refusal names the dtype rewrite itself (the BUILD state), whatever the offset."""
    path = str(tmp_path / "b")
    with open(path, "wb") as f:
        f.write(cifar_crafted._batch(cifar_crafted.array_with_dtype(np.dtype("u1"))))
    assert load_restricted_pickle(path)[b"data"].shape == (2, 3072)   # the same pickle with numpy's own state loads
    with open(path, "wb") as f:
        f.write(cifar_crafted._batch(cifar_crafted.array_with_dtype(cifar_crafted.dtype_rewritten_by_build("u1", 16))))
    with pytest.raises(UnsafePickleError, match=r"numpy.dtype\('u1'\) with the state .*only the state numpy writes"):
        load_restricted_pickle(path)


def test_build_on_an_allowed_function_is_refused(tmp_path):
    """BUILD sets attributes on whatever it is given; on an allowed global it would change it for the process."""
    path = str(tmp_path / "b")
    raw = b"\x80\x02cnumpy._core.multiarray\nscalar\nN}X\x0c\x00\x00\x00__defaults__)s\x86b."  # (None, {...})
    with open(path, "wb") as f:
        f.write(raw)
    with pytest.raises(UnsafePickleError, match="BUILD"):
        load_restricted_pickle(path)
