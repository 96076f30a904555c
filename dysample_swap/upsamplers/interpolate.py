"""The no-op arm: ``F.interpolate`` exactly as the replaced call makes it, as a module.

A comparison (original vs DySample vs a rival) needs an arm in which nothing changes but which goes
through the same plumbing; this is it. ``anchor`` names the replaced call's interpolation:
``"bilinear"`` (``align_corners=False``), ``"bilinear_align_corners"`` or ``"nearest"``.

Example:
    >>> import torch, torch.nn.functional as F
    >>> x = torch.randn(1, 3, 13, 13)
    >>> torch.equal(InterpolateUpsampler(anchor="nearest")(x, size=(25, 25)), F.interpolate(x, size=(25, 25)))
    True
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap import _torch_compat
from dysample_swap.upsamplers.dysample.sampling import check_anchor
from dysample_swap.upsamplers.options import check_defaults
from dysample_swap.upsamplers.sizing import Factor, Size, requested_hw


class InterpolateUpsampler(nn.Module):
    """``F.interpolate(x, size | scale_factor, mode, align_corners)`` for an anchor; no parameters.

    Args:
        scale: the factor used when neither ``forward`` nor the defaults give a size or factor.
        anchor: ``"bilinear"``, ``"bilinear_align_corners"`` or ``"nearest"``.
        size, scale_factor: defaults for ``forward`` when it gets neither (as ``nn.Upsample``).

    Example:
        >>> import torch
        >>> InterpolateUpsampler(scale=2)(torch.randn(1, 3, 5, 7)).shape
        torch.Size([1, 3, 10, 14])
    """

    def __init__(
        self,
        scale: int = 2,
        *,
        anchor: str = "bilinear",
        size: Size | None = None,
        scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        check_defaults(size, scale_factor, "InterpolateUpsampler")
        self.scale = scale
        self.anchor = check_anchor(anchor)
        self.size = size
        self.scale_factor = scale_factor
        self.mode = "nearest" if anchor == "nearest" else "bilinear"
        self.align_corners = True if anchor == "bilinear_align_corners" else (None if anchor == "nearest" else False)

    def forward(self, x: Tensor, size: Size | None = None, scale_factor: Factor | None = None) -> Tensor:
        """Interpolate to ``size`` / by ``scale_factor``, else the defaults, else by ``scale``.

        Example:
            >>> import torch
            >>> InterpolateUpsampler()(torch.randn(1, 3, 13, 13), scale_factor=1.5).shape
            torch.Size([1, 3, 19, 19])
        """
        if size is None and scale_factor is None:
            size, scale_factor = self.size, self.scale_factor
            if size is None and scale_factor is None:
                scale_factor = self.scale
        if not _torch_compat.is_fx_symbolic_tracing():  # fx proxies have no sizes to check
            requested_hw(x.shape[-2], x.shape[-1], self.scale, size, scale_factor)  # every upsampler's errors
        return F.interpolate(x, size=size, scale_factor=scale_factor, mode=self.mode, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode}, align_corners={self.align_corners}"
