"""ImageClassifier (resdet/classification/model.py): normalisation inside the model."""
import pytest
import torch

from resdet.backbones import build_backbone
from resdet.classification.model import ImageClassifier


def _model(**kw):
    torch.manual_seed(0)
    return ImageClassifier(build_backbone("cifar_resnet20", num_classes=10), pixel_mean=[100.0, 110.0, 120.0],
                           pixel_std=[1.0, 1.0, 1.0], **kw).eval()


def test_per_channel_mean_is_subtracted_and_not_saved():
    model = _model()
    x = torch.rand(2, 3, 32, 32) * 255
    expected = model.backbone(x - torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), expected)
    assert "pixel_mean" not in model.state_dict() and model.pixel_mean_image is None
    with pytest.raises(ValueError, match="mean_image_size"):
        model.set_mean_image(torch.zeros(3, 32, 32))


def test_per_pixel_mean_is_subtracted_and_checkpointed():
    model = _model(mean_image_size=(32, 32))
    # before the data sets it, the mean image is the channel mean everywhere
    assert torch.equal(model.pixel_mean_image[0, :, 5, 7], torch.tensor([100.0, 110.0, 120.0]))
    mean = torch.rand(3, 32, 32) * 255
    model.set_mean_image(mean)
    x = torch.rand(2, 3, 32, 32) * 255
    torch.testing.assert_close(model(x), model.backbone(x - mean))
    state = model.state_dict()
    assert torch.equal(state["pixel_mean_image"][0], mean)
    other = _model(mean_image_size=(32, 32))
    other.load_state_dict(state)
    torch.testing.assert_close(other(x), model(x))
    with pytest.raises(ValueError, match=r"subtracts a \(32, 32\) mean image; got images of \(28, 28\)"):
        model(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"mean image must be \[3, 32, 32\]"):
        model.set_mean_image(torch.zeros(3, 28, 28))
