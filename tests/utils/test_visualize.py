import pytest
import torch

from resdet.utils.visualize import class_colors, draw_instances, make_grid_image, save_image


def _instances():
    masks = torch.zeros(2, 1, 40, 60)
    masks[0, 0, 10:38, 10:30] = 0.9
    masks[1, 0, 25:35, 40:55] = 0.9
    return {"boxes": torch.tensor([[10.0, 10.0, 30.0, 38.0], [40.0, 25.0, 55.0, 35.0]]),
            "scores": torch.tensor([0.9, 0.2]), "labels": torch.tensor([1, 2]), "masks": masks}


def test_draws_boxes_and_masks_above_the_score_threshold(tmp_path):
    image = torch.zeros(3, 40, 60)
    out = draw_instances(image, _instances(), ["circle", "square"], score_threshold=0.5)
    assert out.shape == (3, 40, 60) and out.dtype == torch.uint8
    colour = torch.tensor(class_colors(2)[1], dtype=torch.float32)
    inside = out[:, 33, 20].float()  # inside mask 0, away from the box outline and below the label
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


def test_grid_cells_fit_their_pictures():
    """Each picture keeps its own width: a narrow one leaves no wide blank cell beside it; rows are
    broken where their widths come out even."""
    images = [torch.zeros(3, 20, 30, dtype=torch.uint8), torch.zeros(3, 25, 10, dtype=torch.uint8),
              torch.zeros(3, 20, 60, dtype=torch.uint8)]
    grid = make_grid_image(images, nrow=2, pad=4)
    # rows: (30 + 10 wide, 25 high), (60 wide, 20 high); the widest row sets the width
    assert grid.shape == (3, 4 + 25 + 4 + 20 + 4, 4 + 60 + 4)
    assert grid[:, 4:24, 4:34].sum() == 0 and grid[:, 4:29, 38:48].sum() == 0 and grid[:, 33:53, 4:64].sum() == 0
    assert (grid[:, 4:29, 48:] == 255).all()  # blank only after the end of the shorter row
    widths = [make_grid_image([torch.zeros(3, 10, w, dtype=torch.uint8) for w in (41, 58, 21, 34, 36, 33)],
                              nrow=4, pad=0).shape[2]]
    assert widths == [120]  # rows 41+58+21 and 34+36+33, not 41+58+21+34 and 36+33


def test_labels_are_readable_on_a_filled_box():
    from resdet.utils.visualize import label_font_size, text_color_for

    assert text_color_for((255, 255, 0)) == (0, 0, 0) and text_color_for((0, 0, 160)) == (255, 255, 255)
    image = torch.full((3, 600, 800), 30, dtype=torch.uint8)  # a dark photo
    inst = {"boxes": torch.tensor([[100.0, 200.0, 500.0, 550.0]]), "labels": torch.tensor([1]),
            "scores": torch.tensor([0.9])}
    out = draw_instances(image, inst, ["person"])
    colour = torch.tensor(class_colors(1)[1]).view(3, 1, 1)
    label = out[:, 202:240, 110:200]  # just inside the box's top-left corner
    filled = (label == colour).all(0)
    text = (label.int().sum(0) < 20)  # black text (contrasting with the light red fill), not the grey photo
    size = label_font_size(600, 800)
    assert size == 22 and filled.any(1).sum() >= size  # a filled band at least as high as the text
    assert filled.float().mean() > 0.4 and text.sum() > 100
