"""swap_upsamplers on every segmentation_models_pytorch 0.6 architecture, CNN and transformer encoders."""

from __future__ import annotations

import warnings

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.fx
from swap_checks import check_swap

from dysample_swap.surgery.swap import find_upsamplers, swap_report, swap_upsamplers
from dysample_swap.upsamplers.dysample.module import DySample

CNN = "resnet18"
MIT = "mit_b0"
MOBILEVIT = "tu-mobilevit_xxs"  # UnetPlusPlus and Linknet refuse mit_b0
VIT = "tu-vit_tiny_patch16_224"  # DPT takes only timm ViTs

# (arch, encoder, input size, swapped, skipped, eager-fallback sites); sizes are the smallest the
# architecture accepts comfortably.  Reasons for the skips are asserted in the tests below.
CASES = [
    ("Unet", CNN, 64, 5, 0, 0),
    ("Unet", MIT, 64, 5, 0, 0),
    ("UnetPlusPlus", CNN, 64, 11, 0, 0),
    ("UnetPlusPlus", MOBILEVIT, 64, 11, 0, 0),
    ("MAnet", CNN, 64, 5, 0, 0),
    ("MAnet", MIT, 64, 5, 0, 0),
    ("Linknet", CNN, 64, 0, 0, 0),  # ConvTranspose2d decoder: nothing to swap
    ("Linknet", MOBILEVIT, 64, 0, 0, 0),
    ("FPN", CNN, 64, 9, 1, 0),
    ("FPN", MIT, 64, 9, 1, 0),
    ("PSPNet", CNN, 64, 0, 5, 0),
    ("PSPNet", MIT, 64, 0, 5, 0),
    ("PAN", CNN, 128, 4, 4, 0),  # groups fallback (the default) swaps FPA's two 1-channel x2 steps
    ("PAN", MIT, 128, 4, 4, 0),
    ("DeepLabV3", CNN, 64, 0, 2, 0),
    ("DeepLabV3", MIT, 64, 0, 2, 0),
    ("DeepLabV3Plus", CNN, 64, 1, 2, 0),
    ("DeepLabV3Plus", MIT, 64, 1, 2, 0),
    ("UPerNet", CNN, 64, 6, 6, 0),
    ("UPerNet", MIT, 64, 6, 6, 0),
    ("Segformer", CNN, 64, 3, 3, 3),
    ("Segformer", MIT, 64, 3, 2, 3),
    ("DPT", VIT, 64, 4, 2, 0),
]


def _build(arch: str, encoder: str):
    kwargs = {"dynamic_img_size": True} if arch == "DPT" else {}
    return lambda: getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "encoder", "size", "swapped", "skipped", "fallback"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_smp_architecture(arch: str, encoder: str, size: int, swapped: int, skipped: int, fallback: int) -> None:
    x = torch.rand(1, 3, size, size)
    bigger = torch.rand(1, 3, size + 32, size + 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no upsampling site is eligible" for Linknet/PSPNet/DLV3
        model, report = check_swap(
            _build(arch, encoder),
            (x,),
            other_inputs=(bigger,),
            train_inputs=(torch.rand(2, 3, 2 * size, 2 * size),),
            swapped=swapped,
            skipped=skipped,
            fallback=fallback,
        )
    for site in report.skipped:
        assert site.reason, site
    finals = [s for s in report.sites if "final" in s.flags]
    assert all(s.action == "skip" and "final logits" in s.reason for s in finals)
    assert all(s.path.startswith("decoder") for s in report.swapped), report.table()


def test_fpn_table_matches_the_survey() -> None:
    model = smp.FPN(encoder_name=CNN, encoder_weights=None)
    sites = find_upsamplers(model, torch.rand(1, 3, 64, 64))
    assert [(s.path, s.mode, s.align_corners, s.scale) for s in sites[:4]] == [
        ("decoder.p4", "nearest", None, (2.0, 2.0)),
        ("decoder.p3", "nearest", None, (2.0, 2.0)),
        ("decoder.p2", "nearest", None, (2.0, 2.0)),
        ("decoder.seg_blocks.0.block.0", "bilinear", True, (2.0, 2.0)),
    ]
    head = sites[-1]
    assert (head.path, head.kind, head.function, head.action) == (
        "segmentation_head.1",
        "module",
        "nn.Upsample",
        "skip",
    )
    assert head.source.startswith("nn.Upsample <- segmentation_models_pytorch/base/model.py")


def test_skip_reasons_on_pooling_architectures() -> None:
    with pytest.warns(UserWarning, match="no upsampling site is eligible"):
        psp = find_upsamplers(smp.PSPNet(encoder_name=CNN, encoder_weights=None), torch.rand(1, 3, 128, 128))
    assert [s.reason.split(" ")[0] for s in psp] == [
        "1x1",
        "adaptive-pooled",
        "adaptive-pooled",
        "adaptive-pooled",
        "final",
    ]
    pan = find_upsamplers(
        smp.PAN(encoder_name=CNN, encoder_weights=None), torch.rand(1, 3, 128, 128), groups_fallback=False
    )
    reasons = [s.reason for s in pan if s.action == "skip"]
    assert any("broadcast of pooled context" in r for r in reasons)
    assert any("same-size no-op" in r for r in reasons)
    assert any("not divisible by groups" in r for r in reasons)  # FPA's 1-channel pyramid
    upernet = find_upsamplers(smp.UPerNet(encoder_name=CNN, encoder_weights=None), torch.rand(1, 3, 64, 64))
    assert sum("pooled" in s.reason for s in upernet) == 4


def test_segformer_decoder_uses_the_eager_fallback_and_says_so() -> None:
    model = smp.Segformer(encoder_name=MIT, encoder_weights=None).eval()
    swap_upsamplers(model, "dysample", torch.rand(1, 3, 64, 64), verbose=False)
    report = swap_report(model)
    assert {s.method for s in report.swapped} == {"eager fallback"}
    assert report.table().count("[eager fallback: fx failed: TraceError: Proxy object cannot be iterated.") == 3
    assert isinstance(model.decoder, smp.decoders.segformer.decoder.SegformerDecoder)


def test_groups_fallback_swaps_the_one_channel_pan_pyramid() -> None:
    model = smp.PAN(encoder_name=CNN, encoder_weights=None)
    sites = find_upsamplers(model, torch.rand(1, 3, 128, 128))
    pyramid = [s for s in sites if s.path == "decoder.fpa" and s.in_channels == 1]
    assert len(pyramid) == 3 and not any("divisible" in s.reason for s in pyramid)
    swapped = [s for s in pyramid if s.input_shape[2:] != (1, 1)]
    assert [(s.action, s.groups, s.groups_note) for s in swapped] == [("swap", 1, "groups 4 -> 1 (1 channels)")] * 2


def test_swapped_unet_still_traces_with_fx() -> None:
    model = smp.Unet(encoder_name=CNN, encoder_weights=None, requires_divisible_input_shape=False).eval()
    torch.fx.symbolic_trace(model)  # the original traces as a whole
    swap_upsamplers(model, "dysample", torch.rand(1, 3, 64, 64), verbose=False)
    traced = torch.fx.symbolic_trace(model)
    calls = [n for n in traced.graph.nodes if n.op == "call_function" and "dysample" in str(n.target)]
    assert len(calls) == 5
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "encoder"), [("FPN", CNN), ("Segformer", MIT)], ids=["fx-rewrite", "eager-fallback"])
def test_swapped_model_exports_with_torch_export(arch: str, encoder: str) -> None:
    model = getattr(smp, arch)(encoder_name=encoder, encoder_weights=None).eval()
    swap_upsamplers(model, "dysample+", torch.rand(1, 3, 64, 64), verbose=False)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # move the offsets so the DySample calls matter to the output
        at_swap_time = model(x)
        for module in model.modules():
            if isinstance(module, DySample):
                module.offset.bias.fill_(0.3)
        assert not torch.allclose(model(x), at_swap_time, atol=1e-3)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-5)
