"""The sampler: exact F.interpolate at zero offsets at odd sizes, and the sparse path against the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dysample_swap import DySample, dysample, dysample_sample
from dysample_swap.upsamplers.dysample.sampling import SparseBilinear, reference_sample

INTERPOLATE_MODE = {
    "bilinear": {"mode": "bilinear", "align_corners": False},
    "bilinear_align_corners": {"mode": "bilinear", "align_corners": True},
    "nearest": {"mode": "nearest"},
}

# (input H x W, DySample scale, call): the odd sizes and ratios of issue 8, with size= and scale_factor=
ODD_CASES = [
    ((10, 10), 2, {}),
    ((10, 10), 2, {"size": (20, 20)}),
    ((13, 13), 2, {}),
    ((13, 13), 2, {"size": (26, 26)}),
    ((13, 13), 2, {"size": (25, 25)}),
    ((15, 17), 2, {"size": (45, 51)}),
    ((15, 17), 3, {"size": (45, 51)}),
    ((15, 17), 3, {}),
    ((15, 17), 3, {"scale_factor": 3.0}),
    ((13, 11), 2, {"scale_factor": 1.5}),
    ((7, 9), 2, {"scale_factor": (2.5, 1.7)}),
    ((10, 10), 2, {"scale_factor": 2.05}),  # 10 -> 20: the nearest kernel shifts by one bit here
    ((31, 23), 4, {"size": (97, 60)}),
]


@pytest.mark.parametrize("anchor", list(INTERPOLATE_MODE))
@pytest.mark.parametrize("style", ["lp", "pl"])
@pytest.mark.parametrize(("hw", "scale", "call"), ODD_CASES)
def test_zero_offsets_equal_interpolate_at_odd_sizes(
    anchor: str, style: str, hw: tuple, scale: int, call: dict
) -> None:
    channels = 4 * scale * scale
    module = DySample(channels, scale, style, 2, dyscope=True, anchor=anchor, offset_init_std=0.0, positions="exact")
    with torch.no_grad():
        module.scope.weight.normal_()  # the scope does not matter while the offsets are zero
    x = torch.randn(2, channels, *hw)
    expected = F.interpolate(x, **(call or {"scale_factor": scale}), **INTERPOLATE_MODE[anchor])
    with torch.no_grad():
        out = module(x, **call)
    assert out.shape == expected.shape
    if anchor == "nearest":
        assert torch.equal(out, expected)
    else:
        assert (out - expected).abs().max().item() <= 2e-7 * x.abs().max().item()


@pytest.mark.parametrize("sampler", ["sparse", "reference"])
@pytest.mark.parametrize("anchor", list(INTERPOLATE_MODE))
def test_both_samplers_are_exact_at_zero_offsets(sampler: str, anchor: str) -> None:
    for (height, width), scale, call in ODD_CASES:
        x = torch.randn(1, 8, height, width)
        offset = torch.zeros(1, 2 * 2 * scale * scale, height, width)
        out = dysample_sample(x, offset, scale, 2, anchor=anchor, sampler=sampler, positions="exact", **call)
        expected = F.interpolate(x, **(call or {"scale_factor": scale}), **INTERPOLATE_MODE[anchor])
        if anchor == "nearest":
            assert torch.equal(out, expected), call
        else:
            assert (out - expected).abs().max().item() <= 2e-7 * x.abs().max().item(), call


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("scale", "call"), [(2, {}), (2, {"size": (25, 19)}), (3, {"scale_factor": 2.5})])
def test_sparse_sampler_equals_the_reference_forward_and_gradients(dtype: torch.dtype, scale: int, call: dict) -> None:
    """Offsets of several pixels: taps outside the input clamp to the border (duplicate columns, zero weights)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 11, 9, dtype=dtype, generator=generator)
    weight = torch.randn(2 * 2 * scale * scale, 16, 1, 1, dtype=dtype, generator=generator) * 2
    bias = torch.randn(2 * 2 * scale * scale, dtype=dtype, generator=generator) * 2
    scope = torch.randn(2 * 2 * scale * scale, 16, 1, 1, dtype=dtype, generator=generator)
    upstream = None
    results = {}
    for sampler in ("sparse", "reference"):
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias, scope)]
        out = dysample(
            leaves[0], leaves[1], leaves[2], leaves[3], scale, "lp", 2, **call, sampler=sampler, positions="exact"
        )
        if upstream is None:
            upstream = torch.randn(out.shape, dtype=dtype, generator=generator)  # dense, not .sum()
        out.backward(upstream)
        results[sampler] = (out.detach(), *(t.grad for t in leaves))
    for fast, ref in zip(results["sparse"], results["reference"]):
        torch.testing.assert_close(fast, ref, rtol=0, atol=8 * torch.finfo(dtype).eps * ref.abs().max().item())
    # The forward to float rounding of its four-term sums: MKL's sparse product picks its summation
    # order by the processor (bit for bit on AVX2 machines, not on AVX-512 ones).
    forward_error = (results["sparse"][0] - results["reference"][0]).abs().max().item()
    assert forward_error <= 2 * torch.finfo(dtype).eps * results["reference"][0].abs().max().item()


def test_sparse_bilinear_gradcheck_float64() -> None:
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 12, dtype=torch.float64, generator=generator, requires_grad=True)
    index = torch.randint(0, 12, (3, 7, 4), generator=generator)
    index[0, 0] = torch.tensor([11, 11, 11, 11])  # duplicate taps, as at the border
    weight = torch.rand(3, 7, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: SparseBilinear.apply(f, index, w, 12), (feats, weight))


def test_sparse_bilinear_equals_the_reference_read() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 4, 5, generator=generator)
    index = torch.randint(0, 20, (2 * 3, 8 * 9, 4), generator=generator)
    weight = torch.rand(2 * 3, 8 * 9, 4, generator=generator)
    reference = reference_sample(x, index, weight, 3, 8, 9)
    sparse = SparseBilinear.apply(x.reshape(6, 2, 20), index, weight, 20).view(2, 6, 8, 9)
    # Four-term sums to float rounding: MKL orders them by the processor (bit for bit on AVX2 only).
    assert (sparse - reference).abs().max() <= 2 * torch.finfo(torch.float32).eps * reference.abs().max()


@pytest.mark.parametrize("sampler", ["sparse", "reference"])
def test_gradcheck_float64_through_both_samplers(sampler: str) -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 8, 4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = (torch.randn(2 * 2 * 4, 8, 1, 1, dtype=torch.float64, generator=generator) * 0.2).requires_grad_(True)
    scope = (torch.randn(2 * 2 * 4, 8, 1, 1, dtype=torch.float64, generator=generator) * 0.2).requires_grad_(True)

    def run(x: torch.Tensor, weight: torch.Tensor, scope: torch.Tensor) -> torch.Tensor:
        return dysample(x, weight, None, scope, 2, "lp", 2, size=(7, 9), sampler=sampler, positions="exact")

    assert torch.autograd.gradcheck(run, (x, weight, scope), eps=1e-6, atol=1e-5)


def test_bad_sampler_and_positions_arguments() -> None:
    x = torch.randn(1, 4, 3, 3)
    offset = torch.zeros(1, 2 * 2 * 4, 3, 3)
    with pytest.raises(ValueError, match="unknown sampler 'fast'"):
        dysample_sample(x, offset, 2, 2, sampler="fast")
    with pytest.raises(ValueError, match="unknown positions 'rounded'"):
        DySample(4, groups=2, positions="rounded")
    with pytest.raises(ValueError, match="positions='authors'.*native size"):
        DySample(4, groups=2, positions="authors")(x, size=(5, 5))


def test_gather_sampler_equals_autograd_of_the_reference_bit_for_bit() -> None:
    """The memory-lean gather sampler (off the CPU's default) recomputes the taps in backward: same numbers."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8, 7, 9, generator=generator)
    offset = torch.randn(2, 2 * 2 * 4, 7, 9, generator=generator)
    grad = torch.randn(2, 8, 13, 19, generator=generator)
    results = {}
    for sampler in ("gather", "reference"):
        leaves = [x.clone().requires_grad_(True), offset.clone().requires_grad_(True)]
        out = dysample_sample(*leaves, 2, 2, size=(13, 19), positions="exact", sampler=sampler)
        out.backward(grad)
        results[sampler] = (out.detach(), leaves[0].grad, leaves[1].grad)
    for a, b in zip(results["gather"], results["reference"]):
        assert torch.equal(a, b)


def test_gather_sampler_keeps_no_taps_for_backward() -> None:
    """autograd of the reference keeps tensors 4x the output; the gather sampler keeps its inputs only."""
    x = torch.randn(1, 64, 32, 32, requires_grad=True)
    offset = torch.zeros(1, 2 * 4 * 4, 32, 32, requires_grad=True)
    saved: dict[str, int] = {}
    for sampler in ("gather", "reference"):
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            dysample_sample(x, offset, 2, 4, positions="exact", sampler=sampler)
        saved[sampler] = total
    output_bytes = 64 * 64 * 64 * 4
    assert saved["reference"] >= 4 * output_bytes  # the four taps
    assert saved["gather"] < 2 * output_bytes  # input, tap indices and weights (16 channels a group here)
