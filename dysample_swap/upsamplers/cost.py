"""Parameters and multiply-accumulates (MACs) of an upsampler, computed from its layers' shapes.

MACs counted, per image (times the batch):

* convolutions and transposed convolutions: ``weight.numel()`` per pixel they run at (the output
  pixels of a convolution; the *input* pixels of a transposed one, which is the work it does, for the
  ``init="match"`` deconv including the one-pixel replicate padding; PL DySample's 1x1 projection
  runs at ``s*H x s*W``); biases not counted;
* bilinear interpolation and DySample's sampler: 4 per output element (the 2x2 bilinear taps, however
  the sampler computes them), nearest 0;
* CARAFE's reassembly: ``k*k`` per element of its native (``scale`` times the input) output.

Elementwise work (softmax, sigmoid, offset arithmetic, padding, index selection) is not counted.
The convolution counts are those of ``torch.utils.flop_counter.FlopCounterMode`` (divided by 2);
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

from dysample_swap.upsamplers.carafe import CARAFEPack
from dysample_swap.upsamplers.chain import UpsamplerChain
from dysample_swap.upsamplers.deconv import DeconvUpsampler
from dysample_swap.upsamplers.dysample.module import DySample
from dysample_swap.upsamplers.interpolate import InterpolateUpsampler
from dysample_swap.upsamplers.pixelshuffle import PixelShuffleUpsampler
from dysample_swap.upsamplers.registry import create_upsampler
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
    factor_name = "output_scale_factor" if isinstance(module, CARAFEPack) else "scale_factor"
    return getattr(module, "size", None), getattr(module, factor_name, None)


def _macs(module: nn.Module, channels: int, height: int, width: int, size: Size | None, factor: Factor | None) -> int:
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
    if isinstance(module, InterpolateUpsampler):
        if module.mode == "nearest":
            return 0
        if size is None and factor is None:
            factor = module.scale
        out_h, out_w = requested_hw(height, width, module.scale, size, factor)
        return BILINEAR_TAPS * channels * out_h * out_w
    raise TypeError(
        f"module_cost counts DySample, CARAFEPack, DeconvUpsampler, PixelShuffleUpsampler, InterpolateUpsampler "
        f"and UpsamplerChain; got {type(module).__name__}"
    )


def module_cost(
    module: nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    size: Size | None = None,
    scale_factor: Factor | None = None,
) -> UpsamplerCost:
    """Parameters of ``module`` and MACs of ``module(x, size=size, scale_factor=scale_factor)`` for an ``input_shape`` input.

    Without ``size`` / ``scale_factor`` the module's own defaults apply, as in its forward.

    Example:
        >>> module_cost(DySample(256, scale=2, groups=4), (1, 256, 16, 16))
        UpsamplerCost(params=8224, macs=3145728, bias_params=32)
    """
    if size is None and scale_factor is None:
        size, scale_factor = _defaults(module)
    batch, channels, height, width = input_shape
    params = sum(p.numel() for p in module.parameters())
    biases = sum(p.numel() for name, p in module.named_parameters() if name.rsplit(".", 1)[-1] == "bias")
    return UpsamplerCost(params, batch * _macs(module, channels, height, width, size, scale_factor), biases)


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
) -> UpsamplerCost:
    """Parameters and MACs of ``create_upsampler(name, channels, scale, ...)`` on a ``batch x channels x input_hw`` input.

    Example:
        >>> upsampler_cost("dysample", 256, 8, (16, 16)).weight_params        # 3 x2 stages
        24576
        >>> upsampler_cost("bilinear", 256, 2, (16, 16))
        UpsamplerCost(params=0, macs=1048576, bias_params=0)
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
    )
    return module_cost(module, (batch, channels, *input_hw))
