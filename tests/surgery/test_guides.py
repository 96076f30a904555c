"""Guide discovery and guided swaps: each upsampling's fusion partner at the output resolution is observed, and a
guided upsampler (FADE, SAPA, A2U, IndexNet, FreqFusion) is called with it, or the site is skipped with the reason."""

from __future__ import annotations

import copy
import pickle

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from dysample_swap import find_upsamplers, load_swapped, save_swapped, swap_report, swap_upsamplers, unswap
from dysample_swap.surgery.policy import NO_GUIDE
from dysample_swap.surgery.sites import discover, discovery_context

X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
GUIDED = ["fade", "sapa", "a2u", "indexnet", "freqfusion"]


def _sites(model: nn.Module, *inputs):
    with discovery_context(model):
        return discover(model, inputs).sites


def _new_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    report = swap_report(model)
    prefixes = tuple(
        (d.replacement if d.owner == "<root>" else f"{d.owner}.{d.replacement}") + "." for d in report.swapped
    )
    return {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}


def test_discovery_finds_the_lateral_and_skip_each_upsampling_is_fused_with() -> None:
    fpn = smp.FPN("resnet18", encoder_weights=None)
    found = {s.path: s for s in _sites(fpn, X[:1]) if s.fusion}
    assert found["decoder.p4"].fusion == "add"
    assert found["decoder.p4"].guide_producer == "decoder.p4.skip_conv"  # computed after the upsampling
    assert found["decoder.p4"].guide_shape == found["decoder.p4"].output_shape
    unet = smp.Unet("resnet18", encoder_weights=None)
    skips = [(s.path, s.fusion, s.guide_producer, s.guide_shape[1]) for s in _sites(unet, X[:1]) if s.fusion]
    assert skips == [
        ("decoder.blocks.0", "cat", "encoder.layer3", 256),
        ("decoder.blocks.1", "cat", "encoder.layer2", 128),
        ("decoder.blocks.2", "cat", "encoder.layer1", 64),
        ("decoder.blocks.3", "cat", "encoder.relu", 64),
    ]
    last = [s for s in _sites(unet, X[:1]) if s.path == "decoder.blocks.4"][0]
    assert last.fusion is None and last.guide_shape is None and last.guide_producer is None


@pytest.mark.parametrize("arch", ["UnetPlusPlus", "MAnet"])
def test_the_skips_of_unet_plus_plus_and_manet_are_guides_and_a_guided_swap_trains(arch: str) -> None:
    """MAnet multiplies the upsampled tensor by an attention map before it concatenates the skip: the guide is
    found through that product, and the guided module is called with the block's ``skip`` argument."""
    torch.manual_seed(0)
    model = getattr(smp, arch)("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(64, 32, 32))
    fused = [s for s in _sites(model, X[:1]) if s.fusion is not None]
    assert fused and all(s.guide_shape[2:] == s.output_shape[2:] for s in fused)
    assert all(s.guide_arg == ("skip" if arch == "MAnet" else None) for s in fused)
    swap_upsamplers(model, "fade", (X[:1],), verbose=False)
    assert len(swap_report(model).swapped) >= 2
    model.train()(X).mean().backward()
    new = _new_parameters(model)
    assert new and all(p.grad is not None for p in new.values())


def test_discovery_finds_the_fpn_laterals_of_a_torchvision_detector() -> None:
    detector = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=128, max_size=128).eval()
    sites = [s for s in _sites(detector, [torch.rand(3, 128, 128)]) if s.path == "backbone.fpn"]
    assert [s.fusion for s in sites] == ["add"] * 3
    assert [s.guide_producer.startswith(f"backbone.fpn.inner_blocks.{i}") for i, s in zip((2, 1, 0), sites)] == [
        True
    ] * 3
    assert [s.guide_shape[2:] for s in sites] == [s.output_shape[2:] for s in sites]


class NoFusion(nn.Module):
    """Upsamples and convolves: nothing is fused with the upsampled tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.head = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.interpolate(self.enc(x), scale_factor=2.0, mode="bilinear"))


class Lateral(nn.Module):
    """Upsamples; the caller adds the lateral (the fusion is not in this module's forward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class FusedByCaller(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.enc2 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.up = Lateral()
        self.head = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        return self.head(self.up(self.enc2(skip)) + skip)


def test_a_guided_variant_skips_sites_without_a_guide_and_says_why() -> None:
    decisions = find_upsamplers(NoFusion(), (X,), variant="fade")
    assert [(d.action, d.reason) for d in decisions] == [("skip", NO_GUIDE)]
    assert [d.action for d in find_upsamplers(NoFusion(), (X,), variant="dysample")] == ["swap"]  # unguided: fine


def test_a_fusion_in_the_caller_is_seen_but_cannot_be_routed() -> None:
    (decision,) = find_upsamplers(FusedByCaller(), (X,), variant="sapa")
    assert decision.fusion == "add" and decision.guide_producer == "enc1"
    assert decision.action == "skip" and "not the first use of the result in up's forward" in decision.reason


@pytest.mark.parametrize("variant", GUIDED)
@pytest.mark.parametrize("arch", ["FPN", "Unet"])
def test_a_guided_swap_of_smp_trains_every_new_parameter(arch: str, variant: str) -> None:
    torch.manual_seed(0)
    model = getattr(smp, arch)("resnet18", encoder_weights=None, classes=3)
    swap_upsamplers(model, variant, (X[:1],), verbose=False)
    report = swap_report(model)
    guided_sites = [s for s in report.sites if s.fusion is not None]
    assert [d.path for d in report.swapped] == [s.path for s in guided_sites if s.action == "swap"]
    assert len(report.swapped) == (3 if arch == "FPN" else 4)
    assert all(d.reason == NO_GUIDE for d in report.skipped if d.fusion is None and "final" not in d.flags)
    new = _new_parameters(model)
    assert new and sum(p.numel() for p in new.values()) == report.parameters_added
    out = model.train()(X)
    assert out.shape == (2, 3, 64, 64)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new.values()), [
        n for n, p in new.items() if p.grad is None or p.grad.abs().sum() == 0
    ]


def test_a_guided_swap_of_upernet_and_of_a_faster_rcnn_fpn_trains() -> None:
    torch.manual_seed(0)
    upernet = smp.UPerNet("resnet18", encoder_weights=None, classes=3)
    swap_upsamplers(upernet, "sapa", (X[:1],), verbose=False)
    assert {d.path for d in swap_report(upernet).swapped} >= {f"decoder.fpn_lateral_blocks.{i}" for i in range(3)}
    upernet.train()(X).mean().backward()
    assert all(p.grad is not None for p in _new_parameters(upernet).values())

    detector = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=128, max_size=128)
    swap_upsamplers(detector, "fade", ([torch.rand(3, 128, 128)],), verbose=False)
    assert [d.path for d in swap_report(detector).swapped] == ["backbone.fpn"] * 3
    detector.train()
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([1])}
    losses = detector([torch.rand(3, 128, 128)], [target])
    sum(losses.values()).backward()
    new = _new_parameters(detector)
    assert new and all(p.grad is not None for p in new.values())


def test_a_guided_swap_round_trips_through_state_dict_pickle_save_and_unswap(tmp_path) -> None:
    torch.manual_seed(0)
    plain = smp.Unet("resnet18", encoder_weights=None, classes=3).eval()
    with torch.no_grad():
        before = plain(X)
    model = swap_upsamplers(copy.deepcopy(plain), "fade", (X[:1],), verbose=False).eval()
    with torch.no_grad():
        after = model(X)
        assert torch.equal(pickle.loads(pickle.dumps(model))(X), after)
    path = tmp_path / "unet_fade.pt"
    save_swapped(model, path)
    reloaded = load_swapped(path, model=smp.Unet("resnet18", encoder_weights=None, classes=3)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(X), after, rtol=0, atol=0)
    fresh = swap_upsamplers(smp.Unet("resnet18", encoder_weights=None, classes=3), "fade", (X[:1],), verbose=False)
    fresh.load_state_dict(model.state_dict(), strict=True)
    unswap(model)
    with torch.no_grad():
        torch.testing.assert_close(model(X), before, rtol=0, atol=0)


class OddChannels(nn.Module):
    """A 48-channel upsampling fused with a 48-channel skip."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 48, 3, stride=2, padding=1)
        self.enc2 = nn.Conv2d(48, 48, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        return F.interpolate(self.enc2(skip), scale_factor=2.0) + skip


def test_channels_an_upsampler_cannot_take_are_a_skip_with_the_reason() -> None:
    (sapa,) = find_upsamplers(OddChannels(), (X,), variant="sapa")
    assert sapa.action == "skip" and sapa.reason == (
        "sapa needs channels that are a multiple of 32 (its GroupNorm), not 48"
    )
    (fade,) = find_upsamplers(OddChannels(), (X,), variant="fade")
    assert fade.action == "swap" and fade.method == "fx"


def _small_unet() -> nn.Module:
    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(64, 32, 32), classes=2)


@pytest.mark.parametrize("variant", GUIDED)
def test_torch_compile_of_a_guided_swap_matches_eager_at_another_size(variant: str) -> None:
    torch.manual_seed(0)
    model = swap_upsamplers(_small_unet(), variant, (X[:1],), verbose=False).eval()
    other = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(other), model(other), rtol=1e-4, atol=1e-4)


def test_onnx_export_of_a_guided_swap(tmp_path) -> None:
    """IndexNet exports with dynamic height and width; FADE's traced reassembly keeps the example's sizes, and says so."""
    import onnxruntime as ort

    x, other = X[:1], torch.rand(1, 3, 96, 64)
    axes = {"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}}
    torch.manual_seed(0)
    indexnet = swap_upsamplers(_small_unet(), "indexnet", (x,), verbose=False).eval()
    torch.onnx.export(
        indexnet, (x,), tmp_path / "i.onnx", dynamo=False, input_names=["x"], output_names=["y"], dynamic_axes=axes
    )
    got = ort.InferenceSession(str(tmp_path / "i.onnx")).run(None, {"x": other.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), indexnet(other), rtol=1e-4, atol=1e-4)
    fade = swap_upsamplers(_small_unet(), "fade", (x,), verbose=False).eval()
    with pytest.warns(UserWarning, match=r"FADE: a traced graph .* keeps the example's height and width"):
        torch.onnx.export(
            fade, (x,), tmp_path / "f.onnx", dynamo=False, input_names=["x"], output_names=["y"], dynamic_axes=axes
        )


def test_a_guided_swap_of_smp_round_trips_through_save_pretrained(tmp_path) -> None:
    import dysample_swap

    torch.manual_seed(0)
    model = swap_upsamplers(_small_unet(), "sapa", (X[:1],), verbose=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(tmp_path)
    reloaded = dysample_swap.from_pretrained(tmp_path).eval()
    assert [d.path for d in swap_report(reloaded).swapped] == [d.path for d in swap_report(model).swapped]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(X), model(X), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fade", "a2u"])
def test_the_dynamo_onnx_export_of_a_guided_swap_keeps_sizes_dynamic(variant: str, tmp_path) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = swap_upsamplers(_small_unet(), variant, (X[:1],), verbose=False).eval()
    h, w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    program = torch.onnx.export(model, (X[:1],), dynamo=True, dynamic_shapes={"x": {2: 32 * h, 3: 32 * w}})
    program.save(str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    other = torch.rand(1, 3, 96, 64)
    got = session.run(None, {session.get_inputs()[0].name: other.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(other), rtol=1e-4, atol=1e-4)
