"""The registry: names, errors, every upsampler's sizes and training, x2 chains, and each exact_at_swap claim checked."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from dysample_swap import (
    UPSAMPLERS,
    CARAFEPack,
    DeconvUpsampler,
    DySample,
    InterpolateUpsampler,
    PixelShuffleUpsampler,
    UpsamplerChain,
    create_upsampler,
    exact_at_swap,
)
from dysample_swap.upsamplers.registry import rival_parameters

ANCHORS = ("bilinear", "bilinear_align_corners", "nearest")


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


def test_errors_name_the_valid_values() -> None:
    with pytest.raises(
        ValueError, match=r"unknown upsampler 'carafee'; choose one of dysample, .*bilinear\. Did you mean 'carafe'\?"
    ):
        create_upsampler("carafee", 16, 2)
    with pytest.raises(ValueError, match="unknown upsampler 'zzz'; choose one of .*bilinear.$"):
        exact_at_swap("zzz")
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
