"""`tools/benchmark.py --train-step`: today's settings and the config's, each trained by the real loop on
the same photographs; and the loaders' worker count on a CPU."""
import pytest

pytest.importorskip("skimage", reason="benchmark photos need scikit-image (pip install -e '.[bench]')")

from resdet.benchmarks.main import main  # noqa: E402
from resdet.benchmarks.photos import write_photo_detection_dataset  # noqa: E402
from resdet.benchmarks.train_step import TODAY, format_train_steps, time_train_steps  # noqa: E402
from resdet.config import load_config  # noqa: E402
from resdet.engine.checkpoint import CheckpointError  # noqa: E402
from resdet.data.loader import loader_workers  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = "configs/custom_scratch_r18_gn.yaml"
# the recipe's step shrunk for a test: tiny images and widths (the timing is not what is tested)
TINY = ["INPUT.MIN_SIZE_TRAIN (64,) INPUT.MAX_SIZE_TRAIN 96 MODEL.FPN.OUT_CHANNELS 16 MODEL.ROI_BOX_HEAD.FC_DIM 32",
        "MODEL.ROI_MASK_HEAD.CONV_DIM 8 MODEL.ROI_MASK_HEAD.NUM_CONV 1 MODEL.RPN.PRE_NMS_TOPK_TRAIN 200",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN 50 SOLVER.IMS_PER_BATCH 2"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    write_photo_detection_dataset(root, "train", 6, min_side=96, max_side=128, seed=3)
    return root


def test_today_against_the_recipe_on_the_same_photos(photos):
    # TINY again after TODAY: the baseline's overrides come after the common ones, and TODAY's sizes and
    # widths would undo TINY's
    rows = time_train_steps(RECIPE, baseline=[TODAY, *TINY], opts=TINY, data=photos, steps=1, warmup=1, rounds=1)
    today, new = rows
    assert (today["variant"], new["variant"]) == ("today", "new")
    # today's settings are what the recipe had: torchvision's kernel, 2 workers, 256 RoIs an image, a
    # 128-channel mask head, 224-320 px, the RPN's 2000 / 1000 boxes (the recipe's: 64, 192-288, 1000 / 500)
    assert "MODEL.POOLER_CPU_KERNEL torchvision" in today["overrides"] and today["workers"] == 2
    for key in ("MODEL.ROI_MASK_HEAD.CONV_DIM 128", "INPUT.MIN_SIZE_TRAIN (224,256,288,320)",
                "MODEL.RPN.PRE_NMS_TOPK_TRAIN 2000 MODEL.RPN.POST_NMS_TOPK_TRAIN 1000"):
        assert key in TODAY
    recipe = load_config(RECIPE)
    assert recipe.MODEL.ROI_MASK_HEAD.CONV_DIM == 64 and tuple(recipe.INPUT.MIN_SIZE_TRAIN) == (192, 224, 256, 288)
    assert new["workers"] == 0 and "POOLER_CPU_KERNEL" not in new["overrides"]
    for r in rows:
        assert r["steps"] == 1 and r["s_per_step"] > 0 and r["cpu_s_per_step"] > 0
        assert 0 < r["last_loss"] < 100
    # the same start, the same images: the losses differ only by the kernels' rounding and the sampled RoIs
    assert abs(today["last_loss"] - new["last_loss"]) < 0.5 * today["last_loss"]
    assert today["loader_cpu_s_per_step"] > 0 == new["loader_cpu_s_per_step"]  # workers' CPU time, counted
    text = format_train_steps(rows)
    cost = [r["cpu_s_per_step"] + r["loader_cpu_s_per_step"] for r in rows]
    assert f"train step CPU: ratio {cost[0] / cost[1]:.2f}x" in text  # the workers' CPU is the baseline's cost too


def test_command_line(photos, capsys):
    assert main(["--train-step", RECIPE, "--device", "cpu", "--data", photos, "--steps", "1", "--warmup", "0",
                 "--rounds", "1", "--baseline", "MODEL.POOLER_CPU_KERNEL torchvision", "--opts", *TINY]) == 0
    out = capsys.readouterr().out
    assert "train step custom_scratch_r18_gn.yaml: ratio" in out and "today" in out and "new" in out


def test_the_baseline_starts_from_its_own_model_where_given(photos, tmp_path):
    # the baseline's file is the one opened for it (here missing, so named); the new variant is not built
    with pytest.raises(CheckpointError, match="today_model.pth"):
        time_train_steps(RECIPE, baseline=[TODAY], opts=TINY, data=photos, steps=1, rounds=1,
                         weights=str(tmp_path / "new_model.pth"), baseline_weights=str(tmp_path / "today_model.pth"))


def test_missing_data_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotations/train.json"):
        time_train_steps(RECIPE, data=str(tmp_path), steps=1, rounds=1)


def test_workers_on_the_cpu():
    cfg = load_config(RECIPE, ["MODEL.DEVICE", "cpu"])
    assert loader_workers(cfg) == 0  # the recipe decodes in the training process on a CPU
    assert loader_workers(load_config(RECIPE, ["MODEL.DEVICE", "cuda"])) == 2
    assert loader_workers(load_config(RECIPE, ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS_ON_CPU", -1])) == 2
