from resdet.backbones import build_backbone
from resdet.utils.model_stats import count_parameters, model_summary


def test_summary_reports_size_cost_and_shapes():
    info = model_summary(build_backbone("cifar_resnet20", out_features=("res2", "res3", "res4")), (32, 32))
    assert info["parameters"] == 269_722 - 650  # the classifier's 64x10 fc + bias are not built
    assert info["outputs"] == {"res2": (1, 16, 32, 32), "res3": (1, 32, 16, 16), "res4": (1, 64, 8, 8)}
    # ResNet-20 at 32x32: about 41 M multiply-adds (the paper quotes no figure; convs dominate)
    assert 40e6 < info["flops"] < 42e6
    frozen = build_backbone("resnet18", freeze_at=5)
    assert count_parameters(frozen, trainable_only=True) == 512 * 1000 + 1000
