"""Parameters and multiply-accumulates (MACs) of an upsampler, computed from its layers' shapes.

MACs counted, per image (times the batch):

* convolutions and transposed convolutions: ``weight.numel()`` per pixel they run at (the output
  pixels of a convolution; the *input* pixels of a transposed one, which is the work it does, for the
  ``init="match"`` deconv including the one-pixel replicate padding; PL DySample's 1x1 projection
  runs at ``s*H x s*W``); biases not counted;
* bilinear interpolation and DySample's sampler: 4 per output element (the 2x2 bilinear taps, however
  the sampler computes them), nearest 0;
* CARAFE's reassembly: ``k*k`` per element of its native (``scale`` times the input) output; so also
  the reassemblies of FADE, SAPA, A2U and FreqFusion (FreqFusion's of its 25-tap masks and of its
  compressed guide too);
* a dot product over ``E`` channels (SAPA's similarity logits, A2U's affinity, LDA-AQU's attention
  logits, the cosine similarities of FreqFusion's resampler): ``E`` per result; an attention-weighted
  sum of ``T`` samples: ``T`` per output element;
* guided upsamplers (FADE, SAPA, A2U, IndexNet, FreqFusion): the guide's branch included (its
  convolutions at the guide's native size, ``scale`` times the input), and its bilinear resize (4 per
  element) where the guide has another size (``guide_hw``).

Elementwise work (softmax, sigmoid, offset arithmetic, padding, index selection, normalisation,
pooling) is not counted.
The convolution counts are those of ``torch.utils.flop_counter.FlopCounterMode`` (divided by 2; a
convolution the module runs on folded batches, as LDA-AQU's offset branch, counts once per fold);
``tests/test_upsamplers_cost.py`` checks them against such a counting pass, and everything against
hand-computed values. The formulas make FPN-sized counts free. The
DySample paper's Table 4 FLOPs ("+" over bilinear) are MACs in this sense for CARAFE and pixel
shuffle; its deconvolution figure (+34.4 G, the same as pixel shuffle's) counts the transposed
convolution at the output resolution, 4x the work it does.

Example:
    >>> upsampler_cost("carafe", 256, 2, (16, 16))
    UpsamplerCost(params=74148, macs=25493504, bias_params=164)
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from dysample_swap.upsamplers.a2u import A2U, ENCODE_KERNEL
from dysample_swap.upsamplers.carafe import CARAFEPack
from dysample_swap.upsamplers.chain import UpsamplerChain
from dysample_swap.upsamplers.deconv import DeconvUpsampler
from dysample_swap.upsamplers.dysample.module import DySample
from dysample_swap.upsamplers.fade import FADE
from dysample_swap.upsamplers.freqfusion import FreqFusion
from dysample_swap.upsamplers.guided import GuidedUpsampler
from dysample_swap.upsamplers.indexnet import IndexNet
from dysample_swap.upsamplers.interpolate import InterpolateUpsampler
from dysample_swap.upsamplers.lda_aqu import LDAAQU
from dysample_swap.upsamplers.pixelshuffle import PixelShuffleUpsampler
from dysample_swap.upsamplers.registry import create_upsampler
from dysample_swap.upsamplers.sapa import SAPA
from dysample_swap.upsamplers.sizing import Factor, Size, requested_hw

BILINEAR_TAPS = 4
"""MACs per output element of bilinear interpolation / sampling (2x2 taps)."""


class UpsamplerCost(NamedTuple):
    """What an upsampler adds: ``params`` (all), ``macs`` (see the module docstring), ``bias_params``.

    Example:
        >>> UpsamplerCost(params=8224, macs=0, bias_params=32).weight_params
        8192
    """

    params: int
    macs: int
    bias_params: int

    @property
    def weight_params(self) -> int:
        """Parameters without the biases (how the DySample paper counts, e.g. 49.2K for 6 x2 stages).

        Example:
            >>> UpsamplerCost(10, 0, 3).weight_params
            7
        """
        return self.params - self.bias_params


def _defaults(module: nn.Module) -> tuple[Size | None, Factor | None]:
    if isinstance(module, GuidedUpsampler):
        return module.default_request()
    factor_name = "output_scale_factor" if isinstance(module, (CARAFEPack, LDAAQU)) else "scale_factor"
    return getattr(module, "size", None), getattr(module, factor_name, None)


def _weights(*convolutions: nn.Module | None) -> int:
    """The weight elements of the convolutions (``None``: absent): each one's MACs per output pixel."""
    return sum(conv.weight.numel() for conv in convolutions if isinstance(conv, nn.Conv2d))


def _guided_macs(module: GuidedUpsampler, channels: int, height: int, width: int) -> int:
    """MACs of one image through a guided upsampler's native output, the guide at the native size."""
    pixels = height * width
    native = module.scale**2 * pixels
    if isinstance(module, FADE):
        gen, taps = module.ker_generator, module.up_kernel_size**2
        gate = _weights(module.gate_generator.conv) if module.gate_generator is not None else 0
        encoder = _weights(gen.content_encoder)  # shared: run on the guide's map and on x's
        return (
            _weights(gen.compressor_en) * native
            + (_weights(gen.compressor_de) + gate) * pixels
            + encoder * (native + pixels)
            + taps * channels * native
        )
    if isinstance(module, SAPA):
        taps = module.up_kernel_size**2
        return (
            _weights(module.q) * native
            + _weights(module.k) * pixels
            + taps * (module.embedding_dim + channels) * native
        )
    if isinstance(module, A2U):
        a2u_gen, guide_channels = module.kernel_gen, module.in_channels
        kernels = _weights(*a2u_gen.bconv_UP) + _weights(*a2u_gen.bconv_U, *a2u_gen.bconv_V) * ENCODE_KERNEL**2
        encodings = 2 * ENCODE_KERNEL**2 * guide_channels * pixels  # every guide channel by u and by v, stride 2
        affinity = guide_channels * pixels
        return kernels + encodings + affinity + module.up_kernel**2 * channels * native
    if isinstance(module, IndexNet):
        return _weights(*module.indexnet.modules()) * pixels  # stride 2 on the native guide; the index map: elementwise
    if isinstance(module, FreqFusion):
        return _freqfusion_macs(module, channels, pixels, native)
    raise TypeError(f"module_cost does not count the guided upsampler {type(module).__name__}")


def _freqfusion_macs(module: FreqFusion, channels: int, pixels: int, native: int) -> int:
    """FreqFusion's upsampler view (``lr_up``; ``hr_out`` is not computed): every branch of its flags."""
    low, high, group = module.lowpass_kernel**2, module.highpass_kernel**2, module.up_group
    compressed = module.compressed_channels
    encoder = _weights(module.content_encoder)
    total = _weights(module.hr_channel_compressor) * native + _weights(module.lr_channel_compressor) * pixels
    if module.semi_conv and module.comp_feat_upsample:
        boost = _weights(module.content_encoder2) * native + high * compressed * native  # the guide's high-pass boost
        total += boost + encoder * (native + pixels) + low * (low * group) * native  # masks reassembled at up=2
    elif module.semi_conv:
        total += encoder * (native + pixels)
    else:
        total += encoder * native + (BILINEAR_TAPS * channels * native if module.upsample_mode == "bilinear" else 0)
    total += low * channels * native  # lr_up: the low-pass reassembly of x
    sampler = module.dysampler
    if sampler is not None:
        neighbours = sampler.local_window**2 - 1
        total += neighbours * compressed * (native + pixels)  # cosine similarities at both resolutions
        total += _weights(sampler.offset, sampler.direct_scale) * pixels
        total += _weights(sampler.hr_offset, sampler.hr_direct_scale) * native
        total += BILINEAR_TAPS * channels * native  # grid_sample of lr_up
    return total


def _lda_aqu_macs(module: LDAAQU, channels: int, height: int, width: int) -> int:
    """LDA-AQU's native output: projections, query interpolation, offsets, sampled keys and values, attention."""
    pixels = height * width
    native = module.scale**2 * pixels
    hidden, points = module.hidden_dim, module.k_u**2
    projections = _weights(module.proj_q, module.proj_k) * pixels
    offsets = module.n_groups * _weights(*module.conv_offset.modules()) * native  # run per group (batch-folded)
    sampling = points * BILINEAR_TAPS * (hidden + channels) * native  # keys and values at every point
    attention = points * (hidden + channels) * native  # logits q . k_t, then the weighted sum of the values
    return projections + BILINEAR_TAPS * hidden * native + offsets + sampling + attention


def _macs(
    module: nn.Module,
    channels: int,
    height: int,
    width: int,
    size: Size | None,
    factor: Factor | None,
    guide_hw: tuple[int, int] | None = None,
) -> int:
    """MACs of one image through ``module`` (``size`` / ``factor`` already resolved against its defaults)."""
    if isinstance(module, UpsamplerChain):
        *first, last = module
        total = 0
        for stage in first:
            total += _macs(stage, channels, height, width, None, None)
            height, width = 2 * height, 2 * width
        if factor is not None:
            done = 2 ** len(first)
            factor = factor / done if isinstance(factor, (int, float)) else tuple(f / done for f in factor)
        return total + _macs(last, channels, height, width, size, factor)
    pixels = height * width
    if isinstance(module, DySample):
        out_h, out_w = requested_hw(height, width, module.scale, size, factor)
        projection = module.offset.weight.numel() + (module.scope.weight.numel() if module.dyscope else 0)
        at = pixels * module.scale**2 if module.style == "pl" else pixels
        return projection * at + BILINEAR_TAPS * channels * out_h * out_w
    if isinstance(module, CARAFEPack):
        encoder = module.channel_compressor.weight.numel() + module.content_encoder.weight.numel()
        return encoder * pixels + module.up_kernel**2 * channels * pixels * module.scale_factor**2
    if isinstance(module, DeconvUpsampler):
        pad = 2 if module.init == "match" else 0
        return module.deconv.weight.numel() * (height + pad) * (width + pad)
    if isinstance(module, PixelShuffleUpsampler):
        return module.conv.weight.numel() * pixels
    if isinstance(module, GuidedUpsampler):
        native = (module.scale * height, module.scale * width)
        resized = guide_hw is not None and tuple(guide_hw) != native  # to the native size, bilinear
        resize = BILINEAR_TAPS * module.guide_channels * native[0] * native[1] if resized else 0
        return resize + _guided_macs(module, channels, height, width)
    if isinstance(module, LDAAQU):
        return _lda_aqu_macs(module, channels, height, width)
    if isinstance(module, InterpolateUpsampler):
        if module.mode == "nearest":
            return 0
        if size is None and factor is None:
            factor = module.scale
        out_h, out_w = requested_hw(height, width, module.scale, size, factor)
        return BILINEAR_TAPS * channels * out_h * out_w
    raise TypeError(
        f"module_cost counts DySample, CARAFEPack, DeconvUpsampler, PixelShuffleUpsampler, InterpolateUpsampler, "
        f"UpsamplerChain, LDAAQU, IndexNet, A2U, FADE, SAPA and FreqFusion; got {type(module).__name__}"
    )


def module_cost(
    module: nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    size: Size | None = None,
    scale_factor: Factor | None = None,
    guide_hw: tuple[int, int] | None = None,
) -> UpsamplerCost:
    """Parameters of ``module`` and MACs of ``module(x, size=size, scale_factor=scale_factor)`` for an ``input_shape`` input.

    Without ``size`` / ``scale_factor`` the module's own defaults apply, as in its forward. A guided
    upsampler's guide is ``guide_hw`` high and wide (default: the native size, ``scale`` times the input;
    another size adds its bilinear resize).

    Example:
        >>> module_cost(DySample(256, scale=2, groups=4), (1, 256, 16, 16))
        UpsamplerCost(params=8224, macs=3145728, bias_params=32)
        >>> module_cost(IndexNet(256), (1, 256, 16, 16)).macs == (256 * 512 * 16 + 512 * 4) * 16 * 16
        True
    """
    if size is None and scale_factor is None:
        size, scale_factor = _defaults(module)
    batch, channels, height, width = input_shape
    params = sum(p.numel() for p in module.parameters())
    biases = sum(p.numel() for name, p in module.named_parameters() if name.rsplit(".", 1)[-1] == "bias")
    macs = _macs(module, channels, height, width, size, scale_factor, guide_hw)
    return UpsamplerCost(params, batch * macs, biases)


def upsampler_cost(
    name: str,
    channels: int,
    scale: int,
    input_hw: tuple[int, int],
    *,
    batch: int = 1,
    size: Size | None = None,
    scale_factor: Factor | None = None,
    anchor: str = "bilinear",
    init: str = "match",
    groups_fallback: bool = True,
    chain: bool = True,
    guide_channels: int | None = None,
    guide_hw: tuple[int, int] | None = None,
) -> UpsamplerCost:
    """Parameters and MACs of ``create_upsampler(name, channels, scale, ...)`` on a ``batch x channels x input_hw`` input.

    A guided upsampler's guide has ``guide_channels`` (default ``channels``) and is ``guide_hw`` (default:
    ``scale`` times ``input_hw``), see :func:`module_cost`.

    Example:
        >>> upsampler_cost("dysample", 256, 8, (16, 16)).weight_params        # 3 x2 stages
        24576
        >>> upsampler_cost("bilinear", 256, 2, (16, 16))
        UpsamplerCost(params=0, macs=1048576, bias_params=0)
        >>> upsampler_cost("fade", 256, 2, (16, 16)).params, upsampler_cost("sapa", 256, 2, (16, 16), guide_channels=64).params
        (47257, 10944)
    """
    module = create_upsampler(
        name,
        channels,
        scale,
        size=size,
        scale_factor=scale_factor,
        anchor=anchor,
        init=init,
        groups_fallback=groups_fallback,
        chain=chain,
        guide_channels=guide_channels,
    )
    return module_cost(module, (batch, channels, *input_hw), guide_hw=guide_hw)
