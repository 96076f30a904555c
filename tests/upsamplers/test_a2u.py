"""A2U (the DySample authors' configuration) against the authors' code's outputs and gradients; other scales against the formula; sizes, state, errors."""

from __future__ import annotations

from functools import partial

import pytest
import reference
import torch
import torch.nn.functional as F

from dysample_swap.upsamplers.a2u import A2U, A2UKernelGenerator, a2u, a2u_kernels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_authors_output_and_every_gradient(dtype: torch.dtype) -> None:
    """*Our* order: x = the authors' ``feature_de``, then the guide = their ``feature_en``."""
    reference.assert_reproduced("a2u", A2U, reference.call("feature_de", "feature_en"), dtype)


def test_initialisation_is_the_authors() -> None:
    reference.Reference("a2u").assert_initialisation(A2U)


def test_parameter_count_at_256_channels() -> None:
    assert sum(p.numel() for p in A2U(256).parameters()) == 10_790


def _loop_formula(x: torch.Tensor, guide: torch.Tensor, up: A2U) -> torch.Tensor:
    """The README's steps written independently, one sample at a time, with the module's layers; CARAFE by unfold."""
    gen, s = up.kernel_gen, up.up_kernel
    n, c, height, width = guide.shape
    p, u, v = gen.bconv_UP(guide), gen.bconv_U(guide), gen.bconv_V(guide)  # (n, 4s², 1, 1), (n, 1, 6, 6) x2
    kernels = []
    for i in range(n):
        enc_u = F.conv2d(guide[i].unsqueeze(1), u[i : i + 1], stride=2, padding=2).transpose(0, 1)  # (1, c, h, w)
        enc_v = F.conv2d(guide[i].unsqueeze(1), v[i : i + 1], stride=2, padding=2).transpose(0, 1)
        affinity = (gen.bnu(enc_u) * gen.bnv(enc_v)).sum(1, keepdim=True) / c**0.5
        kernels.append(F.pixel_shuffle(p[i : i + 1] * affinity, 2))
    weights = torch.softmax(torch.sigmoid(torch.cat(kernels)), dim=1)  # (n, s*s, 2h, 2w)
    h, w = x.shape[-2:]
    patches = F.unfold(x, s, padding=s // 2).view(n, x.shape[1], s * s, h, w)
    patches = patches.repeat_interleave(2, 3).repeat_interleave(2, 4)
    return (patches * weights[:, None]).sum(2)


@pytest.mark.parametrize(("channels", "x_channels", "up_kernel"), [(64, 64, 3), (32, 8, 5), (96, 16, 1)])
def test_other_settings_match_the_loop_formula(channels: int, x_channels: int, up_kernel: int) -> None:
    torch.manual_seed(0)
    up = reference.perturb(A2U(channels, up_kernel=up_kernel).double())
    x = torch.randn(3, x_channels, 7, 4, dtype=torch.float64)
    guide = torch.randn(3, channels, 14, 8, dtype=torch.float64)
    torch.testing.assert_close(up(x, guide), _loop_formula(x, guide, up), atol=1e-12, rtol=0)


def _core_arguments(gen: A2UKernelGenerator) -> list[torch.Tensor]:
    """The generator's parameters in :func:`a2u_kernels`'s argument order."""
    convs = [gen.bconv_UP[1], gen.bconv_U[1], gen.bconv_V[1]]
    norms = [gen.bnu[0], gen.bnv[0]]
    return [t for m in convs + norms for t in (m.weight, m.bias)]


def test_kernels_are_normalised_and_the_generator_is_the_functional_core() -> None:
    torch.manual_seed(0)
    gen = A2UKernelGenerator(32)
    guide = torch.randn(2, 32, 8, 6)
    kernels = gen(guide)
    assert kernels.shape == (2, 9, 8, 6)
    torch.testing.assert_close(kernels.sum(1), torch.ones(2, 8, 6))
    assert torch.equal(a2u_kernels(guide, *_core_arguments(gen)), kernels)
    out = a2u(torch.ones(2, 4, 4, 3), guide, *_core_arguments(gen))  # normalised kernels keep a constant ...
    torch.testing.assert_close(
        out[..., 2:6, 2:4], torch.ones(2, 4, 4, 2)
    )  # ... where no window reaches the zero padding
    assert (out[..., 0, :] < 1).all()


def test_odd_sizes_and_fractional_factors() -> None:
    reference.assert_any_output_size(partial(A2U, 32), 8, 32)


def test_a_training_step_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    up = A2U(32).train()
    x, guide = torch.randn(2, 32, 6, 5), torch.randn(2, 32, 12, 10)
    reference.assert_every_parameter_learns(up, (up(x, guide) * torch.randn(2, 32, 12, 10)).sum())


def test_state_dict_pickle_and_deepcopy_round_trips() -> None:
    ref = reference.Reference("a2u")
    x, guide = ref("input.feature_de.bin"), ref("input.feature_en.bin")
    reference.assert_round_trips(ref.module(A2U), A2U(**ref.args), lambda up: up(x, guide))


def test_bad_inputs_raise_value_errors_naming_the_fix() -> None:
    up = A2U(64)
    x, guide = torch.randn(2, 16, 4, 4), torch.randn(2, 64, 8, 8)
    reference.assert_guided_input_errors(up, x, guide, x_channels_checked=False)
    with pytest.raises(ValueError, match="guide has 16 channels .* low-resolution feature x first"):
        up(guide, x)  # the authors' order
    with pytest.raises(ValueError, match="multiple of 32"):
        A2U(48)
    with pytest.raises(ValueError, match="up_kernel must be an odd"):
        A2U(32, up_kernel=4)
    with pytest.raises(ValueError, match="by 2 only"):
        A2U(32, scale=4)
    with pytest.raises(ValueError, match="default size or a default scale_factor"):
        A2U(32, size=8, scale_factor=2)
    with pytest.raises(ValueError, match="even height and width"):
        a2u_kernels(torch.randn(1, 32, 7, 8), *_core_arguments(A2UKernelGenerator(32)))


def test_no_tensor_larger_than_the_output_in_forward_and_backward() -> None:
    up = A2U(64)
    x, guide = torch.randn(1, 64, 16, 16, requires_grad=True), torch.randn(1, 64, 32, 32, requires_grad=True)
    with reference.LargestTensor() as probe:
        out = up(x, guide)
        out.square().sum().backward()
    assert probe.largest <= out.numel()


@pytest.mark.parametrize("size", [(13, 8), (64, 64), (4, 5), (6, 6)])
def test_the_exported_form_of_its_adaptive_pooling_equals_the_pooling(size, monkeypatch) -> None:
    """While exporting, the 6x6 average pool is box sums of an integral image (sizes stay dynamic); same numbers."""
    from dysample_swap.upsamplers.a2u import adaptive_mean

    x = torch.randn(2, 3, *size, dtype=torch.float64)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(
        adaptive_mean(x, 6), torch.nn.functional.adaptive_avg_pool2d(x, 6), rtol=1e-12, atol=1e-12
    )
