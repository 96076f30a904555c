"""IndexNet (HIN): the authors' reference data (outputs, input and parameter gradients), sizes, training, state."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

import pytest
import reference
import torch
import torch.nn.functional as F

from dysample_swap.upsamplers.indexnet import IndexNet, holistic_index, indexed_upsample

REF = reference.Reference("indexnet")
META = REF.meta


def _build(inp: int, use_nonlinear: bool, use_context: bool, batch_norm: str) -> IndexNet:
    """The data's configuration (``batch_norm`` is recorded as a string: nn.BatchNorm2d, IndexNet's default)."""
    return IndexNet(inp, use_nonlinear, use_context)


def _forward(up: IndexNet, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The data's argument order is (guide, x), ours (x, guide); the index maps are outputs too."""
    idx_en, idx_de = up.index_maps(inputs["guide"])
    return {"output.out": up(inputs["x"], inputs["guide"]), "output.idx_de": idx_de, "output.idx_en": idx_en}


@pytest.mark.parametrize("device", reference.DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_outputs_input_and_parameter_gradients(dtype: torch.dtype, device: str) -> None:
    REF.assert_matches(REF.run(REF.module(_build, dtype), _forward, dtype, device), dtype)


def test_parameter_count_at_256_is_the_readme_number() -> None:
    assert sum(p.numel() for p in IndexNet(256).parameters()) == 2_100_224 == META["num_params_at_C256"]
    assert sum(p.numel() for p in IndexNet(32).parameters()) == META["num_params"]
    variants = META["num_params_at_C256_all_HIN_variants"]
    for nonlinear in (False, True):
        for context in (False, True):
            count = sum(p.numel() for p in IndexNet(256, nonlinear, context).parameters())
            assert count == variants[f"use_nonlinear={nonlinear},use_context={context}"]


def test_state_dict_names_are_the_authors() -> None:
    assert set(IndexNet(32).state_dict()) == REF.names("state_dict")
    assert set(IndexNet(8, use_nonlinear=False).state_dict()) == {"indexnet.weight"}


def test_authors_initialisation() -> None:
    torch.manual_seed(0)
    up = IndexNet(64)
    conv, norm, last = up.indexnet[0], up.indexnet[1], up.indexnet[3]
    assert abs(conv.weight.std().item() - math.sqrt(2 / (4 * 4 * 128))) < 0.05 * math.sqrt(2 / (4 * 4 * 128))
    assert abs(last.weight.std().item() - math.sqrt(2 / 4)) < 0.1 * math.sqrt(2 / 4)
    assert torch.equal(norm.weight, torch.ones(128)) and torch.equal(norm.bias, torch.zeros(128))


def test_functional_core_by_hand() -> None:
    logits = torch.randn(1, 4, 2, 3)
    idx_en, idx_de = holistic_index(logits)
    y = torch.sigmoid(logits)
    for a in range(2):
        for b in range(2):
            assert torch.equal(idx_de[0, 0, a::2, b::2], y[0, 2 * a + b])
    torch.testing.assert_close(idx_en.view(1, 1, 2, 2, 3, 2).sum((3, 5)), torch.ones(1, 1, 2, 3))
    x = torch.randn(1, 3, 2, 3)
    out = indexed_upsample(x, idx_de)
    for i in range(4):
        for j in range(6):
            torch.testing.assert_close(out[0, :, i, j], idx_de[0, 0, i, j] * x[0, :, i // 2, j // 2], atol=0, rtol=0)


@pytest.mark.parametrize("device", reference.DEVICES)
def test_odd_sizes_and_non_integer_factors(device: str) -> None:
    reference.assert_any_output_size(partial(IndexNet, 8), 3, 8, device=device)


def test_a_training_step_gives_every_parameter_a_nonzero_gradient() -> None:
    torch.manual_seed(0)
    up = IndexNet(8).train()
    x, guide = torch.randn(2, 8, 6, 5), torch.randn(2, 8, 12, 10)
    optimizer = torch.optim.SGD(up.parameters(), lr=0.01)
    up(x, guide).square().mean().backward()
    for name, p in up.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    before = {k: v.clone() for k, v in up.state_dict().items()}
    optimizer.step()
    assert all(not torch.equal(before[name], p) for name, p in up.named_parameters())


def test_state_dict_pickle_and_deepcopy_round_trips() -> None:
    x, guide = REF("input.x.bin"), REF("input.guide.bin")
    reference.assert_round_trips(REF.module(_build), IndexNet(32), lambda up: up(x, guide))


def test_bad_inputs_raise_value_errors_naming_the_fix() -> None:
    up = IndexNet(8)
    reference.assert_guided_input_errors(up, torch.randn(2, 8, 4, 4), torch.randn(2, 8, 8, 8), x_channels_checked=False)
    with pytest.raises(ValueError, match="needs a norm layer"):
        IndexNet(8, batch_norm=None)
    with pytest.raises(ValueError, match="default size or a default scale_factor"):
        IndexNet(8, size=4, scale_factor=2)


def test_no_tensor_larger_than_the_output_in_forward_and_backward() -> None:
    up = IndexNet(64).train()
    x = torch.randn(1, 64, 32, 32, requires_grad=True)
    guide = torch.randn(1, 64, 63, 63, requires_grad=True)  # resized to 64x64 first
    with reference.LargestTensor() as probe:
        out = up(x, guide)
        out.square().sum().backward()
    assert out.shape == (1, 64, 64, 64)
    assert probe.largest <= out.numel()  # (the 4x4 conv's weight, 131,072, is the next largest)


def test_guide_is_resized_bilinearly_only_when_it_differs() -> None:
    """A 25x25 guide for a 13x13 input acts as its bilinear resize to 26x26 (checked on the index maps)."""
    up = IndexNet(4).eval()
    x, guide = torch.randn(1, 4, 13, 13), torch.randn(1, 4, 25, 25)
    resized = F.interpolate(guide, size=(26, 26), mode="bilinear", align_corners=False)
    assert torch.equal(up(x, guide), up(x, resized))
