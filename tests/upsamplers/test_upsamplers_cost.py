"""Parameter and MAC counts: hand-computed values, a counting pass, and the DySample paper's Table 4."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dysample_swap import (
    UPSAMPLERS,
    CARAFEPack,
    DySample,
    InterpolateUpsampler,
    UpsamplerChain,
    create_upsampler,
    module_cost,
    upsampler_cost,
)

# Hand-computed at C=256, a 16x16 input, x2 (output 32x32). Sampling: 4 MACs per output element.
SAMPLING = 4 * 256 * 32 * 32
HAND = {
    # name: (params, bias params, MACs)
    "dysample": (256 * 32 + 32, 32, 256 * 32 * 16 * 16 + SAMPLING),  # 1x1 conv to 2*4*2*2 offsets
    "dysample+": (2 * 256 * 32 + 32, 32, 2 * 256 * 32 * 16 * 16 + SAMPLING),  # + the scope conv, no bias
    "dysample-s": (64 * 16 + 16, 16, 64 * 16 * 32 * 32 + SAMPLING),  # 1x1 conv 64 -> 2*8 at 32x32
    "dysample-s+": (2 * 64 * 16 + 16, 16, 2 * 64 * 16 * 32 * 32 + SAMPLING),
    # compressor 256->64 1x1; encoder 64->25*4 3x3; reassembly 25 MACs per output element
    "carafe": (256 * 64 + 64 + 64 * 100 * 9 + 100, 164, (256 * 64 + 64 * 100 * 9) * 16 * 16 + 25 * 256 * 32 * 32),
    # ConvTranspose2d 256->256, kernel 4, over the 18x18 replicate-padded input
    "deconv": (256 * 256 * 16 + 256, 256, 256 * 256 * 16 * 18 * 18),
    "pixelshuffle": (256 * 1024 * 9 + 1024, 1024, 256 * 1024 * 9 * 16 * 16),  # 3x3 conv 256 -> 4*256
    "bilinear": (0, 0, SAMPLING),
}


@pytest.mark.parametrize("name", UPSAMPLERS)
def test_hand_computed_counts(name: str) -> None:
    params, biases, macs = HAND[name]
    assert upsampler_cost(name, 256, 2, (16, 16)) == (params, macs, biases)


def test_hand_computed_counts_of_other_settings() -> None:
    assert upsampler_cost("deconv", 256, 2, (16, 16), init="paper") == (
        256 * 256 * 9 + 256,
        256 * 256 * 9 * 16 * 16,
        256,
    )
    assert upsampler_cost("bilinear", 256, 2, (16, 16), anchor="nearest").macs == 0
    assert upsampler_cost("bilinear", 256, 2, (16, 16), size=(25, 25)).macs == 4 * 256 * 25 * 25
    assert upsampler_cost("dysample", 256, 2, (16, 16), batch=3).macs == 3 * HAND["dysample"][2]
    # DySample samples at the requested size; CARAFE computes its native output whatever is asked
    assert upsampler_cost("dysample", 256, 2, (16, 16), size=(25, 25)).macs == 256 * 32 * 256 + 4 * 256 * 25 * 25
    assert upsampler_cost("carafe", 256, 2, (16, 16), scale_factor=1.5).macs == HAND["carafe"][2]
    # x8 as three x2 stages at 16x16, 32x32, 64x64 (outputs 32, 64, 128)
    stages = [16 * 16, 32 * 32, 64 * 64]
    assert upsampler_cost("dysample", 256, 8, (16, 16)) == (
        3 * (256 * 32 + 32),
        sum(256 * 32 * p + 4 * 256 * 4 * p for p in stages),
        3 * 32,
    )
    assert upsampler_cost("dysample", 256, 8, (16, 16), size=(100, 100)).macs == (
        256 * 32 * sum(stages) + 4 * 256 * (32 * 32 + 64 * 64 + 100 * 100)
    )
    assert upsampler_cost("dysample", 256, 8, (16, 16), chain=False).params == 256 * 2 * 4 * 64 + 2 * 4 * 64
    assert module_cost(DySample(256, groups=4, size=(25, 25)), (1, 256, 16, 16)).macs == 256 * 32 * 256 + 4 * 256 * 625
    with pytest.raises(TypeError, match="got Conv2d"):
        module_cost(torch.nn.Conv2d(3, 3, 1), (1, 3, 4, 4))


def _non_convolution_macs(
    module: torch.nn.Module, channels: int, in_hw: tuple[int, int], out_hw: tuple[int, int]
) -> int:
    """By hand: 4 per output element DySample or bilinear interpolation samples, 25 per CARAFE native output element."""
    h, w = in_hw
    if isinstance(module, UpsamplerChain):
        total = 0
        for k, stage in enumerate(module):
            stage_out = out_hw if k == len(module) - 1 else (2 * h, 2 * w)
            total += _non_convolution_macs(stage, channels, (h, w), stage_out)
            h, w = 2 * h, 2 * w
        return total
    if isinstance(module, CARAFEPack):
        return 25 * channels * module.scale_factor**2 * h * w
    if isinstance(module, DySample) or (isinstance(module, InterpolateUpsampler) and module.mode == "bilinear"):
        return 4 * channels * out_hw[0] * out_hw[1]
    return 0


@pytest.mark.parametrize("name", UPSAMPLERS)
@pytest.mark.parametrize(
    ("scale", "anchor", "init"), [(2, "bilinear", "match"), (2, "nearest", "paper"), (4, "bilinear", "match")]
)
def test_convolution_macs_agree_with_a_flop_counting_pass(name, scale, anchor, init) -> None:
    up = create_upsampler(name, 16, scale, anchor=anchor, init=init)
    x, out_hw = torch.randn(1, 16, 7, 9), (7 * scale + 3, 9 * scale - 1)
    counter = FlopCounterMode(display=False)  # 2 FLOPs per MAC
    with counter, torch.no_grad():
        up(x, size=out_hw)
    convolutions = counter.get_flop_counts().get("Global", {}).get(torch.ops.aten.convolution, 0) // 2
    # only the convolutions: how DySample's sampler runs (grid_sample, or matrix products) is its own business
    expected = convolutions + _non_convolution_macs(up, 16, (7, 9), out_hw)
    assert module_cost(up, tuple(x.shape), size=out_hw).macs == expected


def _segformer_b1_total(name: str, **kwargs: object):
    """The paper's SegFormer-B1 at 512x512: 1/32 x8, 1/16 x4, 1/8 x2 to 1/4, at 256 channels: 3 + 2 + 1 x2 stages."""
    costs = [upsampler_cost(name, 256, scale, (hw, hw), **kwargs) for scale, hw in ((8, 16), (4, 32), (2, 64))]
    stages = sum(len(create_upsampler(name, 256, scale, **kwargs)) if scale > 2 else 1 for scale in (8, 4, 2))
    return stages, sum(c.params for c in costs), sum(c.weight_params for c in costs), sum(c.macs for c in costs)


@pytest.mark.parametrize(
    ("name", "paper", "unit", "with_biases_rounds_to"),
    [
        ("dysample", 49.2, 1e3, 49.3),
        ("dysample+", 0.1, 1e6, 0.1),
        ("dysample-s", 6.1, 1e3, 6.2),
        ("dysample-s+", 12.3, 1e3, 12.4),
    ],
)
def test_six_x2_stages_give_table_4_parameter_counts_without_biases(name, paper, unit, with_biases_rounds_to) -> None:
    """Table 4: DySample +49.2K, DySample+ +0.1M, DySample-S +6.1K, DySample-S+ +12.3K (weights only)."""
    stages, params, weights, _ = _segformer_b1_total(name)
    assert stages == 6
    assert round(weights / unit, 1) == paper
    assert round(params / unit, 1) == with_biases_rounds_to  # so the paper leaves the biases out
    assert (
        weights == {"dysample": 6 * 8192, "dysample+": 6 * 16384, "dysample-s": 6 * 1024, "dysample-s+": 6 * 2048}[name]
    )


def test_rivals_over_six_stages_match_table_4_where_the_paper_settings_are_used() -> None:
    """Table 4: CARAFE +0.4M params +1.5 GFLOPs; Deconv +3.5M; PixelShuffle +14.2M params +34.4 GFLOPs."""
    _, carafe_params, _, carafe_macs = _segformer_b1_total("carafe")
    assert (round(carafe_params / 1e6, 1), round(carafe_macs / 1e9, 1)) == (0.4, 1.5)
    _, deconv_params, _, deconv_macs = _segformer_b1_total("deconv", init="paper")
    assert round(deconv_params / 1e6, 1) == 3.5
    assert round(deconv_macs / 1e9, 1) == 8.6  # the paper's +34.4 counts it at the output resolution (4x)
    _, shuffle_params, _, shuffle_macs = _segformer_b1_total("pixelshuffle")
    assert (round(shuffle_params / 1e6, 1), round(shuffle_macs / 1e9, 1)) == (14.2, 34.4)
