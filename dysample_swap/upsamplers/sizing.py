"""Output sizes for the rival upsamplers: ``F.interpolate``'s size rules, and fitting a native output.

CARAFE, the deconvolution and the pixel-shuffle upsampler compute at their integer ``scale``
(``scale * H x scale * W``, the *native* output). Any other requested size is made from the native
output by picking, for every output pixel, the native pixel it falls on under PyTorch's own
``mode="nearest"`` rule (``floor(o * in / out)`` in float32, or ``floor(o / scale_factor)``; the
``out == in`` and ``out == 2 * in`` shortcuts included), refined to the native *sub-pixel* of that
input cell: output ``o`` at input position ``t`` takes native row ``scale * floor(t) + floor(scale *
frac(t))``. So every output pixel is a value computed by the learned upsampler (nothing is
blended), and a module initialised as nearest stays exactly nearest at every size. A request for
the native size returns the native output as it is (whatever ``scale_factor`` produced that size;
only for ``scale > 2`` with a ``scale_factor`` other than ``scale`` that lands on the native size does
PyTorch's nearest rule pick other rows).

Example:
    >>> import torch
    >>> native = torch.arange(8.0).expand(1, 1, 2, 8)          # a x2 output of a 1x4 input
    >>> fit_native(native, scale=2, size=(2, 5), scale_factor=None)[0, 0, 0]
    tensor([0., 1., 3., 4., 6.])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dysample_swap.upsamplers.dysample.sampling import output_size, size_pair

Size = int | Sequence[int]
Factor = float | Sequence[float]


def requested_hw(
    height: int, width: int, scale: int, size: Size | None, scale_factor: Factor | None
) -> tuple[int, int]:
    """The output size ``F.interpolate`` gives for ``size`` / ``scale_factor``; ``scale`` times the input for neither.

    DySample's own rule (:func:`dysample_swap.upsamplers.dysample.sampling.output_size`), so every upsampler accepts and
    refuses the same requests.

    Raises:
        ValueError: naming the problem and the fix, when both ``size`` and ``scale_factor`` are given, for a
            size that is not a whole number >= 1, and for a factor that is not a finite number > 0 or
            leaves no output pixel.

    Example:
        >>> requested_hw(13, 13, 2, None, 1.5), requested_hw(13, 13, 2, (25, 27), None), requested_hw(4, 5, 2, None, None)
        ((19, 19), (25, 27), (8, 10))
        >>> requested_hw(4, 4, 2, (0, 5), None)
        Traceback (most recent call last):
            ...
        ValueError: size must be at least 1 pixel per axis, got 0 for the height; pass a positive output size
    """
    out_h, out_w, _ = output_size(height, width, scale, size, scale_factor)
    return out_h, out_w


def native_rows(in_len: int, out_len: int, scale: int, scale_factor: float | None) -> Tensor:
    """For each of ``out_len`` outputs, the row of a ``scale * in_len`` native output it takes (see the module docstring).

    ``floor(rows / scale)`` is exactly the source index of ``F.interpolate(mode="nearest")`` on the CPU.

    Example:
        >>> native_rows(13, 25, 2, None)[-4:]          # 13 -> 25: rows of the 26-row native output
        tensor([21, 22, 23, 24])
        >>> native_rows(4, 8, 2, None).tolist() == list(range(8))
        True
    """
    index = torch.arange(out_len, dtype=torch.float32)
    if out_len == in_len:
        position = index
    elif out_len == 2 * in_len:
        position = index * 0.5
    else:
        if scale_factor is not None:
            step = torch.tensor(1.0 / scale_factor, dtype=torch.float32)
        else:
            step = torch.tensor(in_len, dtype=torch.float32) / out_len
        position = index * step
    source = position.floor().clamp(max=in_len - 1)
    sub = (position * scale).floor().sub(source * scale).clamp(0, scale - 1)
    return (source * scale + sub).long()


def fit_native(y: Tensor, scale: int, size: Size | None, scale_factor: Factor | None) -> Tensor:
    """Bring a native output ``y`` (``scale`` times its input) to the requested ``size`` / ``scale_factor``.

    Returns ``y`` itself when the request is the native size; each other axis is index-selected.

    Example:
        >>> y = torch.randn(1, 3, 26, 26)
        >>> fit_native(y, 2, None, None) is y, fit_native(y, 2, (25, 25), None).shape
        (True, torch.Size([1, 3, 25, 25]))
    """
    height, width = y.shape[-2] // scale, y.shape[-1] // scale
    out_h, out_w = requested_hw(height, width, scale, size, scale_factor)
    sf_h, sf_w = size_pair(scale_factor, "scale_factor") if scale_factor is not None else (None, None)
    for dim, (in_len, out_len, factor) in ((-2, (height, out_h, sf_h)), (-1, (width, out_w, sf_w))):
        if out_len != scale * in_len:
            y = y.index_select(dim, native_rows(in_len, out_len, scale, factor).to(y.device))
    return y
