"""DySample's bilinear read through the compiled CPU kernel (:mod:`dysample_swap.upsamplers.dysample.native`), as an autograd Function.

The kernel reads the offsets in the spec layout ``(N, 2*groups*scale**2, H, W)`` directly, builds the
four taps of an output row once for all its channels, and parallelises over output rows (forward)
and over channel groups, row cells or channel chunks (backward), so it uses every thread at batch 1.
Its sums run in the same order at any thread count. It is registered as the custom operators
``dysample_swap::native_sample`` / ``native_sample_backward`` (with fake implementations and an
autograd formula), so ``torch.compile`` keeps it as one opaque call instead of tracing into it.

Two position modes, each computing what its pure-PyTorch counterpart in
:mod:`dysample_swap.upsamplers.dysample.sampling` computes:

* ``"grid"``: the authors' ``2 * p / size - 1`` normalisation, then ``grid_sample``'s
  unnormalisation, border clamp and fused weighted sum (the forward is ``grid_sample``'s bit for bit
  on AVX2 builds of PyTorch; the gradients agree to float rounding, since the input gradient's
  scatter runs in another order),
* ``"exact"``: the anchor's integer index plus its fraction plus the offset (the forward and the
  input gradient are the reference gathers' bit for bit; the offset gradient to float rounding).

Example:
    >>> import torch
    >>> from dysample_swap.upsamplers.dysample.sampling import dysample_sample
    >>> x, offset = torch.randn(1, 4, 5, 5), torch.zeros(1, 2 * 2 * 4, 5, 5)
    >>> native = dysample_sample(x, offset, 2, 2, sampler="native")
    >>> torch.equal(native, dysample_sample(x, offset, 2, 2, sampler="reference"))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dysample_swap.upsamplers.dysample import native

MODES = {"exact": 0, "grid": 1}
"""Position modes of the kernel and their codes in ``csrc/sampler.c``."""

DTYPES = (torch.float32, torch.float64)
"""The dtypes the kernel is compiled for."""


@dataclass(frozen=True)
class AxisTables:
    """Per-output-index tables of one axis, as the kernel reads them.

    ``offset_at``: the axis' part of the offset element's flat index inside one channel group's
    block (rows: ``i*s*H*W + h*W`` for sub-pixel cell ``(h, i)``; columns: ``j*H*W + w``).
    ``anchor``: the anchor's input index (mode ``"exact"``; zeros for ``"grid"``). ``fraction``: the
    anchor's fraction (``"exact"``) or its position with pixel centres at ``k + 0.5`` (``"grid"``).
    ``cell_start``: output indices ``cell_start[r]:cell_start[r+1]`` take offsets from cell ``r`` of the axis.
    """

    offset_at: Tensor
    anchor: Tensor
    fraction: Tensor
    cell_start: Tensor


def axis_tables(
    in_len: int, out_len: int, scale: int, stride: int, plane: int, anchor: Tensor, fraction: Tensor, rows: bool
) -> AxisTables:
    """Build one axis' tables; ``stride`` is the input width for rows and 1 for columns, ``plane`` is ``H*W``.

    Output index ``o`` takes the offset of sub-pixel cell ``floor(o * scale * in_len / out_len)`` (the
    cell itself at the native size).

    Example:
        >>> t = axis_tables(2, 4, 2, 1, 4, torch.zeros(4, dtype=torch.long), torch.zeros(4), rows=False)
        >>> t.offset_at.tolist()  # cells 0..3 = (w, j) = (0,0) (0,1) (1,0) (1,1)
        [0, 4, 1, 5]
    """
    if out_len == scale * in_len:
        cells = torch.arange(out_len)
    else:
        cells = torch.arange(out_len, dtype=torch.float64).mul(scale * in_len / out_len).floor().long()
    whole, sub = cells // scale, cells % scale
    offset_at = (sub * (scale * plane if rows else plane) + whole * stride).contiguous()
    cell_start = torch.searchsorted(cells, torch.arange(scale * in_len + 1)).contiguous()
    return AxisTables(offset_at, anchor.to(torch.int64).contiguous(), fraction.contiguous(), cell_start)


def supports(x: Tensor, offset: Tensor) -> str | None:
    """Why the kernel cannot take these tensors (``None`` when it can): eager CPU float32/float64 only.

    Example:
        >>> supports(torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16), torch.zeros(1, 8, 2, 2)) is not None
        True
    """
    if x.device.type != "cpu" or offset.device.type != "cpu":
        return f"{x.device.type} tensors"
    if x.dtype not in DTYPES or offset.dtype != x.dtype:
        return f"{x.dtype} features with {offset.dtype} offsets"
    return None


def _check_status(status: int) -> None:
    """Raise for a nonzero status of the kernel (the codes are listed in ``csrc/sampler_impl.h``)."""
    if status == 1:
        raise MemoryError("DySample's compiled sampler could not allocate its row buffers")
    if status:
        raise ValueError(
            "DySample's compiled sampler got an input with zero height or width for a nonempty "
            "output: there is no pixel to read; skip the upsampler for empty feature maps"
        )


def _kernel(name: str, dtype: torch.dtype):
    lib = native.library()
    if lib is None:
        raise RuntimeError(f"the compiled sampler is unavailable: {native.unavailable_reason()}")
    return getattr(lib, f"{name}_{'f32' if dtype == torch.float32 else 'f64'}")


# A custom operator (not an autograd.Function), so that torch.compile keeps it as one opaque call
# on the CPU instead of tracing the pure-PyTorch gathers (which Inductor compiles slowly).
@torch.library.custom_op(
    "dysample_swap::native_sample", mutates_args=(), device_types="cpu", tags=(torch.Tag.flexible_layout,)
)  # it makes its inputs contiguous itself
def _sample_op(
    x: Tensor,
    offset: Tensor,
    row_offset_at: Tensor,
    row_anchor: Tensor,
    row_fraction: Tensor,
    row_cell_start: Tensor,
    col_offset_at: Tensor,
    col_anchor: Tensor,
    col_fraction: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
) -> Tensor:
    x, offset = x.contiguous(), offset.contiguous()
    n, channels, height, width = x.shape
    out = x.new_empty(n, channels, out_h, out_w)
    status = _kernel("dysample_forward", x.dtype)(
        x.data_ptr(),
        offset.data_ptr(),
        out.data_ptr(),
        row_offset_at.data_ptr(),
        col_offset_at.data_ptr(),
        row_anchor.data_ptr(),
        row_fraction.data_ptr(),
        col_anchor.data_ptr(),
        col_fraction.data_ptr(),
        n,
        groups,
        channels // groups,
        height,
        width,
        out_h,
        out_w,
        scale,
        mode,
        torch.get_num_threads(),
    )
    _check_status(status)
    return out


@_sample_op.register_fake
def _(
    x: Tensor,
    offset: Tensor,
    row_offset_at: Tensor,
    row_anchor: Tensor,
    row_fraction: Tensor,
    row_cell_start: Tensor,
    col_offset_at: Tensor,
    col_anchor: Tensor,
    col_fraction: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
) -> Tensor:
    return x.new_empty(x.shape[0], x.shape[1], out_h, out_w)


@torch.library.custom_op(
    "dysample_swap::native_sample_backward", mutates_args=(), device_types="cpu", tags=(torch.Tag.flexible_layout,)
)
def _sample_backward_op(
    grad: Tensor,
    x: Tensor,
    offset: Tensor,
    row_offset_at: Tensor,
    row_anchor: Tensor,
    row_fraction: Tensor,
    row_cell_start: Tensor,
    col_offset_at: Tensor,
    col_anchor: Tensor,
    col_fraction: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
    need_x: bool,
    need_offset: bool,
) -> tuple[Tensor, Tensor]:
    x, offset, grad = x.contiguous(), offset.contiguous(), grad.contiguous().to(x.dtype)
    grad_x = torch.zeros_like(x) if need_x else x.new_empty(0)
    grad_offset = torch.zeros_like(offset) if need_offset else offset.new_empty(0)
    n, channels, height, width = x.shape
    status = _kernel("dysample_backward", x.dtype)(
        x.data_ptr(),
        offset.data_ptr(),
        grad.data_ptr(),
        grad_x.data_ptr() if need_x else None,
        grad_offset.data_ptr() if need_offset else None,
        row_offset_at.data_ptr(),
        col_offset_at.data_ptr(),
        row_anchor.data_ptr(),
        row_fraction.data_ptr(),
        col_anchor.data_ptr(),
        col_fraction.data_ptr(),
        row_cell_start.data_ptr(),
        n,
        groups,
        channels // groups,
        height,
        width,
        out_h,
        out_w,
        scale,
        mode,
        torch.get_num_threads(),
    )
    _check_status(status)
    return grad_x, grad_offset


@_sample_backward_op.register_fake
def _(
    grad: Tensor,
    x: Tensor,
    offset: Tensor,
    row_offset_at: Tensor,
    row_anchor: Tensor,
    row_fraction: Tensor,
    row_cell_start: Tensor,
    col_offset_at: Tensor,
    col_anchor: Tensor,
    col_fraction: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
    need_x: bool,
    need_offset: bool,
) -> tuple[Tensor, Tensor]:
    return (
        torch.empty_like(x) if need_x else x.new_empty(0),
        torch.empty_like(offset) if need_offset else offset.new_empty(0),
    )


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    ctx.save_for_backward(*inputs[:9])
    ctx.sizes = inputs[9:]


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    need_x, need_offset = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_x, grad_offset = _sample_backward_op(grad, *ctx.saved_tensors, *ctx.sizes, need_x, need_offset)
    return (grad_x if need_x else None, grad_offset if need_offset else None) + (None,) * 12


_sample_op.register_autograd(_backward, setup_context=_setup_context)


def native_sample(
    x: Tensor,
    offset: Tensor,
    rows: AxisTables,
    cols: AxisTables,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: str,
) -> Tensor:
    """Read ``x`` at the positions ``offset`` moves the anchors of ``rows`` / ``cols`` to (see the module docstring).

    Args:
        x: ``(N, C, H, W)`` float32/float64 CPU features.
        offset: ``(N, 2*groups*scale**2, H, W)`` in ``x``'s dtype, spec layout (``"grid"``: the
            authors' ``init_pos`` already added where their arithmetic is wanted).
        rows, cols: :func:`axis_tables` of the height and the width.
        scale, groups, out_h, out_w: as in :func:`dysample_swap.upsamplers.dysample.sampling.dysample_sample`.
        mode: ``"grid"`` or ``"exact"``.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> zero = torch.zeros(4, dtype=torch.long)
        >>> rows = axis_tables(2, 4, 2, 2, 4, zero, torch.arange(4) / 2 + 0.25, rows=True)
        >>> cols = axis_tables(2, 4, 2, 1, 4, zero, torch.arange(4) / 2 + 0.25, rows=False)
        >>> native_sample(x, torch.zeros(1, 8, 2, 2), rows, cols, 2, 1, 4, 4, "grid")[0, 0, 0].tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    return _sample_op(
        x,
        offset,
        rows.offset_at,
        rows.anchor,
        rows.fraction,
        rows.cell_start,
        cols.offset_at,
        cols.anchor,
        cols.fraction,
        scale,
        groups,
        out_h,
        out_w,
        MODES[mode],
    )
