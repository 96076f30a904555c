"""Panoptic FPN on torchvision's Mask R-CNN: train step, eval outputs, the panoptic merge, and the swap (tiny, CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn as nn

import dysample_swap
from dysample_swap.models import MODELS, PanopticFPN, SemanticFPNHead, merge_panoptic, panoptic_fpn_resnet50_fpn
from dysample_swap.models.panoptic_fpn import _semantic_targets, semantic_loss

TINY: dict[str, Any] = {
    "min_size": 64,
    "max_size": 64,
    "rpn_pre_nms_top_n_train": 40,
    "rpn_post_nms_top_n_train": 20,
    "rpn_pre_nms_top_n_test": 20,
    "rpn_post_nms_top_n_test": 10,
    "rpn_batch_size_per_image": 32,
    "box_batch_size_per_image": 16,
    "box_detections_per_img": 4,
}
THINGS, STUFF = 2, 2  # num_classes = THINGS + 1 = 3


def _model(**kwargs: Any) -> PanopticFPN:
    torch.manual_seed(0)
    return panoptic_fpn_resnet50_fpn(num_classes=THINGS + 1, num_stuff=STUFF, **{**TINY, **kwargs})


def _sample(h: int, w: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    image = torch.rand(3, h, w, generator=generator)
    boxes, masks = [], []
    for _ in range(2):
        x0 = int(torch.randint(0, w // 2, (1,), generator=generator))
        y0 = int(torch.randint(0, h // 2, (1,), generator=generator))
        x1 = x0 + 8 + int(torch.randint(0, w // 2 - 8, (1,), generator=generator))
        y1 = y0 + 8 + int(torch.randint(0, h // 2 - 8, (1,), generator=generator))
        boxes.append([float(x0), float(y0), float(x1), float(y1)])
        mask = torch.zeros(h, w, dtype=torch.uint8)
        mask[y0:y1, x0:x1] = 1
        masks.append(mask)
    semantic = torch.randint(0, STUFF + 1, (h, w), generator=generator)
    semantic[: h // 8] = 255  # an ignored band
    target = {
        "boxes": torch.tensor(boxes),
        "labels": torch.randint(1, THINGS + 1, (2,), generator=generator),
        "masks": torch.stack(masks),
        "semantic": semantic,
    }
    return image, target


def _batch(*sizes: tuple[int, int]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(1)
    images, targets = zip(*(_sample(h, w, generator) for h, w in sizes))
    return list(images), list(targets)


DETECTION_LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def test_registry_and_structure() -> None:
    assert MODELS["panoptic_fpn_resnet50_fpn"] is panoptic_fpn_resnet50_fpn
    model = _model()
    assert isinstance(model, PanopticFPN) and isinstance(model.semantic_head, SemanticFPNHead)
    assert (model.num_things, model.num_stuff) == (THINGS, STUFF)
    assert type(model.detector.backbone.fpn).__name__ == "FeaturePyramidNetwork"
    assert model.transform is model.detector.transform
    upsamples = [m for m in model.semantic_head.modules() if isinstance(m, nn.Upsample)]
    assert [m.scale_factor for m in upsamples] == [2.0] * 6 + [4.0]
    assert all(m.mode == "bilinear" and m.align_corners is False for m in upsamples)
    assert model.semantic_head.predictor.out_channels == STUFF + 1
    convs = [m for m in model.semantic_head.scale_heads.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 1 + 2 + 3 and all(c.bias is None and c.out_channels == 128 for c in convs)
    # builder options reach the detector
    assert model.detector.roi_heads.detections_per_img == 4 and model.detector.transform.min_size == (64,)


def test_train_step_gives_every_loss_and_semantic_gradients() -> None:
    model = _model().train()
    images, targets = _batch((64, 64), (56, 72))  # the second is resized to 64 px and padded
    losses = model(images, targets)
    assert set(losses) == DETECTION_LOSSES | {"loss_semantic"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_semantic"] > 0
    sum(losses.values()).backward()
    for name, param in model.semantic_head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert model.detector.roi_heads.mask_predictor.mask_fcn_logits.weight.grad is not None
    # the caller's targets are left alone
    assert "semantic" in targets[0] and targets[1]["masks"].shape[-2:] == (56, 72)


def test_semantic_loss_weight_scales_the_loss() -> None:
    images, targets = _batch((64, 64))
    torch.manual_seed(3)
    half = _model().train()(images, targets)["loss_semantic"]
    torch.manual_seed(3)
    full = _model(semantic_loss_weight=1.0).train()(images, targets)["loss_semantic"]
    assert torch.allclose(full, 2 * half)


def test_train_mode_requires_semantic_targets() -> None:
    model = _model().train()
    images, targets = _batch((64, 64))
    del targets[0]["semantic"]
    with pytest.raises(ValueError, match="'semantic'"):
        model(images, targets)
    with pytest.raises(ValueError, match="targets"):
        model(images)


def test_semantic_targets_resize_nearest_and_pad_with_ignore() -> None:
    sem = torch.tensor([[0, 1], [2, 255]])
    batch = _semantic_targets([sem], [(4, 4)], (4, 6))
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 255, 255],
            [0, 0, 1, 1, 255, 255],
            [2, 2, 255, 255, 255, 255],
            [2, 2, 255, 255, 255, 255],
        ]
    )
    assert batch.dtype == torch.int64 and torch.equal(batch[0], expected)
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = semantic_loss(logits, torch.full((1, 2, 2), 255))  # every pixel ignored: 0, not NaN
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_eval_outputs_at_the_original_size() -> None:
    model = _model(box_score_thresh=0.0).eval()  # random weights: keep every detection
    generator = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 70, 90, generator=generator), torch.rand(3, 64, 64, generator=generator)]
    with torch.no_grad():
        results = model(images)
    assert len(results) == 2
    for result, (h, w) in zip(results, [(70, 90), (64, 64)]):
        assert set(result) == {"boxes", "labels", "scores", "masks", "sem_seg", "panoptic"}
        k = len(result["scores"])
        assert 0 < k <= 4
        assert result["boxes"].shape == (k, 4) and result["boxes"].dtype == torch.float32
        assert result["labels"].shape == (k,) and result["labels"].dtype == torch.int64
        assert result["masks"].shape == (k, 1, h, w) and result["masks"].dtype == torch.float32
        assert result["masks"].min() >= 0 and result["masks"].max() <= 1
        assert result["sem_seg"].shape == (STUFF + 1, h, w) and result["sem_seg"].dtype == torch.float32
        panoptic = result["panoptic"]
        assert panoptic.shape == (h, w, 2) and panoptic.dtype == torch.int64
        assert set(panoptic[..., 0].unique().tolist()) <= set(range(THINGS + STUFF + 1))
        again = merge_panoptic(
            result["scores"], result["labels"], result["masks"], result["sem_seg"], num_things=THINGS, stuff_area=4096
        )
        assert torch.equal(panoptic, again)


def test_eval_semantic_logits_are_the_cropped_padded_logits_resized() -> None:
    model = _model(max_size=96).eval()
    image = torch.rand(3, 48, 64)  # resized to 64x85, padded to 64x96
    with torch.no_grad():
        result = model([image])[0]
        batch, _ = model.detector.transform([image])
        logits = model.semantic_head(model.detector.backbone(batch.tensors))
    assert batch.tensors.shape[-2:] == (64, 96) and logits.shape[-2:] == (64, 96)
    h, w = batch.image_sizes[0]
    expected = torch.nn.functional.interpolate(logits[:, :, :h, :w], size=(48, 64), mode="bilinear")[0]
    assert torch.allclose(result["sem_seg"], expected, atol=1e-6)


# ---- merge_panoptic on hand-made inputs ----------------------------------------------------------


def _logits(labels: list[list[int]], num_classes: int = STUFF + 1) -> torch.Tensor:
    """One-hot logits [C, H, W] whose argmax is ``labels``."""
    return torch.nn.functional.one_hot(torch.tensor(labels), num_classes).permute(2, 0, 1).float()


def _mask(h: int, w: int, rows: slice, cols: slice, value: float = 0.8) -> torch.Tensor:
    mask = torch.zeros(1, h, w)
    mask[0, rows, cols] = value
    return mask


def test_merge_panoptic_hand_computed() -> None:
    # semantic argmax: stuff 0 (left 3 columns), stuff 1 (4 px, top middle), "thing" (2) elsewhere
    sem = _logits([[0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 2], [0, 0, 0, 2, 2, 2], [0, 0, 0, 2, 2, 2]])
    a = _mask(4, 6, slice(2, 4), slice(3, 6))  # label 2, score .9: placed first (id 1)
    d = _mask(4, 6, slice(1, 4), slice(4, 6))  # label 1, score .7: 4 of its 6 px taken by A -> dropped
    b = _mask(4, 6, slice(0, 2), slice(0, 2))  # label 1, score .6: placed (id 2)
    b[0, 3, 0] = 0.4  # below mask_threshold: not part of B
    c = _mask(4, 6, slice(0, 4), slice(2, 3))  # label 1, score .4 < score_threshold: dropped
    scores = torch.tensor([0.6, 0.9, 0.4, 0.7])
    labels = torch.tensor([1, 2, 1, 1])
    masks = torch.stack([b, a, c, d])  # [K, 1, H, W], not in score order
    pan = merge_panoptic(scores, labels, masks, sem, num_things=THINGS, stuff_area=5)
    # stuff 1 has 4 px < 5: unassigned; the uncovered "thing" pixels are never stuff: unassigned
    assert pan[..., 0].tolist() == [[1, 1, 3, 0, 0, 0], [1, 1, 3, 0, 0, 0], [3, 3, 3, 2, 2, 2], [3, 3, 3, 2, 2, 2]]
    assert pan[..., 1].tolist() == [[2, 2, 0, 0, 0, 0], [2, 2, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]]
    pan = merge_panoptic(scores, labels, masks, sem, num_things=THINGS, stuff_area=4)  # now stuff 1 is placed
    assert pan[..., 0].tolist() == [[1, 1, 3, 4, 4, 0], [1, 1, 3, 4, 4, 0], [3, 3, 3, 2, 2, 2], [3, 3, 3, 2, 2, 2]]
    pan = merge_panoptic(scores, labels, masks, sem, num_things=THINGS, stuff_area=5, score_threshold=0.3)
    # C (score .4) is now placed (id 3), on all of column 2: none of it was taken
    assert pan[..., 0][:, 2].tolist() == [1, 1, 1, 1] and pan[..., 1][:, 2].tolist() == [3, 3, 3, 3]
    pan = merge_panoptic(scores, labels, masks, sem, num_things=THINGS, stuff_area=5, score_threshold=0.95)
    assert pan[..., 1].max() == 0  # no instance; stuff 0 everywhere it is predicted
    assert pan[..., 0].tolist() == [[3, 3, 3, 0, 0, 0]] * 4


def test_merge_panoptic_overlap_rule_is_detectron2s() -> None:
    """An instance is dropped when more than ``overlap_threshold`` of its mask is taken (detectron2, mmdetection)."""
    sem = _logits([[0, 0, 0, 0]])
    first = _mask(1, 4, slice(0, 1), slice(0, 2))
    second = _mask(1, 4, slice(0, 1), slice(1, 3))  # half of it overlaps the first
    args = (torch.tensor([0.9, 0.8]), torch.tensor([1, 2]), torch.stack([first, second]), sem)
    kept = merge_panoptic(*args, num_things=THINGS, stuff_area=100)  # 1/2 taken, not > 0.5: kept, on its free pixel
    assert kept[..., 0].tolist() == [[1, 1, 2, 0]] and kept[..., 1].tolist() == [[1, 1, 2, 0]]
    dropped = merge_panoptic(*args, num_things=THINGS, stuff_area=100, overlap_threshold=0.4)  # 1/2 > 0.4
    assert dropped[..., 0].tolist() == [[1, 1, 0, 0]] and dropped[..., 1].tolist() == [[1, 1, 0, 0]]


def test_merge_panoptic_input_forms() -> None:
    sem = _logits([[0, 1], [2, 2]])
    none = merge_panoptic(
        torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 1, 2, 2), sem, num_things=2, stuff_area=1
    )
    assert none[..., 0].tolist() == [[3, 4], [0, 0]] and none[..., 1].max() == 0
    bool_mask = torch.tensor([[[False, False], [True, True]]])  # [K, H, W] bool
    pan = merge_panoptic(torch.tensor([0.9]), torch.tensor([2]), bool_mask, sem, num_things=2, stuff_area=1)
    assert pan[..., 0].tolist() == [[3, 4], [2, 2]] and pan[..., 1].tolist() == [[0, 0], [1, 1]]
    empty_mask = torch.zeros(1, 2, 2)
    pan = merge_panoptic(torch.tensor([0.9]), torch.tensor([1]), empty_mask, sem, num_things=2, stuff_area=1)
    assert pan[..., 1].max() == 0
    with pytest.raises(ValueError, match="1..2"):
        merge_panoptic(torch.tensor([0.9]), torch.tensor([3]), bool_mask, sem, num_things=2)
    with pytest.raises(ValueError, match="semantic size"):
        merge_panoptic(torch.tensor([0.9]), torch.tensor([1]), torch.zeros(1, 3, 3), sem, num_things=2)


# ---- model surgery --------------------------------------------------------------------------------

SEMANTIC_SITES = [
    "semantic_head.scale_heads.1.3",
    "semantic_head.scale_heads.2.3",
    "semantic_head.scale_heads.2.7",
    "semantic_head.scale_heads.3.3",
    "semantic_head.scale_heads.3.7",
    "semantic_head.scale_heads.3.11",
    "semantic_head.upsample",
]


def test_find_and_swap_upsamplers() -> None:
    model = _model(box_score_thresh=0.0)  # random weights: keep detections, so the mask pasting runs too
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4))
    # example inputs: the positional arguments of one forward, a tuple; a bare list of images is
    # wrapped as the single argument (so [[image]] would be one argument holding a list of lists)
    example = ([image],)
    sites = dysample_swap.find_upsamplers(model, example_inputs=example)
    fpn = [s for s in sites if s.path == "detector.backbone.fpn"]
    assert len(fpn) == 3 and all(s.mode == "nearest" and s.action == "swap" for s in fpn)
    semantic = [s for s in sites if s.path.startswith("semantic_head")]
    assert [s.path for s in semantic] == SEMANTIC_SITES and all(s.action == "swap" for s in semantic)
    assert [s.scale for s in semantic] == [(2.0, 2.0)] * 6 + [(4.0, 4.0)]
    skipped = [s for s in sites if s.action == "skip"]
    assert all(s.reason for s in skipped)
    assert skipped[0].path == "detector.transform" and skipped[0].reason.startswith("resizes the network input")
    assert {s.path for s in skipped} == {"detector.transform", "<root>"}  # input resize; mask pasting, sem_seg resize
    assert [s.reason for s in skipped[-1:]] == ["same-size no-op (64x64 -> 64x64)"]  # the sem_seg resize
    assert all("paste_mask_in_image" in s.reason for s in skipped[1:-1]) and len(skipped) > 2

    model.eval()
    with torch.no_grad():
        before = model([image])[0]
    swapped = dysample_swap.swap_upsamplers(model, "dysample+", example_inputs=example, verbose=False)
    assert swapped is model
    report = dysample_swap.swap_report(model)
    assert [d.path for d in report.swapped] == ["detector.backbone.fpn"] * 3 + SEMANTIC_SITES
    assert {d.method for d in report.swapped} == {"fx", "in place"}
    assert "as 2 x2 stages" in report.swapped[-1].reason  # the x4 on the 3-class logits
    with torch.no_grad():
        after = model([image])[0]
    # the FPN swap is exact at swap time (zero offsets anchored on nearest), so the detections are unchanged
    assert torch.allclose(before["boxes"], after["boxes"], atol=1e-4)
    assert after["sem_seg"].shape == before["sem_seg"].shape

    model.train()
    images, targets = _batch((64, 64), (64, 64))
    losses = model(images, targets)
    assert set(losses) == DETECTION_LOSSES | {"loss_semantic"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    offsets = {n: p for n, p in model.named_parameters() if n.endswith("offset.weight")}
    expected = [f"detector.backbone.fpn.dysample_{i}" for i in range(3)] + SEMANTIC_SITES[:-1]
    expected += ["semantic_head.upsample.0", "semantic_head.upsample.1"]
    assert sorted(n.removesuffix(".offset.weight") for n in offsets) == sorted(expected)
    for name, param in offsets.items():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
