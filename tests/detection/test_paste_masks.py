"""Batched mask pasting must equal torchvision's paste_masks_in_image (one interpolate per detection)."""
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from resdet.detection.postprocess import paste_masks


@pytest.mark.parametrize("image_size,mask_size", [((100, 120), 28), ((64, 48), 14), ((37, 201), 28)])
def test_paste_equals_torchvision(image_size, mask_size):
    g = torch.Generator().manual_seed(sum(image_size))
    d = 60
    h, w = image_size
    masks = torch.rand(d, 1, mask_size, mask_size, generator=g)
    xy = torch.rand(d, 2, generator=g) * torch.tensor([w, h]) * 0.9 - 5
    wh = torch.rand(d, 2, generator=g) * torch.tensor([w, h]) * 0.7 + 0.1
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([3.0, 4.0, 3.2, 4.1])  # thinner than a pixel
    boxes[1] = torch.tensor([w - 20.0, -6.0, w + 15.0, 12.0])  # beyond the right and top edges
    boxes[2] = torch.tensor([0.0, 0.0, w, h])  # the whole image
    ref = paste_masks_in_image(masks, boxes, image_size)
    ours = paste_masks(masks, boxes, image_size)
    assert ours.shape == ref.shape == (d, 1, h, w)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-6)
    assert (ref > 0).any()


def test_paste_no_detections():
    out = paste_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (30, 40))
    assert out.shape == (0, 1, 30, 40)


def test_paste_on_a_larger_canvas_then_crop_is_the_same():
    # the model pastes all images' detections on one canvas and crops each image; inside the image
    # that must equal pasting on the image itself
    g = torch.Generator().manual_seed(5)
    masks = torch.rand(10, 1, 28, 28, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 40.0, 30.0]]).repeat(10, 1) * torch.rand(10, 1, generator=g) + 2
    small = paste_masks(masks, boxes, (30, 40))
    big = paste_masks(masks, boxes, (64, 64))[:, :, :30, :40]
    torch.testing.assert_close(small, big, rtol=0, atol=0)


def test_paste_makes_no_synchronisation():
    # it used to build its scale from float(mask_size) with torch.tensor(..., device=...): on a GPU a
    # blocking host-to-device copy, twice per call
    from resdet.utils.counting import count_ops

    masks, boxes = torch.rand(5, 1, 28, 28), torch.tensor([[2.0, 3.0, 30.0, 25.0]]).repeat(5, 1)
    with count_ops() as c:
        paste_masks(masks, boxes, (40, 48))
    assert c.syncs == 0, c.summary()
