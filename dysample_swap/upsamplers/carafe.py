"""CARAFE, Content-Aware ReAssembly of FEatures (Wang et al., ICCV 2019), in pure PyTorch.

:func:`carafe` is the reassembly operator of mmcv's compiled ``mmcv.ops.carafe``: output pixel
``(y, x)`` of channel ``c`` is ``sum_{dy,dx} kernels[g*k*k + dy*k + dx, y, x] * features[c,
y//s + dy - r, x//s + dx - r]`` with ``r = (k-1)//2``, ``g = c // (C / group)`` (contiguous channel
groups) and zero outside the input. It is computed as a shift-and-accumulate loop over the ``k*k``
taps at the output's size, forward and (hand-written) backward, so no tensor is larger than the
output (an ``unfold`` formulation holds ``k*k`` times the input, upsampled: 25x the output at
``k=5``), and only ``features`` and ``kernels`` are saved for the backward pass.

:class:`CARAFEPack` is mmcv's ``CARAFEPack``: the same constructor, submodule and state-dict names
(``channel_compressor``, ``content_encoder``), initialisation (Xavier-uniform convolutions with zero
bias, then ``content_encoder.weight ~ N(0, 0.001)``) and forward order (compress, encode,
``pixel_shuffle`` the kernels to the output resolution, softmax over each group's ``k*k`` taps,
reassemble), so an mmcv checkpoint loads with ``strict=True``.

At swap time CARAFE changes the function: its kernels are a softmax, so they are never exactly the
one-hot (nearest) or bilinear weights, and it zero-pads where interpolation clamps; the mmcv
initialisation starts it as (almost) a uniform 5x5 average. There is no ``init="match"`` for it.

Other output sizes (``forward(x, size=...)``, ``scale_factor=...``): computed at the integer
``scale_factor`` and fitted with :func:`dysample_swap.upsamplers.sizing.fit_native`, which is the
same as predicting the kernels per output pixel: output pixel ``o`` uses the reassembly kernel of the
native sub-pixel it falls on, centred on the input pixel that ``F.interpolate(mode="nearest")``
reads.

Example:
    >>> import torch
    >>> up = CARAFEPack(16, scale_factor=2)
    >>> up(torch.randn(1, 16, 13, 13)).shape, up(torch.randn(1, 16, 13, 13), size=(25, 25)).shape
    (torch.Size([1, 16, 26, 26]), torch.Size([1, 16, 25, 25]))
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dysample_swap.upsamplers.options import check_defaults, check_scale
from dysample_swap.upsamplers.sizing import Factor, Size, fit_native


def _padded(features: Tensor, kernel_size: int, group: int) -> Tensor:
    """The zero-padded input, ``(N, group, C/group, H + 2r, W + 2r)``: tap ``(dy, dx)`` is the window at ``(dy, dx)``."""
    n, channels, height, width = features.shape
    r = (kernel_size - 1) // 2
    return F.pad(features, (r, r, r, r)).view(n, group, channels // group, height + 2 * r, width + 2 * r)


def _subpixel_major(t: Tensor, group: int, height: int, scale: int, width: int) -> Tensor:
    """``(N, group*m, s*H, s*W)`` -> contiguous ``(N, group, s, s, m, H, W)``: sub-pixel ``(i, j)`` planes at the input size."""
    n = t.shape[0]
    return t.reshape(n, group, -1, height, scale, width, scale).permute(0, 1, 4, 6, 2, 3, 5).contiguous()


class _CARAFEFunction(torch.autograd.Function):
    """The reassembly with hand-written first derivatives.

    Both passes loop over the output sub-pixels ``(i, j)`` and the ``k*k`` taps, multiply-accumulating
    contiguous input-sized planes (4-10x faster on the CPU than autograd through a broadcast loop,
    which reduces over the strided sub-pixel axes); only ``features`` and ``kernels`` are saved.
    """

    @staticmethod
    def forward(ctx: Any, features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale: int) -> Tensor:
        n, channels, height, width = features.shape
        padded = _padded(features, kernel_size, group)
        weights = _subpixel_major(kernels, group, height, scale, width)  # (N, g, s, s, k*k, H, W)
        dtype = torch.promote_types(features.dtype, kernels.dtype)
        out = features.new_empty((n, group, channels // group, height, scale, width, scale), dtype=dtype)
        plane = features.new_empty((n, group, channels // group, height, width), dtype=dtype)
        for i in range(scale):
            for j in range(scale):
                plane.zero_()
                for t in range(kernel_size * kernel_size):
                    dy, dx = divmod(t, kernel_size)
                    plane.addcmul_(padded[..., dy : dy + height, dx : dx + width], weights[:, :, i, j, t, None])
                out[:, :, :, :, i, :, j] = plane
        ctx.save_for_backward(features, kernels)
        ctx.settings = (kernel_size, group, scale)
        return out.view(n, channels, scale * height, scale * width)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        features, kernels = ctx.saved_tensors
        kernel_size, group, scale = ctx.settings
        height, width = features.shape[-2:]
        r = (kernel_size - 1) // 2
        grad = _subpixel_major(grad, group, height, scale, width)  # (N, g, s, s, C/g, H, W)
        weights = _subpixel_major(kernels.to(grad.dtype), group, height, scale, width)
        padded = _padded(features.to(grad.dtype), kernel_size, group)
        want_features, want_kernels = ctx.needs_input_grad[:2]
        grad_padded = torch.zeros_like(padded) if want_features else None
        grad_weights = torch.empty_like(weights) if want_kernels else None
        for t in range(kernel_size * kernel_size):
            dy, dx = divmod(t, kernel_size)
            window = (slice(None),) * 3 + (slice(dy, dy + height), slice(dx, dx + width))
            for i in range(scale):
                for j in range(scale):
                    if grad_padded is not None:  # a tap's input gets its kernel weight times the output gradient
                        grad_padded[window].addcmul_(grad[:, :, i, j], weights[:, :, i, j, t, None])
                    if grad_weights is not None:  # a kernel weight gets its tap's input times the gradient, summed
                        grad_weights[:, :, i, j, t] = torch.linalg.vecdot(grad[:, :, i, j], padded[window], dim=2)
        grad_features = grad_kernels = None
        if grad_padded is not None:
            grad_features = grad_padded[..., r : r + height, r : r + width].reshape(features.shape).to(features.dtype)
        if grad_weights is not None:
            grad_kernels = grad_weights.permute(0, 1, 4, 5, 2, 6, 3).reshape(kernels.shape).to(kernels.dtype)
        return grad_features, grad_kernels, None, None, None


def carafe(features: Tensor, kernels: Tensor, kernel_size: int, group: int, scale: int) -> Tensor:
    """Reassemble ``features`` with per-output-pixel ``kernels`` (the CARAFE operator).

    Differentiable once in both inputs (as mmcv's op); the backward pass is hand-written and, like
    the forward, makes no tensor larger than the output.

    Args:
        features: ``(N, C, H, W)``, ``C`` divisible by ``group``.
        kernels: ``(N, group * kernel_size**2, scale*H, scale*W)``; channel ``g*k*k + dy*k + dx``
            weights tap ``(dy, dx)`` of channel group ``g`` (mmcv's layout). Not normalised here.
        kernel_size: odd reassembly kernel size ``k``.
        group: channel groups; group ``g`` is channels ``[g*C/group, (g+1)*C/group)``.
        scale: integer upsampling factor.

    Returns:
        ``(N, C, scale*H, scale*W)``.

    Example:
        >>> x = torch.randn(1, 4, 3, 3)
        >>> one_hot = torch.zeros(1, 9, 6, 6); one_hot[:, 4] = 1      # 3x3 kernels, centre tap only
        >>> torch.equal(carafe(x, one_hot, 3, 1, 2), x.repeat_interleave(2, 2).repeat_interleave(2, 3))
        True
    """
    n, channels, height, width = features.shape
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"carafe kernel_size must be odd and >= 1, got {kernel_size}")
    if channels % group:
        raise ValueError(f"carafe: {channels} feature channels are not divisible by group={group}")
    expected = (n, group * kernel_size * kernel_size, scale * height, scale * width)
    if tuple(kernels.shape) != expected:
        raise ValueError(
            f"carafe: kernels must have shape {expected} (N, group*kernel_size**2, scale*H, scale*W) for "
            f"features {tuple(features.shape)}, kernel_size={kernel_size}, group={group}, scale={scale}; "
            f"got {tuple(kernels.shape)}"
        )
    return _CARAFEFunction.apply(features, kernels, kernel_size, group, scale)


class CARAFEPack(nn.Module):
    """CARAFE upsampler with its kernel-prediction branch, as mmcv's ``CARAFEPack``.

    Args:
        channels: input (and output) channels.
        scale_factor: integer upsampling ratio (mmcv's name; the native output is this times the input).
        up_kernel: reassembly kernel size (odd).
        up_group: reassembly channel groups.
        encoder_kernel: kernel size of the content encoder.
        encoder_dilation: dilation of the content encoder.
        compressed_channels: output channels of the channel compressor.
        size, output_scale_factor: defaults for ``forward`` when it gets neither (as
            ``nn.Upsample(size=...)`` / ``nn.Upsample(scale_factor=...)``; the latter named so because
            ``scale_factor`` is mmcv's integer ratio).

    Parameters at ``channels=256``, x2, defaults: 74,148 (16,448 compressor + 57,700 encoder).

    Example:
        >>> up = CARAFEPack(256, scale_factor=2)
        >>> sorted(up.state_dict())
        ['channel_compressor.bias', 'channel_compressor.weight', 'content_encoder.bias', 'content_encoder.weight']
        >>> sum(p.numel() for p in up.parameters())
        74148
    """

    def __init__(
        self,
        channels: int,
        scale_factor: int,
        up_kernel: int = 5,
        up_group: int = 1,
        encoder_kernel: int = 3,
        encoder_dilation: int = 1,
        compressed_channels: int = 64,
        *,
        size: Size | None = None,
        output_scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        check_scale(scale_factor, "CARAFEPack")
        check_defaults(size, output_scale_factor, "CARAFEPack")
        if up_kernel < 1 or up_kernel % 2 == 0:
            raise ValueError(f"CARAFEPack up_kernel must be odd and >= 1, got {up_kernel}")
        if channels % up_group:
            raise ValueError(f"CARAFEPack: channels={channels} is not divisible by up_group={up_group}")
        self.channels = channels
        self.scale_factor = scale_factor
        self.up_kernel = up_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        self.size = size
        self.output_scale_factor = output_scale_factor
        self.channel_compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            up_kernel * up_kernel * up_group * scale_factor * scale_factor,
            encoder_kernel,
            padding=(encoder_kernel - 1) * encoder_dilation // 2,
            dilation=encoder_dilation,
        )
        self.init_weights()

    @property
    def scale(self) -> int:
        """The integer ratio, under the name the other upsamplers use.

        Example:
            >>> CARAFEPack(8, 4).scale
            4
        """
        return self.scale_factor

    def init_weights(self) -> None:
        """mmcv's initialisation: Xavier-uniform weights and zero biases, then ``content_encoder.weight ~ N(0, 0.001)``.

        Example:
            >>> CARAFEPack(8, 2).content_encoder.weight.std().item() < 0.01
            True
        """
        for conv in (self.channel_compressor, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(cast(Tensor, conv.bias))  # both are built with a bias
        nn.init.normal_(self.content_encoder.weight, std=0.001)

    def kernel_normalizer(self, mask: Tensor) -> Tensor:
        """``pixel_shuffle`` the encoder output to the output resolution and softmax each group's ``k*k`` taps.

        Example:
            >>> up = CARAFEPack(8, 2)
            >>> k = up.kernel_normalizer(torch.randn(1, 100, 3, 3))
            >>> k.shape, torch.allclose(k.sum(1), torch.ones(1, 6, 6))
            (torch.Size([1, 25, 6, 6]), True)
        """
        mask = F.pixel_shuffle(mask, self.scale_factor)
        n, mask_channels, height, width = mask.shape
        grouped = mask.view(n, mask_channels // self.up_kernel**2, self.up_kernel**2, height, width)
        return grouped.softmax(dim=2).view(n, mask_channels, height, width)

    def feature_reassemble(self, x: Tensor, mask: Tensor) -> Tensor:
        """Apply :func:`carafe` with this module's kernel size, groups and ratio.

        Example:
            >>> up = CARAFEPack(8, 2)
            >>> up.feature_reassemble(torch.randn(1, 8, 3, 3), torch.rand(1, 25, 6, 6)).shape
            torch.Size([1, 8, 6, 6])
        """
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)

    def forward(self, x: Tensor, size: Size | None = None, scale_factor: Factor | None = None) -> Tensor:
        """Upsample ``x`` to ``size`` / by ``scale_factor`` (``F.interpolate``'s meaning), else the defaults, else x ``scale``.

        Example:
            >>> CARAFEPack(8, 2)(torch.randn(1, 8, 15, 17), scale_factor=3).shape
            torch.Size([1, 8, 45, 51])
        """
        if size is None and scale_factor is None:
            size, scale_factor = self.size, self.output_scale_factor
        mask = self.kernel_normalizer(self.content_encoder(self.channel_compressor(x)))
        return fit_native(self.feature_reassemble(x, mask), self.scale_factor, size, scale_factor)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, scale_factor={self.scale_factor}, up_kernel={self.up_kernel}, "
            f"up_group={self.up_group}, compressed_channels={self.compressed_channels}"
        )
