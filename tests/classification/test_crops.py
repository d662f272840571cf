"""Crop boxes are sampled exactly as torchvision's transforms sample them (resdet/classification/crops.py)."""
import pytest
import torch
from torchvision import transforms as T1
from torchvision.transforms import v2 as T2

from resdet.classification.crops import CropSampler, sample_rrc, sample_scale

SIZES = [(375, 500), (500, 333), (224, 224), (1200, 900), (240, 1000), (64, 80)]


def _image(h, w):
    return torch.zeros(1).expand(3, h, w)   # the samplers read only the shape


def test_rrc_boxes_and_flips_are_torchvisions_draws():
    for seed, (h, w) in enumerate(SIZES * 8):
        torch.manual_seed(seed)
        box = sample_rrc(h, w)
        torch.manual_seed(seed)
        i, j, ch, cw = T1.RandomResizedCrop.get_params(_image(h, w), [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.rand(1) < 0.5)     # RandomHorizontalFlip's draw comes next
        assert box.as_tuple() == (i, j, ch, cw) and box.flip == flip
        assert box.clamp == (i, j, i + ch, j + cw)   # RandomResizedCrop crops, then resizes the crop


def test_scale_boxes_follow_the_v2_pipelines_draws_through_the_resize():
    lo, hi, size = 256, 480, 224
    flips = 0
    for seed, (h, w) in enumerate([s for s in SIZES if min(s) >= 200] * 10):
        torch.manual_seed(seed)
        box = sample_scale(h, w, (lo, hi), size)
        # the reference: RandomShortestSize(range) -> RandomCrop(size, pad_if_needed) -> flip, draw by draw
        torch.manual_seed(seed)
        nh, nw = T2.RandomShortestSize(list(range(lo, hi + 1))).make_params([_image(h, w)])["size"]
        crop = T2.RandomCrop(size, pad_if_needed=True).make_params([_image(nh, nw)])
        flip = bool(torch.rand(1) < 0.5)
        assert not crop["needs_pad"]
        expect = (crop["top"] * h / nh, crop["left"] * w / nw, size * h / nh, size * w / nw)
        assert box.as_tuple() == pytest.approx(expect, rel=1e-12) and box.flip == flip
        assert box.clamp == (0, 0, h, w)             # the reference resizes the whole image, then crops
        flips += flip
    assert 0 < flips < 40


def test_no_flip_draw_without_hflip_and_bad_settings_are_named():
    torch.manual_seed(0)
    a = [sample_rrc(300, 400, hflip=False) for _ in range(5)]
    torch.manual_seed(0)
    b = [T1.RandomResizedCrop.get_params(_image(300, 400), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(5)]
    assert [x.as_tuple() for x in a] == [tuple(float(v) for v in y) for y in b] and not any(x.flip for x in a)
    with pytest.raises(ValueError, match="must exceed CLS.INPUT.CROP_SIZE"):
        CropSampler("scale", 224, short_side=(224, 256))
    with pytest.raises(ValueError, match="'rrc' and 'scale'"):
        CropSampler("pad_crop_flip", 32)
    with pytest.raises(ValueError, match="smaller than the 224 crop"):
        sample_scale(100, 100, (200, 220), 224)
