"""DySample: the spec's layout and numbers, equivalences with F.interpolate, shapes, gradients, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from paper_reference import PaperDySample

from dysample_swap import ANCHORS, VARIANTS, DySample, resolve_groups

INTERPOLATE_MODE = {
    "bilinear": {"mode": "bilinear", "align_corners": False},
    "bilinear_align_corners": {"mode": "bilinear", "align_corners": True},
    "nearest": {"mode": "nearest"},
}


def float32_tolerance(x: torch.Tensor) -> float:
    """grid_sample's normalised coordinates are good to ~W * 2**-24 pixels in float32 (spec, Precision)."""
    return 8 * 2**-24 * max(x.shape[-2:]) * x.abs().max().item()


def randomise(module: torch.nn.Module, std: float = 0.3, seed: int = 0) -> None:
    """Give every parameter a large random value so offsets move samples by whole pixels."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)


# ---------------------------------------------------------------- layout and state dict


def test_init_pos_matches_spec_layout() -> None:
    for s, g in ((2, 4), (3, 2), (4, 1)):
        init_pos = DySample(16 * s * s, scale=s, groups=g).init_pos
        assert init_pos.shape == (1, 2 * g * s * s, 1, 1)
        flat = init_pos.flatten()
        for k in range(2):
            for grp in range(g):
                for i in range(s):
                    for j in range(s):
                        c = k * (g * s * s) + grp * (s * s) + i * s + j
                        expected = (j + 0.5) / s - 0.5 if k == 0 else (i + 0.5) / s - 0.5
                        assert flat[c].item() == pytest.approx(expected, abs=1e-7)
    assert sorted(DySample(8).init_pos.flatten().unique().tolist()) == [-0.25, 0.25]


@pytest.mark.parametrize(
    ("variant", "weights"),
    [("dysample", 8192), ("dysample+", 2 * 8192), ("dysample-s", 1024), ("dysample-s+", 2 * 1024)],
)
def test_parameter_counts_match_the_paper(variant: str, weights: int) -> None:
    module = DySample.from_variant(variant, in_channels=256, scale=2)
    assert sum(p.numel() for name, p in module.named_parameters() if name.endswith("weight")) == weights


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_names_and_shapes_match_the_authors(variant: str) -> None:
    module = DySample.from_variant(variant, in_channels=64, scale=2)
    reference = PaperDySample(64, 2, module.style, module.groups, module.dyscope)
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == theirs
    expected_keys = {"offset.weight", "offset.bias", "init_pos"} | ({"scope.weight"} if module.dyscope else set())
    assert set(ours) == expected_keys
    torch.testing.assert_close(module.init_pos, reference.init_pos, rtol=0, atol=0)


@pytest.mark.parametrize("style", ["lp", "pl"])
@pytest.mark.parametrize("dyscope", [False, True])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_same_outputs_as_the_authors_for_the_same_weights(style: str, dyscope: bool, scale: int) -> None:
    channels = 2 * scale * scale * 4
    groups = 4 if style == "lp" else 2
    reference = PaperDySample(channels, scale, style, groups, dyscope)
    randomise(reference)
    ours = DySample(channels, scale, style, groups, dyscope, positions="authors")
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(ours.state_dict(), strict=True)  # and back
    generator = torch.Generator().manual_seed(scale)  # a fixed input for a bit-for-bit check
    for height, width in ((5, 7), (13, 13), (31, 17), (64, 48)):
        x = torch.randn(2, channels, height, width, generator=generator)
        assert (ours(x) - reference(x)).abs().max().item() < 1e-5
        assert torch.equal(ours(x), reference(x))  # bit for bit


@pytest.mark.parametrize("style", ["lp", "pl"])
@pytest.mark.parametrize("scale", [2, 3])
def test_exact_positions_differ_from_the_authors_only_by_their_coordinate_rounding(style: str, scale: int) -> None:
    """The default positions are the authors' formula without the normalised-coordinate round trip."""
    channels = 2 * scale * scale * 4
    groups = 4 if style == "lp" else 2
    reference = PaperDySample(channels, scale, style, groups, True)
    randomise(reference)
    ours = DySample(channels, scale, style, groups, True)
    ours.load_state_dict(reference.state_dict(), strict=True)
    for height, width in ((5, 7), (13, 13), (64, 48)):
        x = torch.randn(2, channels, height, width)
        assert (ours(x) - reference(x)).abs().max().item() <= float32_tolerance(x)
    with torch.no_grad():  # float64: only the authors' float32-rounded init_pos (1/3 at x3) remains
        x = torch.randn(1, channels, 9, 11, dtype=torch.float64)
        assert (ours.double()(x) - reference.double()(x)).abs().max().item() <= 2**-24 * x.abs().max().item()


def test_paper_initialisation_is_the_default() -> None:
    torch.manual_seed(0)
    module = DySample.from_variant("dysample+", in_channels=256)
    assert module.offset.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert module.offset.bias.abs().max().item() == 0.0
    assert module.scope.weight.abs().max().item() == 0.0


# ---------------------------------------------------------------- equivalences with F.interpolate


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("style", ["lp", "pl"])
@pytest.mark.parametrize(
    ("scale", "call"),
    [
        (2, {}),
        (2, {"size": (25, 21)}),  # odd FPN lateral: 13 -> 25
        (2, {"size": (26, 22)}),
        (2, {"size": (17, 12)}),  # non-integer ratio
        (2, {"scale_factor": 1.5}),  # step 1/1.5, not in/out
        (2, {"scale_factor": (1.7, 2.0)}),
        (3, {}),
        (3, {"size": (37, 29)}),
        (3, {"scale_factor": 2.5}),
        (4, {"size": (50, 41)}),
    ],
)
def test_zero_offsets_reproduce_interpolate_exactly(anchor: str, style: str, scale: int, call: dict) -> None:
    channels = 4 * scale * scale
    module = DySample(channels, scale, style, 2, dyscope=True, anchor=anchor, offset_init_std=0.0).double()
    x = torch.randn(2, channels, 13, 11, dtype=torch.float64)
    expected = F.interpolate(x, **(call or {"scale_factor": scale}), **INTERPOLATE_MODE[anchor])
    out = module(x, **call)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-10


@pytest.mark.parametrize("anchor", ANCHORS)
def test_zero_offsets_float32_within_coordinate_precision(anchor: str) -> None:
    module = DySample(32, 2, anchor=anchor, offset_init_std=0.0)
    for x, call in ((torch.randn(1, 32, 47, 47), {}), (torch.randn(1, 32, 100, 100), {"size": (199, 201)})):
        expected = F.interpolate(x, **(call or {"scale_factor": 2}), **INTERPOLATE_MODE[anchor])
        assert (module(x, **call) - expected).abs().max().item() <= float32_tolerance(x)
    small = torch.randn(1, 32, 13, 13)
    expected = F.interpolate(small, size=(25, 25), **INTERPOLATE_MODE[anchor])
    assert (module(small, size=(25, 25)) - expected).abs().max().item() <= 1e-5


def test_nearest_anchor_is_the_papers_nearest_initialisation() -> None:
    """init_pos == 0 in the authors' module equals our nearest anchor (Table 1, 'nearest initialisation')."""
    reference = PaperDySample(16, 2, "lp", 4, False)
    randomise(reference)
    with torch.no_grad():
        reference.init_pos.zero_()
    ours = DySample(16, 2, "lp", 4, False, anchor="nearest")
    ours.offset.load_state_dict(reference.offset.state_dict())
    x = torch.randn(1, 16, 9, 9)
    assert (ours(x) - reference(x)).abs().max().item() < 1e-5


# ---------------------------------------------------------------- shapes, layouts, batches


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes_for_odd_sizes_and_batches(variant: str, scale: int) -> None:
    module = DySample.from_variant(variant, in_channels=16 * scale * scale, scale=scale, groups_fallback=True)
    x = torch.randn(3, 16 * scale * scale, 7, 11)
    assert module(x).shape == (3, 16 * scale * scale, 7 * scale, 11 * scale)
    assert module(x, size=(7 * scale - 1, 11 * scale - 1)).shape == (
        3,
        16 * scale * scale,
        7 * scale - 1,
        11 * scale - 1,
    )
    assert module(x, size=(9, 12)).shape[-2:] == (9, 12)
    # samples are independent across the batch
    torch.testing.assert_close(module(x)[1:2], module(x[1:2]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("style", ["lp", "pl"])
def test_non_contiguous_and_channels_last_inputs(style: str) -> None:
    module = DySample(64, 2, style, 4, dyscope=True)
    randomise(module)
    x = torch.randn(2, 64, 12, 10)
    expected = module(x)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(module(channels_last), expected, rtol=1e-5, atol=1e-5)
    transposed = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, permuted strides
    assert not transposed.is_contiguous()
    torch.testing.assert_close(module(transposed), expected, rtol=1e-5, atol=1e-5)
    strided = torch.randn(2, 64, 24, 10)[:, :, ::2]
    torch.testing.assert_close(module(strided), module(strided.contiguous()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("style", ["lp", "pl"])
@pytest.mark.parametrize("dyscope", [False, True])
def test_gradcheck_float64(style: str, dyscope: bool) -> None:
    module = DySample(8, 2, style, 2, dyscope).double()
    randomise(module, std=0.2)
    x = torch.randn(1, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: module(t), (x,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda t: module(t, size=(7, 9)), (x,), eps=1e-6, atol=1e-5)
    module(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# ---------------------------------------------------------------- errors


def test_groups_that_do_not_divide_raise_a_helpful_error() -> None:
    with pytest.raises(ValueError, match=r"in_channels = 30.*groups=4.*groups=3.*groups_fallback=True"):
        DySample(30, groups=4)
    with pytest.raises(ValueError, match=r"in_channels // scale\*\*2 = 9.*groups=8.*groups=3"):
        DySample(36, 2, "pl", 8)
    with pytest.raises(ValueError, match=r"divisible by scale\*\*2 = 4; got in_channels=30.*style='lp'"):
        DySample(30, 2, "pl", 1)


def test_groups_fallback_picks_the_largest_valid_divisor() -> None:
    assert DySample(30, groups=4, groups_fallback=True).groups == 3
    assert DySample(36, 2, "pl", 8, groups_fallback=True).groups == 3
    assert DySample(20, 2, "pl", 8, groups_fallback=True).groups == 5
    assert resolve_groups(256, 2, "lp", 4) == 4
    with pytest.raises(ValueError, match="divisible by scale"):
        DySample(30, 2, "pl", 8, groups_fallback=True)
    out = DySample(30, groups=4, groups_fallback=True)(torch.randn(1, 30, 5, 5))
    assert out.shape == (1, 30, 10, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 16, "scale": 1}, "integer >= 2"),
        ({"in_channels": 16, "scale": 2.0}, "integer >= 2"),
        ({"in_channels": 16, "style": "lpp"}, "'lp' or 'pl'"),
        ({"in_channels": 16, "anchor": "bicubic"}, "unknown anchor 'bicubic'"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DySample(**kwargs)


def test_bad_inputs_name_the_problem() -> None:
    module = DySample(16)
    with pytest.raises(ValueError, match=r"in_channels=16 but got an input with 8 channels.*in_channels=8"):
        module(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="4-D input"):
        module(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="either size or scale_factor"):
        module(torch.randn(1, 16, 4, 4), size=(8, 8), scale_factor=2)
    with pytest.raises(ValueError, match=r"unknown DySample variant 'dysampel\+'.*Did you mean 'dysample\+'"):
        DySample.from_variant("dysampel+", 16)


# ---------------------------------------------------------------- variants and repr


def test_from_variant_defaults_and_overrides() -> None:
    expected = {
        "dysample": ("lp", False, 4),
        "dysample+": ("lp", True, 4),
        "dysample-s": ("pl", False, 8),
        "dysample-s+": ("pl", True, 8),
    }
    for variant, (style, dyscope, groups) in expected.items():
        module = DySample.from_variant(variant, in_channels=256, scale=2)
        assert (module.style, module.dyscope, module.groups, module.variant) == (style, dyscope, groups, variant)
    assert DySample.from_variant("dysample", 256, groups=2).groups == 2
    assert DySample.from_variant("dysample", 256, anchor="nearest").anchor == "nearest"


def test_extra_repr_shows_the_configuration() -> None:
    text = repr(DySample.from_variant("dysample-s+", in_channels=256, scale=2))
    for part in ("variant=dysample-s+", "in_channels=256", "scale=2", "groups=8", "style=pl", "scope=dynamic"):
        assert part in text
    assert "scope=static" in repr(DySample(16))
