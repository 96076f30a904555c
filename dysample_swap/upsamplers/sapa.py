"""SAPA-B, Similarity-Aware Point Affiliation (Lu et al., NeurIPS 2022), in pure PyTorch.

SAPA upsamples a low-resolution feature ``x`` (``(B, C, h, w)``) with kernels made from the similarity
between each high-resolution pixel of a **guide** (the encoder feature of the skip connection at the
output resolution, the authors' ``y``, ``(B, C_guide, s*h, s*w)``) and the low-resolution pixels around
it. SAPA-B (the base variant, the DySample paper's comparison):

* ``q = Conv1x1_q(GroupNorm_32(guide))``, ``k = Conv1x1_k(GroupNorm_32(x))`` (both to ``embedding_dim = 32``
  channels, with bias; ``norm=False`` skips the GroupNorms);
* for output pixel ``p`` with source pixel ``s(p) = (floor(i/s), floor(j/s))`` and the ``k*k`` offsets
  ``d`` of a ``k x k`` window (row-major, ``k = up_kernel_size = 5``): ``logit[d, p] = <q[:, p], k[:, s(p) + d]>``,
  0 outside the map (zero padding: such a neighbour still enters the softmax, with logit 0);
* ``A = softmax_d(logit)`` and ``out[c, p] = sum_d A[d, p] * x[c, s(p) + d]``: the CARAFE reassembly
  (:func:`dysample_swap.upsamplers.carafe.carafe`, one group, zero padding) of the *un-normalised* ``x``.

:func:`sapa_similarity` computes the logits as ``k*k`` shifted dot products at the output resolution
(``k*k`` channels per output pixel, never ``k*k*C``), :func:`sapa` the whole attention.

The constructor takes the authors' arguments (``tiny-smart/sapa``, ``sapa_base.py``: ``dim_y, dim_x=None,
up_factor=2, up_kernel_size=5, embedding_dim=32, qkv_bias=True, norm=True``) and builds the same
submodules (``norm_y``, ``norm_x``, ``q``, ``k``), so their state dicts load with ``strict=True``;
initialisation is theirs (convolutions ``N(0, 0.02)`` with zero bias, GroupNorms ``1`` / ``0``). The
authors' CUDA ops ``qk`` / ``av`` are replaced by the formulas above (what their pure-PyTorch check
functions compute). **Argument order**: ours is ``forward(x, guide)``, the low-resolution feature first;
the authors' is ``forward(y, x)``, the guide first.

At swap time SAPA changes the function: with the authors' small initial weights the attention is
almost uniform over the ``5 x 5`` window (a box filter with zero padding), never the one-hot nearest
or the bilinear weights. Nothing is exact at swap time, and there is no ``init="match"``.

Other output sizes (e.g. 13x13 -> 25x25): :class:`~dysample_swap.upsamplers.guided.GuidedUpsampler`.

Example:
    >>> import torch
    >>> up = SAPA(32)
    >>> x, guide = torch.randn(1, 32, 13, 13), torch.randn(1, 32, 25, 25)
    >>> up(x, guide).shape, up(x, guide, size=(25, 25)).shape
    (torch.Size([1, 32, 26, 26]), torch.Size([1, 32, 25, 25]))
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap.upsamplers.carafe import carafe
from dysample_swap.upsamplers.guided import GuidedUpsampler
from dysample_swap.upsamplers.options import check_defaults, check_scale
from dysample_swap.upsamplers.sizing import Factor, Size

NORM_GROUPS = 32
"""The GroupNorms' groups (the authors' ``nn.GroupNorm(32, dim)``): channels must be a multiple of it."""


def sapa_similarity(query: Tensor, key: Tensor, kernel_size: int = 5, scale: int = 2) -> Tensor:
    """SAPA's logits: each output pixel's dot product with the keys of the ``k x k`` window around its source pixel.

    ``logit[n, dy*k + dx, i, j] = sum_e query[n, e, i, j] * key[n, e, i//s + dy - r, j//s + dx - r]`` with
    ``r = (k-1)//2`` and 0 for a key outside the map (the authors' ``qk``). Computed tap by tap, so the
    largest temporary is ``query``-sized.

    Args:
        query: ``(N, E, scale*H, scale*W)``, from the guide.
        key: ``(N, E, H, W)``, from the low-resolution feature.
        kernel_size: the odd window size ``k``.
        scale: the integer upsampling factor ``s``.

    Returns:
        ``(N, k*k, scale*H, scale*W)``.

    Example:
        >>> q, k = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3)
        >>> logits = sapa_similarity(q, k, 3, 2)
        >>> logits.shape, torch.allclose(logits[0, 4, 3, 5], q[0, :, 3, 5] @ k[0, :, 1, 2], atol=1e-6)   # the centre tap
        (torch.Size([1, 9, 6, 6]), True)
    """
    n, embed, height, width = key.shape
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"sapa_similarity: kernel_size must be odd and >= 1, got {kernel_size}")
    expected = (n, embed, scale * height, scale * width)
    if tuple(query.shape) != expected:
        raise ValueError(
            f"sapa_similarity: query must have shape {expected} (N, E, scale*H, scale*W) for key "
            f"{tuple(key.shape)} and scale={scale}, got {tuple(query.shape)}"
        )
    r = (kernel_size - 1) // 2
    padded = F.pad(key, (r, r, r, r))
    q = query.view(n, embed, height, scale, width, scale)
    taps = []
    for t in range(kernel_size * kernel_size):
        dy, dx = divmod(t, kernel_size)
        window = padded[:, :, dy : dy + height, None, dx : dx + width, None]  # broadcast over the sub-pixels
        taps.append((q * window).sum(dim=1))
    return torch.stack(taps, dim=1).view(n, kernel_size * kernel_size, scale * height, scale * width)


def sapa(x: Tensor, query: Tensor, key: Tensor, kernel_size: int = 5, scale: int = 2) -> Tensor:
    """SAPA's attention: softmax the similarity logits over the window, then reassemble ``x`` with them.

    Args:
        x: the values, the feature to upsample, ``(N, C, H, W)``.
        query: ``(N, E, scale*H, scale*W)`` (SAPA-B: ``Conv1x1_q(GroupNorm(guide))``).
        key: ``(N, E, H, W)`` (SAPA-B: ``Conv1x1_k(GroupNorm(x))``).
        kernel_size: the odd window size ``k``.
        scale: the integer upsampling factor.

    Returns:
        ``(N, C, scale*H, scale*W)``.

    Example:
        >>> x = torch.randn(1, 8, 3, 3)
        >>> out = sapa(x, torch.zeros(1, 4, 6, 6), torch.randn(1, 4, 3, 3), 3, 2)   # zero query: uniform 3x3 attention
        >>> torch.allclose(out, F.avg_pool2d(x, 3, 1, 1).repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-6)
        True
    """
    if x.shape[0] != key.shape[0] or x.shape[-2:] != key.shape[-2:]:
        raise ValueError(f"sapa: key must be (N, E, H, W) for x {tuple(x.shape)} (N, C, H, W), got {tuple(key.shape)}")
    attention = sapa_similarity(query, key, kernel_size, scale).softmax(dim=1)
    return carafe(x, attention, kernel_size, 1, scale)


class SAPA(GuidedUpsampler):
    """SAPA-B upsampler, with the authors' constructor (``tiny-smart/sapa``'s ``sapa_base.SAPA``).

    Args:
        dim_y: the guide's channels (the authors' ``y``); a multiple of 32 with ``norm=True``.
        dim_x: ``x``'s channels; ``None``: ``dim_y``.
        up_factor: integer upsampling ratio ``>= 2`` (the native output is this times the input).
        up_kernel_size: the attention window (odd).
        embedding_dim: the query/key channels.
        qkv_bias: biases in the query/key convolutions.
        norm: GroupNorm(32) on the guide and on ``x`` before the projections.
        size, scale_factor: defaults for ``forward`` when it gets neither (as ``nn.Upsample``).

    Parameters at ``C=256``, defaults: 17,472.

    Example:
        >>> up = SAPA(256)
        >>> sum(p.numel() for p in up.parameters()), sorted(up.state_dict())[:3]
        (17472, ['k.bias', 'k.weight', 'norm_x.bias'])
        >>> up(torch.randn(2, 256, 6, 5), torch.randn(2, 256, 12, 10)).shape
        torch.Size([2, 256, 12, 10])
    """

    traced_sizes_fixed = True  # the CARAFE-style reassembly slices by the traced sizes

    x_channels_arg: ClassVar[str | None] = "dim_x"
    guide_channels_arg: ClassVar[str] = "dim_y"

    def __init__(
        self,
        dim_y: int,
        dim_x: int | None = None,
        up_factor: int = 2,
        up_kernel_size: int = 5,
        embedding_dim: int = 32,
        qkv_bias: bool = True,
        norm: bool = True,
        *,
        size: Size | None = None,
        scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        check_scale(up_factor, who)
        check_defaults(size, scale_factor, who)
        if up_kernel_size < 1 or up_kernel_size % 2 == 0:
            raise ValueError(f"{who} up_kernel_size must be odd and >= 1, got {up_kernel_size}")
        dim_x = dim_x if dim_x is not None else dim_y
        if norm:
            for name, dim in (("dim_y", dim_y), ("dim_x", dim_x)):
                if dim % NORM_GROUPS:
                    raise ValueError(
                        f"{who}: {name}={dim} is not a multiple of {NORM_GROUPS}, which its GroupNorm({NORM_GROUPS}) "
                        "needs; pass a multiple of 32 or norm=False"
                    )
        self.dim_y = dim_y
        self.dim_x = dim_x
        self.up_factor = up_factor
        self.up_kernel_size = up_kernel_size
        self.embedding_dim = embedding_dim
        self.qkv_bias = qkv_bias
        self.norm = norm
        self.size = size
        self.scale_factor = scale_factor
        if norm:
            self.norm_y = nn.GroupNorm(NORM_GROUPS, dim_y)
            self.norm_x = nn.GroupNorm(NORM_GROUPS, dim_x)
        self.q = nn.Conv2d(dim_y, embedding_dim, kernel_size=1, bias=qkv_bias)
        self.k = nn.Conv2d(dim_x, embedding_dim, kernel_size=1, bias=qkv_bias)
        self.init_weights()

    def init_weights(self) -> None:
        """The authors' initialisation: convolution weights ``N(0, 0.02)``, zero biases (GroupNorms: PyTorch's 1 / 0).

        Example:
            >>> up = SAPA(32); up.init_weights()
            >>> up.q.weight.std().item() < 0.05, bool((up.k.bias == 0).all())
            (True, True)
        """
        for conv in (self.q, self.k):
            nn.init.normal_(conv.weight, std=0.02)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @property
    def scale(self) -> int:
        """The integer ratio, under the name the other upsamplers use.

        Example:
            >>> SAPA(32, up_factor=4).scale
            4
        """
        return self.up_factor

    def native(self, x: Tensor, guide: Tensor) -> Tensor:
        """:func:`sapa` with this module's layers: ``x`` ``(B, dim_x, h, w)``, the guide at ``(scale*h, scale*w)``.

        Example:
            >>> SAPA(32)(torch.randn(1, 32, 13, 13), torch.randn(1, 32, 26, 26), scale_factor=1.5).shape
            torch.Size([1, 32, 19, 19])
        """
        if self.norm:
            query, key = self.q(self.norm_y(guide)), self.k(self.norm_x(x))
        else:
            query, key = self.q(guide), self.k(x)
        return sapa(x, query, key, self.up_kernel_size, self.up_factor)

    def extra_repr(self) -> str:
        return (
            f"dim_y={self.dim_y}, dim_x={self.dim_x}, up_factor={self.up_factor}, "
            f"up_kernel_size={self.up_kernel_size}, embedding_dim={self.embedding_dim}, norm={self.norm}"
        )
