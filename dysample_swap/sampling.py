"""Functional core of DySample: turn per-pixel offsets into a sampling grid and resample.

Everything here is a pure function of tensors and plain arguments (no parameters), in
the spirit of ``torchvision.ops``; :class:`dysample_swap.DySample` is a thin module on
top. Positions are measured in *input pixels* with pixel centres at ``k + 0.5``; the
``offset`` tensor uses the layout pinned down by the spec: ``2 * groups * scale**2``
channels at the input resolution, channel ``k*(g*s*s) + grp*(s*s) + i*s + j`` holding
the x (``k=0``) or y (``k=1``) displacement of output pixel ``(s*h + i, s*w + j)`` of
channel group ``grp``.

Where zero offsets sample is the *anchor*:

* ``"bilinear"``: ``F.interpolate(mode="bilinear", align_corners=False)`` (the paper's
  bilinear initialisation),
* ``"bilinear_align_corners"``: ``F.interpolate(mode="bilinear", align_corners=True)``,
* ``"nearest"``: ``F.interpolate(mode="nearest")`` (the paper's nearest initialisation).

Example:
    >>> import torch, torch.nn.functional as F
    >>> x = torch.randn(1, 8, 5, 7, dtype=torch.float64)
    >>> offset = torch.zeros(1, 2 * 2 * 4, 5, 7, dtype=torch.float64)
    >>> y = dysample_sample(x, offset, scale=2, groups=2, size=(9, 13))
    >>> torch.allclose(y, F.interpolate(x, size=(9, 13), mode="bilinear", align_corners=False))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ANCHORS: tuple[str, ...] = ("bilinear", "bilinear_align_corners", "nearest")
"""Valid values of ``anchor``: which ``F.interpolate`` mode zero offsets reproduce."""


def check_anchor(anchor: str) -> str:
    """Validate an anchor name and return it.

    Example:
        >>> check_anchor("nearest")
        'nearest'
    """
    if anchor not in ANCHORS:
        raise ValueError(f"unknown anchor {anchor!r}; choose one of {', '.join(ANCHORS)}")
    return anchor


def anchor_positions(
    in_len: int, out_len: int, anchor: str, scale_factor: float | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Input position (pixel centres at ``k + 0.5``) that ``F.interpolate`` reads for each output index.

    ``scale_factor`` given means ``F.interpolate`` steps by ``1 / scale_factor``; otherwise
    the step is ``in_len / out_len``. The nearest rule is evaluated in float32, exactly as
    PyTorch's kernels do.

    Example:
        >>> anchor_positions(4, 8, "bilinear", None, torch.float64, torch.device("cpu"))[:3]
        tensor([0.2500, 0.7500, 1.2500], dtype=torch.float64)
    """
    if anchor == "bilinear_align_corners":
        step = (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
        return torch.arange(out_len, dtype=torch.float64, device=device).mul(step).add(0.5).to(dtype)
    step = 1.0 / scale_factor if scale_factor is not None else in_len / out_len
    if anchor == "nearest":
        index = torch.arange(out_len, dtype=torch.float32, device=device).mul(step).floor()
        return index.clamp(max=in_len - 1).add(0.5).to(dtype)
    return torch.arange(out_len, dtype=torch.float64, device=device).add(0.5).mul(step).to(dtype)


def _output_size(
    height: int, width: int, scale: int, size: Sequence[int] | None, scale_factor: float | Sequence[float] | None
) -> tuple[int, int, tuple[float, float] | None]:
    """Resolve the output size and the per-axis scale factors the anchor must use."""
    if size is not None and scale_factor is not None:
        raise ValueError("pass either size or scale_factor to DySample, not both")
    if size is not None:
        out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
        return out_h, out_w, None
    if scale_factor is None:
        return scale * height, scale * width, (float(scale), float(scale))
    sf_h, sf_w = (scale_factor, scale_factor) if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
    return math.floor(height * sf_h), math.floor(width * sf_w), (float(sf_h), float(sf_w))


def _coordinate_dtype(x: Tensor) -> torch.dtype:
    """Sampling coordinates are float64 for float64 inputs and float32 otherwise (also under autocast)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def dysample(
    x: Tensor,
    offset_weight: Tensor,
    offset_bias: Tensor | None,
    scope_weight: Tensor | None,
    init_pos: Tensor | None,
    scale: int,
    style: str,
    groups: int,
    size: Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    anchor: str = "bilinear",
) -> Tensor:
    """The whole DySample forward as a function of the input and the module's tensors.

    Offsets are ``0.25 * offset(x)`` (static scope) or ``0.5 * sigmoid(scope(x)) * offset(x)``
    (dynamic), where ``offset`` / ``scope`` are 1x1 convolutions with ``offset_weight`` /
    ``scope_weight`` of shape ``(2*groups*scale**2, C, 1, 1)`` for ``style="lp"``, or
    ``(2*groups, C/scale**2, 1, 1)`` applied to ``pixel_shuffle(x)`` for ``style="pl"``.
    PL never shuffles ``x``: ``pixel_unshuffle(conv(pixel_shuffle(x)))`` is the same convolution
    applied to ``x`` viewed as ``(N, C/s^2, s^2*H, W)``. The dynamic scope's two projections run
    as one convolution, so the input is read once. The convolutions are the authors' operations
    in the authors' order, so their weights give their offsets bit for bit.

    Args:
        x: ``(N, C, H, W)``.
        offset_weight, offset_bias, scope_weight: the projection tensors (``scope_weight=None``:
            static scope).
        init_pos: the ``init_pos`` buffer (see :func:`dysample_sample`), or ``None``.
        scale, style, groups: as in :class:`dysample_swap.DySample`.
        size, scale_factor, anchor: as in :func:`dysample_sample`.

    Example:
        >>> x = torch.randn(1, 8, 5, 5)
        >>> w = torch.zeros(2 * 2 * 4, 8, 1, 1)
        >>> y = dysample(x, w, None, None, None, scale=2, style="lp", groups=2, size=(9, 9))
        >>> torch.allclose(y, F.interpolate(x, size=(9, 9), mode="bilinear"), atol=1e-5)
        True
    """
    s2 = scale * scale
    feats = x.unflatten(1, (-1, s2)).flatten(2, 3) if style == "pl" else x
    if scope_weight is None:
        offset = F.conv2d(feats, offset_weight, offset_bias) * 0.25
    else:
        bias = None if offset_bias is None else torch.cat([offset_bias, torch.zeros_like(offset_bias)])
        offset, scope = F.conv2d(feats, torch.cat([offset_weight, scope_weight]), bias).chunk(2, dim=1)
        offset = offset * scope.sigmoid() * 0.5
    if style == "pl":  # (N, 2g, s^2*H, W) -> the spec layout (N, 2g*s^2, H, W), a view
        offset = offset.unflatten(2, (s2, -1)).flatten(1, 2)
    return dysample_sample(x, offset, scale, groups, size, scale_factor, anchor, init_pos)


def dysample_sample(
    x: Tensor,
    offset: Tensor,
    scale: int,
    groups: int,
    size: Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    anchor: str = "bilinear",
    init_pos: Tensor | None = None,
) -> Tensor:
    """Resample ``x`` at the anchor positions moved by ``offset`` (the DySample sampler).

    Args:
        x: features ``(N, C, H, W)``; ``C`` divisible by ``groups``.
        offset: displacements in input pixels, ``(N, 2*groups*scale**2, H, W)``, spec layout
            (see the module docstring); the scope factor is already applied.
        scale: the sub-pixel factor the offsets were generated for.
        groups: channel groups sharing one sampling set.
        size: output ``(H_out, W_out)``. Any size works: output pixel ``(y, x)`` uses the offset
            of the sub-pixel cell ``(floor(y*scale*H/H_out), floor(x*scale*W/W_out))``.
        scale_factor: alternatively, a factor as in ``F.interpolate``: output ``floor(H*sf)``,
            anchor step ``1/sf``. With neither, the output is ``scale`` times the input.
        anchor: where zero offsets sample (one of :data:`ANCHORS`).
        init_pos: the spec's ``init_pos`` buffer ``(1, 2*groups*scale**2, 1, 1)``. At the native
            size with the bilinear anchor and float32 coordinates it is added to ``offset`` exactly as
            the authors' module does, so their weights give their outputs bit for bit. float64 inputs
            use exact sub-pixel positions instead (the buffer holds float32-rounded values).

    Returns:
        ``(N, C, H_out, W_out)``.

    Use it with offsets from any generator; :func:`dysample` is the full DySample forward.

    Example:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> dysample_sample(x, torch.zeros(2, 2 * 4 * 4, 3, 3), scale=2, groups=4).shape
        torch.Size([2, 4, 6, 6])
    """
    n, channels, height, width = x.shape
    out_h, out_w, factors = _output_size(height, width, scale, size, scale_factor)
    coord_dtype = _coordinate_dtype(x)
    offset = offset.to(coord_dtype)
    native = factors == (float(scale), float(scale)) and anchor != "bilinear_align_corners"

    use_init_pos = native and anchor == "bilinear" and init_pos is not None and coord_dtype == torch.float32
    if use_init_pos:
        offset = offset + init_pos.to(coord_dtype)  # the authors' float32 arithmetic, bit for bit
    # x and y displacement planes in output-pixel order (N*g, s*H, s*W). Two small permutes and
    # one stack copy far less than a single 7-D permute with the (x, y) pair innermost.
    offset = offset.reshape(n, 2, groups, scale, scale, height, width)
    plane_x, plane_y = (
        offset[:, k].permute(0, 1, 4, 2, 5, 3).reshape(n * groups, scale * height, scale * width) for k in (0, 1)
    )

    if native:
        # Output pixel (s*h+i, s*w+j) reads cell centre (h+0.5, w+0.5) plus its sub-pixel anchor.
        base_y = torch.arange(height, dtype=coord_dtype, device=x.device).add(0.5).repeat_interleave(scale)
        base_x = torch.arange(width, dtype=coord_dtype, device=x.device).add(0.5).repeat_interleave(scale)
        if anchor == "bilinear" and not use_init_pos:
            sub = (torch.arange(scale, dtype=coord_dtype, device=x.device) + 0.5) / scale - 0.5
            base_y = base_y + sub.repeat(height)
            base_x = base_x + sub.repeat(width)
    else:
        rows = torch.arange(out_h, device=x.device, dtype=torch.float64).mul(scale * height / out_h).floor().long()
        cols = torch.arange(out_w, device=x.device, dtype=torch.float64).mul(scale * width / out_w).floor().long()
        plane_x = plane_x.index_select(1, rows).index_select(2, cols)
        plane_y = plane_y.index_select(1, rows).index_select(2, cols)
        sf_h, sf_w = factors if factors is not None else (None, None)
        base_y = anchor_positions(height, out_h, anchor, sf_h, coord_dtype, x.device)
        base_x = anchor_positions(width, out_w, anchor, sf_w, coord_dtype, x.device)

    # grid_sample's normalised coordinates, computed as the authors do: 2 * (coords + offset) / size - 1
    grid_x = (plane_x + base_x).mul(2).div(width).sub(1)
    grid_y = (plane_y + base_y[:, None]).mul(2).div(height).sub(1)
    grid = torch.stack([grid_x, grid_y], dim=-1)
    if not torch.is_autocast_enabled(x.device.type):
        grid = grid.to(x.dtype)
    sampled = F.grid_sample(
        x.reshape(n * groups, channels // groups, height, width),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return sampled.view(n, channels, out_h, out_w)
