"""Integers that flow into a rewritten module's forward (sizes, patch grids) stay dynamic: the swapped
model runs at every input size where the original runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dysample_swap import DySample, swap_report, swap_upsamplers


class PatchHead(nn.Module):
    """Like transformers' DPT / Depth Anything heads: the patch grid arrives as integer arguments."""

    def __init__(self, channels: int, patch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 1, 1)
        self.patch = patch

    def forward(self, x: torch.Tensor, patch_height: int, patch_width: int) -> torch.Tensor:
        x = self.conv(x)
        x = F.interpolate(
            x, (int(patch_height * self.patch), int(patch_width * self.patch)), mode="bilinear", align_corners=True
        )
        return self.out(x)


class PatchModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, stride=8)
        self.head = PatchHead(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 8, x.shape[-1] // 8
        return self.head(self.embed(x), h, w)


def test_integer_size_arguments_stay_dynamic() -> None:
    torch.manual_seed(0)
    model = PatchModel().eval()
    swap_upsamplers(model, "dysample+", torch.rand(1, 3, 64, 64), verbose=False, chain=False)  # one exact x8
    (site,) = swap_report(model).swapped
    assert (site.path, site.method) == ("head", "eager fallback")
    assert "would freeze them at the example's values" in site.fx_error and "patch_height=8" in site.fx_error
    reference = PatchModel().eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if "dysample" not in k})
    for size in ((64, 64), (96, 64), (128, 160)):
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            out = model(x)
            assert out.shape == (2, 1, *size)
            assert torch.allclose(out, reference(x), atol=1e-5)  # zero offsets: the original function


def test_the_head_dysample_is_reached_at_every_size() -> None:
    model = swap_upsamplers(PatchModel().eval(), "dysample", torch.rand(1, 3, 64, 64), verbose=False, chain=False)
    calls = []
    dysample = next(m for m in model.modules() if isinstance(m, DySample))
    dysample.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        model(torch.rand(1, 3, 96, 128))
    assert calls == [(96, 128)]


@pytest.mark.slow
def test_depth_anything_head_runs_at_other_sizes() -> None:
    transformers = pytest.importorskip("transformers")
    backbone = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        patch_size=14,
    )
    torch.manual_seed(0)
    model = transformers.DepthAnythingForDepthEstimation(config).eval()
    reference = transformers.DepthAnythingForDepthEstimation(config).eval()
    reference.load_state_dict(model.state_dict())
    swap_upsamplers(model, "dysample+", torch.rand(1, 3, 56, 56), verbose=False)
    report = swap_report(model)
    assert any(s.path == "head" for s in report.swapped), report.table()
    for size in ((56, 56), (84, 84), (112, 140)):
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            out, expected = model(x).predicted_depth, reference(x).predicted_depth
        assert out.shape == expected.shape
        assert (out - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item())
