"""A2U, Affinity-Aware Upsampling (Dai, Lu, Shen, CVPR 2021), in pure PyTorch, as the DySample paper compares it.

A2U upsamples a low-resolution feature ``x`` (``(B, C, h, w)``) by 2 with CARAFE kernels predicted from
the second-order (affinity) statistics of a **guide**: the encoder feature of the skip connection at
the output resolution (the authors' ``feature_en``, ``(B, C_guide, 2h, 2w)``). The configuration is the
DySample authors' (``tiny-smart/detection-with-upsamplers``, ``mmdet/models/upsamplers/a2u.py``,
``A2UUp`` / ``InterChannelUp``: "dynamic-cs", upsampling kernel ``s = 3``, 6x6 encoding kernels,
kernels shared by all channels, one group, rank ``d = 1``). Per sample, from the guide ``g``:

* ``p = Conv1x1_P(GlobalAvgPool(g))`` (``C_guide -> 4*s*s``, with bias); ``u = Conv1x1_U(AdaptiveAvgPool_6x6(g))``
  and ``v = Conv1x1_V(AdaptiveAvgPool_6x6(g))`` (``C_guide -> 1``, with bias): two 6x6 kernels per sample;
* ``U = g (*) u``, ``V = g (*) v``: every channel convolved with the same 6x6 kernel, stride 2, padding 2
  (``(C_guide, h, w)``); ``U' = LeakyReLU(GroupNorm_32(U))``, ``V' = LeakyReLU(GroupNorm_32(V))`` (slope 0.01);
* ``a = sum_c U'_c * V'_c / sqrt(C_guide)`` (``(1, h, w)``), ``r = p * a`` (``(4*s*s, h, w)``),
  ``K = softmax_{s*s}(sigmoid(pixel_shuffle(r, 2)))`` (``(s*s, 2h, 2w)``: a sigmoid, *then* the softmax);
* ``out = CARAFE(x, K, s, groups=1, 2)`` (:func:`dysample_swap.upsamplers.carafe.carafe`, zero padding).

Since the softmax acts on values in ``(0, 1)``, the kernels stay close to uniform. ``x`` may have any
number of channels (the kernels are shared by all of them); the guide must have ``in_channels``.

The constructor takes the authors' arguments (``A2UUp(in_channels, up_kernel=3, scale=2)``) and builds
the same submodules (``kernel_gen.bnu.0``, ``kernel_gen.bnv.0``, ``kernel_gen.bconv_UP.1``,
``kernel_gen.bconv_U.1``, ``kernel_gen.bconv_V.1``), so their state dicts load with ``strict=True``; the
initialisation is theirs (none of their own: PyTorch's defaults). The ratio is fixed at 2 (stride-2
encoding, ``pixel_shuffle(., 2)``); ``up_kernel`` sets ``s`` (the authors hard-code ``s = 3`` in the kernel
generator, so only ``up_kernel=3`` runs there; another odd ``up_kernel`` is the A2U matting code's
``up_kernel_size``). **Argument order**: ours is ``forward(x, guide)``, the low-resolution feature first; the
authors' is ``forward(feature_en, feature_de)``, the guide first.

At swap time A2U changes the function: its kernels are a softmax of sigmoids, nearly a uniform 3x3
average with zero padding, never the one-hot nearest or the bilinear weights. Nothing is exact at
swap time, and there is no ``init="match"``.

Other output sizes (e.g. 13x13 -> 25x25): :class:`~dysample_swap.upsamplers.guided.GuidedUpsampler`.

Example:
    >>> import torch
    >>> up = A2U(32)
    >>> x, guide = torch.randn(1, 32, 13, 13), torch.randn(1, 32, 25, 25)
    >>> up(x, guide).shape, up(x, guide, size=(25, 25)).shape
    (torch.Size([1, 32, 26, 26]), torch.Size([1, 32, 25, 25]))
"""

from __future__ import annotations

import math
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap.upsamplers.carafe import carafe
from dysample_swap.upsamplers.guided import GuidedUpsampler
from dysample_swap.upsamplers.options import check_defaults
from dysample_swap.upsamplers.sizing import Factor, Size

NORM_GROUPS = 32
"""The GroupNorms' groups (the authors' ``nn.GroupNorm(num_groups=32)``): ``in_channels`` must be a multiple of it."""
ENCODE_KERNEL = 6
"""The 6x6 encoding kernels ``u``, ``v`` (the authors' ``k``), applied with stride 2 and padding 2."""
SCALE = 2
"""A2U's only ratio."""
NEGATIVE_SLOPE = 0.01
"""``nn.LeakyReLU()``'s default slope, after each GroupNorm."""


def adaptive_mean(x: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, bins)``; while a graph is exported it is written as box sums of an integral image
    at bin edges computed from the input size, so the exported graph keeps that size dynamic (the exporters bake
    adaptive pooling's bins for the example's size).

    Example:
        >>> x = torch.randn(1, 2, 13, 8)
        >>> torch.equal(adaptive_mean(x, 6), F.adaptive_avg_pool2d(x, 6))
        True
    """
    if not (torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()):
        return F.adaptive_avg_pool2d(x, bins)
    height, width = x.shape[-2:]
    integral = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    edges = torch.arange(bins + 1, device=x.device)
    top, bottom = (edges[:-1] * height) // bins, (edges[1:] * height + bins - 1) // bins
    left, right = (edges[:-1] * width) // bins, (edges[1:] * width + bins - 1) // bins
    lower, upper = integral.index_select(-2, bottom), integral.index_select(-2, top)
    box = lower.index_select(-1, right) - lower.index_select(-1, left) - upper.index_select(-1, right)
    box = box + upper.index_select(-1, left)
    area = ((bottom - top)[:, None] * (right - left)[None, :]).to(x.dtype)
    return box / area


def a2u_kernels(
    guide: Tensor,
    pool_weight: Tensor,
    pool_bias: Tensor | None,
    u_weight: Tensor,
    u_bias: Tensor | None,
    v_weight: Tensor,
    v_bias: Tensor | None,
    norm_u_weight: Tensor | None,
    norm_u_bias: Tensor | None,
    norm_v_weight: Tensor | None,
    norm_v_bias: Tensor | None,
    *,
    kernel_size: int = 3,
    num_groups: int = NORM_GROUPS,
) -> Tensor:
    """A2U's reassembly kernels (channel-shared, rank 1) from the guide, at twice the guide's half size.

    Args:
        guide: ``(N, C, 2h, 2w)``.
        pool_weight, pool_bias: ``Conv1x1_P`` on the global average, ``(4*k*k, C, 1, 1)``, ``(4*k*k,)``.
        u_weight, u_bias, v_weight, v_bias: ``Conv1x1_U`` / ``Conv1x1_V`` on the 6x6 average pool,
            ``(1, C, 1, 1)``, ``(1,)``.
        norm_u_weight, norm_u_bias, norm_v_weight, norm_v_bias: the GroupNorms' affine parameters, ``(C,)``.
        kernel_size: the reassembly kernel size ``k`` (odd).
        num_groups: the GroupNorms' groups.

    Returns:
        ``(N, k*k, 2h, 2w)``, each pixel's ``k*k`` weights summing to 1 (mmcv's CARAFE layout).

    Example:
        >>> import torch
        >>> c = 32
        >>> w = [torch.zeros(36, c, 1, 1), torch.zeros(36)] + [torch.randn(1, c, 1, 1), torch.zeros(1)] * 2 + [None] * 4
        >>> k = a2u_kernels(torch.randn(1, c, 6, 8), *w)     # zero P: every logit sigmoid(0), uniform kernels
        >>> k.shape, torch.allclose(k, torch.full_like(k, 1 / 9))
        (torch.Size([1, 9, 6, 8]), True)
    """
    n, channels, height, width = guide.shape
    if height % 2 or width % 2:
        raise ValueError(
            f"a2u_kernels: the guide must have an even height and width (2h, 2w), got {tuple(guide.shape)}; "
            "resize it to twice the size of the feature to upsample"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"a2u_kernels: kernel_size must be odd and >= 1, got {kernel_size}")
    if pool_weight.shape[0] != 4 * kernel_size * kernel_size:
        raise ValueError(
            f"a2u_kernels: pool_weight must have 4*kernel_size**2 = {4 * kernel_size**2} output channels "
            f"(kernel_size={kernel_size}), got {tuple(pool_weight.shape)}"
        )
    p = F.conv2d(guide.mean((2, 3), keepdim=True), pool_weight, pool_bias)  # (N, 4*k*k, 1, 1): the global average
    encodings = []
    for weight, bias, norm_weight, norm_bias in (
        (u_weight, u_bias, norm_u_weight, norm_u_bias),
        (v_weight, v_bias, norm_v_weight, norm_v_bias),
    ):
        kernel = F.conv2d(adaptive_mean(guide, ENCODE_KERNEL), weight, bias)  # (N, 1, 6, 6): one per sample
        per_channel = kernel.expand(n, channels, ENCODE_KERNEL, ENCODE_KERNEL).reshape(
            n * channels, 1, ENCODE_KERNEL, ENCODE_KERNEL
        )
        encoded = F.conv2d(
            guide.reshape(1, n * channels, height, width),
            per_channel,
            stride=2,
            padding=(ENCODE_KERNEL - 1) // 2,
            groups=n * channels,
        ).view(n, channels, height // 2, width // 2)
        encoded = F.group_norm(encoded, num_groups, norm_weight, norm_bias)
        encodings.append(F.leaky_relu(encoded, NEGATIVE_SLOPE))
    affinity = (encodings[0] * encodings[1]).sum(dim=1, keepdim=True) / math.sqrt(channels)  # (N, 1, h, w)
    return F.pixel_shuffle(p * affinity, 2).sigmoid().softmax(dim=1)


def a2u(
    x: Tensor, guide: Tensor, *weights: Tensor | None, kernel_size: int = 3, num_groups: int = NORM_GROUPS
) -> Tensor:
    """A2U's x2 output: :func:`a2u_kernels` from the guide, then the CARAFE reassembly of ``x``.

    Args:
        x: the feature to upsample, ``(N, C_x, h, w)`` (any channels).
        guide: ``(N, C, 2h, 2w)``.
        weights: the ten weights of :func:`a2u_kernels`, in its order (``pool_weight`` ... ``norm_v_bias``).
        kernel_size: the reassembly kernel size (odd).
        num_groups: the GroupNorms' groups.

    Returns:
        ``(N, C_x, 2h, 2w)``.

    Example:
        >>> import torch
        >>> c, x = 32, torch.randn(1, 4, 3, 4)
        >>> w = [torch.zeros(36, c, 1, 1), torch.zeros(36)] + [torch.randn(1, c, 1, 1), torch.zeros(1)] * 2 + [None] * 4
        >>> out = a2u(x, torch.randn(1, c, 6, 8), *w)        # uniform kernels: a 3x3 box filter, repeated
        >>> torch.allclose(out, F.avg_pool2d(x, 3, 1, 1).repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-6)
        True
    """
    n, _, height, width = x.shape
    if guide.shape[0] != n or tuple(guide.shape[-2:]) != (SCALE * height, SCALE * width):
        raise ValueError(
            f"a2u: the guide must be (N, C, 2h, 2w) = ({n}, C, {SCALE * height}, {SCALE * width}) for x "
            f"{tuple(x.shape)}, got {tuple(guide.shape)}; resize the guide to the native size"
        )
    if len(weights) != 10:
        raise ValueError(f"a2u: pass the ten weights of a2u_kernels (pool_weight ... norm_v_bias), got {len(weights)}")
    tensors = cast("tuple[Tensor, ...]", weights)  # a2u_kernels says which may be None
    kernels = a2u_kernels(guide, *tensors, kernel_size=kernel_size, num_groups=num_groups)
    return carafe(x, kernels, kernel_size, 1, SCALE)


class A2UKernelGenerator(nn.Module):
    """Holds A2U's kernel-generator layers under the authors' names (``InterChannelUp``).

    :func:`a2u_kernels` computes with them; the pooling and LeakyReLU layers are kept in the
    ``nn.Sequential`` s only so that the parameters have the authors' names.

    Args:
        c: the guide's channels (a multiple of 32).
        s: the reassembly kernel size.

    Example:
        >>> sorted(A2UKernelGenerator(32).state_dict())[:4]
        ['bconv_U.1.bias', 'bconv_U.1.weight', 'bconv_UP.1.bias', 'bconv_UP.1.weight']
    """

    def __init__(self, c: int, s: int = 3) -> None:
        super().__init__()
        self.inchannel = c
        self.s = s
        self.bnu = nn.Sequential(nn.GroupNorm(num_channels=c, num_groups=NORM_GROUPS), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.bnv = nn.Sequential(nn.GroupNorm(num_channels=c, num_groups=NORM_GROUPS), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.bconv_UP = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(c, (s * 2) ** 2, 1))
        self.bconv_U = nn.Sequential(nn.AdaptiveAvgPool2d((ENCODE_KERNEL, ENCODE_KERNEL)), nn.Conv2d(c, 1, 1))
        self.bconv_V = nn.Sequential(nn.AdaptiveAvgPool2d((ENCODE_KERNEL, ENCODE_KERNEL)), nn.Conv2d(c, 1, 1))

    def forward(self, guide: Tensor) -> Tensor:
        """The kernels (:func:`a2u_kernels`) for a guide ``(N, c, 2h, 2w)``: ``(N, s*s, 2h, 2w)``.

        Example:
            >>> import torch
            >>> A2UKernelGenerator(32)(torch.randn(2, 32, 8, 6)).shape
            torch.Size([2, 9, 8, 6])
        """
        up, u, v = (cast(nn.Conv2d, seq[1]) for seq in (self.bconv_UP, self.bconv_U, self.bconv_V))
        norm_u, norm_v = cast(nn.GroupNorm, self.bnu[0]), cast(nn.GroupNorm, self.bnv[0])
        return a2u_kernels(
            guide,
            up.weight,
            up.bias,
            u.weight,
            u.bias,
            v.weight,
            v.bias,
            norm_u.weight,
            norm_u.bias,
            norm_v.weight,
            norm_v.bias,
            kernel_size=self.s,
            num_groups=norm_u.num_groups,
        )


class A2U(GuidedUpsampler):
    """A2U upsampler ("dynamic-cs", the DySample paper's comparison), with the authors' ``A2UUp`` constructor.

    Args:
        in_channels: the guide's channels (a multiple of 32, for the GroupNorms).
        up_kernel: the CARAFE reassembly kernel size (odd; the authors' configuration: 3).
        scale: the upsampling ratio; A2U is x2 only.
        size, scale_factor: defaults for ``forward`` when it gets neither (as ``nn.Upsample``).

    Parameters at ``C=256``: 10,790 (9,252 ``bconv_UP``, 2 x 257 ``bconv_U`` / ``bconv_V``, 2 x 512 GroupNorms).

    Example:
        >>> import torch
        >>> up = A2U(256)
        >>> sum(p.numel() for p in up.parameters())
        10790
        >>> up(torch.randn(2, 256, 6, 5), torch.randn(2, 256, 12, 10)).shape
        torch.Size([2, 256, 12, 10])
    """

    guide_channels_arg: ClassVar[str] = "in_channels"

    def __init__(
        self,
        in_channels: int,
        up_kernel: int = 3,
        scale: int = 2,
        *,
        size: Size | None = None,
        scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        check_defaults(size, scale_factor, who)
        if scale != SCALE or isinstance(scale, bool):
            raise ValueError(
                f"{who} upsamples by 2 only (stride-2 encoding, pixel_shuffle by 2), got scale={scale!r}; "
                "pass scale=2 (chain two for x4) or choose another upsampler"
            )
        if not isinstance(up_kernel, int) or up_kernel < 1 or up_kernel % 2 == 0:
            raise ValueError(f"{who} up_kernel must be an odd integer >= 1, got {up_kernel!r} (the authors' is 3)")
        if in_channels % NORM_GROUPS:
            raise ValueError(
                f"{who}: in_channels={in_channels} is not a multiple of {NORM_GROUPS}, which its "
                f"GroupNorm({NORM_GROUPS}) needs; pass a guide with a multiple of 32 channels"
            )
        self.in_channels = in_channels
        self.up_kernel = up_kernel
        self.size = size
        self.scale_factor = scale_factor
        self.kernel_gen = A2UKernelGenerator(in_channels, up_kernel)

    @property
    def scale(self) -> int:
        """The ratio, 2 (A2U's only one).

        Example:
            >>> A2U(32).scale
            2
        """
        return SCALE

    def native(self, x: Tensor, guide: Tensor) -> Tensor:
        """A2U's x2 output: the kernels of the guide ``(B, in_channels, 2h, 2w)`` reassemble ``x`` ``(B, C_x, h, w)``.

        Example:
            >>> import torch
            >>> A2U(32)(torch.randn(1, 8, 13, 13), torch.randn(1, 32, 26, 26), scale_factor=1.5).shape
            torch.Size([1, 8, 19, 19])
        """
        return carafe(x, self.kernel_gen(guide), self.up_kernel, 1, SCALE)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, up_kernel={self.up_kernel}, scale={self.scale}"
