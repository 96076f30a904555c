"""swap_upsamplers on a timm ``features_only`` backbone with a small FPN-style decoder."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from swap_checks import check_swap

from dysample_swap.surgery.swap import find_upsamplers


class TimmFPN(nn.Module):
    """timm ResNet-18 features (strides 4..32) -> 64-channel FPN -> logits at 1/4, upsampled x4."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
        self.lateral = nn.ModuleList(nn.Conv2d(c, 64, 1) for c in self.backbone.feature_info.channels())
        self.smooth = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Conv2d(64, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [lat(f) for lat, f in zip(self.lateral, self.backbone(x))]
        top = feats[-1]
        for feat in reversed(feats[:-1]):
            top = feat + F.interpolate(top, size=feat.shape[-2:], mode="nearest")
        logits = self.head(self.smooth(top))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_timm_features_only_fpn() -> None:
    model, report = check_swap(
        TimmFPN,
        (torch.rand(1, 3, 64, 64),),
        other_inputs=(torch.rand(1, 3, 75, 99),),
        train_inputs=(torch.rand(2, 3, 128, 128),),
        swapped=3,
        skipped=1,
    )
    assert [s.in_channels for s in report.swapped] == [64, 64, 64]
    assert report.skipped[0].reason.startswith("final logits")
    assert isinstance(model.backbone, timm.models.FeatureListNet)
    traced = torch.fx.symbolic_trace(model.eval())
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        assert torch.allclose(traced(x), model(x), atol=1e-5)


def test_timm_backbone_alone_has_nothing_to_swap() -> None:
    backbone = timm.create_model("resnet18", pretrained=False, features_only=True)
    with pytest.warns(UserWarning, match=r"no upsampling site is eligible for dysample\+ \(0 found"):
        assert find_upsamplers(backbone, torch.rand(1, 3, 64, 64)) == []
