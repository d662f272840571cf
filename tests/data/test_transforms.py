import numpy as np
import pytest
import torch

from resdet.data.coco import load_coco_json
from resdet.data.transforms import DetectionMapper, ResizeShortestEdge, build_augmentation

from .coco_fixtures import write_case


@pytest.mark.parametrize(
    "hw, short, cap, expected",
    [((60, 80), 120, 1333, (120, 160)),   # shorter side to 120
     ((100, 300), 800, 1333, (444, 1333)),  # the longer side would be 2400: capped at 1333
     ((300, 100), 50, 1333, (150, 50))],
)
def test_resize_shortest_edge(hw, short, cap, expected):
    import albumentations as A

    aug = A.Compose([ResizeShortestEdge(short, cap)])
    out = aug(image=np.zeros((*hw, 3), np.uint8))["image"]
    assert out.shape[:2] == expected


def _mask_extent(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _records(tmp_path):
    json_path, image_dir, _ = write_case(tmp_path)
    dicts, meta = load_coco_json(json_path, image_dir, filter_empty=True)
    return {d["image_id"]: d for d in dicts}


def test_train_mapper_resizes_flips_and_keeps_boxes_and_masks_together(tmp_path):
    rec = _records(tmp_path)[1]  # 80x60; anns 10 (polygon), 11 (two polygons), 12 (crowd)
    mapper = DetectionMapper(is_train=True, min_size_train=(120,), max_size=1000, flip_prob=1.0)
    img, t = mapper(rec)
    assert img.shape == (3, 120, 160) and img.dtype == torch.float32 and img.max() > 1
    # crowd region 12 never reaches the model
    assert t["labels"].tolist() == [1, 2]
    assert t["masks"].shape == (2, 120, 160) and t["masks"].dtype == torch.uint8
    # ann 10: box x 10..30, y 10..30 in 80 px; scaled x2 and flipped: x 100..140, y 20..60
    torch.testing.assert_close(t["boxes"][0], torch.tensor([100.0, 20.0, 140.0, 60.0]))
    for box, mask in zip(t["boxes"], t["masks"]):
        assert (box - _mask_extent(mask)).abs().max() <= 2.0
    assert t["orig_size"].tolist() == [60, 80] and int(t["image_id"]) == 1


def test_large_scale_jitter_output_is_square_and_consistent(tmp_path):
    rec = _records(tmp_path)[1]
    mapper = DetectionMapper(is_train=True, lsj=True, lsj_size=96, lsj_scale=(0.5, 2.0), flip_prob=0.5,
                             recompute_boxes=True)
    mapper.augmentation.set_random_seed(0)
    seen_dropped = seen_padded = False
    for _ in range(40):
        img, t = mapper(rec)
        assert img.shape == (3, 96, 96)
        n = len(t["boxes"])
        assert t["masks"].shape == (n, 96, 96) and t["labels"].shape == (n,)
        seen_dropped |= n < 2
        seen_padded |= bool((img[:, -1, -1] == 128).all())
        # recompute_boxes: every box is its (cropped) mask's tight box; no instance without mask pixels
        for box, mask in zip(t["boxes"], t["masks"]):
            assert mask.any() and torch.equal(box, _mask_extent(mask))
    assert seen_dropped and seen_padded  # crops at scale 2 cut instances out; small scales pad


def test_lsj_resize_is_one_resize_to_the_jittered_square():
    """ResizeScale: scale = U(low, high) * size / longer side, one resize (Detectron2's ResizeScale), sides
    rounded; over many draws the scales cover the range."""
    import albumentations as A

    from resdet.data.transforms import ResizeScale

    aug = A.Compose([ResizeScale(100, (0.1, 2.0))], save_applied_params=True)
    aug.set_random_seed(0)
    image = np.zeros((60, 80, 3), np.uint8)
    scales = []
    for _ in range(200):
        out = aug(image=image)
        s = out["applied_transforms"][0][1]["scale"]
        scales.append(s * 80 / 100)  # the random factor
        assert out["image"].shape[:2] == (max(1, round(60 * s)), max(1, round(80 * s)))
    assert 0.1 <= min(scales) < 0.2 and 1.9 < max(scales) <= 2.0


def test_lsj_small_scale_pads_bottom_right_with_the_pad_value(tmp_path):
    rec = _records(tmp_path)[1]  # 80 x 60 (w x h)
    mapper = DetectionMapper(is_train=True, lsj=True, lsj_size=200, lsj_scale=(0.5, 0.5), flip_prob=0.0,
                             lsj_pad_value=77, recompute_boxes=True)
    img, t = mapper(rec)
    # 0.5 * 200 / 80 = 1.25: the image is 75 x 100 at the top left, the rest is padding
    assert img.shape == (3, 200, 200)
    assert (img[:, 75:, :] == 77).all() and (img[:, :, 100:] == 77).all() and not (img[:, :75, :100] == 77).all()
    assert not t["masks"][:, 75:, :].any() and not t["masks"][:, :, 100:].any()
    # ann 10: box x 10..30, y 10..30 at 80 px, here x 1.25: its mask's extent
    torch.testing.assert_close(t["boxes"][0], _mask_extent(t["masks"][0]))
    assert (t["boxes"][0] - torch.tensor([12.5, 12.5, 37.5, 37.5])).abs().max() <= 1.5


def test_mask_boxes():
    from resdet.data.transforms import mask_boxes

    masks = np.zeros((3, 5, 6), np.uint8)
    masks[0, 1:3, 2:5] = 1
    masks[2, 4, 0] = 1
    boxes, nonempty = mask_boxes(masks)
    assert nonempty.tolist() == [True, False, True]
    assert boxes.tolist() == [[2, 1, 5, 3], [0, 0, 0, 0], [0, 4, 1, 5]]


def test_test_mapper_resizes_without_targets(tmp_path):
    rec = _records(tmp_path)[2]  # 48x64 (w x h)
    img, t = DetectionMapper(is_train=False, min_size_test=96, max_size=1333)(rec)
    assert img.shape == (3, 128, 96)
    assert set(t) == {"image_id", "orig_size"} and t["orig_size"].tolist() == [64, 48]


def test_train_mapper_box_only(tmp_path):
    rec = _records(tmp_path)[2]
    img, t = DetectionMapper(is_train=True, mask_on=False, min_size_train=(64,), flip_prob=0.0)(rec)
    assert "masks" not in t and t["labels"].tolist() == [3, 1]


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="min_size_train"):
        build_augmentation(True, min_size_train=(0,))
    with pytest.raises(ValueError, match="lsj_scale"):
        build_augmentation(True, lsj=True, lsj_scale=(2.0, 1.0))


def test_floor_rounding_gives_torchvisions_sizes_and_pixels():
    """The torchvision presets resize like GeneralizedRCNNTransform: same sizes for every shape tried,
    and pixels that differ only by uint8 rounding (cv2 on uint8 vs torch on float)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    tv = GeneralizedRCNNTransform(800, 1333, [0.0] * 3, [1.0] * 3).eval()
    floor = build_augmentation(False, min_size_test=800, max_size=1333, resize_rounding="floor")
    rounded = build_augmentation(False, min_size_test=800, max_size=1333)
    rng = np.random.default_rng(0)
    shapes = [(480, 640), (1567, 1818), (644, 593), (427, 640)] + [tuple(rng.integers(60, 1500, 2)) for _ in range(60)]
    n_round_differs = 0
    for h, w in shapes:
        empty = np.zeros((int(h), int(w), 3), np.uint8)
        ours = floor(image=empty, bboxes=np.zeros((0, 4)), ann_index=[])["image"].shape[:2]
        theirs = tuple(tv.resize(torch.zeros(3, int(h), int(w)), None)[0].shape[-2:])
        assert tuple(ours) == theirs, (h, w)
        n_round_differs += rounded(image=empty, bboxes=np.zeros((0, 4)), ann_index=[])["image"].shape[:2] != theirs
    assert n_round_differs > 0  # Detectron2's rounding is a different rule, so the option matters
    img = rng.integers(0, 256, (333, 500, 3), dtype=np.uint8)
    ours = torch.from_numpy(floor(image=img, bboxes=np.zeros((0, 4)), ann_index=[])["image"]).permute(2, 0, 1).float()
    theirs = tv.resize(torch.from_numpy(img).permute(2, 0, 1).float(), None)[0]
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1.0 and (ours - theirs).abs().mean() < 0.3


def test_unknown_rounding_is_rejected():
    with pytest.raises(ValueError, match="INPUT.RESIZE_ROUNDING must be 'round' or 'floor'"):
        build_augmentation(False, resize_rounding="ceil")


def test_torch_backend_training_mapper_gives_torchvisions_pixels_and_the_same_targets(tmp_path):
    """INPUT.RESIZE_BACKEND 'torch' in training: the image is GeneralizedRCNNTransform's resize of the
    0-1 image (x 255, float, unrounded); boxes, labels and masks are those of the OpenCV backend."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    rec = _records(tmp_path)[1]  # 80x60
    kwargs = dict(min_size_train=(100,), max_size=1333, flip_prob=0.0, resize_rounding="floor")
    img_t, t_t = DetectionMapper(is_train=True, resize_backend="torch", **kwargs)(rec)
    img_o, t_o = DetectionMapper(is_train=True, resize_backend="opencv", **kwargs)(rec)
    tv = GeneralizedRCNNTransform(100, 1333, [0.0] * 3, [1.0] * 3).eval()
    from resdet.data.coco import read_image

    pixels = torch.from_numpy(read_image(rec["file_name"])).permute(2, 0, 1).float() / 255
    theirs = tv.resize(pixels, None)[0] * 255
    assert img_t.shape == theirs.shape == img_o.shape == (3, 100, 133)
    torch.testing.assert_close(img_t, theirs, rtol=1e-6, atol=1e-4)
    assert not torch.equal(img_t, img_t.round())
    for key in ("boxes", "labels", "masks"):
        assert torch.equal(t_t[key], t_o[key]), key


def test_unknown_resize_backend_is_rejected():
    with pytest.raises(ValueError, match=r"INPUT.RESIZE_BACKEND must be one of \('opencv', 'torch'\), got 'pil'"):
        build_augmentation(False, resize_backend="pil")
