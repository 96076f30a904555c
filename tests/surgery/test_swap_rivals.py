"""The rival upsamplers through the same surgery (swap_upsamplers(model, variant=NAME)), and the paper's
way of swapping large ratios: x2 chains, with Table 4's parameter counts on SegFormer."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
from swap_checks import assert_close
from test_swap_user_models import SequentialDecoder, X

from dysample_swap import swap_report, swap_upsamplers
from dysample_swap.upsamplers import UpsamplerChain


def _fpn() -> nn.Module:
    return smp.FPN(
        "resnet18", encoder_weights=None, encoder_depth=3, decoder_segmentation_channels=32, upsampling=4, classes=2
    )


def _unet() -> nn.Module:
    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=2)


def _segformer() -> nn.Module:  # the eager fallback, and x4 / x8 sites as chains
    return smp.Segformer("mit_b0", encoder_weights=None, decoder_segmentation_channels=32, classes=2)


MODELS = [
    ("user", SequentialDecoder, X, torch.rand(1, 3, 40, 56)),
    ("smp-fpn", _fpn, torch.rand(1, 3, 64, 64), torch.rand(1, 3, 96, 64)),
    ("smp-unet", _unet, torch.rand(1, 3, 64, 64), torch.rand(1, 3, 96, 64)),
    ("smp-segformer", _segformer, torch.rand(1, 3, 64, 64), torch.rand(1, 3, 96, 64)),
]
RIVALS = ["carafe", "deconv", "pixelshuffle", "bilinear"]


@pytest.mark.parametrize("rival", RIVALS)
@pytest.mark.parametrize(("name", "build", "x", "other"), MODELS, ids=[m[0] for m in MODELS])
def test_every_rival_swaps_the_same_sites_trains_and_round_trips(
    name: str, build: type[nn.Module], x: torch.Tensor, other: torch.Tensor, rival: str
) -> None:
    torch.manual_seed(0)
    reference = build().eval()
    dysample_sites = [s.path for s in swap_report(swap_upsamplers(build(), "dysample", x, verbose=False)).swapped]
    model = build().eval()
    model.load_state_dict(reference.state_dict())
    swap_upsamplers(model, rival, x, verbose=False)
    report = swap_report(model)
    assert [s.path for s in report.swapped] == dysample_sites and report.variant == rival
    added = sum(p.numel() for n, p in model.named_parameters() if n not in reference.state_dict())
    assert report.parameters_added == added and (added > 0) == (rival != "bilinear")
    with torch.no_grad():
        out, expected = model(other), reference(other)  # any size
    assert out.shape == expected.shape
    assert all(("changes the function at swap time" in s.reason) != s.exact for s in report.swapped)
    exact = [s.exact for s in report.swapped]
    if rival == "carafe":
        assert not any(exact)
    elif rival == "bilinear":
        assert all(exact)
    else:  # deconv / pixel shuffle start as nearest or plain bilinear, never as align_corners=True
        assert all(s.exact for s in report.swapped if s.mode == "nearest")
        assert not any(s.exact for s in report.swapped if s.align_corners)
    if all(exact):
        assert_close(out, expected)
    else:
        assert not torch.allclose(out, expected, atol=1e-3)
    new = {n: p for n, p in model.named_parameters() if n not in reference.state_dict()}
    model.train()
    for _ in range(2):
        model.zero_grad()
        model(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new.values()), [
        n for n, p in new.items() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    fresh = swap_upsamplers(build(), rival, x, verbose=False)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(other), model.eval()(other))


def _weights_without_biases(model: nn.Module, reference_keys: set[str]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n not in reference_keys and not n.endswith(".bias"))


# The paper's Table 4 (SegFormer-B1, 256-channel decoder, 3 + 2 + 1 = 6 x2 stages), counted as the paper
# does: without biases.
TABLE_4 = {"dysample": 49_152, "dysample+": 98_304, "dysample-s": 6_144, "dysample-s+": 12_288}


@pytest.mark.slow
@pytest.mark.parametrize("variant", TABLE_4)
def test_smp_segformer_chains_match_the_papers_parameter_counts(variant: str) -> None:
    def build() -> nn.Module:
        return smp.Segformer("mit_b1", encoder_weights=None, decoder_segmentation_channels=256, classes=4).eval()

    keys = set(build().state_dict())
    model = swap_upsamplers(build(), variant, torch.rand(1, 3, 64, 64), verbose=False)
    report = swap_report(model)
    assert sorted(s.stages for s in report.swapped) == [1, 2, 3]  # the x2, x4 and x8 sites
    assert sum(isinstance(m, UpsamplerChain) for m in model.modules()) == 2
    assert _weights_without_biases(model, keys) == TABLE_4[variant]
    single = swap_upsamplers(build(), variant, torch.rand(1, 3, 64, 64), verbose=False, chain=False)
    assert [s.stages for s in swap_report(single).swapped] == [1, 1, 1]
    assert _weights_without_biases(single, keys) != TABLE_4[variant]  # one x4 and one x8 module instead


@pytest.mark.slow
def test_transformers_segformer_chains_match_the_papers_count() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(
        num_encoder_blocks=4,
        depths=[1, 1, 1, 1],
        hidden_sizes=[16, 32, 40, 64],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=256,
        num_labels=3,
    )
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    keys = set(model.state_dict())
    swap_upsamplers(model, "dysample", torch.rand(1, 3, 64, 64), verbose=False)
    report = swap_report(model)
    assert sorted(s.stages for s in report.swapped) == [1, 2, 3]
    assert _weights_without_biases(model, keys) == TABLE_4["dysample"]
    assert any("changes the function at swap time" in s.reason for s in report.swapped)  # chained bilinear
