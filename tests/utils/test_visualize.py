import pytest
import torch

from resdet.utils.visualize import class_colors, draw_instances, make_grid_image, save_image


def _instances():
    masks = torch.zeros(2, 1, 40, 60)
    masks[0, 0, 10:20, 10:30] = 0.9
    masks[1, 0, 25:35, 40:55] = 0.9
    return {"boxes": torch.tensor([[10.0, 10.0, 30.0, 20.0], [40.0, 25.0, 55.0, 35.0]]),
            "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([1, 2]), "masks": masks}


def test_draws_boxes_and_masks_above_the_score_threshold(tmp_path):
    image = torch.zeros(3, 40, 60)
    out = draw_instances(image, _instances(), ["circle", "square"], score_threshold=0.5)
    assert out.shape == (3, 40, 60) and out.dtype == torch.uint8
    colour = torch.tensor(class_colors(2)[1], dtype=torch.float32)
    inside = out[:, 14, 20].float()  # inside mask 0, away from the box outline and label
    assert torch.allclose(inside, colour * 0.45, atol=2)  # alpha-blended over black
    assert out[:, 30, 47].sum() == 0  # the 0.2-score detection is not drawn
    everything = draw_instances(image, _instances(), ["circle", "square"], score_threshold=0.1)
    assert everything[:, 30, 47].sum() > 0
    path = save_image(out, str(tmp_path / "p.png"))
    from torchvision.io import read_image

    assert torch.equal(read_image(path), out)


def test_draws_targets_without_scores_and_checks_shapes():
    t = _instances()
    del t["scores"]
    out = draw_instances(torch.zeros(3, 40, 60, dtype=torch.uint8), t)
    assert out[:, 30, 47].sum() > 0
    with pytest.raises(ValueError, match="3xHxW"):
        draw_instances(torch.zeros(40, 60), t)
    with pytest.raises(ValueError, match="masks are"):
        draw_instances(torch.zeros(3, 41, 60), t)


def test_grid_of_differently_sized_pictures():
    grid = make_grid_image([torch.zeros(3, 20, 30, dtype=torch.uint8), torch.zeros(3, 25, 10, dtype=torch.uint8)], nrow=2)
    assert grid.shape == (3, 25 + 8, 2 * 30 + 12)
