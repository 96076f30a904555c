"""FADE (and FADE-Lite, with and without gate) against the authors' code's outputs and gradients; sizes, state, errors."""

from __future__ import annotations

from functools import partial

import pytest
import reference
import torch
import torch.nn.functional as F

from dysample_swap.upsamplers.fade import FADE, FADELite, fade

CASES = {".": FADE, "gated": FADE, "lite": FADELite, "lite_gated": FADELite}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_authors_output_and_every_gradient(case: str, dtype: torch.dtype) -> None:
    """*Our* order: x = the authors' ``de``, then the guide = their ``en``."""
    reference.assert_reproduced("fade", CASES[case], reference.call("de", "en"), dtype, case)


@pytest.mark.parametrize("case", list(CASES))
def test_initialisation_is_the_authors(case: str) -> None:
    reference.Reference("fade", case).assert_initialisation(CASES[case])


@pytest.mark.parametrize(
    ("cls", "gating", "expected"),
    [(FADE, False, 47_257), (FADE, True, 47_514), (FADELite, False, 13_075), (FADELite, True, 13_332)],
)
def test_parameter_count_at_256_channels(cls: type[FADE], gating: bool, expected: int) -> None:
    assert sum(p.numel() for p in cls(256, gating=gating).parameters()) == expected


def _unfold_fade(x: torch.Tensor, guide: torch.Tensor, up: FADE) -> torch.Tensor:
    """The README's formula, written independently: nearest upsampling by F.interpolate, CARAFE by unfold."""
    gen, s, k = up.ker_generator, up.scale_factor, up.up_kernel_size
    logits = gen.content_encoder(gen.compressor_en(guide)) + F.interpolate(
        gen.content_encoder(gen.compressor_de(x)), scale_factor=s, mode="nearest"
    )
    kernels = logits.softmax(1)
    n, c, h, w = x.shape
    patches = F.unfold(x, k, padding=k // 2).view(n, c, k * k, h, w)
    patches = patches.repeat_interleave(s, 3).repeat_interleave(s, 4)
    out = (patches * kernels[:, None]).sum(2)
    if up.gate_generator is not None:
        gate = torch.sigmoid(F.interpolate(up.gate_generator.conv(x), scale_factor=s, mode="nearest"))
        out = gate * guide + (1 - gate) * out
    return out


@pytest.mark.parametrize(("cls", "scale", "gating"), [(FADE, 3, False), (FADE, 2, True), (FADELite, 4, True)])
def test_other_scales_match_the_formula(cls: type[FADE], scale: int, gating: bool) -> None:
    torch.manual_seed(0)
    up = reference.perturb(cls(8, scale_factor=scale, up_kernel_size=3, gating=gating).double())
    x, guide = (
        torch.randn(2, 8, 5, 4, dtype=torch.float64),
        torch.randn(2, 8, 5 * scale, 4 * scale, dtype=torch.float64),
    )
    torch.testing.assert_close(up(x, guide), _unfold_fade(x, guide, up), atol=1e-12, rtol=0)


def test_unequal_channels_without_gate() -> None:
    up = FADE(16, 8)
    assert up(torch.randn(1, 8, 4, 4), torch.randn(1, 16, 8, 8)).shape == (1, 8, 8, 8)


@pytest.mark.parametrize("cls", [FADE, FADELite])
def test_odd_sizes_and_fractional_factors(cls: type[FADE]) -> None:
    reference.assert_any_output_size(partial(cls, 16, gating=True), 16, 16, "output_scale_factor")


@pytest.mark.parametrize(("cls", "gating"), [(FADE, False), (FADE, True), (FADELite, False), (FADELite, True)])
def test_a_training_step_reaches_every_parameter(cls: type[FADE], gating: bool) -> None:
    torch.manual_seed(0)
    up = cls(16, gating=gating).train()
    x, guide = torch.randn(2, 16, 6, 5), torch.randn(2, 16, 12, 10)
    reference.assert_every_parameter_learns(up, (up(x, guide) * torch.randn(2, 16, 12, 10)).sum())


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_pickle_and_deepcopy_round_trips(case: str) -> None:
    ref = reference.Reference("fade", case)
    x, guide = ref("input.de.bin"), ref("input.en.bin")
    reference.assert_round_trips(ref.module(CASES[case]), CASES[case](**ref.args), lambda up: up(x, guide))


def test_bad_inputs_raise_value_errors_naming_the_fix() -> None:
    up = FADE(16, 8)
    x, guide = torch.randn(2, 8, 4, 4), torch.randn(2, 16, 8, 8)
    reference.assert_guided_input_errors(up, x, guide)
    with pytest.raises(ValueError, match="x has 16 channels .* in_channels_de=8.*low-resolution feature x first"):
        up(guide, x)  # the authors' order
    with pytest.raises(ValueError, match="gating=True"):
        FADE(16, 8, gating=True)
    with pytest.raises(ValueError, match="up_kernel_size must be odd"):
        FADE(16, up_kernel_size=4)
    with pytest.raises(ValueError, match="integer >= 2"):
        FADE(16, scale_factor=1)
    with pytest.raises(ValueError, match="default size or a default scale_factor"):
        FADE(16, size=8, output_scale_factor=2)
    with pytest.raises(ValueError, match="scale\\*H, scale\\*W"):
        fade(x, torch.randn(2, 16, 7, 8), *(p for _, p in up.ker_generator.named_parameters()))


def test_no_tensor_larger_than_the_output_in_forward_and_backward() -> None:
    up = FADE(64, gating=True)
    x, guide = torch.randn(1, 64, 16, 16, requires_grad=True), torch.randn(1, 64, 32, 32, requires_grad=True)
    with reference.LargestTensor() as probe:
        out = up(x, guide)
        out.square().sum().backward()
    assert probe.largest <= out.numel()  # unfolding the upsampled input would make 25x this
