"""Ten-crop testing (resdet/classification/ten_crop.py) against crops cut and averaged by hand."""
import torch
from PIL import Image
from torch import nn

from resdet.classification.model import ImageClassifier
from resdet.classification.ten_crop import predict, predict_ten_crop, ten_crop
from resdet.classification.transforms import build_test_transform


def _hand_crops(img, s):
    """The paper's ten crops, by slicing: 4 corners + centre of the image, then of the mirrored image."""
    h, w = img.shape[-2:]
    t, l = (h - s) // 2, (w - s) // 2

    def five(x):
        return [x[..., :s, :s], x[..., :s, w - s:], x[..., h - s:, :s], x[..., h - s:, w - s:],
                x[..., t:t + s, l:l + s]]
    return five(img) + five(img.flip(-1))


def _tiny_classifier():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(32, 7))
    model = ImageClassifier(net, pixel_mean=[120.0, 110.0, 100.0], pixel_std=[60.0, 60.0, 60.0])
    # Non-trivial BN statistics so eval mode is not the identity.
    model.train()
    model(torch.rand(16, 3, 24, 24) * 255)
    return model.eval()


def test_ten_crop_positions_match_hand_slicing():
    img = torch.arange(2 * 3 * 11 * 13, dtype=torch.float32).view(2, 3, 11, 13)
    crops = ten_crop(img, 7)
    assert crops.shape == (2, 10, 3, 7, 7)
    for i, c in enumerate(_hand_crops(img, 7)):
        assert torch.equal(crops[:, i], c), i


def test_ten_crop_prediction_equals_hand_average_of_softmax():
    model = _tiny_classifier()
    images = torch.rand(3, 3, 20, 26) * 255
    got = predict_ten_crop(model, ten_crop(images, 16))
    with torch.no_grad():
        want = torch.stack([model(c).softmax(1) for c in _hand_crops(images, 16)]).mean(0)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(3))
    assert torch.equal(predict(model, ten_crop(images, 16)), got)   # predict() dispatches on 5-D input


def test_test_transform_resizes_then_ten_crops(tmp_path):
    img = Image.fromarray((torch.rand(40, 60, 3) * 255).to(torch.uint8).numpy())
    crops = build_test_transform(crop_size=24, short_side=32, ten_crops=True)(img)
    resized = build_test_transform(crop_size=0, short_side=32, ten_crops=False).transforms[:2]
    from torchvision.transforms import v2 as T

    full = T.Compose(resized)(img)                     # shorter side 32: 32 x 48
    assert full.shape == (3, 32, 48) and crops.shape == (10, 3, 24, 24) and crops.dtype == torch.uint8
    assert torch.equal(crops, ten_crop(full, 24))
    centre = build_test_transform(crop_size=24, short_side=32)(img)
    assert torch.equal(centre, crops[4])
