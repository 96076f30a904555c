"""swap_upsamplers on torchvision 0.29 segmentation and detection models (random weights)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision
from swap_checks import check_swap
from torchvision.models import detection, segmentation

from dysample_swap.surgery.swap import find_upsamplers, swap_report, swap_upsamplers

SMALL = {"min_size": 128, "max_size": 160, "box_detections_per_img": 5}


def _images(*sizes: tuple[int, int]) -> tuple[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return ([torch.rand(3, h, w, generator=generator) for h, w in sizes],)


def _backbone_features(model: nn.Module, inputs: tuple[Any, ...]) -> Any:
    return model.backbone(torch.stack(inputs[0]))


def _targets(kind: str) -> list[dict[str, torch.Tensor]]:
    target = {"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([1])}
    if kind == "mask":
        masks = torch.zeros(1, 128, 160, dtype=torch.uint8)
        masks[0, 20:90, 10:70] = 1
        target["masks"] = masks
    if kind == "keypoint":
        target["keypoints"] = torch.tensor([[[20.0 + 2 * i, 30.0 + 3 * i, 1.0] for i in range(17)]])
    return [target]


def _detection_loss(kind: str):
    def loss(model: nn.Module, inputs: tuple[Any, ...]) -> torch.Tensor:
        return sum(model(inputs[0], _targets(kind)).values())

    return loss


DETECTORS = [
    # (builder, swapped, skipped, target kind). Mask and Keypoint R-CNN keep every score
    # (box_score_thresh=0), so they always return box_detections_per_img = 5 detections: one skipped
    # mask-pasting / keypoint-decoding call each, plus the input resize. Keypoint R-CNN's 17-channel
    # heatmap x2 swaps with groups 4 -> 1 (the groups fallback default).
    ("fasterrcnn_resnet50_fpn", 3, 1, "box"),
    ("fasterrcnn_mobilenet_v3_large_fpn", 0, 2, "box"),
    ("retinanet_resnet50_fpn", 2, 1, "box"),
    ("fcos_resnet50_fpn", 2, 1, "box"),
    ("maskrcnn_resnet50_fpn", 3, 6, "mask"),
    ("keypointrcnn_resnet50_fpn", 4, 6, "keypoint"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "swapped", "skipped", "kind"), DETECTORS, ids=[d[0] for d in DETECTORS])
def test_detector(name: str, swapped: int, skipped: int, kind: str) -> None:
    def build() -> nn.Module:
        every_score = {"box_score_thresh": 0.0} if kind in ("mask", "keypoint") else {}
        return getattr(detection, name)(weights=None, weights_backbone=None, **SMALL, **every_score)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mobilenet FPN: nothing eligible
        model, report = check_swap(
            build,
            _images((128, 160)),
            other_inputs=_images((97, 131)),
            swapped=swapped,
            skipped=skipped,
            output=_backbone_features,
            loss=_detection_loss(kind),
        )
    reasons = [s.reason for s in report.skipped]
    assert reasons[0].startswith("resizes the network input"), report.table()
    assert report.skipped[0].path == "transform"
    assert all(s.path.startswith("backbone.fpn") or kind == "keypoint" for s in report.swapped)
    assert model.backbone.out_channels == 256 and isinstance(model.backbone.fpn, torchvision.ops.FeaturePyramidNetwork)
    if kind == "mask":
        pasting = [s for s in report.skipped if s.helper == "paste_mask_in_image"]
        assert len(pasting) == 5 and all("post-processing helper" in s.reason for s in pasting)
    if kind == "keypoint":
        predictor = [s for s in report.swapped if s.path == "roi_heads.keypoint_predictor"]
        assert [(s.in_channels, s.groups) for s in predictor] == [(17, 1)]
        decoding = [s for s in report.skipped if s.path == "roi_heads" and s.helper == "heatmaps_to_keypoints"]
        assert len(decoding) == 5
    model.eval()
    with torch.no_grad():
        detections = model(_images((128, 160), (97, 131))[0])
    assert len(detections) == 2 and {"boxes", "labels", "scores"} <= set(detections[0])


def test_fpn_rewrite_keeps_the_backbone_traceable() -> None:
    model = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **SMALL).eval()
    swap_upsamplers(model, "dysample", verbose=False)  # default example input: one 3x128x160 image
    traced = torch.fx.symbolic_trace(model.backbone)
    samplers = [n for n in traced.graph.nodes if n.op == "call_function" and "dysample" in str(n.target)]
    assert len(samplers) == 3
    x = torch.rand(1, 3, 75, 99)
    with torch.no_grad():
        expected = model.backbone(x)
        for key, value in traced(x).items():
            assert torch.allclose(value, expected[key], atol=1e-6)


def test_keypoint_predictor_is_skipped_without_groups_fallback() -> None:
    model = detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None, **SMALL)
    sites = find_upsamplers(model, _images((128, 160)), groups_fallback=False)
    predictor = [s for s in sites if s.path == "roi_heads.keypoint_predictor"]
    assert [(s.action, s.in_channels) for s in predictor] == [("skip", 17)]
    assert "not divisible by groups=4" in predictor[0].reason


SEGMENTERS = [
    ("fcn_resnet50", 0, 1),
    ("deeplabv3_resnet50", 0, 2),
    ("deeplabv3_mobilenet_v3_large", 0, 2),
    ("lraspp_mobilenet_v3_large", 1, 1),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "swapped", "skipped"), SEGMENTERS, ids=[s[0] for s in SEGMENTERS])
def test_segmenter(name: str, swapped: int, skipped: int) -> None:
    def build() -> nn.Module:
        return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=4)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fcn / deeplabv3: nothing eligible by default
        _, report = check_swap(
            build,
            (torch.rand(1, 3, 64, 64),),
            other_inputs=(torch.rand(1, 3, 75, 61),),
            train_inputs=(torch.rand(2, 3, 128, 128),),
            swapped=swapped,
            skipped=skipped,
        )
    final = report.sites[-1]
    assert (final.path, final.action) == ("<root>", "skip") and "final logits" in final.reason


def test_swap_final_rewrites_the_root_and_it_still_traces() -> None:
    def build() -> nn.Module:
        return segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=8, aux_loss=False)

    model, report = check_swap(
        build,
        (torch.rand(1, 3, 64, 64),),
        other_inputs=(torch.rand(1, 3, 75, 61),),
        train_inputs=(torch.rand(2, 3, 128, 128),),
        swapped=1,
        skipped=0,
        swap_final=True,
    )
    assert isinstance(model, segmentation.FCN) and report.swapped[0].owner == "<root>"
    assert report.swapped[0].upsampler_scale == 8
    traced = torch.fx.symbolic_trace(model)
    assert any("dysample" in str(n.target) for n in traced.graph.nodes)
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(traced(x)["out"], model(x)["out"], atol=1e-5)


def test_detector_discovery_restores_transform_and_mode() -> None:
    model = detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None).train()
    swap_upsamplers(model, verbose=False)
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333
    assert model.training and all(m.training for m in model.modules())
    assert len(swap_report(model).swapped) == 2
