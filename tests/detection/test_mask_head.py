"""MaskHead's class-picked logits (the GEMM deconvolution and the per-RoI 1x1 predictor row) against the
full module path (ConvTranspose2d, every class's 1x1 logits, then a gather): forward and backward, in
the CPU's form and in the GPU's (forced on the CPU by force_torchvision_roi_align)."""
import pytest
import torch

from resdet.detection.roi_align import force_torchvision_roi_align
from resdet.detection.roi_heads import MaskHead

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("gpu_form", [False, True])
@pytest.mark.parametrize("rois", [0, 1, 13])
def test_picked_logits_equal_the_full_path(rois, gpu_form):
    torch.manual_seed(rois)
    head = MaskHead(in_channels=8, num_classes=4, conv_dim=6, num_conv=2).double()
    for p in head.parameters():  # non-trivial biases and predictor weights
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(rois, 8, 7, 7, dtype=torch.float64, requires_grad=True)
    classes = torch.randint(1, 5, (rois,))
    grad = torch.randn(rois, 1, 14, 14, dtype=torch.float64)

    def run(picked: bool):
        head.zero_grad()
        xx = x.detach().clone().requires_grad_()
        if picked:
            with force_torchvision_roi_align(gpu_form):
                out = head(xx, classes)
        else:
            full = head(xx)
            assert full.shape == (rois, 5, 14, 14)
            out = full.gather(1, classes[:, None, None, None].expand(-1, 1, 14, 14))
        (out * grad).sum().backward()
        return out, xx.grad, {n: p.grad.clone() for n, p in head.named_parameters()}

    (ref, ref_gx, ref_g), (out, gx, g) = run(False), run(True)
    assert out.shape == (rois, 1, 14, 14)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-12, atol=1e-12)
    for n in ref_g:
        torch.testing.assert_close(g[n], ref_g[n], rtol=1e-12, atol=1e-12, msg=n)
