"""Metrics against hand-computed values: IoU, boundary IoU, pixel accuracy, COCO AP."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dysample_swap.finetune.data import build_dataset
from dysample_swap.finetune.metrics import DetectionMetrics, SegmentationMetrics, boundary_dilation, label_boundary


def _shifted_squares() -> tuple[torch.Tensor, torch.Tensor]:
    """8x8: target class 1 = rows 1..6 x cols 1..6; prediction = the same square one column right."""
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 1:7, 1:7] = 1
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, 1:7, 2:8] = 1
    return pred, target


def _naive_class_boundary(labels: np.ndarray, c: int, d: int) -> np.ndarray:
    """Cheng et al. by definition: mask minus its erosion by a (2d+1)^2 square, zero outside."""
    mask = labels == c
    padded = np.pad(mask, d, constant_values=False)
    h, w = mask.shape
    eroded = np.array([[padded[i : i + 2 * d + 1, j : j + 2 * d + 1].all() for j in range(w)] for i in range(h)])
    return mask & ~eroded


def test_label_boundary_is_the_inner_band_of_width_d() -> None:
    square = torch.zeros(1, 9, 9, dtype=torch.long)
    square[0, 1:8, 1:8] = 1  # 7x7 square
    for d, interior in ((1, 25), (2, 9)):
        band = label_boundary(square, d)[0] & (square[0] == 1)
        assert int(band.sum()) == 49 - interior
    border = torch.ones(1, 4, 4, dtype=torch.long)  # the image border counts as contour
    assert int(label_boundary(border, 1).sum()) == 16 - 4


@pytest.mark.parametrize("d", [1, 2, 3])
def test_label_boundary_equals_per_class_erosion(d: int) -> None:
    labels = torch.randint(0, 4, (3, 3), generator=torch.Generator().manual_seed(d))
    labels = labels.repeat_interleave(4, 0).repeat_interleave(5, 1)[None]  # 12x15 blocks
    labels[0, 5, 2:9] = 2  # a thin line
    band = label_boundary(labels, d)[0]
    for c in range(4):
        expected = _naive_class_boundary(labels[0].numpy(), c, d)
        assert np.array_equal((band & (labels[0] == c)).numpy(), expected), c


def test_boundary_dilation_follows_the_image_diagonal() -> None:
    assert boundary_dilation(8, 8, 0.02) == 1  # 0.23 rounds to 0, at least 1
    assert boundary_dilation(300, 400, 0.02) == 10  # 0.02 * 500
    assert boundary_dilation(300, 400, 0.05) == 25


def test_iou_and_boundary_iou_match_hand_computation() -> None:
    pred, target = _shifted_squares()
    metrics = SegmentationMetrics(2, class_names=["bg", "square"])
    metrics.update(pred, target)
    r = metrics.compute()
    # square: 36 vs 36 px, overlap rows 1..6 x cols 2..6 = 30 -> 30 / 42
    assert r["IoU/square"] == pytest.approx(30 / 42)
    # background: 28 vs 28 px, overlap rows 0 and 7 (16) + column 0 rows 1..6 (6) = 22 -> 22 / 34
    assert r["IoU/bg"] == pytest.approx(22 / 34)
    assert r["mIoU"] == pytest.approx((30 / 42 + 22 / 34) / 2)
    # d = 1: each square's boundary is its 20-px outer ring; the rings share rows 1 and 6 at
    # cols 2..6 (10 px) -> 10 / 30. Background is all boundary, so its bIoU equals its IoU.
    assert r["bIoU/square"] == pytest.approx(10 / 30)
    assert r["bIoU/bg"] == pytest.approx(22 / 34)
    assert r["bIoU"] == pytest.approx((10 / 30 + 22 / 34) / 2)
    assert r["pixel_acc"] == pytest.approx(52 / 64)


def test_ignore_index_pixels_are_skipped_whatever_the_prediction() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [0, 255, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 1], [0, 9, 1, 1]]])  # 9 is out of range but under ignore
    metrics = SegmentationMetrics(2)
    metrics.update(pred, target)
    r = metrics.compute()
    assert r["mIoU"] == 1.0 and r["pixel_acc"] == 1.0 and r["bIoU"] == 1.0
    assert int(metrics.confusion.sum()) == 7


def test_absent_class_is_nan_and_left_out_of_the_mean_missed_class_counts_zero() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 2, 2]]])
    pred = torch.tensor([[[0, 0, 1, 1], [0, 0, 0, 0]]])  # class 2 missed entirely, class 3 absent
    metrics = SegmentationMetrics(4)
    metrics.update(pred, target)
    r = metrics.compute()
    assert math.isnan(r["IoU/class3"]) and math.isnan(r["bIoU/class3"])
    assert r["IoU/class2"] == 0.0 and r["IoU/class1"] == 1.0
    assert r["IoU/class0"] == pytest.approx(4 / 6)
    assert r["mIoU"] == pytest.approx((4 / 6 + 1.0 + 0.0) / 3)


def test_accumulating_batches_equals_one_big_batch_and_two_shard_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (4, 12, 12), generator=gen)
    target[:, :2] = 255
    pred = torch.where(
        torch.rand(4, 12, 12, generator=gen) < 0.7, target.clamp(max=2), torch.randint(0, 3, (4, 12, 12), generator=gen)
    )
    whole = SegmentationMetrics(3)
    whole.update(pred, target)
    shards = [SegmentationMetrics(3), SegmentationMetrics(3)]
    shards[0].update(pred[:1], target[:1])
    shards[0].update(pred[1:2], target[1:2])
    shards[1].update(pred[2:], target[2:])
    merged = SegmentationMetrics(3)
    merged.load_state_tensors(shards[0].state_tensors() + shards[1].state_tensors())
    assert torch.equal(merged.state_tensors(), whole.state_tensors())
    assert merged.compute() == pytest.approx(whole.compute(), nan_ok=True)


def test_segmentation_metric_errors() -> None:
    metrics = SegmentationMetrics(2)
    with pytest.raises(ValueError, match=r"preds hold label\(s\) \[5\]"):
        metrics.update(torch.full((1, 2, 2), 5), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="argmax"):
        metrics.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        metrics.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="no pixels evaluated"):
        metrics.compute()
    metrics.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    metrics.sync()
    with pytest.raises(RuntimeError, match="twice"):
        metrics.sync()
    with pytest.raises(RuntimeError, match="reset"):
        metrics.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="collides"):
        SegmentationMetrics(3, ignore_index=1)


def _box_target(boxes: list[list[float]], labels: list[int], image_id: int = 1) -> dict:
    return {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels), "image_id": image_id}


def _box_pred(boxes: list[list[float]], labels: list[int], scores: list[float] | None = None) -> dict:
    return {
        "boxes": torch.tensor(boxes),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores or [0.9] * len(boxes)),
    }


@pytest.mark.parametrize(
    ("shift", "ap", "ap50", "ap75"),
    [
        (0.0, 1.0, 1.0, 1.0),
        (2.0, 0.4, 1.0, 0.0),  # IoU 8/12 = 0.667: matched at thresholds 0.50..0.65 (4 of 10)
        (6.0, 0.0, 0.0, 0.0),  # IoU 4/16 = 0.25: never matched
    ],
)
def test_box_ap_for_a_shifted_box_with_known_iou(shift: float, ap: float, ap50: float, ap75: float) -> None:
    metrics = DetectionMetrics()
    metrics.update([_box_pred([[shift, 0.0, 10.0 + shift, 10.0]], [1])], [_box_target([[0.0, 0.0, 10.0, 10.0]], [1])])
    r = metrics.compute()
    assert (r["bbox/AP"], r["bbox/AP50"], r["bbox/AP75"]) == pytest.approx((ap, ap50, ap75))
    assert r["bbox/APs"] == pytest.approx(ap) and math.isnan(r["bbox/APm"])  # 100 px^2 is "small"


def test_half_recall_gives_51_of_101_recall_points() -> None:
    metrics = DetectionMetrics()
    metrics.update(
        [_box_pred([[0.0, 0.0, 10.0, 10.0]], [1])],
        [_box_target([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]], [1, 1])],
    )
    assert metrics.compute()["bbox/AP"] == pytest.approx(51 / 101)


def test_wrong_label_is_a_false_positive_and_a_miss() -> None:
    metrics = DetectionMetrics()
    metrics.update([_box_pred([[0.0, 0.0, 10.0, 10.0]], [2])], [_box_target([[0.0, 0.0, 10.0, 10.0]], [1])])
    assert metrics.compute()["bbox/AP"] == 0.0


def _synthetic_instances() -> tuple:
    ds = build_dataset(
        {
            "format": "synthetic",
            "task": "instance",
            "num_samples": 4,
            "num_val_samples": 4,
            "image_size": 48,
            "seed": 3,
        },
        "val",
    )
    targets = [ds[i][1] for i in range(len(ds))]
    return ds, targets


def _perfect(target: dict, prob_inside: float = 0.9, prob_outside: float = 0.4) -> dict:
    masks = target["masks"].float() * (prob_inside - prob_outside) + prob_outside
    return {
        "boxes": target["boxes"].clone(),
        "labels": target["labels"].clone(),
        "scores": torch.ones(len(target["labels"])),
        "masks": masks.unsqueeze(1),
    }


def test_perfect_instances_against_dataset_coco_give_ap_one_for_boxes_and_masks() -> None:
    ds, targets = _synthetic_instances()
    metrics = DetectionMetrics(iou_types=("bbox", "segm"), coco_gt=ds.coco)
    metrics.update([_perfect(t) for t in targets], targets)
    r = metrics.compute()
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75"):
        assert r[key] == pytest.approx(1.0), key


def test_mask_probabilities_are_thresholded_at_one_half() -> None:
    ds, targets = _synthetic_instances()
    metrics = DetectionMetrics(iou_types=("segm",), coco_gt=ds.coco)
    # everything above 0.5 -> each predicted mask covers the whole image -> poor mask AP
    metrics.update([_perfect(t, prob_inside=0.9, prob_outside=0.6) for t in targets], targets)
    assert metrics.compute()["segm/AP"] < 0.2


def test_ground_truth_built_from_targets_matches_dataset_coco() -> None:
    ds, targets = _synthetic_instances()
    preds = [_perfect(t) for t in targets]
    preds[0]["boxes"][:, 0] += 3.0  # perturb one image so the answer is not trivially 1
    with_gt = DetectionMetrics(iou_types=("bbox", "segm"), coco_gt=ds.coco)
    without = DetectionMetrics(iou_types=("bbox", "segm"))
    for m in (with_gt, without):
        m.update(preds, targets)
    assert with_gt.compute() == pytest.approx(without.compute(), nan_ok=True)
    assert with_gt.compute()["bbox/AP"] < 0.99


def test_two_shard_gather_equals_single_process_and_dedupes_padding() -> None:
    ds, targets = _synthetic_instances()
    preds = [_perfect(t) for t in targets]
    preds[1]["boxes"][:, 1] += 4.0
    whole = DetectionMetrics(coco_gt=ds.coco)
    whole.update(preds, targets)
    shard_a, shard_b = DetectionMetrics(coco_gt=ds.coco), DetectionMetrics(coco_gt=ds.coco)
    shard_a.update(preds[0::2], targets[0::2])
    shard_b.update(preds[1::2] + preds[:1], targets[1::2] + targets[:1])  # padded with image 0
    merged = DetectionMetrics(coco_gt=ds.coco)
    merged.load_state_objects([shard_a.state_objects(), shard_b.state_objects()])
    assert merged.compute() == pytest.approx(whole.compute(), nan_ok=True)


def test_detection_metric_errors() -> None:
    ds, targets = _synthetic_instances()
    with pytest.raises(ValueError, match="iou_types"):
        DetectionMetrics(iou_types=("keypoints",))
    segm = DetectionMetrics(iou_types=("segm",), coco_gt=ds.coco)
    with pytest.raises(ValueError, match="no 'masks'"):
        segm.update([_box_pred([[0.0, 0.0, 1.0, 1.0]], [1])], targets[:1])
    boxes = DetectionMetrics(coco_gt=ds.coco)
    with pytest.raises(ValueError, match="image_id 99"):
        boxes.update([_box_pred([[0.0, 0.0, 1.0, 1.0]], [1])], [_box_target([[0.0, 0.0, 1.0, 1.0]], [1], 99)])
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        boxes.update([_box_pred([[0.0, 0.0, 1.0, 1.0]], [1])], targets[:2])


def test_no_detections_at_all_gives_zero_ap() -> None:
    _, targets = _synthetic_instances()
    metrics = DetectionMetrics()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    metrics.update([empty] * len(targets), targets)
    assert metrics.compute()["bbox/AP"] == 0.0
    assert np.isfinite(metrics.compute()["bbox/AP50"])


def _rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One of two gloo processes: score a shard (rank 1 also re-sees image 0), sync, compute."""
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ds, targets = _synthetic_instances()
        preds = [_perfect(t) for t in targets]
        preds[1]["boxes"][:, 1] += 4.0
        indices = [0, 2] if rank == 0 else [1, 3, 0]
        det = DetectionMetrics(iou_types=("bbox", "segm"), coco_gt=ds.coco)
        det.update([preds[i] for i in indices], [targets[i] for i in indices])
        det.sync()
        seg = SegmentationMetrics(3)
        pred, target = _shifted_squares()
        seg.update(pred if rank == 0 else target, target)
        seg.sync()
        result = {"det": det.compute(), "seg": seg.compute()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sync_across_two_gloo_processes_gives_the_whole_set_result(tmp_path) -> None:
    import json

    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    ds, targets = _synthetic_instances()
    preds = [_perfect(t) for t in targets]
    preds[1]["boxes"][:, 1] += 4.0
    det = DetectionMetrics(iou_types=("bbox", "segm"), coco_gt=ds.coco)
    det.update(preds, targets)
    seg = SegmentationMetrics(3)
    pred, target = _shifted_squares()
    seg.update(torch.cat([pred, target]), torch.cat([target, target]))
    for rank in ranks:
        assert rank["det"] == pytest.approx(det.compute(), nan_ok=True)
        assert rank["seg"] == pytest.approx(seg.compute(), nan_ok=True)
    assert ranks[0]["det"]["bbox/AP"] < 0.99  # the perturbed image (rank 1's) is in rank 0's result
