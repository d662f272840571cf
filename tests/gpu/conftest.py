"""The GPU acceptance checks: every module here is marked `gpu` (pytestmark) and its tests take `device`.

    python -m pytest -m gpu                       # on a GPU machine: device "cuda"
    python -m pytest tests/gpu --gpu-device cpu   # rehearsal on the CPU (what can run there)

Without a visible GPU (and without --gpu-device cpu) they skip, saying why, so the plain
`python -m pytest tests -q` passes everywhere. Tests that only mean something on CUDA (pinned-memory
copies, the sync-debug host-read budget) skip on the CPU with their own reason.
"""
import pytest
import torch

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
