"""The backbone the detection tests build on (kept in one place so every test uses the same one)."""
from resdet.backbones import build_backbone

FEATURES = ("res2", "res3", "res4", "res5")


def make_backbone(freeze_at: int = 0, name: str = "resnet50"):
    """A registry ResNet (torchvision's v1.5 layout) with frozen BN, returning res2..res5."""
    return build_backbone(name, variant="v1.5", norm="FrozenBN", freeze_at=freeze_at, out_features=FEATURES)
