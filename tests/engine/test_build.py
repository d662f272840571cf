import io
import os

import pytest
import torch
from torch import nn

from resdet.config import get_cfg, load_config
from resdet.engine import MetricWriter, ProgressBar, default_setup, per_process_batch, prepare_model, read_metrics


def test_default_setup_records_a_drawn_seed(tmp_path):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SEED = -1
    cfg.freeze()
    out, device = default_setup(cfg, distributed=False)
    assert device == torch.device("cpu")
    assert out.SEED >= 0 and out.is_frozen() and cfg.SEED == -1  # the caller's config is not changed
    saved = load_config(str(tmp_path / "config.yaml"))
    assert saved.SEED == out.SEED  # the run can be repeated from its config.yaml
    assert "world size 1, rank 0, device cpu, seed" in (tmp_path / "log.txt").read_text()
    assert torch.get_float32_matmul_precision() == "high"  # SOLVER.ALLOW_TF32 defaults to True
    torch.set_float32_matmul_precision("highest")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when there is no GPU")
def test_default_setup_refuses_missing_gpu(tmp_path):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    with pytest.raises(RuntimeError, match="MODEL.DEVICE is 'cuda' but no CUDA GPU"):
        default_setup(cfg, distributed=False)


def test_per_process_batch_and_prepare_model():
    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 6
    assert per_process_batch(cfg) == 6
    cfg.SOLVER.IMS_PER_BATCH = 0
    with pytest.raises(ValueError, match="IMS_PER_BATCH=0 must be a positive multiple"):
        per_process_batch(cfg)
    cfg.SOLVER.CHANNELS_LAST = True
    model = prepare_model(nn.Conv2d(3, 8, 3), cfg, torch.device("cpu"))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


def test_progress_bar_counts_from_the_resumed_iteration():
    buf = io.StringIO()
    bar = ProgressBar(100, start_iter=40, enabled=True, file=buf, mininterval=0)
    bar.update(1, loss=0.5)
    bar.close()
    text = buf.getvalue()
    assert "41/100" in text and "loss=0.5" in text


def test_metric_writer_lines_and_errors(tmp_path):
    w = MetricWriter(str(tmp_path), tensorboard=False, enabled=True)
    w.write(5, loss=torch.tensor(0.25), lr=0.1)
    w.write(6, loss=float("nan"))
    with pytest.raises(TypeError, match="metric 'name' must be a number; got 'x'"):
        w.write(7, name="x")
    with pytest.raises(ValueError, match="metric 'v' must be a scalar; got a tensor of shape \\(2,\\)"):
        w.write(7, v=torch.ones(2))
    w.close()
    assert read_metrics(str(tmp_path / "metrics.jsonl")) == [
        {"iteration": 5, "loss": 0.25, "lr": 0.1}, {"iteration": 6, "loss": None}]  # NaN is written null
    assert '"loss": null' in (tmp_path / "metrics.jsonl").read_text()
    # resuming at 5 drops what came after the checkpoint; an append-only writer keeps everything
    MetricWriter(str(tmp_path), start_iter=5, tensorboard=False, enabled=True).close()
    assert [r["iteration"] for r in read_metrics(str(tmp_path / "metrics.jsonl"))] == [5]
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2: not a JSON object"):
        read_metrics(str(tmp_path / "metrics.jsonl"))
    assert not os.path.exists(tmp_path / "log.txt")


def test_json_files_write_null_for_nan(tmp_path):
    import json

    from resdet.engine.logging import write_json

    path = write_json({"bbox/APs": float("nan"), "x": [float("inf"), 1.5, torch.tensor(2.0)], "n": 3},
                      str(tmp_path / "final_metrics.json"))

    def refuse(name):
        raise ValueError(f"bare {name} in the file")

    assert json.loads(open(path).read(), parse_constant=refuse) == {"bbox/APs": None, "x": [None, 1.5, 2.0], "n": 3}
