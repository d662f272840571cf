"""The backbone the detection tests build on (kept in one place so every test uses the same one)."""
from collections import namedtuple

import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

_Shape = namedtuple("_Shape", "channels stride")


class TorchvisionResNetBody(IntermediateLayerGetter):
    """torchvision's ResNet-50 with frozen BN, returning res2..res5 under the backbone contract."""

    def __init__(self, freeze_at: int = 0):
        r = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        super().__init__(r, {"layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5"})
        self.size_divisibility = 32
        frozen = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"][: {0: 0, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6}[freeze_at]]
        for name, p in self.named_parameters():
            if name.split(".")[0] in frozen:
                p.requires_grad_(False)

    def output_shape(self):
        return {"res2": _Shape(256, 4), "res3": _Shape(512, 8), "res4": _Shape(1024, 16), "res5": _Shape(2048, 32)}


def make_backbone(freeze_at: int = 0):
    return TorchvisionResNetBody(freeze_at)
