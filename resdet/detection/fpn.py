"""Feature Pyramid Network (Lin et al. 2017) on a backbone's res2..res5 outputs."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import conv_norm, head_norm, init_conv

__all__ = ["FPN"]


class FPN(nn.Module):
    """Lateral 1x1 convs, a nearest-neighbour top-down path and 3x3 output convs, giving P2..P5 with
    `out_channels` each; with `top_block_pool`, P6 is P5 subsampled by a stride-2 1x1 max-pool (the
    RPN's extra level). Returns an ordered dict "p2".."p6" (finest first).
    """

    def __init__(self, *, in_channels: Sequence[int], in_features: Sequence[str], in_strides: Sequence[int],
                 out_channels: int = 256, top_block_pool: bool = True,
                 norm: Optional[Callable[[int], nn.Module]] = None):
        super().__init__()
        if not (len(in_channels) == len(in_features) == len(in_strides)) or not in_features:
            raise ValueError(f"FPN: in_channels {list(in_channels)}, in_features {list(in_features)} and "
                             f"in_strides {list(in_strides)} must be non-empty and of equal length")
        self.in_features = list(in_features)
        # with a norm (Detectron2's FPN.NORM), each conv is followed by it and has no bias
        self.lateral_convs = nn.ModuleList(conv_norm(c, out_channels, 1, norm, relu=False, init=None)
                                           for c in in_channels)
        self.output_convs = nn.ModuleList(conv_norm(out_channels, out_channels, 3, norm, relu=False, init=None)
                                          for _ in in_channels)
        for block in list(self.lateral_convs) + list(self.output_convs):  # "c2_xavier" init of Detectron2 /
            init_conv(block, "xavier")  # torchvision's FPN, drawn after every conv exists (as always)
        self.top_block_pool = top_block_pool
        strides = [int(s) for s in in_strides]
        self.out_features = [f"p{s.bit_length() - 1}" for s in strides]  # stride 4 -> "p2"
        self.out_strides = dict(zip(self.out_features, strides))
        if top_block_pool:
            name = f"p{(strides[-1] * 2).bit_length() - 1}"
            self.out_features.append(name)
            self.out_strides[name] = strides[-1] * 2
        self.out_channels = out_channels

    @classmethod
    def from_config(cls, cfg, input_shape) -> dict:
        feats = list(cfg.MODEL.FPN.IN_FEATURES)
        for f in feats:
            if f not in input_shape:
                raise ValueError(f"MODEL.FPN.IN_FEATURES names '{f}', which the backbone does not output "
                                 f"(it gives {sorted(input_shape)}); check MODEL.BACKBONE.OUT_FEATURES")
        return dict(in_channels=[input_shape[f].channels for f in feats], in_features=feats,
                    in_strides=[input_shape[f].stride for f in feats], out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
                    top_block_pool=True,
                    norm=head_norm(cfg.MODEL.FPN.NORM, cfg.MODEL.BACKBONE.GN_GROUPS, "MODEL.FPN.NORM"))

    def forward(self, features: Dict[str, Tensor]) -> Dict[str, Tensor]:
        xs = [features[f] for f in self.in_features]
        last = self.lateral_convs[-1](xs[-1])
        outs = [self.output_convs[-1](last)]
        for i in range(len(xs) - 2, -1, -1):
            lateral = self.lateral_convs[i](xs[i])
            # upsample to the lateral's own size, not by 2: odd-sized inputs stay aligned
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output_convs[i](last))
        if self.top_block_pool:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(self.out_features, outs))
