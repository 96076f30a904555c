"""A chain of x2 upsamplers standing in for one x2**n upsampling (the paper's "3 + 2 + 1 = 6" stages).

The DySample paper replaces SegFormer-B1's x8, x4 and x2 upsampling by three, two and one x2 stages.
:class:`UpsamplerChain` runs its stages in order at their native x2 and hands the requested final
``size`` (or the ``scale_factor`` divided by what the earlier stages multiplied, ``2**(n-1)``) to
the last stage, so any output size works. At zero offsets a chain of nearest x2 stages equals one
nearest x2**n (at the native size and, through PyTorch's float32 index rule scaled by powers of two,
at other sizes too); a chain of bilinear x2 stages does not equal one bilinear x2**n (it is a wider,
smoother kernel).

Example:
    >>> import torch
    >>> from dysample_swap import DySample
    >>> chain = UpsamplerChain([DySample(16, offset_init_std=0.0, anchor="nearest") for _ in range(3)])
    >>> x = torch.randn(1, 16, 5, 5)
    >>> torch.allclose(chain(x), torch.nn.functional.interpolate(x, scale_factor=8), atol=1e-5)
    True
    >>> chain(x, size=(37, 41)).shape
    torch.Size([1, 16, 37, 41])
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from dysample_swap.upsamplers.options import check_defaults
from dysample_swap.upsamplers.sizing import Factor, Size


class UpsamplerChain(nn.Sequential):
    """``nn.Sequential`` of x2 upsamplers whose ``forward(x, size=None, scale_factor=None)`` fits the final size.

    Each stage must accept ``forward(x, size=None, scale_factor=None)``. State-dict keys are
    ``<stage index>.<stage key>`` (``0.offset.weight``, ``1.offset.weight``, ...).

    Args:
        stages: the x2 upsamplers, in order.
        size, scale_factor: defaults for ``forward`` when it gets neither (default: ``2**n`` times the input).

    Example:
        >>> import torch
        >>> from dysample_swap import DySample
        >>> chain = UpsamplerChain([DySample(8, groups=2), DySample(8, groups=2)])
        >>> chain.scale, chain(torch.randn(1, 8, 13, 13), scale_factor=3.5).shape
        (4, torch.Size([1, 8, 45, 45]))
    """

    def __init__(
        self, stages: Iterable[nn.Module], *, size: Size | None = None, scale_factor: Factor | None = None
    ) -> None:
        super().__init__(*stages)
        if len(self) < 2:
            raise ValueError(f"an UpsamplerChain needs at least 2 stages, got {len(self)}")
        check_defaults(size, scale_factor, "UpsamplerChain")
        self.size = size
        self.scale_factor = scale_factor

    @property
    def scale(self) -> int:
        """The chain's native factor, ``2**len(self)``.

        Example:
            >>> from dysample_swap import DySample
            >>> UpsamplerChain([DySample(8, groups=2) for _ in range(3)]).scale
            8
        """
        return 2 ** len(self)

    def forward(self, x: Tensor, size: Size | None = None, scale_factor: Factor | None = None) -> Tensor:
        """Run the stages; the last one gets ``size``, or ``scale_factor / 2**(n-1)`` (per axis).

        Example:
            >>> import torch
            >>> from dysample_swap import DySample
            >>> UpsamplerChain([DySample(8, groups=2), DySample(8, groups=2)])(torch.randn(1, 8, 13, 13), size=(50, 49)).shape
            torch.Size([1, 8, 50, 49])
        """
        if size is None and scale_factor is None:
            size, scale_factor = self.size, self.scale_factor
        *first, last = self
        for stage in first:
            x = stage(x)
        if scale_factor is not None:
            done = 2 ** len(first)
            scale_factor = (
                scale_factor / done if isinstance(scale_factor, (int, float)) else tuple(f / done for f in scale_factor)
            )
        return last(x, size=size, scale_factor=scale_factor)
