"""The registry: names, errors, every upsampler's sizes and training, x2 chains, and each exact_at_swap claim checked."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from dysample_swap import (
    A2U,
    ALL_UPSAMPLERS,
    FADE,
    LDAAQU,
    SAPA,
    UPSAMPLERS,
    CARAFEPack,
    DeconvUpsampler,
    DySample,
    FreqFusion,
    IndexNet,
    InterpolateUpsampler,
    PixelShuffleUpsampler,
    UpsamplerChain,
    create_upsampler,
    exact_at_swap,
    needs_guide,
)
from dysample_swap.upsamplers.registry import chain_stages, rival_parameters

ANCHORS = ("bilinear", "bilinear_align_corners", "nearest")
PORTED = {"lda_aqu": LDAAQU, "indexnet": IndexNet, "a2u": A2U, "fade": FADE, "sapa": SAPA, "freqfusion": FreqFusion}
"""The upsamplers ported from their authors' code, after UPSAMPLERS in ALL_UPSAMPLERS."""


def _interpolate(x: torch.Tensor, anchor: str, **request: object) -> torch.Tensor:
    if anchor == "nearest":
        return F.interpolate(x, mode="nearest", **request)
    return F.interpolate(x, mode="bilinear", align_corners=anchor == "bilinear_align_corners", **request)


def test_names() -> None:
    assert UPSAMPLERS == (
        "dysample",
        "dysample+",
        "dysample-s",
        "dysample-s+",
        "carafe",
        "deconv",
        "pixelshuffle",
        "bilinear",
    )
    kinds = {name: type(create_upsampler(name, 16, 2)) for name in UPSAMPLERS}
    assert kinds == {
        "dysample": DySample,
        "dysample+": DySample,
        "dysample-s": DySample,
        "dysample-s+": DySample,
        "carafe": CARAFEPack,
        "deconv": DeconvUpsampler,
        "pixelshuffle": PixelShuffleUpsampler,
        "bilinear": InterpolateUpsampler,
    }
    assert create_upsampler(" DySample-S+ ", 16, 2).variant == "dysample-s+"
    assert (*UPSAMPLERS, *PORTED) == ALL_UPSAMPLERS
    assert {name: type(create_upsampler(name, 32, 2)) for name in PORTED} == PORTED
    assert [name for name in ALL_UPSAMPLERS if needs_guide(name)] == ["indexnet", "a2u", "fade", "sapa", "freqfusion"]


def test_errors_name_the_valid_values() -> None:
    with pytest.raises(
        ValueError, match=r"unknown upsampler 'carafee'; choose one of dysample, .*freqfusion\. Did you mean 'carafe'\?"
    ):
        create_upsampler("carafee", 16, 2)
    with pytest.raises(ValueError, match="unknown upsampler 'zzz'; choose one of .*bilinear, lda_aqu, .*freqfusion.$"):
        exact_at_swap("zzz")
    with pytest.raises(ValueError, match="unknown upsampler 'sapa-b'.*Did you mean 'sapa'"):
        needs_guide("sapa-b")
    with pytest.raises(ValueError, match="unknown anchor 'bicubic'"):
        create_upsampler("deconv", 16, 2, anchor="bicubic")
    with pytest.raises(ValueError, match="unknown init 'zero'"):
        create_upsampler("dysample", 16, 2, init="zero")
    with pytest.raises(ValueError, match="integer >= 2, got 1"):
        create_upsampler("carafe", 16, 1)
    with pytest.raises(ValueError, match="not both"):
        create_upsampler("carafe", 16, 2, size=(25, 25), scale_factor=2)


def test_groups_fallback_is_passed_to_dysample() -> None:
    assert create_upsampler("dysample", 30, 2).groups == 3
    with pytest.raises(ValueError, match="groups_fallback=True"):
        create_upsampler("dysample", 30, 2, groups_fallback=False)


@pytest.mark.parametrize("name", UPSAMPLERS)
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize(
    ("in_hw", "request_", "out_hw"),
    [
        ((13, 13), {"size": (25, 25)}, (25, 25)),
        ((15, 17), {"size": (45, 51)}, (45, 51)),
        ((15, 17), {"scale_factor": 3.0}, (45, 51)),
        ((13, 13), {"scale_factor": 1.5}, (19, 19)),
    ],
)
def test_every_upsampler_gives_the_requested_size(name, scale, in_hw, request_, out_hw) -> None:
    up = create_upsampler(name, 16, scale)
    x = torch.randn(1, 16, *in_hw)
    assert up(x, **request_).shape == (1, 16, *out_hw)
    assert up(x).shape == (1, 16, scale * in_hw[0], scale * in_hw[1])
    assert create_upsampler(name, 16, scale, **request_)(x).shape == (1, 16, *out_hw)  # module defaults


@pytest.mark.parametrize("name", [n for n in UPSAMPLERS if n != "bilinear"])
@pytest.mark.parametrize(("scale", "init"), [(2, "match"), (2, "paper"), (8, "match")])
def test_training_reaches_every_parameter_and_state_dict_round_trips(name, scale, init) -> None:
    torch.manual_seed(0)
    up = create_upsampler(name, 16, scale, init=init)
    x, target = torch.randn(2, 16, 3, 3), torch.randn(2, 16, 3 * scale - 1, 3 * scale - 1)
    optimiser = torch.optim.SGD(up.parameters(), lr=0.1)
    reached = set()
    for _ in range(2):  # DySample+'s scope gets no gradient while the offsets are still exactly zero (step 1)
        optimiser.zero_grad()
        F.mse_loss(up(x, size=target.shape[-2:]), target).backward()
        reached |= {n for n, p in up.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimiser.step()
    assert reached == {n for n, _ in up.named_parameters()}
    fresh = create_upsampler(name, 16, scale, init=init)
    fresh.load_state_dict(up.state_dict(), strict=True)
    assert torch.equal(fresh(x), up(x))


def test_chains_are_x2_stages_for_powers_of_two_only() -> None:
    chain = create_upsampler("dysample+", 32, 8)
    assert isinstance(chain, UpsamplerChain) and len(chain) == 3 and chain.scale == 8
    assert all(isinstance(s, DySample) and s.scale == 2 for s in chain)
    assert "0.offset.weight" in chain.state_dict() and "2.scope.weight" in chain.state_dict()
    assert len(create_upsampler("carafe", 32, 4)) == 2
    single = create_upsampler("dysample+", 32, 8, chain=False)
    assert isinstance(single, DySample) and single.scale == 8
    assert isinstance(create_upsampler("deconv", 32, 6), DeconvUpsampler)  # not a power of two
    assert isinstance(create_upsampler("bilinear", 32, 8), InterpolateUpsampler)  # the original call, never chained
    with pytest.raises(ValueError, match="at least 2 stages"):
        UpsamplerChain([DySample(8, groups=2)])


def test_bilinear_chain_is_three_bilinear_x2_calls_not_one_x8() -> None:
    x = torch.randn(1, 16, 5, 6, dtype=torch.float64)
    chain = create_upsampler("dysample", 16, 8).double()
    three = x
    for _ in range(3):
        three = F.interpolate(three, scale_factor=2, mode="bilinear")
    torch.testing.assert_close(chain(x), three, atol=1e-10, rtol=0)
    assert (chain(x) - F.interpolate(x, scale_factor=8, mode="bilinear")).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["dysample", "dysample-s+", "deconv", "pixelshuffle"])
@pytest.mark.parametrize(
    "request_",
    [{"size": (100, 41)}, {"size": (37, 10)}, {"scale_factor": 8}, {"scale_factor": 5.3}, {"scale_factor": (7.9, 3.3)}],
)
def test_nearest_chain_is_one_nearest_interpolation_at_any_size(name, request_) -> None:
    x = torch.randn(1, 16, 5, 6, dtype=torch.float64)
    chain = create_upsampler(name, 16, 8, anchor="nearest").double()
    torch.testing.assert_close(chain(x, **request_), F.interpolate(x, mode="nearest", **request_), atol=1e-10, rtol=0)


def _build64(name: str, channels: int, scale: int, **kwargs: object) -> torch.nn.Module:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # parameters initialised in float64 (1/3 is not a float32 number)
    try:
        return create_upsampler(name, channels, scale, **kwargs)
    finally:
        torch.set_default_dtype(previous)


CLAIMS = [
    *itertools.product(UPSAMPLERS, ANCHORS, [(2, True), (3, True), (4, False), (8, True)], ["match"]),
    *itertools.product(UPSAMPLERS, ANCHORS, [(2, True)], ["paper"]),
]


@pytest.mark.parametrize(("name", "anchor", "scale_chain", "init"), CLAIMS)
def test_exact_at_swap_says_what_the_module_does(name, anchor, scale_chain, init) -> None:
    """Each claim against the module: exact means within 1e-9 of F.interpolate in float64, else it differs > 1e-6."""
    scale, chain = scale_chain
    channels = 36 if scale == 3 else 16  # PL variants need C % scale**2 == 0
    torch.manual_seed(0)
    up = _build64(name, channels, scale, anchor=anchor, init=init, chain=chain)
    x = torch.randn(1, channels, 4, 5, dtype=torch.float64)
    odd = (4 * scale - 1, 5 * scale + 1)
    for native, got, expected in (
        (True, up(x), _interpolate(x, anchor, scale_factor=scale)),
        (False, up(x, size=odd), _interpolate(x, anchor, size=odd)),
    ):
        difference = (got - expected).abs().max().item()
        claim = exact_at_swap(name, anchor, scale=scale, init=init, chain=chain, native=native)
        assert (difference <= 1e-9) if claim else (difference > 1e-6), (native, claim, difference)


@pytest.mark.parametrize("name", ["carafe", "deconv", "pixelshuffle", "bilinear"])
def test_rival_parameters_are_what_the_built_module_has(name: str) -> None:
    """The surgery counts a rival's parameters without building it; the count must be the module's."""
    for channels, scale, init, chain in itertools.product((3, 16, 64), (2, 3, 4, 8), ("match", "paper"), (True, False)):
        module = create_upsampler(name, channels, scale, init=init, chain=chain)
        assert rival_parameters(name, channels, scale, init=init, chain=chain) == sum(
            p.numel() for p in module.parameters()
        ), (channels, scale, init, chain)


def _guide_for(name: str, channels: int, hw: tuple[int, int], batch: int = 1) -> tuple[torch.Tensor, ...]:
    """The guide a registry-built upsampler reads (none for an unguided one)."""
    return (torch.randn(batch, channels, *hw),) if needs_guide(name) else ()


def test_ported_upsamplers_are_each_papers_configuration() -> None:
    """The configurations of tests/upsamplers/reference_data (README / meta.json)."""
    fade = create_upsampler("fade", 64, 2, guide_channels=32)
    assert (fade.in_channels_de, fade.in_channels_en, fade.up_kernel_size, fade.gating) == (64, 32, 5, False)
    sapa = create_upsampler("sapa", 64, 2, guide_channels=32)  # SAPA-B
    assert (sapa.dim_x, sapa.dim_y, sapa.up_kernel_size, sapa.embedding_dim, sapa.norm) == (64, 32, 5, 32, True)
    a2u = create_upsampler("a2u", 64, 2, guide_channels=32)
    assert (a2u.in_channels, a2u.up_kernel, a2u.scale) == (32, 3, 2)
    indexnet = create_upsampler("indexnet", 64, 2, guide_channels=32)  # HIN: nonlinear, with context
    assert (indexnet.inp, indexnet.use_nonlinear, indexnet.use_context) == (32, True, True)
    freqfusion = create_upsampler("freqfusion", 64, 2, guide_channels=32)
    assert (freqfusion.lr_channels, freqfusion.hr_channels, freqfusion.compressed_channels) == (64, 32, 64)
    assert (freqfusion.lowpass_kernel, freqfusion.highpass_kernel, freqfusion.feature_resample) == (5, 3, False)
    lda = create_upsampler("lda_aqu", 64, 2)  # the authors' Faster R-CNN config
    assert (lda.reduction_factor, lda.k_e, lda.k_u, lda.n_groups, lda.offset_range_factor) == (4, 3, 3, 2, 11)
    assert (lda.num_head, lda.scale_factor, lda.rpb) == (1, 2.0, True)
    assert create_upsampler("fade", 64, 2).in_channels_en == 64  # guide_channels defaults to channels
    assert create_upsampler("lda_aqu", 64, 2, guide_channels=32).in_channels == 64  # ignored by an unguided one


@pytest.mark.parametrize("name", PORTED)
@pytest.mark.parametrize(("request_", "out_hw"), [({"size": (25, 25)}, (25, 25)), ({"scale_factor": 1.5}, (19, 19))])
def test_ported_upsamplers_give_the_requested_size(name: str, request_: dict, out_hw: tuple[int, int]) -> None:
    x, guide = torch.randn(1, 64, 13, 13), _guide_for(name, 32, (25, 25))  # a guide of another size is resized
    assert create_upsampler(name, 64, 2, guide_channels=32)(x, *guide, **request_).shape == (1, 64, *out_hw)
    assert create_upsampler(name, 64, 2, guide_channels=32, **request_)(x, *guide).shape == (1, 64, *out_hw)
    assert create_upsampler(name, 64, 2, guide_channels=32)(x, *guide).shape == (1, 64, 26, 26)


@pytest.mark.parametrize("name", ["lda_aqu", "fade", "sapa"])
@pytest.mark.parametrize("scale", [3, 4, 8])
def test_fade_sapa_and_lda_aqu_compute_any_scale_in_one_module(name: str, scale: int) -> None:
    up = create_upsampler(name, 64, scale, chain=True)
    assert type(up) is PORTED[name] and up.scale == scale and chain_stages(name, scale) == 1
    out = up(torch.randn(1, 64, 5, 4), *_guide_for(name, 64, (5 * scale, 4 * scale)))
    assert out.shape == (1, 64, 5 * scale, 4 * scale)


@pytest.mark.parametrize("name", ["indexnet", "a2u", "freqfusion"])
@pytest.mark.parametrize("scale", [3, 4, 8])
@pytest.mark.parametrize("chain", [True, False])
def test_x2_only_guided_upsamplers_refuse_other_scales(name: str, scale: int, chain: bool) -> None:
    for call in (create_upsampler, rival_parameters):
        with pytest.raises(ValueError, match=f"'{name}' upsamples by 2 only, got scale={scale}.*not chained"):
            call(name, 64, scale, chain=chain)


@pytest.mark.parametrize("name", PORTED)
def test_ported_upsamplers_are_never_exact_at_swap(name: str) -> None:
    """Softmax / sigmoid kernels, attention: none starts as an interpolation (so the claims hold, see above)."""
    for anchor, scale, init, native in itertools.product(ANCHORS, (2, 4), ("match", "paper"), (True, False)):
        assert not exact_at_swap(name, anchor, scale=scale, init=init, native=native)
    torch.manual_seed(0)
    x = torch.randn(1, 32, 6, 5)
    out = create_upsampler(name, 32, 2)(x, *_guide_for(name, 32, (12, 10)))
    for anchor in ANCHORS:
        assert (out - _interpolate(x, anchor, scale_factor=2)).abs().max() > 1e-3


@pytest.mark.parametrize("name", PORTED)
def test_ported_upsamplers_train_and_their_state_dict_round_trips(name: str) -> None:
    torch.manual_seed(0)
    up = create_upsampler(name, 32, 2, guide_channels=64)
    x, guide, target = torch.randn(2, 32, 6, 5), _guide_for(name, 64, (12, 10), batch=2), torch.randn(2, 32, 12, 10)
    optimiser = torch.optim.SGD(up.parameters(), lr=0.1)
    reached = set()
    for _ in range(2):  # LDA-AQU's offset branch learns once its last (zero-initialised) convolution has
        optimiser.zero_grad()
        F.mse_loss(up(x, *guide), target).backward()
        reached |= {n for n, p in up.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimiser.step()
    assert reached == {n for n, _ in up.named_parameters()}
    fresh = create_upsampler(name, 32, 2, guide_channels=64)
    fresh.load_state_dict(up.state_dict(), strict=True)
    assert torch.equal(fresh.eval()(x, *guide), up.eval()(x, *guide))


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", PORTED)
@pytest.mark.parametrize("channels", [32, 64, 256])
@pytest.mark.parametrize("guide_channels", [None, 32, 96, 256])
def test_rival_parameters_of_the_ported_upsamplers_are_the_modules(name: str, channels: int, guide_channels) -> None:
    """The formula counts the module create_upsampler builds, at every scale it takes, for both inits."""
    scales = (2,) if name in ("indexnet", "a2u", "freqfusion") else (2, 3, 4)
    for scale, init in itertools.product(scales, ("match", "paper")):
        module = create_upsampler(name, channels, scale, init=init, guide_channels=guide_channels)
        expected = _params(module)
        assert rival_parameters(name, channels, scale, init=init, guide_channels=guide_channels) == expected


@pytest.mark.parametrize(
    ("name", "readme"),
    [
        ("fade", 47_257),
        ("sapa", 17_472),
        ("a2u", 10_790),
        ("indexnet", 2_100_224),
        ("freqfusion", 52_514),
        ("lda_aqu", 39_410),
    ],
)
def test_rival_parameters_at_256_channels_are_the_reference_data_readme_figures(name: str, readme: int) -> None:
    assert rival_parameters(name, 256, 2) == _params(create_upsampler(name, 256, 2)) == readme


def _paper(count: float, unit: str) -> str:
    """The paper's rounding: one decimal in K or M."""
    return f"{count / {'K': 1e3, 'M': 1e6}[unit]:.1f}{unit}"


@pytest.mark.parametrize(
    ("name", "table_4", "table_6"),
    [("indexnet", "12.6M", "8.4M"), ("a2u", "0.1M", "38.9K"), ("fade", "0.3M", "0.2M"), ("sapa", "0.1M", "0.1M")],
)
def test_paper_tables_4_and_6_from_rival_parameters(name: str, table_4: str, table_6: str) -> None:
    """The DySample paper's added parameters of the guided rivals, at 256 channels, guides of 256 channels.

    Table 4, SegFormer-B1: 3 + 2 + 1 = 6 x2 upsamplings (x8, x4, x2 to 1/4), so 6 x2 modules. The
    registry does not build that setting as chains (a guided upsampler is not chained: each x2 stage needs
    its own guide), so it is counted as 6 separate ``scale=2`` modules, as a network would hold them.
    Table 6, Faster R-CNN (FPN): 4 x2 upsamplings (its DySample rows count 4 modules' weights: DySample-S
    4 x 1,024 = +4.1K, DySample+ 4 x 16,384 = +65.5K), buildable as 4 ``create_upsampler(name, 256, 2)``. Every figure matches but A2U's Faster R-CNN
    +38.9K: the module has 10,790 parameters, 4 x 10,790 = 43.2K; the paper's 38.9K (and Panoptic FPN's
    29.2K for 3) is 4 x 9,730, the module without its two GroupNorms' 1,024 affine parameters and the 36
    biases of the 1x1 convolution to the kernels (reference_data/a2u/README.md: no code builds A2U so, the
    paper's counter probably skipped them). Its Table 4 +0.1M holds either way (64,740 or 58,380).
    """
    per_module = rival_parameters(name, 256, 2)
    assert _paper(6 * per_module, table_4[-1]) == table_4
    if name == "a2u":
        assert _paper(4 * per_module, "K") == "43.2K" != table_6
        without_norms_and_kernel_biases = per_module - 2 * 2 * 256 - 36
        assert _paper(4 * without_norms_and_kernel_biases, "K") == table_6
        assert _paper(3 * without_norms_and_kernel_biases, "K") == "29.2K"  # Table 7, Panoptic FPN
    else:
        assert _paper(4 * per_module, table_6[-1]) == table_6
