"""The upstream-style UNet baseline (M3LEO ``models/unet_utils/unet.py``: double 3x3 conv blocks, max-pool down,
bilinear up with skip connections, 1x1 head) as a plain torch module, plus the task heads of the baselines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """``depth`` down/up levels, ``width`` channels at the top level (upstream: width 64, depth 4)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, depth: int = 4):
        super().__init__()
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.inc = double_conv(in_channels, widths[0])
        self.down = nn.ModuleList(double_conv(a, b) for a, b in zip(widths, widths[1:]))
        self.up = nn.ModuleList(double_conv(b + a, a) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2, ceil_mode=True)))
        y = skips.pop()
        for block, skip in zip(reversed(self.up), reversed(skips)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([skip, y], dim=1))
        return self.head(y)


def masked_patches(x: torch.Tensor, ratio: float, patch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean (B, 1, H, W) mask hiding ``ratio`` of the ``patch`` x ``patch`` cells of each image."""
    b, _, h, w = x.shape
    cells = torch.rand(b, 1, -(-h // patch), -(-w // patch), generator=generator, device=x.device) < ratio
    return cells.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[..., :h, :w]
