"""tools/benchmark.py --cifar (resdet/benchmarks/cifar.py) on the CPU, at toy size. Only the eager mode
here: the compiled mode's first compilation costs ~35 CPU-seconds on these cores (measured), and its
step is checked against eager in tests/engine/test_static_step.py. Times are printed, never asserted."""
import json

import pytest
import torch

pytest.importorskip("skimage", reason="the benchmark's photographs come with scikit-image (pip install -e '.[dev]')")

from resdet.benchmarks.main import main  # noqa: E402
from resdet.benchmarks.cifar import cifar_step_rates, photo_cifar_images  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def test_photo_crops_are_cifar_sized_photographs():
    x, y = photo_cifar_images(32, num_classes=10)
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (32,) and int(y.max()) < 10
    assert x.float().std() > 20          # photographs, not flat colour
    assert len({bytes(im.numpy()) for im in x}) == 32


def test_step_rates_rows_and_the_cli(tmp_path, capsys):
    rows = cifar_step_rates("cpu", depth=8, iters=2, batch=8, modes=("eager",), rounds=2, warmup=1, num_images=64)
    (row,) = rows
    assert row["mode"] == "eager" and row["kind"] == "cifar_step" and row["batch"] == 8 and row["depth"] == 8
    assert row["it_per_s"] > 0 and row["ratio_to_eager"] == 1.0 and len(row["rounds_it_per_s"]) == 2
    assert row["img_per_s"] == pytest.approx(8 * row["it_per_s"])
    out = tmp_path / "rows.jsonl"
    assert main(["--cifar", "--device", "cpu", "--depth", "8", "--batch", "8", "--iters", "2", "--rounds", "1",
                 "--warmup", "1", "--modes", "eager", "--images", "64", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| mode | it/s |" in printed and "| eager |" in printed and "ratio = mode it/s / eager it/s" in printed
    assert json.loads(out.read_text().splitlines()[0])["mode"] == "eager"


def test_bad_requests_are_errors():
    assert [r["mode"] for r in cifar_step_rates("cpu", depth=8, iters=1, batch=8, rounds=1, warmup=1,
                                                num_images=16)] == ["eager"]   # the CPU default: no compiling
    with pytest.raises(ValueError, match="include 'eager'"):
        cifar_step_rates("cpu", modes=("compiled",))
    with pytest.raises(ValueError, match="need a CUDA device"):
        cifar_step_rates("cpu", modes=("eager", "cuda_graph"))
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_step_rates("cpu", depth=10, modes=("eager",), iters=1, rounds=1, warmup=1, num_images=8)
