import os

# albumentations checks the network for updates at import unless told not to; tests never download.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


def _share_cores_between_workers() -> None:
    """Under pytest-xdist (the README's `-n auto`), N worker processes run tests side by side: each takes
    its share of the cores for torch's intra-op threads (and passes it to the processes its tests start,
    through OMP_NUM_THREADS), where N workers with a thread per core each would oversubscribe the machine
    and spin-wait (several times slower on two cores)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
        torch.set_num_threads(share)


_share_cores_between_workers()

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _resdet_logger_propagates():
    """A run's setup_logger stops the "resdet" logger from propagating (its own console handler prints);
    undo that after each test, so a later test's caplog (attached to the root logger) still sees it."""
    yield
    log = logging.getLogger("resdet")
    for h in [h for h in log.handlers if getattr(h, "_resdet", False)]:
        log.removeHandler(h)
        h.close()
    log.propagate = True


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: on two shared cores, two threads spin-waiting for each
    other run several times slower than one (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cifar10_jpeg():
    """The lossy CIFAR-10 copy beside the checkout (../shared/data/cifar10-jpeg), or a skip."""
    root = os.environ.get("RESDET_CIFAR10_JPEG", os.path.join(SHARED_DATA, "cifar10-jpeg"))
    if not os.path.isdir(os.path.join(root, "train")):
        pytest.skip(f"real CIFAR-10 JPEG copy not found at {root} (set RESDET_CIFAR10_JPEG)")
    return root


def pytest_addoption(parser):
    parser.addoption("--gpu-test-seconds", default=None,
                     help="time limit of every test in tests/gpu (default: its module's, tests/gpu/conftest.py)")
    parser.addoption("--gpu-device", default="cuda",
                     help="device for the tests in tests/gpu (marker 'gpu'): 'cuda' (default; they skip without a "
                          "GPU), 'cuda:N', or 'cpu' to rehearse them on the CPU")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: the GPU acceptance checks (tests/gpu); `pytest -m gpu` on a GPU machine")
