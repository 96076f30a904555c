"""Functional core of DySample: turn per-pixel offsets into sampling positions and resample.

Everything here is a pure function of tensors and plain arguments (no parameters), in
the spirit of ``torchvision.ops``; :class:`dysample_swap.DySample` is a thin module on
top. The ``offset`` tensor uses the layout pinned down by the spec: ``2 * groups * scale**2``
channels at the input resolution, channel ``k*(g*s*s) + grp*(s*s) + i*s + j`` holding
the x (``k=0``) or y (``k=1``) displacement, in input pixels, of output pixel
``(s*h + i, s*w + j)`` of channel group ``grp``.

Where zero offsets sample is the *anchor*:

* ``"bilinear"``: ``F.interpolate(mode="bilinear", align_corners=False)`` (the paper's
  bilinear initialisation),
* ``"bilinear_align_corners"``: ``F.interpolate(mode="bilinear", align_corners=True)``,
* ``"nearest"``: ``F.interpolate(mode="nearest")`` (the paper's nearest initialisation).

How positions are carried is ``positions`` (:data:`POSITIONS`):

* ``"grid"`` (default, the fast path): ``grid_sample`` reads the anchor position plus the offset
  through its normalised ``[-1, 1]`` coordinates, as the authors' module does (at the native
  size with the bilinear anchor it *is* the authors' arithmetic, bit for bit). float32 rounds a
  position to about ``W * 2**-24`` pixels, so at zero offsets it equals ``F.interpolate`` bit for
  bit at power-of-two sizes and within ~1e-6 relative elsewhere.
* ``"exact"``: an integer input index plus a fraction, never through normalised coordinates: the
  anchor's index and fraction are computed with ``F.interpolate``'s own float32 arithmetic, and an
  offset is added to the fraction. So with zero offsets the taps and weights are exactly
  ``F.interpolate``'s, at every size and ratio (``nearest``: bit for bit). Choose it where a
  discontinuous step follows the upsampler (argmax, NMS, top-k query selection) and the swapped
  model must not change its output at swap time. With the compiled sampler it runs as fast as
  ``"grid"``; the pure-PyTorch samplers are 2-3x slower (``benchmarks/bench_upsamplers.py``).
* ``"authors"``: the authors' module exactly (native size, bilinear anchor only).

Reading outside the input clamps the position to the border (``padding_mode="border"``).

The samplers that compute the read (:data:`SAMPLERS`):

* ``"native"`` (both position modes): the compiled CPU kernel of :mod:`dysample_swap.upsamplers.dysample.native_sampler`,
  built with the system's C compiler on first use. It computes what the pure-PyTorch path of its
  mode computes (``grid_sample``'s output bit for bit on AVX2 builds; the gathers' output bit for bit),
  as fast as ``F.interpolate``, on every thread. Eager float32/float64 CPU tensors; ``"auto"`` takes
  it there, and falls back with a warning where it cannot be built.
* ``"triton"`` (both position modes): the Triton kernels of :mod:`dysample_swap.upsamplers.dysample.triton_sampler`
  for CUDA tensors (float16, bfloat16, float32, float64), with deterministic input gradients while
  ``torch.are_deterministic_algorithms_enabled()``. ``"auto"`` takes it for eager CUDA tensors with
  ``positions="exact"``, and for ``"grid"`` positions while deterministic algorithms are on (``grid_sample``'s
  CUDA backward has none); otherwise ``grid_sample`` stays there, the authors' arithmetic bit for bit (the
  Triton read is faster, ``benchmarks/bench_gpu.py``, and agrees to float rounding).
* ``"reference"``: the pure-PyTorch path: ``grid_sample`` for ``positions="grid"``, the gathers of
  :func:`reference_sample` for ``"exact"``.

For ``positions="exact"`` without the kernel, three pure-PyTorch samplers compute the same read:

* ``"sparse"``: each channel group's read is one sparse matrix (4 weights per output pixel)
  applied to the features with PyTorch's sparse CSR kernels (MKL), wrapped in an
  ``autograd.Function`` whose backward is one more sparse product (input gradient) and one
  sampled dense product (weight gradient). Eager float32/float64 on the CPU.
* ``"gather"``: :func:`reference_sample` in an ``autograd.Function`` that keeps only its inputs
  and recomputes the taps in backward (autograd of the composition keeps the four taps, 4x the
  output, until backward). Eager, any device and dtype: ``"auto"`` takes it off the CPU.
* ``"reference"``: four row gathers over a channels-last view and one batched matrix
  product, differentiated by autograd. Used under ``torch.onnx`` export (onnxruntime runs
  it far faster than its ``GridSample``), ``torch.export``, ``torch.compile`` and tracing;
  it is the oracle the tests compare the others against.

Example:
    >>> import torch, torch.nn.functional as F
    >>> x = torch.randn(1, 8, 5, 7)
    >>> offset = torch.zeros(1, 2 * 2 * 4, 5, 7)
    >>> y = dysample_sample(x, offset, scale=2, groups=2, size=(9, 13), anchor="nearest", positions="exact")
    >>> torch.equal(y, F.interpolate(x, size=(9, 13), mode="nearest"))
    True
    >>> y = dysample_sample(x, offset, scale=2, groups=2, size=(9, 13), anchor="nearest")  # "grid": fast
    >>> (y - F.interpolate(x, size=(9, 13), mode="nearest")).abs().max().item() < 1e-5
    True
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from dysample_swap import _torch_compat
from dysample_swap.upsamplers.dysample import native, triton_sampler
from dysample_swap.upsamplers.dysample.native_sampler import AxisTables, axis_tables, native_sample, supports

logger = logging.getLogger("dysample_swap")

ANCHORS: tuple[str, ...] = ("bilinear", "bilinear_align_corners", "nearest")
"""Valid values of ``anchor``: which ``F.interpolate`` mode zero offsets reproduce."""

POSITIONS: tuple[str, ...] = ("grid", "exact", "authors")
"""Valid values of ``positions``: ``grid_sample``'s normalised coordinates (default, fast), index plus
fraction (exact at zero offsets at every size), or the authors' module exactly."""

SAMPLERS: tuple[str, ...] = ("auto", "native", "triton", "sparse", "gather", "reference")
"""Valid values of ``sampler``: ``"auto"`` picks ``"native"`` or ``"triton"``, else ``"sparse"`` or ``"gather"``, where
they apply (module docstring)."""

_SPARSE_DTYPES = (torch.float32, torch.float64)
_logged_fallbacks: set[str] = set()


def check_anchor(anchor: str) -> str:
    """Validate an anchor name and return it.

    Example:
        >>> check_anchor("nearest")
        'nearest'
    """
    if anchor not in ANCHORS:
        raise ValueError(f"unknown anchor {anchor!r}; choose one of {', '.join(ANCHORS)}")
    return anchor


def _divided(numerator: int, denominator: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``numerator / denominator`` rounded once in ``dtype``, as ``F.interpolate``'s kernels divide (works for symbolic
    sizes). Both are tensors: CUDA divides by a Python number through its reciprocal, an ulp off (61 / 122 != 0.5)."""
    one = torch.ones((), dtype=dtype, device=device)
    return (one * numerator) / (one * denominator)


def anchor_index(
    in_len: int, out_len: int, anchor: str, scale_factor: float | None, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The input index and fraction that ``F.interpolate`` reads for each output index of one axis.

    Returns ``(index, fraction)``: the read position is ``index + fraction`` (int64 and ``dtype``,
    ``out_len`` each, ``0 <= fraction < 1``) in input pixels with pixel ``k`` at ``k``, before the
    border clamp that the kernels apply (and :func:`dysample_sample` applies after adding the
    offsets): ``-0.25`` reads pixel 0 (``nearest``: the fraction is 0). float32 reproduces
    the CPU kernels' arithmetic: the step in float32 (``1 / scale_factor`` when given, else
    ``in / out``), and ``(dst + 0.5) * step - 0.5`` rounded once (the kernels fuse it). float64
    computes in float64.

    Example:
        >>> index, fraction = anchor_index(4, 8, "bilinear", None, torch.float32, torch.device("cpu"))
        >>> index[:4].tolist(), fraction[:4].tolist()
        ([-1, 0, 0, 1], [0.75, 0.25, 0.75, 0.25])
    """
    dst = torch.arange(out_len, dtype=torch.float64, device=device)
    if anchor == "nearest":
        if scale_factor is not None and isinstance(in_len, int) and out_len in (in_len, 2 * in_len):
            scale_factor = None  # the kernels special-case x1 and x2 and then ignore the factor
        step = _step(in_len, out_len, scale_factor, torch.float32, device)
        index = dst.float().mul(step).floor().clamp(max=in_len - 1).long()
        return index, torch.zeros(out_len, dtype=dtype, device=device)
    if anchor == "bilinear_align_corners":
        ones = torch.ones((), dtype=dtype, device=device)
        step = ones * (in_len - 1) / (ones * (out_len - 1)).clamp(min=1)
        source = dst.to(dtype).mul(step)
    else:
        step = _step(in_len, out_len, scale_factor, dtype, device)
        if dtype == torch.float64:
            source = dst.add(0.5).mul(step).sub(0.5)
        else:  # exact in float64, then one rounding: the fused multiply-add of the float32 kernels
            source = dst.add(0.5).mul(step.double()).sub(0.5).to(dtype)
    index = source.floor()
    return index.long(), source - index


def _step(in_len: int, out_len: int, scale_factor: float | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``F.interpolate``'s source step: ``1 / scale_factor`` when given, else ``in / out``, in ``dtype``."""
    if scale_factor is not None:
        return torch.full((), 1.0 / scale_factor, dtype=dtype, device=device)
    return _divided(in_len, out_len, dtype, device)


def size_pair(value: float | Sequence[float], name: str) -> tuple:
    """``value`` per axis ``(height, width)``: a number for both, or a pair; ``name`` says which argument it is.

    Example:
        >>> size_pair(2, "scale_factor"), size_pair((3, 4), "size")
        ((2, 2), (3, 4))
    """
    if isinstance(value, (numbers.Real, torch.SymInt, torch.SymFloat)):
        return value, value
    pair = tuple(cast(Sequence[Any], value))
    if len(pair) != 2:
        raise ValueError(f"{name} must be one number or a pair (height, width), got {value!r}; pass one or two")
    return pair


def _checked_size(value: int, axis: str) -> int:
    """One axis of ``size``: a whole number of pixels >= 1 (a symbolic or traced size passes unchecked)."""
    if isinstance(value, (torch.SymInt, torch.Tensor)):  # a Tensor: torch.jit tracing records x.shape as 0-d tensors
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"size must be whole numbers of pixels (as F.interpolate requires), got {value!r} for the "
            f"{axis}; pass integers, e.g. round it"
        )
    if value < 1:
        raise ValueError(
            f"size must be at least 1 pixel per axis, got {value} for the {axis}; pass a positive output size"
        )
    return int(value)


def _checked_factor(value: float, length: int, axis: str) -> tuple[int, float]:
    """One axis of ``scale_factor``: a finite number > 0 that leaves an output pixel; returns the length and factor."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"scale_factor must be a finite number > 0, got {value!r} for the {axis}; pass e.g. "
            f"scale_factor=2, or an explicit size=(height, width)"
        )
    out = _scaled(length, float(value))
    if isinstance(out, int) and isinstance(length, int) and out < 1 <= length:
        raise ValueError(
            f"scale_factor={value!r} leaves no output pixel for the input {axis} {length} "
            f"(floor({length} * {value!r}) = {out}); use a factor of at least 1/{length}, or pass size="
        )
    return out, float(value)


def output_size(
    height: int, width: int, scale: int, size: int | Sequence[int] | None, scale_factor: float | Sequence[float] | None
) -> tuple[int, int, tuple[float, float] | None]:
    """The output size ``F.interpolate`` gives for ``size`` / ``scale_factor`` (``scale`` times the input for
    neither), and the per-axis factors the anchor must use (``None`` for a size). Every upsampler resolves
    its ``forward(x, size=, scale_factor=)`` here.

    Raises:
        ValueError: naming the argument and the fix, when both are given, for a size that is not a whole
            number >= 1, and for a factor that is not a finite number > 0 or leaves no output pixel.

    Example:
        >>> output_size(13, 13, 2, None, 1.5), output_size(4, 5, 2, (7, 9), None), output_size(4, 5, 2, None, None)
        ((19, 19, (1.5, 1.5)), (7, 9, None), (8, 10, (2.0, 2.0)))
        >>> output_size(4, 4, 2, (5.5, 4), None)
        Traceback (most recent call last):
            ...
        ValueError: size must be whole numbers of pixels (as F.interpolate requires), got 5.5 for the height; pass integers, e.g. round it
    """
    if size is not None and scale_factor is not None:
        raise ValueError("pass either size or scale_factor, not both")
    if size is not None:
        out_h, out_w = (_checked_size(v, axis) for v, axis in zip(size_pair(size, "size"), ("height", "width")))
        return out_h, out_w, None
    if scale_factor is None:
        return scale * height, scale * width, (float(scale), float(scale))
    sf_h, sf_w = size_pair(scale_factor, "scale_factor")
    (out_h, sf_h), (out_w, sf_w) = _checked_factor(sf_h, height, "height"), _checked_factor(sf_w, width, "width")
    return out_h, out_w, (sf_h, sf_w)


def _scaled(length: int, factor: float) -> int:
    """``floor(length * factor)``, kept symbolic when ``length`` is (export with dynamic sizes)."""
    if float(factor).is_integer():
        return length * int(factor)  # an integer product stays an exact symbolic expression
    return math.floor(length * factor)


def _check_plane(x: Tensor) -> None:
    """Refuse an input of zero height or width (nothing to read); a symbolic size passes unchecked."""
    height, width = x.shape[-2:]
    if isinstance(height, int) and isinstance(width, int) and height * width == 0:
        raise ValueError(
            f"DySample cannot upsample an input of zero height or width (shape {tuple(x.shape)}): no "
            "pixel to read; skip the upsampler for empty feature maps (an empty batch is fine)"
        )


def _coordinate_dtype(x: Tensor) -> torch.dtype:
    """Sampling coordinates are float64 for float64 inputs and float32 otherwise (also under autocast)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def dysample(
    x: Tensor,
    offset_weight: Tensor,
    offset_bias: Tensor | None,
    scope_weight: Tensor | None,
    scale: int,
    style: str,
    groups: int,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    anchor: str = "bilinear",
    sampler: str = "auto",
    positions: str = "grid",
    init_pos: Tensor | None = None,
) -> Tensor:
    """The whole DySample forward as a function of the input and the module's tensors.

    Offsets are ``0.25 * offset(x)`` (static scope) or ``0.5 * sigmoid(scope(x)) * offset(x)``
    (dynamic), where ``offset`` / ``scope`` are 1x1 convolutions with ``offset_weight`` /
    ``scope_weight`` of shape ``(2*groups*scale**2, C, 1, 1)`` for ``style="lp"``, or
    ``(2*groups, C/scale**2, 1, 1)`` applied to ``pixel_shuffle(x)`` for ``style="pl"``.
    PL never shuffles ``x``: ``pixel_unshuffle(conv(pixel_shuffle(x)))`` is the same convolution
    applied to ``x`` viewed as ``(N, C/s^2, s^2*H, W)``. The dynamic scope's two projections run
    as one convolution, so the input is read once. The convolutions are the authors' operations
    in the authors' order, so their weights give their offsets bit for bit. The authors' fixed
    ``init_pos`` (the bilinear sub-pixel positions) is the ``"bilinear"`` anchor here.

    Args:
        x: ``(N, C, H, W)``.
        offset_weight, offset_bias, scope_weight: the projection tensors (``scope_weight=None``:
            static scope).
        scale, style, groups: as in :class:`dysample_swap.DySample`.
        size, scale_factor, anchor, sampler, positions, init_pos: as in :func:`dysample_sample`.

    Example:
        >>> x = torch.randn(1, 8, 5, 5)
        >>> w = torch.zeros(2 * 2 * 4, 8, 1, 1)
        >>> y = dysample(x, w, None, None, scale=2, style="lp", groups=2, size=(9, 9))
        >>> (y - F.interpolate(x, size=(9, 9), mode="bilinear")).abs().max().item() < 1e-6
        True
    """
    _check_plane(x)
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
    return dysample_sample(x, offset, scale, groups, size, scale_factor, anchor, sampler, positions, init_pos)


def dysample_sample(
    x: Tensor,
    offset: Tensor,
    scale: int,
    groups: int,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    anchor: str = "bilinear",
    sampler: str = "auto",
    positions: str = "grid",
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
        sampler: one of :data:`SAMPLERS`; ``"auto"`` takes ``"native"`` for eager float32/float64 CPU
            tensors (else ``"sparse"`` for ``positions="exact"`` there), ``"triton"`` for eager CUDA
            tensors with ``"exact"`` positions (and with ``"grid"`` ones under deterministic algorithms),
            ``"gather"`` for ``"exact"`` elsewhere in eager mode, and ``"reference"`` under tracing and
            compilation. ``"sparse"`` and ``"gather"`` exist for ``positions="exact"`` only.
        positions: ``"grid"`` (default: ``grid_sample``, fast; the authors' arithmetic at the native
            size with the bilinear anchor and ``init_pos``), ``"exact"`` (index plus fraction, see
            the module docstring), or ``"authors"``:
            the authors' arithmetic, ``2 * (cell centre + offset + init_pos) / size - 1`` read by
            ``grid_sample``, so their weights give their outputs bit for bit. In float32 that
            rounds a position to about ``W * 2**-24`` pixels (so it equals ``F.interpolate`` only at
            power-of-two sizes); only the native size and the bilinear anchor exist there.
        init_pos: the spec's ``init_pos`` buffer ``(1, 2*groups*scale**2, 1, 1)``, needed by
            ``positions="authors"`` (the ``"exact"`` bilinear anchor holds the same sub-pixel positions).

    Returns:
        ``(N, C, H_out, W_out)``, dtype of ``x``.

    Use it with offsets from any generator; :func:`dysample` is the full DySample forward.

    Example:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> dysample_sample(x, torch.zeros(2, 2 * 4 * 4, 3, 3), scale=2, groups=4).shape
        torch.Size([2, 4, 6, 6])
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler in ("sparse", "gather") and positions != "exact":
        raise ValueError(f"sampler={sampler!r} reads index-plus-fraction positions: use it with positions='exact'")
    _check_plane(x)
    n, channels, height, width = x.shape
    out_h, out_w, factors = output_size(height, width, scale, size, scale_factor)
    coord_dtype = _coordinate_dtype(x)
    offset = offset.to(coord_dtype)
    authors_case = factors == (float(scale), float(scale)) and anchor == "bilinear" and init_pos is not None
    if positions == "authors":
        if not authors_case or init_pos is None:
            raise ValueError(
                "positions='authors' reproduces the authors' module: the native size (scale times the "
                "input), the bilinear anchor and an init_pos tensor only"
            )
        return _authors_sample(x, offset + init_pos.to(coord_dtype), scale, groups, sampler)
    if positions == "grid" and torch.onnx.is_in_onnx_export():
        positions = "exact"  # gathers: onnxruntime runs them far faster than its GridSample (same read to ~1e-6)
    if positions == "grid":
        if authors_case and init_pos is not None and coord_dtype == torch.float32:
            return _authors_sample(x, offset + init_pos.to(coord_dtype), scale, groups, sampler)
        return _grid_sample(x, offset, scale, groups, out_h, out_w, factors, anchor, sampler)
    if positions != "exact":
        raise ValueError(f"unknown positions {positions!r}; choose one of {', '.join(POSITIONS)}")
    sf_h, sf_w = factors if factors is not None else (None, None)
    kernel = _kernel(x, offset, sampler, "exact")
    if kernel is not None:
        rows, cols = _kernel_tables(x, (height, width), (out_h, out_w), scale, factors, anchor, "exact", coord_dtype)
        return kernel(x, offset, rows, cols, scale, groups, out_h, out_w, "exact")

    plane_x, plane_y = _offset_planes(
        offset, n, groups, scale, height, width, out_h, out_w, native=factors == (float(scale), float(scale))
    )
    x0, x1, fx = _taps(width, out_w, anchor, sf_w, plane_x, rows=False)
    y0, y1, fy = _taps(height, out_h, anchor, sf_h, plane_y, rows=True)
    # The four taps (top-left, top-right, bottom-left, bottom-right) of every output pixel.
    index = torch.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1], dim=-1)
    gx, gy = 1 - fx, 1 - fy
    weight = torch.stack([gy * gx, gy * fx, fy * gx, fy * fx], dim=-1)
    index, weight = index.flatten(1, 2), weight.flatten(1, 2)  # (N*g, H_out*W_out, 4)

    if _use_sparse(x, sampler):
        feats = x.reshape(n * groups, channels // groups, height * width)
        sampled = SparseBilinear.apply(feats, index, weight.to(x.dtype), height * width)
        return sampled.view(n, channels, out_h, out_w)
    if sampler == "gather" or (sampler == "auto" and not _tracing() and torch.is_grad_enabled()):
        return GatherBilinear.apply(x, index, weight, groups, out_h, out_w)
    return reference_sample(x, index, weight, groups, out_h, out_w)


def _offset_planes(
    offset: Tensor, n: int, groups: int, scale: int, height: int, width: int, out_h: int, out_w: int, native: bool
) -> tuple[Tensor, Tensor]:
    """x and y displacement planes in output-pixel order ``(N*g, H_out, W_out)``; off the native size
    each output pixel takes the offset of its sub-pixel cell. (Two small permutes and one stack copy
    far less than a single 7-D permute with the (x, y) pair innermost.)"""
    offset = offset.reshape(n, 2, groups, scale, scale, height, width)
    plane_x, plane_y = (
        offset[:, k].permute(0, 1, 4, 2, 5, 3).reshape(n * groups, scale * height, scale * width) for k in (0, 1)
    )
    if not native:
        rows = torch.arange(out_h, device=offset.device, dtype=torch.float64).mul(scale * height / out_h).floor().long()
        cols = torch.arange(out_w, device=offset.device, dtype=torch.float64).mul(scale * width / out_w).floor().long()
        plane_x = plane_x.index_select(1, rows).index_select(2, cols)
        plane_y = plane_y.index_select(1, rows).index_select(2, cols)
    return plane_x, plane_y


def _grid_sample(
    x: Tensor,
    offset: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    factors: tuple[float, float] | None,
    anchor: str,
    sampler: str,
) -> Tensor:
    """``positions="grid"``: the anchor position plus the offset, read by ``grid_sample`` (border padding)."""
    n, channels, height, width = x.shape
    kernel = _kernel(x, offset, sampler, "grid")
    if kernel is not None:
        rows, cols = _kernel_tables(x, (height, width), (out_h, out_w), scale, factors, anchor, "grid", offset.dtype)
        return kernel(x, offset, rows, cols, scale, groups, out_h, out_w, "grid")
    sf_h, sf_w = factors if factors is not None else (None, None)
    base_x = _grid_base(width, out_w, anchor, sf_w, offset.dtype, x.device)
    base_y = _grid_base(height, out_h, anchor, sf_h, offset.dtype, x.device)
    plane_x, plane_y = _offset_planes(
        offset, n, groups, scale, height, width, out_h, out_w, native=factors == (float(scale), float(scale))
    )
    return _read_grid(x, plane_x, plane_y, base_x, base_y, groups)


def _grid_base(
    in_len: int, out_len: int, anchor: str, scale_factor: float | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The anchor's read positions along one axis with pixel centres at ``k + 0.5`` (``"grid"`` positions)."""
    index, fraction = anchor_index(in_len, out_len, anchor, scale_factor, dtype, device)
    return (index.to(dtype) + fraction).add(0.5)


def _authors_base(in_len: int, scale: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The authors' cell centres along one axis: output ``s*k + i`` starts at ``k + 0.5`` (``init_pos`` adds the rest)."""
    return torch.arange(in_len, dtype=dtype, device=device).add(0.5).repeat_interleave(scale)


_TABLES_CACHE: dict[tuple, tuple[AxisTables, AxisTables]] = {}


def _kernel_tables(
    x: Tensor,
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    scale: int,
    factors: tuple[float, float] | None,
    anchor: str,
    mode: str,
    dtype: torch.dtype,
) -> tuple[AxisTables, AxisTables]:
    """The compiled samplers' row and column tables on ``x``'s device, for ``mode`` ``"exact"``, ``"grid"`` or
    ``"authors"`` (read in the kernels' ``"grid"`` mode). Eager calls keep the last few in a cache: building them
    takes a dozen small operations, which on a GPU cost more than the sampling itself."""
    key = (in_size, out_size, scale, factors, anchor, mode, dtype, x.device)
    cached = None if _tracing() else _TABLES_CACHE.get(key)
    if cached is not None:
        return cached
    (height, width), (out_h, out_w) = in_size, out_size
    sf_h, sf_w = factors if factors is not None else (None, None)
    if mode == "exact":
        row_anchor, row_fraction = anchor_index(height, out_h, anchor, sf_h, dtype, x.device)
        col_anchor, col_fraction = anchor_index(width, out_w, anchor, sf_w, dtype, x.device)
    else:
        if mode == "authors":
            row_fraction, col_fraction = (_authors_base(n, scale, dtype, x.device) for n in (height, width))
        else:
            row_fraction = _grid_base(height, out_h, anchor, sf_h, dtype, x.device)
            col_fraction = _grid_base(width, out_w, anchor, sf_w, dtype, x.device)
        row_anchor, col_anchor = (
            torch.zeros(len(f), dtype=torch.int64, device=x.device) for f in (row_fraction, col_fraction)
        )
    rows = axis_tables(height, out_h, scale, width, height * width, row_anchor, row_fraction, rows=True)
    cols = axis_tables(width, out_w, scale, 1, height * width, col_anchor, col_fraction, rows=False)
    if x.device.type != "cpu":
        rows, cols = (AxisTables(*(getattr(t, f.name).to(x.device) for f in fields(t))) for t in (rows, cols))
    if not _tracing():
        if len(_TABLES_CACHE) >= 64:
            _TABLES_CACHE.clear()
        _TABLES_CACHE[key] = rows, cols
    return rows, cols


def _read_grid(x: Tensor, plane_x: Tensor, plane_y: Tensor, base_x: Tensor, base_y: Tensor, groups: int) -> Tensor:
    """``grid_sample`` at ``base + plane`` (pixel centres at ``k + 0.5``), normalised as the authors do:
    ``2 * p / size - 1``; coordinates stay float32 under autocast."""
    n, channels, height, width = x.shape
    grid_x = (plane_x + base_x).mul(2).div(width).sub(1)
    grid_y = (plane_y + base_y[:, None]).mul(2).div(height).sub(1)
    grid = torch.stack([grid_x, grid_y], dim=-1)
    if not torch.is_autocast_enabled(x.device.type):
        grid = grid.to(x.dtype)
    # grid_sample's CPU backward with border padding writes out of bounds for a NaN coordinate (a segfault,
    # PyTorch 2.x), so NaN becomes -1: the forward reads pixel 0 along that axis for both (as the compiled
    # sampler does), and border positions have zero position gradient either way.
    grid = grid.masked_fill(grid.isnan(), -1.0)
    sampled = F.grid_sample(
        x.reshape(n * groups, channels // groups, height, width),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return sampled.view(n, channels, *plane_x.shape[1:])


def _authors_sample(x: Tensor, offset: Tensor, scale: int, groups: int, sampler: str) -> Tensor:
    """The authors' sampler: output pixel ``(s*h+i, s*w+j)`` reads ``(w + 0.5 + offset, h + 0.5 + offset)``
    through ``grid_sample``'s normalised coordinates ``2 * p / size - 1`` (``offset`` includes ``init_pos``)."""
    n, _, height, width = x.shape
    kernel = _kernel(x, offset, sampler, "grid")
    if kernel is not None:
        native = (scale * height, scale * width)
        rows, cols = _kernel_tables(x, (height, width), native, scale, None, "bilinear", "authors", offset.dtype)
        return kernel(x, offset, rows, cols, scale, groups, *native, "grid")
    base_y, base_x = (_authors_base(length, scale, offset.dtype, x.device) for length in (height, width))
    plane_x, plane_y = _offset_planes(
        offset, n, groups, scale, height, width, scale * height, scale * width, native=True
    )
    return _read_grid(x, plane_x, plane_y, base_x, base_y, groups)


def _taps(
    in_len: int, out_len: int, anchor: str, scale_factor: float | None, offset: Tensor, rows: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Both tap indices and the fraction of every output pixel along one axis (``rows``: the height).

    The anchor's fraction plus the offset is split into whole pixels and a fraction again, so
    a zero offset leaves the anchor's index and fraction exactly as they were. A position
    outside ``[0, in_len - 1]`` clamps to the border with zero fraction (and zero gradient).
    """
    base, fraction = anchor_index(in_len, out_len, anchor, scale_factor, offset.dtype, offset.device)
    if rows:
        base, fraction = base.view(-1, 1), fraction.view(-1, 1)
    shifted = fraction + offset
    bound = 2 * in_len + 2  # farther out clamps to the border anyway; int64 would overflow on huge offsets
    whole = shifted.floor().clamp(-bound, bound)
    whole = whole.masked_fill(whole.isnan(), -bound)  # NaN reads pixel 0, as the compiled sampler (no NaN to int)
    index = base + whole.long()
    inside = (index >= 0) & (index < in_len - 1)
    fraction = torch.where(inside, shifted - whole, torch.zeros_like(shifted))
    index = index.clamp(0, in_len - 1)
    return index, (index + 1).clamp(max=in_len - 1), fraction


def _exporting() -> bool:
    """Whether this call is recorded into a graph that leaves the process (trace, fx, ONNX, torch.export)."""
    return (
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
        or _torch_compat.is_fx_symbolic_tracing()
    )


def _tracing() -> bool:
    """Whether a tracer, compiler or exporter records this call (they get the pure-PyTorch formulation)."""
    return _exporting() or torch.compiler.is_compiling()


def _kernel(x: Tensor, offset: Tensor, sampler: str, positions: str) -> Callable[..., Tensor] | None:
    """The compiled sampler to run, if any: ``"triton"`` (or an error saying why it cannot), the Triton sampler where
    :func:`_auto_triton` takes it, else the CPU kernel where :func:`_use_native` takes it."""
    if sampler == "auto" and _auto_triton(x, offset, positions):
        return triton_sampler.triton_sample
    if sampler == "triton":
        unsupported = triton_sampler.supports(x, offset)
        if unsupported is not None:
            raise ValueError(
                f"sampler='triton' runs CUDA tensors (CPU tensors under TRITON_INTERPRET=1) of the dtypes "
                f"{', '.join(str(d) for d in triton_sampler.DTYPES)}, not {unsupported}; use sampler='auto'"
            )
        return triton_sampler.triton_sample
    return native_sample if _use_native(x, offset, sampler) else None


def _auto_triton(x: Tensor, offset: Tensor, positions: str) -> bool:
    """Whether ``"auto"`` runs the Triton sampler: eager CUDA tensors with ``positions="exact"`` (on an H200 it is
    10x faster than the gathers it replaces, with a tenth of their memory), and with the ``grid_sample`` positions
    while deterministic algorithms are on (``grid_sample``'s CUDA backward has no deterministic implementation).
    Elsewhere ``grid_sample`` (the authors' arithmetic bit for bit) and, under ``torch.compile``, the pure-PyTorch
    formulation stay."""
    if x.device.type != "cuda" or _tracing():
        return False
    if positions != "exact" and not torch.are_deterministic_algorithms_enabled():
        return False
    unsupported = triton_sampler.supports(x, offset)
    if unsupported is not None:
        if unsupported not in _logged_fallbacks:
            _logged_fallbacks.add(unsupported)
            logger.info("DySample sampler: %s run the pure-PyTorch sampler, not the Triton one", unsupported)
        return False
    return True


def _use_native(x: Tensor, offset: Tensor, sampler: str) -> bool:
    """Whether to run the compiled kernel: always for ``"native"`` (or an error saying why it cannot), where
    it applies for ``"auto"`` (the reasons it does not are logged once each)."""
    if sampler not in ("auto", "native"):
        return False
    if sampler == "auto" and _exporting():
        return False  # an exported graph must not need dysample_swap's operator (torch.compile keeps it)
    if sampler == "auto" and torch.compiler.is_compiling() and torch.is_grad_enabled():
        # compiled training traces the pure-PyTorch sampler: Inductor fails to lay out the views
        # (PL's offsets) that the operator would save for backward at symbolic sizes
        return False
    unsupported = supports(x, offset)
    if sampler == "native":
        if unsupported is not None:
            raise ValueError(
                f"sampler='native' runs eager float32/float64 CPU tensors, not {unsupported}; "
                "use sampler='auto' or 'reference'"
            )
        if _native_library() is None:
            raise RuntimeError(f"sampler='native': the compiled sampler is unavailable: {native.unavailable_reason()}")
        return True
    if unsupported is not None:
        if unsupported not in _logged_fallbacks:
            _logged_fallbacks.add(unsupported)
            logger.info(
                "DySample sampler: %s run the pure-PyTorch sampler; the compiled one takes eager "
                "float32/float64 CPU tensors",
                unsupported,
            )
        return False
    return _native_library() is not None  # unavailable: native.library() has warned once


def _native_library() -> object | None:
    """The compiled sampler; under ``torch.compile`` only if already loaded (building takes a lock dynamo cannot
    trace; every DySample constructor loads it, so a model compiled after construction has it)."""
    return native.loaded() if torch.compiler.is_compiling() else native.library()


def _use_sparse(x: Tensor, sampler: str) -> bool:
    """Whether to run the sparse sampler; the reasons it cannot are logged once each."""
    if sampler != "auto":
        return sampler == "sparse"
    if _tracing():
        return False  # export and compilation record the reference formulation (see the module docstring)
    reason = None
    if x.device.type != "cpu":
        reason = f"{x.device.type} tensors"
    elif x.dtype not in _SPARSE_DTYPES:
        reason = f"{x.dtype} tensors"
    elif not torch.backends.mkl.is_available():
        reason = "a PyTorch build without MKL"
    if reason is None:
        return True
    if reason not in _logged_fallbacks:
        _logged_fallbacks.add(reason)
        logger.info(
            "DySample sampler: positions='exact' with %s uses the gather sampler (the sparse and compiled "
            "ones take float32/float64 CPU tensors); it recomputes its taps in backward, about 2x the cost of "
            "positions='grid' (grid_sample)",
            reason,
        )
    return False


def reference_sample(x: Tensor, index: Tensor, weight: Tensor, groups: int, out_h: int, out_w: int) -> Tensor:
    """The reference bilinear read: the four taps gathered as rows of a channels-last view, weighted, summed.

    Under ``torch.onnx`` export the weighted sum is written as one batched ``MatMul`` (onnxruntime
    runs that faster than a ``Mul`` and a ``ReduceSum``). Low-precision inputs are weighted in the
    coordinates' float32 and the result cast back.

    Args:
        x: ``(N, C, H, W)``.
        index: ``(N*groups, H_out*W_out, 4)`` int64 flat input pixels ``y*W + x`` of the four taps.
        weight: ``(N*groups, H_out*W_out, 4)`` their bilinear weights.
        groups, out_h, out_w: channel groups and output size.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> index = torch.tensor([[[0, 1, 2, 3]]])
        >>> reference_sample(x, index, torch.full((1, 1, 4), 0.25), 1, 1, 1)
        tensor([[[[1.5000]]]])
    """
    n, channels, height, width = x.shape
    batch = n * groups
    rows = x.reshape(n, groups, channels // groups, height * width).transpose(2, 3)
    rows = rows.reshape(batch * height * width, channels // groups)
    start = torch.arange(batch, device=x.device).mul(height * width).view(batch, 1, 1)
    taps = rows.index_select(0, (index + start).flatten()).view(-1, 4, channels // groups).to(weight.dtype)
    if torch.onnx.is_in_onnx_export():
        sampled = torch.matmul(weight.reshape(-1, 1, 4), taps)
    else:
        sampled = taps.mul(weight.reshape(-1, 4, 1)).sum(1)
    sampled = sampled.to(x.dtype).view(n, groups, out_h, out_w, channels // groups)  # no -1: n may be 0
    return sampled.permute(0, 1, 4, 2, 3).reshape(n, channels, out_h, out_w)


class GatherBilinear(torch.autograd.Function):
    """:func:`reference_sample` that keeps only its inputs for backward and recomputes the taps there.

    The same forward and gradients as autograd of :func:`reference_sample`, bit for bit; the four
    gathered taps (4x the output) live only inside each pass instead of from forward to backward.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> GatherBilinear.apply(x, torch.tensor([[[0, 1, 2, 3]]]), torch.full((1, 1, 4), 0.25), 1, 1, 1)
        tensor([[[[1.5000]]]])
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        index: Tensor,
        weight: Tensor,
        groups: int,
        out_h: int,
        out_w: int,
    ) -> Tensor:
        ctx.save_for_backward(x, index, weight)
        ctx.shape = (groups, out_h, out_w)
        return reference_sample(x, index, weight, groups, out_h, out_w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, index, weight = ctx.saved_tensors
        need_x, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
        x, weight = x.detach().requires_grad_(need_x), weight.detach().requires_grad_(need_weight)
        with torch.enable_grad():
            out = reference_sample(x, index, weight, *ctx.shape)
        inputs = [t for t, need in ((x, need_x), (weight, need_weight)) if need]
        grads = iter(torch.autograd.grad(out, inputs, grad))
        return (next(grads) if need_x else None), None, (next(grads) if need_weight else None), None, None, None


def _row_starts(index: Tensor) -> Tensor:
    """CSR row pointers for ``index`` ``(B, P, 4)``: every output pixel has 4 entries (shared by all slices)."""
    return torch.arange(0, 4 * index.shape[1] + 1, 4, dtype=torch.int32, device=index.device)


def _read_matrix(crow: Tensor, index: Tensor, weight: Tensor, in_pixels: int) -> Tensor:
    """One slice's read as a sparse CSR ``(H_out*W_out, in_pixels)`` matrix with 4 entries a row."""
    out_pixels = index.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            crow, index.flatten(), weight.flatten(), (out_pixels, in_pixels), check_invariants=False
        )


class SparseBilinear(torch.autograd.Function):
    """The bilinear read of :func:`reference_sample` as sparse matrix products, with its own backward.

    Per slice ``b`` of ``feats`` ``(B, Cg, P_in)``: ``out[b] = feats[b] @ R_b^T`` where ``R_b`` holds
    the four weights of every output pixel. Backward: ``grad_feats[b] = grad[b] @ R_b`` (a gather of
    rows, no scalar scatter-add) and the weight gradient ``<grad[b][:, p], feats[b][:, tap]>``
    sampled at the four taps only (``torch.sparse.sampled_addmm``).

    Example:
        >>> feats = torch.arange(4.0).view(1, 1, 4)
        >>> index = torch.tensor([[[0, 1, 2, 3]]])
        >>> SparseBilinear.apply(feats, index, torch.full((1, 1, 4), 0.25), 4)
        tensor([[[1.5000]]])
    """

    @staticmethod
    def forward(ctx: Any, feats: Tensor, index: Tensor, weight: Tensor, in_pixels: int) -> Tensor:
        feats = feats.contiguous()
        index = index.to(torch.int32)  # MKL's index type: int64 would be converted on every product
        crow = _row_starts(index)
        out = feats.new_empty(feats.shape[0], feats.shape[1], index.shape[1])
        with torch.autocast(feats.device.type, enabled=False):  # the products stay in the features' dtype
            for b in range(feats.shape[0]):
                torch.mm(feats[b], _read_matrix(crow, index[b], weight[b], in_pixels).t(), out=out[b])
        ctx.save_for_backward(feats, index, weight)
        ctx.in_pixels = in_pixels
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        feats, index, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_feats = feats.new_empty(feats.shape) if ctx.needs_input_grad[0] else None
        grad_weight = weight.new_empty(weight.shape) if ctx.needs_input_grad[2] else None
        crow = _row_starts(index)
        with torch.autocast(feats.device.type, enabled=False):
            for b in range(feats.shape[0]):
                matrix = _read_matrix(crow, index[b], weight[b], ctx.in_pixels)
                if grad_feats is not None:
                    torch.mm(grad[b], matrix, out=grad_feats[b])
                if grad_weight is not None and ctx.in_pixels == 1:  # every tap reads the one pixel, and
                    # sampled_addmm rejects a one-column matrix with several entries a row
                    grad_weight[b] = (grad[b].t() @ feats[b]).expand(-1, 4)
                elif grad_weight is not None:
                    sampled = torch.sparse.sampled_addmm(matrix, grad[b].t(), feats[b], beta=0.0)
                    grad_weight[b] = sampled.values().view(-1, 4)
        return grad_feats, None, grad_weight, None
