"""The GPU acceptance checks: every module here is marked `gpu` (pytestmark) and its tests take `device`.

    python -m pytest -m gpu                       # on a GPU machine: device "cuda"
    python -m pytest tests/gpu --gpu-device cpu   # rehearsal on the CPU (what can run there)

Without a visible GPU (and without --gpu-device cpu) they skip, saying why, so the plain
`python -m pytest tests -q` passes everywhere. Tests that only mean something on CUDA (pinned-memory
copies, the sync-debug host-read budget) skip on the CPU with their own reason.

A first contact with a GPU may be short, so the run returns what it can: the tests run cheapest module
first (GPU_MODULES), each under a time limit on CUDA (its module's, or --gpu-test-seconds, which also
sets one for a CPU rehearsal) after which it fails with a GpuTestTimeout and the next one runs (a hang
inside a CUDA call that never returns ends the whole run 60 s later, with every thread's stack printed),
and the end of the output lists every GPU test that ran, its outcome and its seconds.
"""
import faulthandler
import signal
import sys

import pytest
import torch

# tests/gpu modules, cheapest first (estimates on one H100), with each test's time limit in seconds
GPU_MODULES = {
    "test_device_parity.py": 120,
    "test_host_reads.py": 180,
    "test_data_on_device.py": 120,
    "test_gpu_decode_cuda.py": 120,
    "test_amp_and_layouts.py": 180,
    "test_capture_with_loader.py": 240,
    "test_export_cuda.py": 300,
    "test_cifar_fast_step.py": 420,
}
_ORDER = list(GPU_MODULES)


class GpuTestTimeout(BaseException):
    """A GPU test ran past its time limit (tests/gpu/conftest.py). A BaseException, so that no `except
    Exception` in the code under test swallows it; pytest reports it as the test's failure."""


def pytest_collection_modifyitems(config, items):
    """GPU tests cheapest module first, in their own order within a module; other tests stay put."""
    gpu = [i for i in items if i.get_closest_marker("gpu")]
    if not gpu:
        return
    rank = {id(i): (_ORDER.index(i.path.name) if i.path.name in GPU_MODULES else len(_ORDER), n)
            for n, i in enumerate(gpu)}
    ordered = iter(sorted(gpu, key=lambda i: rank[id(i)]))
    items[:] = [next(ordered) if i.get_closest_marker("gpu") else i for i in items]


def _limit(item):
    """Seconds, or None: no limit on a CPU rehearsal unless --gpu-test-seconds says so."""
    given = item.config.getoption("--gpu-test-seconds")
    if given:
        return float(given)
    if not item.config.getoption("--gpu-device").startswith("cuda"):
        return None
    return float(GPU_MODULES.get(item.path.name, 300))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    limit = _limit(item) if item.get_closest_marker("gpu") and hasattr(signal, "SIGALRM") else None
    if limit is None:
        yield
        return

    def alarm(signum, frame):
        raise GpuTestTimeout(f"{item.nodeid} ran past its limit of {limit:.0f} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    # a hang the alarm cannot interrupt (inside a CUDA call): print every stack and end the run
    faulthandler.dump_traceback_later(limit + 60, exit=True, file=sys.__stderr__)  # past pytest's capture
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


_RAN = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("gpu") and (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
        _RAN.append((item.nodeid, report.outcome, report.duration))


def pytest_terminal_summary(terminalreporter):
    if not _RAN:
        return
    terminalreporter.section(f"GPU tests that ran ({len(_RAN)})")
    for nodeid, outcome, seconds in _RAN:
        terminalreporter.write_line(f"{outcome:>8} {seconds:8.1f} s  {nodeid}")

# the classification input tests' photographs, shared with the GPU checks
from tests.classification.conftest import photos  # noqa: F401

NO_GPU = ("no CUDA device visible (torch.cuda.is_available() is False): the GPU acceptance checks need one; "
          "run them on a GPU machine with `pytest -m gpu`, or rehearse them here with `--gpu-device cpu`")


@pytest.fixture(scope="session")
def device(request):
    name = request.config.getoption("--gpu-device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(NO_GPU)
    device = torch.device(name)
    if device.type == "cpu":
        # a rehearsal on a shared CPU: threads spin-waiting for each other make it many times slower
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield device
        torch.set_num_threads(threads)
    else:
        yield device


@pytest.fixture
def cuda_only(device):
    if device.type != "cuda":
        pytest.skip("meaningful on CUDA only (rehearsal on the CPU: nothing to check)")
    return device


@pytest.fixture(autouse=True)
def _exact_float32():
    """float32 as float32 (no TF32) and deterministic cuDNN while comparing devices and layouts."""
    matmul, cudnn_tf32, det, bench = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                                      torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = (matmul, cudnn_tf32, det, bench)
