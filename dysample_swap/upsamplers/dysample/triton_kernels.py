"""The Triton kernels of DySample's GPU sampler (launched by :mod:`dysample_swap.upsamplers.dysample.triton_sampler`).

Importing this module imports ``triton`` and compiles nothing; with ``TRITON_INTERPRET=1`` set before
that import the kernels run on CPU tensors through Triton's interpreter (used by the tests).

Every kernel works on a *slice*: one channel group of one batch item (``slice = n * groups + g``),
whose ``cg`` channels share one set of sampling positions. Positions and weights are computed in
registers once per output pixel and reused for all the slice's channels; there is no grid tensor,
no taps tensor and no channels-last copy.

* :func:`forward_kernel`: program ``(slice, block of output pixels)``; the four taps and weights, then
  a loop over the channels.
* :func:`backward_kernel`: the same taps; per output pixel the position gradient summed over the
  channels (a reduction in registers, no atomics), written to a per-pixel buffer; the input gradient
  scattered with atomic adds (``ATOMIC``) or left to the deterministic pair below.
* :func:`cell_reduce_kernel`: sums the per-pixel position gradients of the output pixels that share
  an offset cell (several do when the output is larger than ``scale`` times the input) in a fixed
  order, and writes the offset gradient in the spec layout.
* :func:`taps_kernel` + :func:`gather_grad_kernel`: the deterministic input gradient. The taps are
  written as (input pixel, weight) entries, sorted by input pixel with a stable sort, and each input
  pixel sums its entries in that order: the same result, bit for bit, on every run.

Position modes (``MODE``): 0 ``"exact"`` (the anchor's index plus fraction plus the offset), 1 ``"grid"``
(the authors' ``2 * p / size - 1``, then ``grid_sample``'s unnormalisation and border clamp), as in
``csrc/sampler_impl.h``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _axis(offset, anchor, fraction, length, MODE: tl.constexpr):
    """One axis: the lower and upper tap, the fraction, and d(position)/d(offset) (0 where the border clamp holds)."""
    if MODE == 0:
        shifted = fraction + offset
        whole = tl.floor(shifted)
        bound = (2 * length + 2).to(shifted.dtype)
        whole = tl.where(whole > -bound, whole, -bound)  # NaN compares false: it reads pixel 0, as the reference
        whole = tl.where(whole < bound, whole, bound)
        index = anchor + whole.to(tl.int32)
        inside = (index >= 0) & (index < length - 1)
        frac = tl.where(inside, shifted - whole, 0.0)
        slope = tl.where(inside, 1.0, 0.0)
        index = tl.minimum(tl.maximum(index, 0), length - 1)
    else:
        grid = (offset + fraction) * 2.0 / length - 1.0
        source = (grid + 1.0) * (length / 2.0) - 0.5
        low = tl.where(source > 0.0, source, 0.0)  # NaN compares false: pixel 0
        top = (length - 1).to(source.dtype)
        clipped = tl.where(low < top, low, top)
        inside = (low != 0.0) & (clipped != top)  # grid_sample: the borders count as clamped
        whole = tl.floor(clipped)
        index = whole.to(tl.int32)
        frac = clipped - whole
        slope = tl.where(inside, 1.0, 0.0)  # grid_sample's length/2 times the normalisation's 2/length
    upper = tl.minimum(index + 1, length - 1)
    return index, upper, frac, slope


@triton.jit
def _taps(
    offset_ptr,
    row_at_ptr,
    row_anchor_ptr,
    row_frac_ptr,
    col_at_ptr,
    col_anchor_ptr,
    col_frac_ptr,
    slice_id,
    pixels,
    mask,
    groups,
    height,
    width,
    out_w,
    block,
    MODE: tl.constexpr,
):
    """The flat input pixels, weights, fractions and slopes of output pixels ``pixels`` of one slice."""
    oy = pixels // out_w
    ox = pixels % out_w
    n = slice_id // groups
    g = slice_id % groups
    at = tl.load(row_at_ptr + oy, mask=mask, other=0) + tl.load(col_at_ptr + ox, mask=mask, other=0)
    base = n.to(tl.int64) * 2 * groups * block + g.to(tl.int64) * block
    off_x = tl.load(offset_ptr + base + at, mask=mask, other=0.0)
    off_y = tl.load(offset_ptr + base + groups * block + at, mask=mask, other=0.0)
    row_anchor = tl.load(row_anchor_ptr + oy, mask=mask, other=0)
    row_frac = tl.load(row_frac_ptr + oy, mask=mask, other=0.0)
    col_anchor = tl.load(col_anchor_ptr + ox, mask=mask, other=0)
    col_frac = tl.load(col_frac_ptr + ox, mask=mask, other=0.0)
    x0, x1, fx, dx = _axis(off_x, col_anchor, col_frac, width, MODE)
    y0, y1, fy, dy = _axis(off_y, row_anchor, row_frac, height, MODE)
    return y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1, fx, fy, dx, dy


@triton.jit
def forward_kernel(
    x_ptr,
    offset_ptr,
    out_ptr,
    row_at_ptr,
    row_anchor_ptr,
    row_frac_ptr,
    col_at_ptr,
    col_anchor_ptr,
    col_frac_ptr,
    groups,
    cg,
    height,
    width,
    out_h,
    out_w,
    block,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    slice_id = tl.program_id(0)
    pixels = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n_out = out_h * out_w
    mask = pixels < n_out
    i00, i01, i10, i11, fx, fy, dx, dy = _taps(
        offset_ptr,
        row_at_ptr,
        row_anchor_ptr,
        row_frac_ptr,
        col_at_ptr,
        col_anchor_ptr,
        col_frac_ptr,
        slice_id,
        pixels,
        mask,
        groups,
        height,
        width,
        out_w,
        block,
        MODE,
    )
    gx = 1.0 - fx
    gy = 1.0 - fy
    w00 = gy * gx
    w01 = gy * fx
    w10 = fy * gx
    w11 = fy * fx
    hw = height * width
    plane = x_ptr + slice_id.to(tl.int64) * cg * hw
    row = out_ptr + slice_id.to(tl.int64) * cg * n_out + pixels
    for _ in range(cg):
        v00 = tl.load(plane + i00, mask=mask, other=0.0).to(w00.dtype)
        v01 = tl.load(plane + i01, mask=mask, other=0.0).to(w00.dtype)
        v10 = tl.load(plane + i10, mask=mask, other=0.0).to(w00.dtype)
        v11 = tl.load(plane + i11, mask=mask, other=0.0).to(w00.dtype)
        value = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11
        tl.store(row, value.to(out_ptr.dtype.element_ty), mask=mask)
        plane += hw
        row += n_out


@triton.jit
def backward_kernel(
    x_ptr,
    offset_ptr,
    grad_ptr,
    grad_x_ptr,
    grad_pos_ptr,
    row_at_ptr,
    row_anchor_ptr,
    row_frac_ptr,
    col_at_ptr,
    col_anchor_ptr,
    col_frac_ptr,
    groups,
    cg,
    height,
    width,
    out_h,
    out_w,
    block,
    MODE: tl.constexpr,
    NEED_OFFSET: tl.constexpr,
    ATOMIC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    slice_id = tl.program_id(0)
    pixels = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n_out = out_h * out_w
    mask = pixels < n_out
    i00, i01, i10, i11, fx, fy, dx, dy = _taps(
        offset_ptr,
        row_at_ptr,
        row_anchor_ptr,
        row_frac_ptr,
        col_at_ptr,
        col_anchor_ptr,
        col_frac_ptr,
        slice_id,
        pixels,
        mask,
        groups,
        height,
        width,
        out_w,
        block,
        MODE,
    )
    gx = 1.0 - fx
    gy = 1.0 - fy
    hw = height * width
    plane = x_ptr + slice_id.to(tl.int64) * cg * hw
    grad_plane = grad_x_ptr + slice_id.to(tl.int64) * cg * hw
    row = grad_ptr + slice_id.to(tl.int64) * cg * n_out + pixels
    acc_x = tl.full((BLOCK,), 0.0, dtype=fx.dtype)
    acc_y = tl.full((BLOCK,), 0.0, dtype=fx.dtype)
    for _ in range(cg):
        grad = tl.load(row, mask=mask, other=0.0).to(fx.dtype)
        if NEED_OFFSET:
            v00 = tl.load(plane + i00, mask=mask, other=0.0).to(fx.dtype)
            v01 = tl.load(plane + i01, mask=mask, other=0.0).to(fx.dtype)
            v10 = tl.load(plane + i10, mask=mask, other=0.0).to(fx.dtype)
            v11 = tl.load(plane + i11, mask=mask, other=0.0).to(fx.dtype)
            acc_x += grad * (gy * (v01 - v00) + fy * (v11 - v10))
            acc_y += grad * (gx * (v10 - v00) + fx * (v11 - v01))
        if ATOMIC:
            tl.atomic_add(grad_plane + i00, grad * (gy * gx), mask=mask, sem="relaxed")
            tl.atomic_add(grad_plane + i01, grad * (gy * fx), mask=mask, sem="relaxed")
            tl.atomic_add(grad_plane + i10, grad * (fy * gx), mask=mask, sem="relaxed")
            tl.atomic_add(grad_plane + i11, grad * (fy * fx), mask=mask, sem="relaxed")
        plane += hw
        grad_plane += hw
        row += n_out
    if NEED_OFFSET:
        pos = grad_pos_ptr + slice_id.to(tl.int64) * 2 * n_out + pixels
        tl.store(pos, acc_x * dx, mask=mask)
        tl.store(pos + n_out, acc_y * dy, mask=mask)


@triton.jit
def cell_reduce_kernel(
    grad_pos_ptr,
    grad_offset_ptr,
    row_start_ptr,
    col_start_ptr,
    groups,
    scale,
    height,
    width,
    out_h,
    out_w,
    SPAN_H: tl.constexpr,
    SPAN_W: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program ``(slice * 2 + axis, block of cells)``: each offset cell sums its output pixels row by row."""
    slice_axis = tl.program_id(0)
    slice_id = slice_axis // 2
    axis = slice_axis % 2
    cells = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    s_width = scale * width
    mask = cells < scale * height * s_width
    cell_row = cells // s_width
    cell_col = cells % s_width
    row0 = tl.load(row_start_ptr + cell_row, mask=mask, other=0)
    row1 = tl.load(row_start_ptr + cell_row + 1, mask=mask, other=0)
    col0 = tl.load(col_start_ptr + cell_col, mask=mask, other=0)
    col1 = tl.load(col_start_ptr + cell_col + 1, mask=mask, other=0)
    source = grad_pos_ptr + slice_axis.to(tl.int64) * out_h * out_w
    acc = tl.full((BLOCK,), 0.0, dtype=grad_pos_ptr.dtype.element_ty)
    for dy in range(SPAN_H):
        for dx in range(SPAN_W):
            take = mask & (row0 + dy < row1) & (col0 + dx < col1)
            acc += tl.load(source + (row0 + dy) * out_w + col0 + dx, mask=take, other=0.0)
    # cell (h*s + i, w*s + j) -> offset channel k*(G*s*s) + g*(s*s) + i*s + j at pixel (h, w)
    n = slice_id // groups
    g = slice_id % groups
    h = cell_row // scale
    i = cell_row % scale
    w = cell_col // scale
    j = cell_col % scale
    channel = (axis * groups + g) * scale * scale + i * scale + j
    at = (n.to(tl.int64) * 2 * groups * scale * scale + channel) * height * width + h * width + w
    tl.store(grad_offset_ptr + at, acc.to(grad_offset_ptr.dtype.element_ty), mask=mask)


@triton.jit
def taps_kernel(
    offset_ptr,
    key_ptr,
    weight_ptr,
    row_at_ptr,
    row_anchor_ptr,
    row_frac_ptr,
    col_at_ptr,
    col_anchor_ptr,
    col_frac_ptr,
    groups,
    height,
    width,
    out_h,
    out_w,
    block,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Entry ``(slice, pixel, tap)``: key ``slice * H * W + input pixel`` and the tap's weight."""
    slice_id = tl.program_id(0)
    pixels = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    n_out = out_h * out_w
    mask = pixels < n_out
    i00, i01, i10, i11, fx, fy, dx, dy = _taps(
        offset_ptr,
        row_at_ptr,
        row_anchor_ptr,
        row_frac_ptr,
        col_at_ptr,
        col_anchor_ptr,
        col_frac_ptr,
        slice_id,
        pixels,
        mask,
        groups,
        height,
        width,
        out_w,
        block,
        MODE,
    )
    gx = 1.0 - fx
    gy = 1.0 - fy
    start = slice_id.to(tl.int64) * height * width
    entry = (slice_id.to(tl.int64) * n_out + pixels) * 4
    tl.store(key_ptr + entry, (start + i00).to(key_ptr.dtype.element_ty), mask=mask)
    tl.store(key_ptr + entry + 1, (start + i01).to(key_ptr.dtype.element_ty), mask=mask)
    tl.store(key_ptr + entry + 2, (start + i10).to(key_ptr.dtype.element_ty), mask=mask)
    tl.store(key_ptr + entry + 3, (start + i11).to(key_ptr.dtype.element_ty), mask=mask)
    tl.store(weight_ptr + entry, gy * gx, mask=mask)
    tl.store(weight_ptr + entry + 1, gy * fx, mask=mask)
    tl.store(weight_ptr + entry + 2, fy * gx, mask=mask)
    tl.store(weight_ptr + entry + 3, fy * fx, mask=mask)


@triton.jit
def gather_grad_kernel(
    grad_ptr,
    grad_x_ptr,
    order_ptr,
    start_ptr,
    weight_ptr,
    cg,
    hw,
    n_out,
    BLOCK_C: tl.constexpr,
):
    """Program ``(slice * H * W + input pixel, channel block)``: the input pixel's gradient, its sorted entries summed in order."""
    key = tl.program_id(0)
    slice_id = key // hw
    pixel = key % hw
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = channels < cg
    first = tl.load(start_ptr + key)
    last = tl.load(start_ptr + key + 1)
    rows = grad_ptr + (slice_id.to(tl.int64) * cg + channels) * n_out
    acc = tl.full((BLOCK_C,), 0.0, dtype=weight_ptr.dtype.element_ty)
    for e in range(first, last):
        entry = tl.load(order_ptr + e)
        weight = tl.load(weight_ptr + entry)
        out_pixel = (entry // 4) % n_out
        acc += tl.load(rows + out_pixel, mask=mask, other=0.0).to(acc.dtype) * weight
    target = grad_x_ptr + (slice_id.to(tl.int64) * cg + channels) * hw + pixel
    tl.store(target, acc.to(grad_x_ptr.dtype.element_ty), mask=mask)
