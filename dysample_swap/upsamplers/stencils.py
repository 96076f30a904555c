"""``F.interpolate`` at an integer scale as a 3-tap stencil per sub-pixel (what the learned rivals start from).

Upsampling by an integer ``s`` with ``mode="bilinear", align_corners=False`` puts output ``s*m + j``
at input position ``m + p_j`` with ``p_j = (j + 0.5) / s - 0.5`` (in ``(-0.5, 0.5)``), so it reads
only inputs ``m - 1``, ``m`` and ``m + 1`` with weights ``max(0, 1 - |p_j - t|)`` for ``t = -1, 0, 1``.
Where PyTorch clamps at the borders (``p < 0`` at the first row, index ``H`` at the last), the same
stencil over a replicate-padded input gives the same value, so with replicate padding the stencil is
exact everywhere, borders included. ``mode="nearest"`` reads input ``m`` alone. The 2-D weights are
outer products of the 1-D ones.

Example:
    >>> interpolation_taps(2, "bilinear")
    tensor([[0.2500, 0.7500, 0.0000],
            [0.0000, 0.7500, 0.2500]], dtype=torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

TAP_OFFSETS: tuple[int, ...] = (-1, 0, 1)
"""The input offsets the stencil reads, relative to the output pixel's input cell."""


def interpolation_taps(scale: int, anchor: str) -> Tensor:
    """The ``(scale, 3)`` weights of inputs ``m-1, m, m+1`` for output sub-pixel ``j`` of each input cell ``m``.

    ``anchor`` ``"bilinear"`` (``align_corners=False``) or ``"nearest"``; any other anchor gets the
    bilinear stencil (``align_corners=True`` is not a fixed stencil at an integer scale, so nothing
    reproduces it exactly; bilinear is the closest start). float64.

    Example:
        >>> interpolation_taps(2, "nearest")[:, 1]
        tensor([1., 1.], dtype=torch.float64)
    """
    position = (torch.arange(scale, dtype=torch.float64) + 0.5) / scale - 0.5
    if anchor == "nearest":
        position = torch.zeros_like(position)
    offsets = torch.tensor(TAP_OFFSETS, dtype=torch.float64)
    return (1 - (position[:, None] - offsets).abs()).clamp(min=0)


def interpolation_kernel_2d(scale: int, anchor: str) -> Tensor:
    """``(scale, scale, 3, 3)``: the 3x3 input weights of output sub-pixel ``(i, j)``.

    Example:
        >>> interpolation_kernel_2d(2, "bilinear")[0, 0]
        tensor([[0.0625, 0.1875, 0.0000],
                [0.1875, 0.5625, 0.0000],
                [0.0000, 0.0000, 0.0000]], dtype=torch.float64)
    """
    taps = interpolation_taps(scale, anchor)
    return taps[:, None, :, None] * taps[None, :, None, :]
