"""SAPA-B against the authors' code's outputs and gradients; other scales against the formula; sizes, state, errors."""

from __future__ import annotations

from functools import partial

import pytest
import reference
import torch
import torch.nn.functional as F

from dysample_swap.upsamplers.sapa import SAPA, sapa, sapa_similarity


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_authors_output_and_every_gradient(dtype: torch.dtype) -> None:
    """*Our* order: x = the authors' ``x``, then the guide = their ``y``."""
    reference.assert_reproduced("sapa", SAPA, reference.call("x", "y"), dtype)


def test_initialisation_is_the_authors() -> None:
    reference.Reference("sapa").assert_initialisation(SAPA)


def test_parameter_count_at_256_channels() -> None:
    assert sum(p.numel() for p in SAPA(256).parameters()) == 17_472


def _authors_formula(x: torch.Tensor, guide: torch.Tensor, up: SAPA) -> torch.Tensor:
    """The README's formula, written independently: unfold the k*k neighbourhoods, einsum (the authors' check path)."""
    k, s = up.up_kernel_size, up.up_factor
    if up.norm:
        q, key = up.q(up.norm_y(guide)), up.k(up.norm_x(x))
    else:
        q, key = up.q(guide), up.k(x)
    n, e, h, w = key.shape
    keys = F.unfold(key, k, padding=k // 2).view(n, e, k * k, h, w)
    logits = torch.einsum("nehiwj,nedhw->ndhiwj", q.view(n, e, h, s, w, s), keys)
    attention = logits.reshape(n, k * k, h * s, w * s).softmax(1).view(n, k * k, h, s, w, s)
    values = F.unfold(x, k, padding=k // 2).view(n, x.shape[1], k * k, h, w)
    return torch.einsum("ndhiwj,ncdhw->nchiwj", attention, values).reshape(n, x.shape[1], h * s, w * s)


@pytest.mark.parametrize(
    ("scale", "kernel", "bias", "norm", "dim_x"),
    [(3, 3, True, True, 64), (2, 7, False, False, 8), (4, 5, True, False, 16)],
)
def test_other_settings_match_the_formula(scale: int, kernel: int, bias: bool, norm: bool, dim_x: int) -> None:
    torch.manual_seed(0)
    up = SAPA(32, dim_x, up_factor=scale, up_kernel_size=kernel, embedding_dim=16, qkv_bias=bias, norm=norm)
    up = reference.perturb(up.double())
    x = torch.randn(2, dim_x, 5, 4, dtype=torch.float64)
    guide = torch.randn(2, 32, 5 * scale, 4 * scale, dtype=torch.float64)
    torch.testing.assert_close(up(x, guide), _authors_formula(x, guide, up), atol=1e-12, rtol=0)


def test_similarity_reads_zero_outside_the_map() -> None:
    q, k = torch.ones(1, 1, 2, 2), torch.full((1, 1, 1, 1), 3.0)
    logits = sapa_similarity(q, k, 3, 2)  # one key pixel: only the centre tap sees it
    expected = torch.zeros(1, 9, 2, 2)
    expected[:, 4] = 3.0
    assert torch.equal(logits, expected)


def test_odd_sizes_and_fractional_factors() -> None:
    reference.assert_any_output_size(partial(SAPA, 32), 32, 32)


def test_a_training_step_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    up = SAPA(32).train()
    x, guide = torch.randn(2, 32, 6, 5), torch.randn(2, 32, 12, 10)
    reference.assert_every_parameter_learns(up, (up(x, guide) * torch.randn(2, 32, 12, 10)).sum())


def test_state_dict_pickle_and_deepcopy_round_trips() -> None:
    ref = reference.Reference("sapa")
    x, guide = ref("input.x.bin"), ref("input.y.bin")
    reference.assert_round_trips(ref.module(SAPA), SAPA(**ref.args), lambda up: up(x, guide))


def test_bad_inputs_raise_value_errors_naming_the_fix() -> None:
    up = SAPA(64, 32)
    x, guide = torch.randn(2, 32, 4, 4), torch.randn(2, 64, 8, 8)
    reference.assert_guided_input_errors(up, x, guide)
    with pytest.raises(ValueError, match="x has 64 channels .* dim_x=32.*low-resolution feature x first"):
        up(guide, x)  # the authors' order
    with pytest.raises(ValueError, match="multiple of 32"):
        SAPA(48)
    with pytest.raises(ValueError, match="up_kernel_size must be odd"):
        SAPA(32, up_kernel_size=4)
    with pytest.raises(ValueError, match="integer >= 2"):
        SAPA(32, up_factor=1)
    with pytest.raises(ValueError, match="default size or a default scale_factor"):
        SAPA(32, size=8, scale_factor=2)
    with pytest.raises(ValueError, match="query must have shape"):
        sapa(x, torch.randn(2, 8, 7, 8), torch.randn(2, 8, 4, 4))
    assert SAPA(48, 8, norm=False)(torch.randn(1, 8, 3, 3), torch.randn(1, 48, 6, 6)).shape == (1, 8, 6, 6)


def test_no_tensor_larger_than_the_output_in_forward_and_backward() -> None:
    up = SAPA(64)
    x, guide = torch.randn(1, 64, 16, 16, requires_grad=True), torch.randn(1, 64, 32, 32, requires_grad=True)
    with reference.LargestTensor() as probe:
        out = up(x, guide)
        out.square().sum().backward()
    assert probe.largest <= out.numel()  # k*k logits per output pixel; unfolding the keys or values is 25x the input
