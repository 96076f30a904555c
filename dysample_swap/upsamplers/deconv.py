"""Deconvolution (transposed convolution) upsampling, optionally starting as the interpolation it replaces.

``init="match"``: a ``ConvTranspose2d(C, C, 2s - s%2, stride=s)`` over the input replicate-padded
by one pixel, with ``padding = s + s//2`` so that exactly ``s*H x s*W`` comes out, aligned. Output
``s*m + j`` of a transposed convolution reads input ``m + t`` through kernel tap ``j - t*s + s//2``,
so writing each sub-pixel's 3-tap stencil (:mod:`dysample_swap.upsamplers.stencils`) into those taps
(channel ``c`` to channel ``c``, zero across channels, all weights trainable) gives
``F.interpolate(mode="bilinear", align_corners=False)`` at every pixel of the native output,
borders included (the replicate padding is PyTorch's border clamp), or ``mode="nearest"``. Without
the padding the first and last rows and columns would be off (``3/4 x[0]`` instead of ``x[0]`` at
``s=2``). ``init="paper"``: the DySample paper's layer (kernel 3, stride 2, padding 1, output
padding 1; for ``s != 2`` kernel ``2s-1``, padding and output padding ``s-1``), PyTorch's default
initialisation, no input padding. Other output sizes: :func:`dysample_swap.upsamplers.sizing.fit_native`.

Example:
    >>> import torch, torch.nn.functional as F
    >>> up = DeconvUpsampler(4, scale=2).double()
    >>> x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    >>> torch.allclose(up(x), F.interpolate(x, scale_factor=2, mode="bilinear"), atol=1e-12)
    True
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap.upsamplers.base import NativeScaleUpsampler
from dysample_swap.upsamplers.stencils import TAP_OFFSETS, interpolation_taps


def deconv_interpolation_kernel(scale: int, anchor: str) -> Tensor:
    """The 1-D transposed-convolution kernel (length ``2s - s%2``) of the ``init="match"`` layer.

    Example:
        >>> deconv_interpolation_kernel(2, "bilinear")
        tensor([0.2500, 0.7500, 0.7500, 0.2500], dtype=torch.float64)
    """
    kernel = torch.zeros(2 * scale - scale % 2, dtype=torch.float64)
    taps = interpolation_taps(scale, anchor)
    for j in range(scale):
        for column, t in enumerate(TAP_OFFSETS):
            if taps[j, column] != 0:
                kernel[j - t * scale + scale // 2] = taps[j, column]
    return kernel


class DeconvUpsampler(NativeScaleUpsampler):
    """A learned ``ConvTranspose2d`` upsampler (see the module docstring for both initialisations).

    Arguments as :class:`~dysample_swap.upsamplers.base.NativeScaleUpsampler`: ``(channels, scale=2, *,
    anchor="bilinear", init="match", size=None, scale_factor=None)``; ``anchor="bilinear_align_corners"``
    starts as plain bilinear, the closest kernel (not exact). Parameters: ``deconv.weight`` ``(C, C, k, k)``
    and ``deconv.bias``.

    Example:
        >>> up = DeconvUpsampler(8, scale=2, init="paper")
        >>> up(torch.randn(1, 8, 13, 13)).shape, up.deconv.kernel_size
        (torch.Size([1, 8, 26, 26]), (3, 3))
    """

    def build(self) -> None:
        """``deconv``: the matching layer (initialised as the anchor) or the paper's.

        Example:
            >>> DeconvUpsampler(8, scale=3).deconv.kernel_size
            (5, 5)
        """
        c, s = self.channels, self.scale
        if self.init == "match":
            self.deconv = nn.ConvTranspose2d(c, c, 2 * s - s % 2, stride=s, padding=s + s // 2)
            self.reset_parameters()
        else:
            self.deconv = nn.ConvTranspose2d(c, c, 2 * s - 1, stride=s, padding=s - 1, output_padding=s - 1)

    def reset_parameters(self) -> None:
        """Set the weights to the anchor's interpolation kernel, channel to channel (``init="match"``); zero bias.

        Example:
            >>> DeconvUpsampler(2, anchor="nearest").deconv.weight[0, 0]
            tensor([[0., 0., 0., 0.],
                    [0., 1., 1., 0.],
                    [0., 1., 1., 0.],
                    [0., 0., 0., 0.]], grad_fn=<SelectBackward0>)
        """
        kernel = deconv_interpolation_kernel(self.scale, self.anchor)
        channel = torch.arange(self.channels)
        weight = torch.zeros(self.deconv.weight.shape, dtype=torch.float64)
        weight[channel, channel] = kernel[:, None] * kernel[None, :]
        with torch.no_grad():
            self.deconv.weight.copy_(weight)
            cast(Tensor, self.deconv.bias).zero_()  # built with a bias

    def native(self, x: Tensor) -> Tensor:
        """``deconv(x)``, over the replicate-padded input for ``init="match"``.

        Example:
            >>> DeconvUpsampler(4, scale=3).native(torch.randn(1, 4, 15, 17)).shape
            torch.Size([1, 4, 45, 51])
        """
        if self.init == "match":
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return self.deconv(x)
