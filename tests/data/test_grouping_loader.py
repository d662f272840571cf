import itertools

import pytest
import torch

from resdet.config import get_cfg
from resdet.data.grouping import AspectRatioGroupedBatchSampler, aspect_ratio_groups
from resdet.data.loader import InferenceSampler, build_detection_test_loader, build_detection_train_loader
from resdet.data.samplers import InfiniteSampler


def _batches(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_grouped_batches_hold_one_aspect_and_resume_exactly():
    records = [{"width": 100 + 37 * i % 90, "height": 120} for i in range(23)]
    groups = aspect_ratio_groups(records)
    assert set(groups) == {0, 1}
    full = _batches(AspectRatioGroupedBatchSampler(InfiniteSampler(23, seed=5), groups, 4), 30)
    for b in full:
        assert len(b) == 4 and len({groups[i] for i in b}) == 1
    # every index shows up with the right frequency over several epochs (nothing lost in buckets)
    counts = torch.bincount(torch.tensor([i for b in full for i in b]), minlength=23)
    assert counts.min() >= 3 and counts.max() <= 7
    resumed = _batches(AspectRatioGroupedBatchSampler(InfiniteSampler(23, seed=5), groups, 4, start_batch=17), 13)
    assert resumed == full[17:]
    state = AspectRatioGroupedBatchSampler(InfiniteSampler(23, seed=5), groups, 4).state_dict(iteration=9)
    s = AspectRatioGroupedBatchSampler(InfiniteSampler(23, seed=5), groups, 4)
    s.load_state_dict(state)
    assert _batches(s, 3) == full[9:12]


def test_grouped_batches_shard_over_ranks():
    groups = [i % 2 for i in range(40)]
    per_rank = [_batches(AspectRatioGroupedBatchSampler(InfiniteSampler(40, seed=1, rank=r, world_size=2), groups, 2), 5)
                for r in range(2)]
    seen0 = {i for b in per_rank[0] for i in b}
    seen1 = {i for b in per_rank[1] for i in b}
    assert not seen0 & seen1  # within the first epoch the two ranks never take the same image


def test_inference_sampler_covers_each_index_once():
    parts = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
    assert parts[0] == [0, 1, 2, 3]


def _shapes_cfg(tmp_path, **extra):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("shapes_train",)
    cfg.DATASETS.TEST = ("shapes_val",)
    cfg.DATASETS.SHAPES.ROOT = str(tmp_path)
    cfg.DATASETS.SHAPES.NUM_TRAIN = 12
    cfg.DATASETS.SHAPES.NUM_VAL = 5
    cfg.DATASETS.SHAPES.MIN_SIDE, cfg.DATASETS.SHAPES.MAX_SIDE = 64, 96
    cfg.INPUT.MIN_SIZE_TRAIN = (64, 80)
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MAX_SIZE_TEST = 128
    cfg.MODEL.MASK_ON = True
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    for k, v in extra.items():
        cfg.merge_from_list([k, v])
    return cfg


@pytest.mark.parametrize("grouping", [True, False])
def test_train_loader_batches_and_resumes_with_the_same_augmentation(tmp_path, grouping):
    cfg = _shapes_cfg(tmp_path, **{"INPUT.ASPECT_RATIO_GROUPING": grouping, "INPUT.RANDOM_FLIP_PROB": 0.5})
    loader = build_detection_train_loader(cfg)
    assert loader.metadata.thing_classes == ["circle", "square", "triangle"]
    it = iter(loader)
    batches = [next(it) for _ in range(6)]
    images, targets = batches[0]
    assert len(images) == len(targets) == 2
    for im, t in zip(images, targets):
        assert im.dtype == torch.float32 and im.shape[0] == 3 and min(im.shape[1:]) in (64, 80)
        assert t["masks"].shape[1:] == im.shape[1:] and len(t["boxes"]) == len(t["labels"]) > 0
    # a loader started at iteration 4 (as after a resume), here with a worker process, gives batches
    # 4 and 5 again: same images, same scales, same flips
    cfg.merge_from_list(["DATALOADER.NUM_WORKERS", 1])
    resumed = iter(build_detection_train_loader(cfg, start_iter=4))
    for expected in batches[4:6]:
        got = next(resumed)
        assert [int(t["image_id"]) for t in got[1]] == [int(t["image_id"]) for t in expected[1]]
        for a, b in zip(got[0], expected[0]):
            assert torch.equal(a, b)
        for a, b in zip(got[1], expected[1]):
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["masks"], b["masks"])


def test_test_loader_keeps_every_image_and_points_at_its_json(tmp_path):
    cfg = _shapes_cfg(tmp_path)
    loader = build_detection_test_loader(cfg, "shapes_val")
    seen = [int(t["image_id"]) for _, ts in loader for t in ts]
    assert seen == [1, 2, 3, 4, 5]
    assert loader.json_file.endswith("annotations.json")


def test_unknown_dataset_name_lists_the_registered_ones(tmp_path):
    cfg = _shapes_cfg(tmp_path, **{"DATASETS.TRAIN": ("shapes_tain",)})
    with pytest.raises(KeyError, match="Unknown dataset 'shapes_tain'. Registered: .*shapes_train"):
        build_detection_train_loader(cfg)


def test_custom_dataset_from_config(tmp_path):
    from tests.data.coco_fixtures import write_case

    json_path, image_dir, _ = write_case(tmp_path)
    cfg = _shapes_cfg(tmp_path, **{"DATASETS.CUSTOM_NAMES": ["mine"], "DATASETS.CUSTOM_JSONS": [json_path],
                                   "DATASETS.CUSTOM_IMAGE_DIRS": [image_dir], "DATASETS.TRAIN": ("mine",)})
    loader = build_detection_train_loader(cfg)
    assert loader.metadata.thing_classes == ["cat", "dog", "bird"]
    assert len(loader.dataset) == 2  # empty and crowd-only images are skipped
    cfg.merge_from_list(["DATASETS.CUSTOM_JSONS", []])
    with pytest.raises(ValueError, match="must have the same length"):
        build_detection_train_loader(cfg)
