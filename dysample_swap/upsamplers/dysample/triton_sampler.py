"""DySample's bilinear read on the GPU: Triton kernels registered as the operator ``dysample_swap::triton_sample``.

The kernels (:mod:`dysample_swap.upsamplers.dysample.triton_kernels`) read the offsets in the spec
layout, compute each output pixel's four taps and weights in registers once for all the channels of
its group, and write the output: no grid tensor, no taps tensor, no channels-last copy. The tables
they read are those of the compiled CPU sampler (:func:`~dysample_swap.upsamplers.dysample.native_sampler.axis_tables`),
so both position modes, every anchor and any output size work as there.

Backward: the offset gradient is a per-pixel reduction over the group's channels (no atomics), then a
fixed-order sum over the output pixels that share an offset cell. The input gradient is scattered with
atomic adds, or, when ``torch.are_deterministic_algorithms_enabled()`` (or ``deterministic=True``),
computed without atomics: the taps are sorted by input pixel with a stable sort and every input pixel
sums its taps in that order, so two runs give bit-identical gradients.

Features may be float16, bfloat16, float32 or float64; positions, weights and sums are float32
(float64 for float64 features), the output has the features' dtype. The operator has a fake
implementation and an autograd formula, so ``torch.compile`` keeps it as one call.

It runs CUDA tensors; with ``TRITON_INTERPRET=1`` set before triton is first imported, Triton's
interpreter runs it on CPU tensors (slowly, one program after another: it shows what the kernels
compute, not how they behave under real concurrency).

Example:
    >>> import torch
    >>> from dysample_swap.upsamplers.dysample.triton_sampler import supports
    >>> supports(torch.zeros(1, 4, 5, 5, dtype=torch.int64), torch.zeros(1, 32, 5, 5)) is None
    False
"""

from __future__ import annotations

import functools
import importlib.util
import os
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from dysample_swap.upsamplers.dysample.native_sampler import MODES, AxisTables

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
"""The feature dtypes the Triton sampler takes (the interpreter has no bfloat16)."""

_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None  # looked up once: torch.compile cannot trace it
_BLOCK = 128  # output pixels per program
_BLOCK_C = 32  # channels per program of the deterministic input gradient


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def supports(x: Tensor, offset: Tensor) -> str | None:
    """Why the Triton sampler cannot take these tensors (``None`` when it can).

    Example:
        >>> supports(torch.zeros(1, 1, 2, 2, dtype=torch.int32), torch.zeros(1, 8, 2, 2)) is not None
        True
    """
    if not _TRITON_INSTALLED:
        return "a PyTorch install without triton"
    if x.device.type == "cpu" and not interpreting():
        return "cpu tensors without TRITON_INTERPRET=1"
    if x.device.type not in ("cuda", "cpu") or offset.device != x.device:
        return f"{x.device.type} tensors"
    if x.dtype not in DTYPES:
        return f"{x.dtype} features"
    if offset.dtype != (torch.float64 if x.dtype == torch.float64 else torch.float32):
        return f"{offset.dtype} offsets with {x.dtype} features"
    return None


@functools.cache
def _kernels() -> ModuleType:
    """The kernels, imported on first use (this is where triton is imported)."""
    from dysample_swap.upsamplers.dysample import triton_kernels

    return triton_kernels


def _launch_sizes(x: Tensor, groups: int, out_h: int, out_w: int) -> tuple[int, int, tuple[int, int]]:
    n, channels, height, width = x.shape
    return n * groups, channels // groups, (n * groups, -(-out_h * out_w // _BLOCK))


@torch.library.custom_op("dysample_swap::triton_sample", mutates_args=())
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
    col_cell_start: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
    deterministic: bool,
) -> Tensor:
    x, offset = x.contiguous(), offset.contiguous()
    n, channels, height, width = x.shape
    out = x.new_empty(n, channels, out_h, out_w)
    slices, cg, grid = _launch_sizes(x, groups, out_h, out_w)
    if out.numel() == 0:
        return out
    _kernels().forward_kernel[grid](
        x,
        offset,
        out,
        row_offset_at,
        row_anchor,
        row_fraction,
        col_offset_at,
        col_anchor,
        col_fraction,
        groups,
        cg,
        height,
        width,
        out_h,
        out_w,
        scale * scale * height * width,
        MODE=mode,
        BLOCK=_BLOCK,
    )
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
    col_cell_start: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
    deterministic: bool,
) -> Tensor:
    return x.new_empty(x.shape[0], x.shape[1], out_h, out_w)


@torch.library.custom_op("dysample_swap::triton_sample_backward", mutates_args=())
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
    col_cell_start: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
    need_x: bool,
    need_offset: bool,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    x, offset, grad = x.contiguous(), offset.contiguous(), grad.contiguous()
    n, channels, height, width = x.shape
    slices, cg, grid = _launch_sizes(x, groups, out_h, out_w)
    block = scale * scale * height * width
    tables = (row_offset_at, row_anchor, row_fraction, col_offset_at, col_anchor, col_fraction)
    kernels = _kernels()
    atomic = need_x and not deterministic
    grad_x = torch.zeros(x.shape, dtype=offset.dtype, device=x.device) if need_x else x.new_empty(0)
    grad_pos = offset.new_empty(slices, 2, out_h, out_w) if need_offset else offset.new_empty(0)
    grad_offset = torch.empty_like(offset) if need_offset else offset.new_empty(0)
    if grad.numel() == 0:
        return grad_x.zero_().to(x.dtype), grad_offset.zero_()
    if atomic or need_offset:
        kernels.backward_kernel[grid](
            x,
            offset,
            grad,
            grad_x,
            grad_pos,
            *tables,
            groups,
            cg,
            height,
            width,
            out_h,
            out_w,
            block,
            MODE=mode,
            NEED_OFFSET=need_offset,
            ATOMIC=atomic,
            BLOCK=_BLOCK,
        )
    if need_offset:
        spans = (_span(out_h, scale * height), _span(out_w, scale * width))
        cells = scale * scale * height * width
        kernels.cell_reduce_kernel[(2 * slices, -(-cells // _BLOCK))](
            grad_pos,
            grad_offset,
            row_cell_start,
            col_cell_start,
            groups,
            scale,
            height,
            width,
            out_h,
            out_w,
            SPAN_H=spans[0],
            SPAN_W=spans[1],
            BLOCK=_BLOCK,
        )
    if need_x and deterministic:
        _deterministic_grad_x(grad, offset, grad_x, tables, groups, cg, height, width, out_h, out_w, block, mode)
    return grad_x.to(x.dtype), grad_offset


def _span(out_len: int, cells: int) -> int:
    """The most output indices that share one offset cell of an axis (``axis_tables``' ``floor(o * cells / out_len)``)."""
    whole, rest = divmod(out_len, cells)
    return max(whole + (rest > 0), 1)


def _deterministic_grad_x(
    grad: Tensor,
    offset: Tensor,
    grad_x: Tensor,
    tables: tuple[Tensor, ...],
    groups: int,
    cg: int,
    height: int,
    width: int,
    out_h: int,
    out_w: int,
    block: int,
    mode: int,
) -> None:
    """The input gradient without atomics: taps sorted (stably) by input pixel, each pixel's taps summed in order."""
    slices = grad_x.shape[0] * groups
    keys = slices * height * width
    key_dtype = torch.int32 if keys < 2**31 else torch.int64
    entries = slices * out_h * out_w * 4
    key = torch.empty(entries, dtype=key_dtype, device=grad.device)
    weight = torch.empty(entries, dtype=offset.dtype, device=grad.device)
    kernels = _kernels()
    kernels.taps_kernel[(slices, -(-out_h * out_w // _BLOCK))](
        offset, key, weight, *tables, groups, height, width, out_h, out_w, block, MODE=mode, BLOCK=_BLOCK
    )
    sorted_key, order = torch.sort(key, stable=True)
    starts = torch.searchsorted(sorted_key, torch.arange(keys + 1, dtype=key_dtype, device=grad.device))
    kernels.gather_grad_kernel[(keys, -(-cg // _BLOCK_C))](
        grad, grad_x, order, starts, weight, cg, height * width, out_h * out_w, BLOCK_C=_BLOCK_C
    )


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
    col_cell_start: Tensor,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: int,
    need_x: bool,
    need_offset: bool,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    return (
        torch.empty_like(x) if need_x else x.new_empty(0),
        torch.empty_like(offset) if need_offset else offset.new_empty(0),
    )


def _setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    ctx.save_for_backward(*inputs[:10])
    ctx.sizes = inputs[10:-1]
    ctx.deterministic = inputs[-1]


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    need_x, need_offset = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    deterministic = ctx.deterministic or torch.are_deterministic_algorithms_enabled()
    grad_x, grad_offset = _sample_backward_op(grad, *ctx.saved_tensors, *ctx.sizes, need_x, need_offset, deterministic)
    return (grad_x if need_x else None, grad_offset if need_offset else None) + (None,) * 14


_sample_op.register_autograd(_backward, setup_context=_setup_context)


def triton_sample(
    x: Tensor,
    offset: Tensor,
    rows: AxisTables,
    cols: AxisTables,
    scale: int,
    groups: int,
    out_h: int,
    out_w: int,
    mode: str,
    deterministic: bool = False,
) -> Tensor:
    """Read ``x`` where ``offset`` moves the anchors of ``rows`` / ``cols`` (the signature of ``native_sample``).

    Args:
        x: ``(N, C, H, W)`` CUDA features (CPU under ``TRITON_INTERPRET=1``), a dtype of :data:`DTYPES`.
        offset: ``(N, 2*groups*scale**2, H, W)`` float32 (float64 for float64 features), spec layout.
        rows, cols: :func:`~dysample_swap.upsamplers.dysample.native_sampler.axis_tables` of the height and
            the width, on ``x``'s device.
        scale, groups, out_h, out_w: as in :func:`dysample_swap.upsamplers.dysample.sampling.dysample_sample`.
        mode: ``"grid"`` or ``"exact"``.
        deterministic: compute the input gradient without atomic adds (bit-identical from run to run),
            as happens anyway while ``torch.are_deterministic_algorithms_enabled()``.
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
        cols.cell_start,
        scale,
        groups,
        out_h,
        out_w,
        MODES[mode],
        deterministic,
    )
