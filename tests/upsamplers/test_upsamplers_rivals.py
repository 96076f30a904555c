"""Deconvolution, pixel shuffle and the no-op arm: exactness at init, sizes, training, state dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dysample_swap import DeconvUpsampler, InterpolateUpsampler, PixelShuffleUpsampler

RIVALS = (DeconvUpsampler, PixelShuffleUpsampler)


def _interpolate(x: torch.Tensor, anchor: str, **request: object) -> torch.Tensor:
    if anchor == "nearest":
        return F.interpolate(x, mode="nearest", **request)
    return F.interpolate(x, mode="bilinear", align_corners=anchor == "bilinear_align_corners", **request)


def _build64(cls: type, channels: int, scale: int, **kwargs: object) -> torch.nn.Module:
    """Build with float64 parameters initialised in float64 (1/3 is not a float32 number)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return cls(channels, scale, **kwargs)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("cls", RIVALS)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("anchor", ["bilinear", "nearest"])
def test_match_init_is_the_interpolation_at_every_pixel_of_the_native_output(cls, scale, anchor) -> None:
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    up = _build64(cls, 3, scale, anchor=anchor)
    y = up(x)
    expected = _interpolate(x, anchor, scale_factor=scale)
    assert y.shape == expected.shape == (2, 3, 5 * scale, 7 * scale)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=0)  # borders included: rows/columns 0 and -1
    assert (y[..., 0, :] - expected[..., 0, :]).abs().max() <= 1e-12


@pytest.mark.parametrize("cls", RIVALS)
def test_match_init_in_float32_is_within_rounding(cls) -> None:
    x = torch.randn(1, 8, 16, 16)
    torch.testing.assert_close(cls(8, 2)(x), F.interpolate(x, scale_factor=2, mode="bilinear"), atol=2e-6, rtol=0)
    assert torch.equal(cls(8, 2, anchor="nearest")(x), F.interpolate(x, scale_factor=2, mode="nearest"))


def test_without_replicate_padding_the_bilinear_deconv_borders_would_be_wrong() -> None:
    """The reason for the padding: a plain stride-2, kernel-4, padding-1 deconv with the bilinear kernel."""
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    w1 = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    plain = F.conv_transpose2d(x, (w1[:, None] * w1[None, :])[None, None], stride=2, padding=1)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear")
    torch.testing.assert_close(plain[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-12, rtol=0)
    torch.testing.assert_close(plain[..., 0, 2:-2], 0.75 * expected[..., 0, 2:-2], atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", RIVALS)
@pytest.mark.parametrize(
    "request_",
    [
        {"size": (25, 25)},
        {"size": (45, 51)},
        {"scale_factor": 1.5},
        {"scale_factor": 3.0},
        {"scale_factor": (2.5, 1.3)},
    ],
)
def test_nearest_init_stays_nearest_at_any_size(cls, request_) -> None:
    x = torch.randn(1, 4, 15, 17)
    if request_.get("size") == (25, 25):
        x = torch.randn(1, 4, 13, 13)
    expected = F.interpolate(x, mode="nearest", **request_)
    assert torch.equal(cls(4, 2, anchor="nearest")(x, **request_), expected)
    assert torch.equal(cls(4, 3, anchor="nearest")(x, **request_), expected)


@pytest.mark.parametrize("cls", RIVALS)
def test_bilinear_init_is_not_bilinear_at_an_odd_size(cls) -> None:
    x = torch.randn(1, 4, 13, 13, dtype=torch.float64)
    difference = _build64(cls, 4, 2)(x, size=(25, 25)) - _interpolate(x, "bilinear", size=(25, 25))
    assert difference.abs().max() > 1e-2


@pytest.mark.parametrize("cls", RIVALS)
def test_align_corners_anchor_starts_as_plain_bilinear(cls) -> None:
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    up = _build64(cls, 4, 2, anchor="bilinear_align_corners")
    torch.testing.assert_close(up(x), _interpolate(x, "bilinear", scale_factor=2), atol=1e-12, rtol=0)
    assert (up(x) - _interpolate(x, "bilinear_align_corners", scale_factor=2)).abs().max() > 1e-2


@pytest.mark.parametrize("cls", [*RIVALS, InterpolateUpsampler])
@pytest.mark.parametrize(
    ("in_hw", "request_", "out_hw"),
    [
        ((13, 13), {}, (26, 26)),
        ((13, 13), {"size": (25, 25)}, (25, 25)),
        ((15, 17), {"size": (45, 51)}, (45, 51)),
        ((15, 17), {"scale_factor": 3}, (45, 51)),
        ((13, 13), {"scale_factor": 1.5}, (19, 19)),
        ((13, 13), {"size": 25}, (25, 25)),
    ],
)
def test_output_shapes(cls, in_hw, request_, out_hw) -> None:
    up = InterpolateUpsampler(2) if cls is InterpolateUpsampler else cls(4, 2)
    assert up(torch.randn(2, 4, *in_hw), **request_).shape == (2, 4, *out_hw)


@pytest.mark.parametrize("cls", [*RIVALS, InterpolateUpsampler])
def test_defaults_and_explicit_arguments(cls) -> None:
    x = torch.randn(1, 4, 13, 13)
    make = (
        (lambda **kw: InterpolateUpsampler(2, **kw)) if cls is InterpolateUpsampler else (lambda **kw: cls(4, 2, **kw))
    )
    assert make(size=(25, 27))(x).shape == (1, 4, 25, 27)
    assert make(scale_factor=1.5)(x).shape == (1, 4, 19, 19)
    assert make(size=(25, 27))(x, scale_factor=3).shape == (1, 4, 39, 39)
    with pytest.raises(ValueError, match="not both"):
        make(size=(25, 25), scale_factor=2)
    with pytest.raises(ValueError, match="not both|only one of size or scale_factor"):  # the latter: F.interpolate's
        make()(x, size=(25, 25), scale_factor=2)


@pytest.mark.parametrize("anchor", ["bilinear", "bilinear_align_corners", "nearest"])
@pytest.mark.parametrize("request_", [{}, {"size": (25, 27)}, {"scale_factor": 1.5}, {"scale_factor": 2}])
def test_noop_arm_is_the_original_call_bit_for_bit(anchor, request_) -> None:
    x = torch.randn(2, 4, 13, 13)
    expected = _interpolate(x, anchor, **(request_ or {"scale_factor": 2}))
    assert torch.equal(InterpolateUpsampler(2, anchor=anchor)(x, **request_), expected)
    assert list(InterpolateUpsampler(2).parameters()) == []


def test_paper_layers() -> None:
    deconv = DeconvUpsampler(16, 2, init="paper").deconv
    assert (deconv.kernel_size, deconv.stride, deconv.padding, deconv.output_padding) == (
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
    )
    conv = PixelShuffleUpsampler(16, 2, init="paper").conv
    assert (conv.kernel_size, conv.padding, conv.padding_mode, conv.out_channels) == ((3, 3), (1, 1), "zeros", 64)
    x = torch.randn(1, 16, 13, 13)
    for up in (DeconvUpsampler(16, 2, init="paper"), PixelShuffleUpsampler(16, 2, init="paper")):
        assert up(x).shape == (1, 16, 26, 26)
        assert (up(x) - F.interpolate(x, scale_factor=2, mode="bilinear")).abs().max() > 1e-2
    assert DeconvUpsampler(4, 3, init="paper")(torch.randn(1, 4, 5, 6)).shape == (1, 4, 15, 18)
    with pytest.raises(ValueError, match="unknown init 'pretty'"):
        DeconvUpsampler(4, 2, init="pretty")
    with pytest.raises(ValueError, match="integer >= 2, got 1.5"):
        PixelShuffleUpsampler(4, 1.5)
