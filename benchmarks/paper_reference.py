"""A straightforward implementation of the paper's formulas (Sec. 3.2) and the authors' layout.

This is the yardstick: it builds the coordinate grid on every forward, pixel-shuffles the
input for the PL style, and normalises by a ``[W, H]`` tensor, exactly as Sec. 3 and the
spec describe. ``benchmarks/bench_upsamplers.py`` times it beside our module, and the tests
use it as the oracle for state-dict and output compatibility. It is not part of the package.

Example:
    >>> import torch
    >>> ref = PaperDySample(16, scale=2, style="lp", groups=4, dyscope=True)
    >>> ref(torch.randn(1, 16, 5, 5)).shape
    torch.Size([1, 16, 10, 10])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PaperDySample(nn.Module):
    """DySample written directly from Eqs. (1)-(5): offset -> pixel shuffle -> grid -> grid_sample."""

    def __init__(self, in_channels: int, scale: int = 2, style: str = "lp", groups: int = 4, dyscope: bool = False):
        super().__init__()
        self.scale, self.style, self.groups = scale, style, groups
        conv_in = in_channels // scale**2 if style == "pl" else in_channels
        conv_out = 2 * groups if style == "pl" else 2 * groups * scale**2
        self.offset = nn.Conv2d(conv_in, conv_out, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if dyscope:
            self.scope = nn.Conv2d(conv_in, conv_out, 1, bias=False)
            nn.init.zeros_(self.scope.weight)
        h = torch.arange((-scale + 1) / 2, (scale - 1) / 2 + 1) / scale
        init_pos = torch.stack(torch.meshgrid([h, h], indexing="ij")).transpose(1, 2)
        self.register_buffer("init_pos", init_pos.repeat(1, groups, 1).reshape(1, -1, 1, 1))

    def sample(self, x: Tensor, offset: Tensor) -> Tensor:
        b, _, h, w = offset.shape
        offset = offset.view(b, 2, -1, h, w)
        coords_h = torch.arange(h) + 0.5
        coords_w = torch.arange(w) + 0.5
        coords = torch.stack(torch.meshgrid([coords_w, coords_h], indexing="ij")).transpose(1, 2)
        coords = coords.unsqueeze(1).unsqueeze(0).type(x.dtype).to(x.device)
        normalizer = torch.tensor([w, h], dtype=x.dtype, device=x.device).view(1, 2, 1, 1, 1)
        coords = 2 * (coords + offset) / normalizer - 1
        coords = F.pixel_shuffle(coords.view(b, -1, h, w), self.scale).view(b, 2, -1, self.scale * h, self.scale * w)
        coords = coords.permute(0, 2, 3, 4, 1).contiguous().flatten(0, 1)
        out = F.grid_sample(
            x.reshape(b * self.groups, -1, h, w), coords, mode="bilinear", align_corners=False, padding_mode="border"
        )
        return out.view(b, -1, self.scale * h, self.scale * w)

    def forward(self, x: Tensor) -> Tensor:
        if self.style == "pl":
            x_ = F.pixel_shuffle(x, self.scale)
            if hasattr(self, "scope"):
                offset = F.pixel_unshuffle(self.offset(x_) * self.scope(x_).sigmoid(), self.scale) * 0.5
            else:
                offset = F.pixel_unshuffle(self.offset(x_), self.scale) * 0.25
        elif hasattr(self, "scope"):
            offset = self.offset(x) * self.scope(x).sigmoid() * 0.5
        else:
            offset = self.offset(x) * 0.25
        return self.sample(x, offset + self.init_pos)
