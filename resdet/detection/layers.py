"""Conv + norm (+ ReLU) blocks for the detection heads and the FPN, with the norms a config can name.

torchvision's `Conv2dNormActivation` is the block (conv without bias when a norm follows, then norm, then
activation); what is added here is the choice of norm by name, with the errors a config needs. Heads and
the FPN take "" (no norm: a plain conv with bias, the state-dict names of the 2fc/4conv heads of
torchvision and Detectron2), "BN", "SyncBN" (statistics over all DDP processes; torch's SyncBatchNorm
takes empty batches, e.g. a mask head without foreground RoIs on one process, so Detectron2's
NaiveSyncBatchNorm work-around is not needed) or "GN". FrozenBN is refused: a head trained from its
initialisation would keep random statistics.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from resdet.backbones.norms import get_norm

__all__ = ["HEAD_NORMS", "head_norm", "conv_norm", "conv_of", "init_conv", "run_conv"]

HEAD_NORMS = ("", "BN", "SyncBN", "GN")


def head_norm(norm: str, gn_groups: int = 32, key: str = "norm") -> Optional[Callable[[int], nn.Module]]:
    """`channels -> norm layer` for one of HEAD_NORMS (None for ""); `key` names the config key in errors."""
    if norm not in HEAD_NORMS:
        raise ValueError(f"{key} must be one of {HEAD_NORMS} ('' for none); got {norm!r}")
    return get_norm(norm, gn_groups) if norm else None


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: Optional[Callable[[int], nn.Module]],
              relu: bool = True, init: Optional[str] = "msra") -> nn.Module:
    """A conv (padding keeps the size), then `norm` and, with `relu`, a ReLU. Without a norm it is a plain
    nn.Conv2d with bias and nothing after it (the parameter names of norm-free heads stay `<name>.weight`;
    `run_conv` adds their ReLU). Weights are initialised as Detectron2 does: "msra" (kaiming normal,
    fan_out: its heads' c2_msra_fill) or "xavier" (kaiming uniform a=1: the FPN's c2_xavier_fill);
    biases 0. `init=None` leaves that to the caller (`init_conv`), e.g. to draw the random weights in the
    order a module always drew them, so that a seed gives the same model as before norms existed."""
    if norm is None:
        block = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    else:
        block = Conv2dNormActivation(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                     norm_layer=norm, activation_layer=nn.ReLU if relu else None, inplace=False)
    if init is not None:
        init_conv(block, init)
    return block


def conv_of(block: nn.Module) -> nn.Conv2d:
    """The conv of a `conv_norm` block."""
    return block if isinstance(block, nn.Conv2d) else block[0]


def init_conv(block: nn.Module, init: str = "msra") -> None:
    """Initialise a `conv_norm` block's conv (see there); the norm keeps its own initialisation."""
    conv = conv_of(block)
    if init == "msra":
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    elif init == "xavier":
        nn.init.kaiming_uniform_(conv.weight, a=1)
    else:
        raise ValueError(f"init must be 'msra' or 'xavier'; got {init!r}")
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0)


def run_conv(block: nn.Module, x: Tensor, relu: bool = True) -> Tensor:
    """`block(x)` with the ReLU a plain conv from `conv_norm` leaves to its caller."""
    x = block(x)
    return F.relu(x) if relu and isinstance(block, nn.Conv2d) else x
