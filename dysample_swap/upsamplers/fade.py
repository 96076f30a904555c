"""FADE, Fusing the Assets of Decoder and Encoder (Lu et al., ECCV 2022), in pure PyTorch.

FADE upsamples a low-resolution decoder feature ``x`` (the authors' ``de``, ``(B, C, h, w)``) with
CARAFE kernels that it predicts from *both* ``x`` and a high-resolution **guide**: the encoder feature
of the skip connection at the output resolution (the authors' ``en``, ``(B, C_guide, s*h, s*w)``).
With ``E = Conv1x1_en(guide)`` (with bias) and ``D = Conv1x1_de(x)`` (no bias), both ``C -> 64``, and
one shared 3x3 convolution ``Conv3x3`` (``64 -> k*k``, with bias, padding 1; "semi-shift"):

* kernel logits ``L = Conv3x3(E) + NN_s(Conv3x3(D))`` (``NN_s``: nearest upsampling by ``s``; the bias is
  so counted twice), ``K = softmax(L)`` over the ``k*k`` taps (``k = up_kernel_size = 5``);
* ``out = CARAFE(x, K, k, groups=1, s)`` (:func:`dysample_swap.upsamplers.carafe.carafe`: zero padding,
  output pixel ``p`` reads the ``k x k`` window of ``x`` around input pixel ``floor(p / s)``);
* with ``gating=True`` (the original FADE) a gate ``G = sigmoid(NN_s(Conv1x1_gate(x)))`` (``C -> 1``)
  mixes in the guide itself: ``out = G * guide + (1 - G) * CARAFE(...)`` (so the guide needs ``x``'s
  channels). The DySample paper compares against FADE *without* the gate, the default here.

:class:`FADELite` is FADE-Lite: the two compressors map straight to ``k*k`` channels and the shared
3x3 convolution is depthwise.

The constructors take the authors' arguments (``tiny-smart/detection-with-upsamplers``,
``mmdet/models/upsamplers/fade.py``: ``in_channels_en, in_channels_de=None, scale_factor=2,
up_kernel_size=5, gating=False``) and build the same submodules (``ker_generator.compressor_en``,
``ker_generator.compressor_de``, ``ker_generator.content_encoder``, ``gate_generator.conv``), so their
state dicts load with ``strict=True``; initialisation is theirs (mmcv's ``xavier_init``: Xavier-uniform
weights, zero biases). The authors' code hard-codes ``NN_2``; an integer ``scale_factor > 2`` uses
``NN_s``. **Argument order**: ours is ``forward(x, guide)``, the low-resolution feature first; the
authors' is ``forward(en, de)``, the guide first.

At swap time FADE changes the function: its kernels are a softmax (never exactly the one-hot
nearest or the bilinear weights), CARAFE zero-pads where interpolation clamps, and the gate mixes in
the guide. Nothing is exact at swap time, and there is no ``init="match"``.

Other output sizes (e.g. 13x13 -> 25x25): :class:`~dysample_swap.upsamplers.guided.GuidedUpsampler`.

Example:
    >>> import torch
    >>> up = FADE(16)
    >>> x, guide = torch.randn(1, 16, 13, 13), torch.randn(1, 16, 25, 25)
    >>> up(x, guide).shape, up(x, guide, size=(25, 25)).shape
    (torch.Size([1, 16, 26, 26]), torch.Size([1, 16, 25, 25]))
"""

from __future__ import annotations

from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap.upsamplers.carafe import carafe
from dysample_swap.upsamplers.guided import GuidedUpsampler
from dysample_swap.upsamplers.options import check_defaults, check_scale
from dysample_swap.upsamplers.sizing import Factor, Size


def _nearest(t: Tensor, scale: int) -> Tensor:
    """``F.interpolate(t, scale_factor=scale, mode="nearest")`` for an integer ``scale``: each pixel repeated."""
    return t.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)


def fade(
    x: Tensor,
    guide: Tensor,
    compressor_en_weight: Tensor,
    compressor_en_bias: Tensor | None,
    compressor_de_weight: Tensor,
    content_encoder_weight: Tensor,
    content_encoder_bias: Tensor | None,
    kernel_size: int = 5,
    scale: int = 2,
    gate_weight: Tensor | None = None,
    gate_bias: Tensor | None = None,
) -> Tensor:
    """FADE's native output: CARAFE kernels from the guide and ``x`` (semi-shift), then reassemble ``x``.

    Args:
        x: the feature to upsample, ``(N, C, H, W)``.
        guide: the high-resolution guide, ``(N, C_guide, scale*H, scale*W)``.
        compressor_en_weight, compressor_en_bias: the guide's 1x1 compressor, ``(E, C_guide, 1, 1)``, ``(E,)``.
        compressor_de_weight: ``x``'s 1x1 compressor (no bias), ``(E, C, 1, 1)``.
        content_encoder_weight, content_encoder_bias: the shared ``kernel_size**2``-channel encoder, applied
            to both compressed maps, ``(k*k, E / groups, K, K)`` (FADE: ``groups=1``; FADE-Lite: ``E = k*k``,
            depthwise), padding ``K // 2``.
        kernel_size: the reassembly kernel size ``k`` (odd).
        scale: the integer upsampling factor ``s``.
        gate_weight, gate_bias: the gate's 1x1 convolution ``(1, C, 1, 1)``, ``(1,)``; ``None``: no gate.
            With a gate the guide must have ``C`` channels.

    Returns:
        ``(N, C, scale*H, scale*W)``.

    Example:
        >>> x, guide = torch.randn(1, 4, 3, 3), torch.randn(1, 6, 6, 6)
        >>> w = [torch.randn(8, 6, 1, 1), torch.zeros(8), torch.randn(8, 4, 1, 1), torch.zeros(9, 8, 3, 3), torch.zeros(9)]
        >>> out = fade(x, guide, *w, kernel_size=3, scale=2)     # zero logits: uniform 3x3 kernels
        >>> torch.allclose(out, _nearest(F.avg_pool2d(x, 3, 1, 1, count_include_pad=True), 2), atol=1e-6)
        True
    """
    n, _, height, width = x.shape
    native = (scale * height, scale * width)
    if guide.shape[0] != n or tuple(guide.shape[-2:]) != native:
        raise ValueError(
            f"fade: the guide must be (N, C_guide, scale*H, scale*W) = ({n}, C_guide, {native[0]}, {native[1]}) "
            f"for x {tuple(x.shape)} and scale={scale}, got {tuple(guide.shape)}; resize the guide to the native size"
        )
    encoder_groups = compressor_en_weight.shape[0] // content_encoder_weight.shape[1]
    padding = (content_encoder_weight.shape[-2] // 2, content_encoder_weight.shape[-1] // 2)
    compressed_guide = F.conv2d(guide, compressor_en_weight, compressor_en_bias)
    compressed_x = F.conv2d(x, compressor_de_weight)
    logits = F.conv2d(
        compressed_guide, content_encoder_weight, content_encoder_bias, padding=padding, groups=encoder_groups
    ) + _nearest(
        F.conv2d(compressed_x, content_encoder_weight, content_encoder_bias, padding=padding, groups=encoder_groups),
        scale,
    )
    out = carafe(x, logits.softmax(dim=1), kernel_size, 1, scale)
    if gate_weight is None:
        return out
    if guide.shape[1] != x.shape[1]:
        raise ValueError(
            f"fade: the gate mixes in the guide, which needs x's {x.shape[1]} channels, got {guide.shape[1]}; "
            "pass gate_weight=None or a guide with x's channels"
        )
    gate = torch.sigmoid(_nearest(F.conv2d(x, gate_weight, gate_bias), scale))
    return gate * guide + (1 - gate) * out


class FADEKernelGenerator(nn.Module):
    """Holds FADE's kernel-prediction convolutions under the authors' names (``SemiShift`` / ``SemiShiftDepthWise``).

    :func:`fade` computes with them; this module only carries the parameters.

    Args:
        in_channels_en: the guide's channels.
        in_channels_de: ``x``'s channels.
        out_channels: the kernel logits' channels, ``up_kernel_size**2``.
        embedding_dim: the compressed channels (FADE: 64; FADE-Lite: ``out_channels``).
        kernel_size: the shared content encoder's kernel size.
        depthwise: FADE-Lite's depthwise content encoder (needs ``embedding_dim == out_channels``).

    Example:
        >>> sorted(FADEKernelGenerator(8, 8, 25).state_dict())
        ['compressor_de.weight', 'compressor_en.bias', 'compressor_en.weight', 'content_encoder.bias', 'content_encoder.weight']
    """

    def __init__(
        self,
        in_channels_en: int,
        in_channels_de: int,
        out_channels: int,
        embedding_dim: int = 64,
        kernel_size: int = 3,
        depthwise: bool = False,
    ) -> None:
        super().__init__()
        self.compressor_en = nn.Conv2d(in_channels_en, embedding_dim, kernel_size=1)
        self.compressor_de = nn.Conv2d(in_channels_de, embedding_dim, kernel_size=1, bias=False)
        self.content_encoder = nn.Conv2d(
            embedding_dim,
            out_channels,
            kernel_size=kernel_size,
            padding=kernel_size // 2,
            groups=out_channels if depthwise else 1,
        )


class FADEGateGenerator(nn.Module):
    """Holds the gate's 1x1 convolution (``C -> 1``) under the authors' name (``GateGenerator.conv``).

    Example:
        >>> FADEGateGenerator(8).conv
        Conv2d(8, 1, kernel_size=(1, 1), stride=(1, 1))
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1)


class FADE(GuidedUpsampler):
    """FADE upsampler (w/o gate by default, the DySample paper's comparison), with the authors' constructor.

    Args:
        in_channels_en: the guide's channels (the authors' encoder feature ``en``).
        in_channels_de: ``x``'s channels (the authors' decoder feature ``de``); ``None``: ``in_channels_en``.
        scale_factor: integer upsampling ratio ``>= 2`` (the authors' name; the native output is this times
            the input).
        up_kernel_size: the CARAFE reassembly kernel size (odd).
        gating: the original FADE's gate (needs ``in_channels_en == in_channels_de``).
        size, output_scale_factor: defaults for ``forward`` when it gets neither (as
            ``nn.Upsample(size=...)`` / ``nn.Upsample(scale_factor=...)``; the latter named so because
            ``scale_factor`` is the authors' integer ratio, as in :class:`~dysample_swap.upsamplers.carafe.CARAFEPack`).

    The kernel generator is fixed as the authors' (64-channel embedding, 3x3 content encoder).
    Parameters at ``C=256``, x2: 47,257 (47,514 with the gate).

    Example:
        >>> up = FADE(256)
        >>> sum(p.numel() for p in up.parameters()), sum(p.numel() for p in FADE(256, gating=True).parameters())
        (47257, 47514)
        >>> up(torch.randn(2, 256, 6, 5), torch.randn(2, 256, 12, 10)).shape
        torch.Size([2, 256, 12, 10])
    """

    traced_sizes_fixed = True  # the CARAFE-style reassembly slices by the traced sizes

    x_channels_arg: ClassVar[str | None] = "in_channels_de"
    guide_channels_arg: ClassVar[str] = "in_channels_en"
    default_factor_arg: ClassVar[str] = "output_scale_factor"
    lite: ClassVar[bool] = False
    """FADE-Lite's kernel generator (see :class:`FADELite`)."""
    embedding_dim: ClassVar[int] = 64
    encoder_kernel: ClassVar[int] = 3

    gate_generator: FADEGateGenerator | None

    def __init__(
        self,
        in_channels_en: int,
        in_channels_de: int | None = None,
        scale_factor: int = 2,
        up_kernel_size: int = 5,
        gating: bool = False,
        *,
        size: Size | None = None,
        output_scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        check_scale(scale_factor, who)
        check_defaults(size, output_scale_factor, who)
        if up_kernel_size < 1 or up_kernel_size % 2 == 0:
            raise ValueError(f"{who} up_kernel_size must be odd and >= 1, got {up_kernel_size}")
        in_channels_de = in_channels_de if in_channels_de is not None else in_channels_en
        if gating and in_channels_en != in_channels_de:
            raise ValueError(
                f"{who} with gating=True mixes the guide into the output, so in_channels_en ({in_channels_en}) must "
                f"equal in_channels_de ({in_channels_de}); pass gating=False or equal channels"
            )
        self.in_channels_en = in_channels_en
        self.in_channels_de = in_channels_de
        self.scale_factor = scale_factor
        self.up_kernel_size = up_kernel_size
        self.gating = gating
        self.size = size
        self.output_scale_factor = output_scale_factor
        # the authors' order: the gate first, then the kernel generator (so their seeds give their weights)
        self.gate_generator = FADEGateGenerator(in_channels_de) if gating else None
        if self.gate_generator is not None:
            self._xavier(self.gate_generator)
        out_channels = up_kernel_size**2
        self.ker_generator = FADEKernelGenerator(
            in_channels_en,
            in_channels_de,
            out_channels,
            embedding_dim=out_channels if self.lite else self.embedding_dim,
            kernel_size=self.encoder_kernel,
            depthwise=self.lite,
        )
        self._xavier(self.ker_generator)

    @staticmethod
    def _xavier(module: nn.Module) -> None:
        """mmcv's ``xavier_init(m, distribution="uniform")`` on every convolution: Xavier-uniform weight, zero bias."""
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """The authors' initialisation: Xavier-uniform convolution weights, zero biases.

        Example:
            >>> up = FADE(8); up.init_weights()
            >>> bool((up.ker_generator.content_encoder.bias == 0).all())
            True
        """
        if self.gate_generator is not None:
            self._xavier(self.gate_generator)
        self._xavier(self.ker_generator)

    @property
    def scale(self) -> int:
        """The integer ratio, under the name the other upsamplers use.

        Example:
            >>> FADE(8, scale_factor=4).scale
            4
        """
        return self.scale_factor

    def native(self, x: Tensor, guide: Tensor) -> Tensor:
        """:func:`fade` with this module's weights: ``x`` ``(B, in_channels_de, h, w)``, the guide at ``(scale*h, scale*w)``.

        Example:
            >>> FADE(8)(torch.randn(1, 8, 13, 13), torch.randn(1, 8, 26, 26), scale_factor=1.5).shape
            torch.Size([1, 8, 19, 19])
        """
        kernels = self.ker_generator
        gate = self.gate_generator
        return fade(
            x,
            guide,
            kernels.compressor_en.weight,
            kernels.compressor_en.bias,
            kernels.compressor_de.weight,
            kernels.content_encoder.weight,
            kernels.content_encoder.bias,
            self.up_kernel_size,
            self.scale_factor,
            gate.conv.weight if gate is not None else None,
            cast(Tensor, gate.conv.bias) if gate is not None else None,
        )

    def extra_repr(self) -> str:
        return (
            f"in_channels_en={self.in_channels_en}, in_channels_de={self.in_channels_de}, "
            f"scale_factor={self.scale_factor}, up_kernel_size={self.up_kernel_size}, gating={self.gating}"
        )


class FADELite(FADE):
    """FADE-Lite: compressors straight to ``up_kernel_size**2`` channels and a depthwise content encoder.

    The same constructor, forward and state-dict names as :class:`FADE` (the authors' ``FADELite``).
    Parameters at ``C=256``, x2: 13,075 (13,332 with the gate).

    Example:
        >>> up = FADELite(256)
        >>> sum(p.numel() for p in up.parameters()), up.ker_generator.content_encoder.weight.shape
        (13075, torch.Size([25, 1, 3, 3]))
    """

    lite: ClassVar[bool] = True
