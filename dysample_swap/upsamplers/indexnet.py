"""IndexNet's holistic index block (HIN) as a guided x2 upsampler (Lu et al., ICCV 2019; TPAMI "Index Networks").

The block reads the *high-resolution guide* (the feature before the encoder's x2 downsampling, in an
FPN the lateral) and predicts, for every low-resolution position, one weight per sub-pixel of the
2x2 cell it becomes::

    z       = Conv1x1(ReLU6(BN(Conv4x4_stride2_pad1(guide))))   # (B, 4, h, w), no biases
    idx_de  = pixel_shuffle(sigmoid(z), 2)                       # (B, 1, 2h, 2w): channel 2a+b -> sub-pixel (a, b)
    idx_en  = pixel_shuffle(softmax_4(sigmoid(z)), 2)            # the encoder's pooling index (not used here)
    out     = idx_de * nearest_x2(x)                             # :func:`indexed_upsample`

``use_context=False`` makes the first convolution 2x2 (no overlap), ``use_nonlinear=False`` leaves a
single convolution ``inp -> 4``. The DySample paper's "HIN" is nonlinear + context (the default here):
2,100,224 parameters at ``inp=256``, 6 of them the paper's +12.6M. The single-channel ``idx_de``
multiplies every channel of ``x``, so ``x`` may have any number of channels (``inp`` is the guide's).

The upsampling step is the index-guided unpooling of the authors' ``IndexedUpsamlping`` (matting
decoder) without the concatenation and convolution that follow it there; the block itself is the
authors' ``HolisticIndexBlock`` with their initialisation (convolutions ``N(0, sqrt(2 / (k*k*out)))``,
norm weight 1 and bias 0) and their state-dict names (``indexnet.0.weight``, ``indexnet.1.*``,
``indexnet.3.weight``), so their weights load with ``strict=True``. Their ``SynchronizedBatchNorm2d``
is ``nn.BatchNorm2d`` here (the same on one device); pass ``batch_norm=`` for another norm layer.

Exact at swap time: nothing. ``idx_de`` is a sigmoid, never exactly 1, so even a saturated block only
approaches nearest interpolation (and never bilinear). With the authors' initialisation (the last 1x1
convolution has std ``sqrt(2 / 4)`` over ``2 * inp`` inputs) the sigmoid is mostly saturated: about two
thirds of ``idx_de`` is below 0.01 or above 0.99 at ``inp=256`` on a random guide, i.e. nearest
interpolation with sub-pixels switched off at random. There is no ``init="match"``.

Other output sizes (e.g. 13x13 -> 25x25): :class:`~dysample_swap.upsamplers.guided.GuidedUpsampler`.

Example:
    >>> import torch
    >>> up = IndexNet(16)
    >>> x, guide = torch.randn(1, 16, 13, 13), torch.randn(1, 16, 25, 25)
    >>> up(x, guide).shape, up(x, guide, size=(25, 25)).shape
    (torch.Size([1, 16, 26, 26]), torch.Size([1, 16, 25, 25]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap.upsamplers.guided import GuidedUpsampler
from dysample_swap.upsamplers.options import check_defaults
from dysample_swap.upsamplers.sizing import Factor, Size

SCALE = 2
"""The holistic index block's ratio: a stride-2 convolution and ``pixel_shuffle(., 2)``."""


def holistic_index(logits: Tensor) -> tuple[Tensor, Tensor]:
    """The index maps of the holistic index block from its 4-channel output ``z``: ``(idx_en, idx_de)``.

    ``idx_de = pixel_shuffle(sigmoid(z), 2)`` (the decoder's unpooling weights) and
    ``idx_en = pixel_shuffle(softmax over the 4 channels of sigmoid(z), 2)`` (the encoder's pooling weights).

    Args:
        logits: ``(B, 4, h, w)``; channel ``2a + b`` belongs to sub-pixel ``(a, b)`` of each 2x2 output cell.

    Returns:
        ``(idx_en, idx_de)``, each ``(B, 1, 2h, 2w)``.

    Example:
        >>> idx_en, idx_de = holistic_index(torch.zeros(1, 4, 2, 3))
        >>> idx_de.shape, idx_de.unique().tolist(), idx_en.unique().tolist()
        (torch.Size([1, 1, 4, 6]), [0.5], [0.25])
    """
    if logits.dim() != 4 or logits.shape[1] != 4:
        raise ValueError(f"holistic_index: logits must be (B, 4, h, w), got {tuple(logits.shape)}")
    y = torch.sigmoid(logits)
    z = F.softmax(y, dim=1)
    return F.pixel_shuffle(z, SCALE), F.pixel_shuffle(y, SCALE)


def indexed_upsample(x: Tensor, index: Tensor) -> Tensor:
    """Index-guided unpooling: ``index * F.interpolate(x, size=index.shape[-2:], mode="nearest")``.

    Args:
        x: ``(B, C, h, w)``.
        index: ``(B, 1, H, W)`` (one weight per output pixel, shared by all channels) or ``(B, C, H, W)``.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> indexed_upsample(x, torch.full((1, 1, 4, 4), 0.5))[0, 0]
        tensor([[0.0000, 0.0000, 0.5000, 0.5000],
                [0.0000, 0.0000, 0.5000, 0.5000],
                [1.0000, 1.0000, 1.5000, 1.5000],
                [1.0000, 1.0000, 1.5000, 1.5000]])
    """
    if x.dim() != 4 or index.dim() != 4:
        raise ValueError(
            f"indexed_upsample: x and index must be 4-D (B, C, h, w) and (B, 1, H, W), got "
            f"{tuple(x.shape)} and {tuple(index.shape)}"
        )
    return index * F.interpolate(x, size=index.shape[-2:], mode="nearest")


class IndexNet(GuidedUpsampler):
    """IndexNet's holistic index block (HIN) with index-guided unpooling: a guided x2 upsampler.

    Args:
        inp: channels of the guide (the authors' name: the index block's input).
        use_nonlinear: conv, norm, ReLU6, 1x1 conv (the authors' default is ``False``; HIN as the DySample
            paper counts it is ``True``).
        use_context: a 4x4 (overlapping) instead of a 2x2 first convolution (authors' default ``False``,
            HIN ``True``).
        batch_norm: the norm layer class, called with the channel count (only with ``use_nonlinear``);
            the authors pass ``SynchronizedBatchNorm2d`` or ``nn.BatchNorm2d``.
        size, scale_factor: defaults for ``forward`` when it gets neither (as ``nn.Upsample``).

    Parameters at ``inp=256`` (HIN): 2,100,224 (2,097,152 + 1,024 + 2,048).

    Example:
        >>> up = IndexNet(256)
        >>> sum(p.numel() for p in up.parameters()), sorted(up.state_dict())[:2]
        (2100224, ['indexnet.0.weight', 'indexnet.1.bias'])
        >>> up(torch.randn(2, 256, 6, 5), torch.randn(2, 256, 12, 10)).shape
        torch.Size([2, 256, 12, 10])
    """

    guide_channels_arg: ClassVar[str] = "inp"

    def __init__(
        self,
        inp: int,
        use_nonlinear: bool = True,
        use_context: bool = True,
        batch_norm: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        *,
        size: Size | None = None,
        scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        check_defaults(size, scale_factor, "IndexNet")
        if isinstance(inp, bool) or not isinstance(inp, int) or inp < 1:
            raise ValueError(f"IndexNet inp (the guide's channels) must be a positive integer, got {inp!r}")
        if use_nonlinear and batch_norm is None:
            raise ValueError(
                "IndexNet with use_nonlinear=True needs a norm layer: pass batch_norm=nn.BatchNorm2d "
                "(the authors' SynchronizedBatchNorm2d is the same on one device)"
            )
        self.inp = inp
        self.use_nonlinear = use_nonlinear
        self.use_context = use_context
        self.size = size
        self.scale_factor = scale_factor
        kernel_size, padding = (4, 1) if use_context else (2, 0)
        self.indexnet: nn.Module
        if use_nonlinear:
            assert batch_norm is not None
            self.indexnet = nn.Sequential(
                nn.Conv2d(inp, 2 * inp, kernel_size=kernel_size, stride=2, padding=padding, bias=False),
                batch_norm(2 * inp),
                nn.ReLU6(inplace=True),
                nn.Conv2d(2 * inp, 4, kernel_size=1, stride=1, padding=0, bias=False),
            )
        else:
            self.indexnet = nn.Conv2d(inp, 4, kernel_size=kernel_size, stride=2, padding=padding, bias=False)
        self.init_weights()

    @property
    def scale(self) -> int:
        """The native ratio, 2 (the name the other upsamplers use).

        Example:
            >>> IndexNet(8).scale
            2
        """
        return SCALE

    def init_weights(self) -> None:
        """The authors' ``_initialize_weights``: conv weights ``N(0, sqrt(2 / (k_h * k_w * out)))``, norm weight 1, bias 0.

        Example:
            >>> up = IndexNet(8)
            >>> up.indexnet[1].weight.unique().tolist(), up.indexnet[1].bias.unique().tolist()
            ([1.0], [0.0])
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._NormBase):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def index_maps(self, guide: Tensor) -> tuple[Tensor, Tensor]:
        """The authors' ``HolisticIndexBlock.forward``: ``(idx_en, idx_de)``, each ``(B, 1, 2 * (H//2), 2 * (W//2))``.

        Example:
            >>> idx_en, idx_de = IndexNet(8).index_maps(torch.randn(1, 8, 6, 4))
            >>> idx_en.shape, bool(((idx_de > 0) & (idx_de < 1)).all())
            (torch.Size([1, 1, 6, 4]), True)
        """
        if guide.dim() != 4 or guide.shape[1] != self.inp:
            raise ValueError(
                f"IndexNet: guide must be (B, {self.inp}, H, W) (the index block was built with inp={self.inp}), "
                f"got {tuple(guide.shape)}; pass the high-resolution feature with {self.inp} channels"
            )
        return holistic_index(self.indexnet(guide))

    def native(self, x: Tensor, guide: Tensor) -> Tensor:
        """Index-guided unpooling of ``x`` (B, C, h, w) with ``idx_de`` of the guide (B, inp, 2h, 2w): (B, C, 2h, 2w).

        Example:
            >>> up = IndexNet(8)
            >>> up(torch.randn(1, 8, 13, 13), torch.randn(1, 8, 25, 25), scale_factor=1.5).shape
            torch.Size([1, 8, 19, 19])
        """
        _, idx_de = self.index_maps(guide)
        return indexed_upsample(x, idx_de)

    def extra_repr(self) -> str:
        return f"inp={self.inp}, use_nonlinear={self.use_nonlinear}, use_context={self.use_context}, scale={SCALE}"
