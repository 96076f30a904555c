"""Pixel-shuffle upsampling (Shi et al., CVPR 2016): a 3x3 convolution to ``C * s**2`` channels, then ``pixel_shuffle``.

The DySample paper's setting (Sec. 4): "a 3-kernel size convolution to increase the channel number
to 4 times of the original one, and then apply the 'pixel shuffle' function". ``init="match"``
starts it as the interpolation it replaces, exactly at the native size (``scale`` times the input):
output channel ``c``, sub-pixel ``(i, j)`` is conv channel ``c*s*s + i*s + j``, whose weights are the
sub-pixel's 3x3 stencil (:mod:`dysample_swap.upsamplers.stencils`) on input channel ``c`` and zero
elsewhere, over a replicate-padded input. That is ``F.interpolate(mode="bilinear",
align_corners=False)`` at every pixel, borders included, or ``mode="nearest"``; all weights stay
trainable. ``init="paper"`` is the paper's layer with PyTorch's default initialisation and zero
padding. Other output sizes: :func:`dysample_swap.upsamplers.sizing.fit_native`.

Example:
    >>> import torch, torch.nn.functional as F
    >>> up = PixelShuffleUpsampler(4, scale=2, anchor="bilinear").double()
    >>> x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    >>> torch.allclose(up(x), F.interpolate(x, scale_factor=2, mode="bilinear"), atol=1e-12)
    True
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap.upsamplers.base import NativeScaleUpsampler
from dysample_swap.upsamplers.stencils import interpolation_kernel_2d


class PixelShuffleUpsampler(NativeScaleUpsampler):
    """``pixel_shuffle(conv3x3(x), scale)``, optionally starting as the interpolation it replaces.

    Arguments as :class:`~dysample_swap.upsamplers.base.NativeScaleUpsampler`: ``(channels, scale=2, *,
    anchor="bilinear", init="match", size=None, scale_factor=None)``; ``anchor="bilinear_align_corners"``
    starts as plain bilinear, the closest stencil (not exact). Parameters: ``conv.weight``
    ``(C*s*s, C, 3, 3)`` and ``conv.bias``.

    Example:
        >>> up = PixelShuffleUpsampler(8, scale=2)
        >>> up(torch.randn(1, 8, 13, 13), size=(25, 25)).shape
        torch.Size([1, 8, 25, 25])
    """

    def build(self) -> None:
        """``conv``: 3x3 to ``C*s*s`` channels, replicate padding and the anchor's stencils for ``init="match"``.

        Example:
            >>> PixelShuffleUpsampler(8, scale=2, init="paper").conv.padding_mode
            'zeros'
        """
        padding_mode: Literal["replicate", "zeros"] = "replicate" if self.init == "match" else "zeros"
        c, s = self.channels, self.scale
        self.conv = nn.Conv2d(c, c * s * s, 3, padding=1, padding_mode=padding_mode)
        if self.init == "match":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set the weights to the anchor's stencils (``init="match"``); zero bias.

        Example:
            >>> PixelShuffleUpsampler(2, anchor="nearest").conv.weight[:4, 0, 1, 1]
            tensor([1., 1., 1., 1.], grad_fn=<SelectBackward0>)
        """
        s2 = self.scale * self.scale
        stencil = interpolation_kernel_2d(self.scale, self.anchor).reshape(s2, 3, 3)
        weight = torch.zeros(self.channels, s2, self.channels, 3, 3, dtype=torch.float64)
        channel = torch.arange(self.channels)
        weight[channel, :, channel] = stencil
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape_as(self.conv.weight))
            cast(Tensor, self.conv.bias).zero_()  # built with a bias

    def native(self, x: Tensor) -> Tensor:
        """``pixel_shuffle(conv(x), scale)``.

        Example:
            >>> PixelShuffleUpsampler(4, scale=3).native(torch.randn(1, 4, 15, 17)).shape
            torch.Size([1, 4, 45, 51])
        """
        return F.pixel_shuffle(self.conv(x), self.scale)
