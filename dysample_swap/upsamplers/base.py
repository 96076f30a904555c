"""The shared frame of the learned rivals that compute at an integer scale: arguments, defaults, any output size.

A subclass builds its layers in :meth:`NativeScaleUpsampler.build` and computes the native output
(``scale`` times the input) in :meth:`NativeScaleUpsampler.native`; ``forward`` resolves the requested
size as DySample does and fits the native output to it with
:func:`dysample_swap.upsamplers.sizing.fit_native`.

Example:
    >>> import torch
    >>> class Repeat(NativeScaleUpsampler):
    ...     def build(self) -> None: ...
    ...     def native(self, x): return x.repeat_interleave(self.scale, 2).repeat_interleave(self.scale, 3)
    >>> Repeat(3, 2)(torch.randn(1, 3, 13, 13), size=(25, 25)).shape
    torch.Size([1, 3, 25, 25])
"""

from __future__ import annotations

from torch import Tensor, nn

from dysample_swap.upsamplers.dysample.sampling import check_anchor
from dysample_swap.upsamplers.options import check_defaults, check_init, check_scale
from dysample_swap.upsamplers.sizing import Factor, Size, fit_native


class NativeScaleUpsampler(nn.Module):
    """Base of :class:`~dysample_swap.DeconvUpsampler` and :class:`~dysample_swap.PixelShuffleUpsampler`.

    Args:
        channels: input (and output) channels.
        scale: integer factor ``>= 2`` of the native output.
        anchor: the replaced interpolation (``"bilinear"``, ``"bilinear_align_corners"``, ``"nearest"``);
            ``init="match"`` starts the layer as it.
        init: ``"match"`` (start as the anchor) or ``"paper"`` (the DySample paper's layer, PyTorch's init).
        size, scale_factor: defaults for ``forward`` when it gets neither (as ``nn.Upsample``).

    Example:
        >>> from dysample_swap import DeconvUpsampler
        >>> DeconvUpsampler(8, 2, anchor="nearest")
        DeconvUpsampler(
          channels=8, scale=2, anchor=nearest, init=match
          (deconv): ConvTranspose2d(8, 8, kernel_size=(4, 4), stride=(2, 2), padding=(3, 3))
        )
    """

    def __init__(
        self,
        channels: int,
        scale: int = 2,
        *,
        anchor: str = "bilinear",
        init: str = "match",
        size: Size | None = None,
        scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        check_defaults(size, scale_factor, who)
        self.channels = channels
        self.scale = check_scale(scale, who)
        self.anchor = check_anchor(anchor)
        self.init = check_init(init)
        self.size = size
        self.scale_factor = scale_factor
        self.build()

    def build(self) -> None:
        """Create the layers (and initialise them for ``init="match"``); called by the constructor."""
        raise NotImplementedError

    def native(self, x: Tensor) -> Tensor:
        """The output at ``scale`` times the input."""
        raise NotImplementedError

    def forward(self, x: Tensor, size: Size | None = None, scale_factor: Factor | None = None) -> Tensor:
        """Upsample ``x`` to ``size`` / by ``scale_factor`` (``F.interpolate``'s meaning), else the defaults, else x ``scale``.

        Example:
            >>> import torch
            >>> from dysample_swap import PixelShuffleUpsampler
            >>> PixelShuffleUpsampler(4, 2)(torch.randn(1, 4, 15, 17), scale_factor=3).shape
            torch.Size([1, 4, 45, 51])
        """
        if size is None and scale_factor is None:
            size, scale_factor = self.size, self.scale_factor
        return fit_native(self.native(x), self.scale, size, scale_factor)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scale={self.scale}, anchor={self.anchor}, init={self.init}"
