"""Depth metrics (toolbox / BTS protocol) and panoptic quality (COCO) against hand-computed values."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dysample_swap.finetune.metrics import DepthMetrics, PanopticMetrics
from dysample_swap.finetune.metrics_depth import DEPTH_METRIC_NAMES
from dysample_swap.finetune.metrics_panoptic import PANOPTIC_METRIC_NAMES

LN2, LN125 = math.log(2.0), math.log(1.25)


def _depth(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float32)  # [1, H, W]


# --------------------------------------------------------------------------------------- depth


def _case_a() -> tuple[torch.Tensor, torch.Tensor]:
    """gt [[1, 2], [4, 0]], pred [[1, 1], [5, 3]]: valid (gt, pred) pairs (1, 1), (2, 1), (4, 5)."""
    return _depth([[1.0, 1.0], [5.0, 3.0]]), _depth([[1.0, 2.0], [4.0, 0.0]])


# thresh = max(gt/pred, pred/gt) = 1, 2, 5/4; errors gt - pred = 0, 1, -1; err = log pred - log gt = 0, -ln 2, ln 5/4
CASE_A = {
    "delta1": 1 / 3,  # only thresh 1 is < 1.25 (5/4 is not: strict)
    "delta2": 2 / 3,  # 1 and 1.25 < 1.5625
    "delta3": 2 / 3,  # 2 > 1.953125
    "abs_rel": (0 + 1 / 2 + 1 / 4) / 3,
    "sq_rel": (0 + 1 / 2 + 1 / 4) / 3,
    "rmse": math.sqrt((0 + 1 + 1) / 3),
    "rmse_log": math.sqrt((0 + LN2**2 + LN125**2) / 3),
    "log10": (0 + math.log10(2) + math.log10(1.25)) / 3,
    "silog": 100 * math.sqrt((LN2**2 + LN125**2) / 3 - ((LN125 - LN2) / 3) ** 2),
}


def test_each_depth_metric_by_hand() -> None:
    pred, gt = _case_a()
    m = DepthMetrics()
    m.update(pred, gt)
    result = m.compute()
    assert list(result) == list(DEPTH_METRIC_NAMES)
    assert result == pytest.approx(CASE_A, rel=1e-12, abs=1e-12)


def test_n1hw_input_gives_the_same_result() -> None:
    pred, gt = _case_a()
    for p, t in ((pred[:, None], gt[:, None]), (pred[:, None], gt), (pred, gt[:, None])):
        m = DepthMetrics()
        m.update(p, t)
        assert m.compute() == pytest.approx(CASE_A, rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match=r"\[N, H, W\] or \[N, 1, H, W\]"):
        DepthMetrics().update(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2))


def test_scale_invariance_of_silog_and_the_delta_thresholds() -> None:
    # pred = 2 gt everywhere: err = ln 2 on every pixel, so its variance (silog) is 0;
    # thresh = 2 >= 1.25**3 = 1.953125, so every delta is 0.
    gt = _depth([[1.0, 2.0], [4.0, 8.0]])
    m = DepthMetrics(max_depth=20.0)
    m.update(2 * gt, gt)
    r = m.compute()
    assert r["silog"] == 0.0
    assert (r["delta1"], r["delta2"], r["delta3"]) == (0.0, 0.0, 0.0)
    assert r["abs_rel"] == pytest.approx(1.0)  # |gt - 2gt| / gt
    assert r["sq_rel"] == pytest.approx((1 + 2 + 4 + 8) / 4)  # gt^2 / gt = gt
    assert r["rmse"] == pytest.approx(math.sqrt((1 + 4 + 16 + 64) / 4))
    assert r["rmse_log"] == pytest.approx(LN2)
    assert r["log10"] == pytest.approx(math.log10(2))


def test_invalid_pixels_are_left_out() -> None:
    # min_depth < gt < max_depth, both strict: 0 (no measurement), 1e-3 (= min), 10 (= max), 12, -1 and NaN
    # are left out; only (gt 1, pred 1) and (gt 4, pred 2) count. (1e-3 is compared in float32, the target's
    # precision, as the toolbox's numpy does: float32(1e-3) is not > 1e-3 there, though it is in float64.)
    gt = _depth([[1.0, 0.0, 10.0, 1e-3], [12.0, 4.0, -1.0, float("nan")]])
    pred = _depth([[1.0, 7.0, 7.0, 7.0], [7.0, 2.0, 7.0, 7.0]])
    m = DepthMetrics(min_depth=1e-3, max_depth=10.0)
    m.update(pred, gt)
    r = m.compute()
    assert r["abs_rel"] == pytest.approx((0 + 2 / 4) / 2)
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 4) / 2))
    assert r["delta1"] == pytest.approx(1 / 2)  # thresh 1 and 2


def test_predictions_are_clamped_to_the_depth_range() -> None:
    # pred 20 -> 10 (max_depth), pred 0 -> 1e-3 (min_depth), as the toolbox clamps before evaluating
    m = DepthMetrics(min_depth=1e-3, max_depth=10.0)
    m.update(_depth([[20.0, 8.0]]), _depth([[5.0, 8.0]]))
    r = m.compute()
    assert r["abs_rel"] == pytest.approx((5 / 5 + 0) / 2)  # unclamped it would be (15/5 + 0) / 2
    assert r["rmse"] == pytest.approx(math.sqrt((25 + 0) / 2))
    m = DepthMetrics(min_depth=0.5, max_depth=10.0)
    m.update(_depth([[0.0]]), _depth([[1.0]]))  # log of a 0 prediction would be -inf
    assert m.compute()["abs_rel"] == pytest.approx(0.5)
    assert m.compute()["rmse_log"] == pytest.approx(LN2)


def test_prediction_of_another_size_is_resized_bilinearly() -> None:
    # pred [[2, 6]] (1 x 2) -> 2 x 4, bilinear, align_corners=False: output column x samples source
    # x_s = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped into [0, 1]:
    # 2, 0.75*2 + 0.25*6 = 3, 0.25*2 + 0.75*6 = 5, 6 (both output rows sample source row 0).
    gt = _depth([[2.0, 3.0, 5.0, 6.0], [2.0, 3.0, 5.0, 6.0]])
    m = DepthMetrics()
    m.update(_depth([[2.0, 6.0]]), gt)
    r = m.compute()
    assert r["rmse"] == pytest.approx(0.0, abs=1e-12)
    assert r["delta1"] == 1.0
    # nearest-neighbour would give [2, 2, 6, 6]: errors 0, 1, -1, 0 -> rmse sqrt(1/2); bilinear does not
    other = DepthMetrics()
    other.update(_depth([[2.0, 6.0]]), _depth([[2.0, 2.0, 6.0, 6.0], [2.0, 2.0, 6.0, 6.0]]))
    assert other.compute()["rmse"] == pytest.approx(math.sqrt(2 / 4))


def test_metrics_are_averaged_per_image_not_per_pixel() -> None:
    # image 0: one valid pixel (gt 1, pred 3): abs_rel 2, rmse 2, delta1 0 (thresh 3)
    # image 1: two valid pixels, exact: abs_rel 0, rmse 0, delta1 1 (its third pixel has no depth)
    pred = torch.tensor([[[3.0, 5.0, 5.0]], [[2.0, 4.0, 5.0]]])
    gt = torch.tensor([[[1.0, 0.0, 0.0]], [[2.0, 4.0, 0.0]]])
    m = DepthMetrics()
    m.update(pred, gt)
    r = m.compute()
    assert r["abs_rel"] == pytest.approx((2 + 0) / 2)  # per pixel it would be 2/3
    assert r["rmse"] == pytest.approx((2 + 0) / 2)  # per pixel: sqrt(4/3)
    assert r["delta1"] == pytest.approx((0 + 1) / 2)  # per pixel: 2/3
    assert m.per_image()["abs_rel"] == pytest.approx([2.0, 0.0])
    assert m.per_image()["rmse"] == pytest.approx([2.0, 0.0])


def test_an_image_without_valid_pixels_is_skipped() -> None:
    pred, gt = _case_a()
    m = DepthMetrics()
    m.update(torch.cat([pred, torch.ones_like(pred)]), torch.cat([gt, torch.zeros_like(gt)]))
    assert m.compute() == pytest.approx(CASE_A, rel=1e-12, abs=1e-12)
    per_image = m.per_image()
    assert all(len(v) == 2 and math.isnan(v[1]) for v in per_image.values())
    assert per_image["abs_rel"][0] == pytest.approx(CASE_A["abs_rel"])
    assert m.per_image_counts()[:, 0].tolist() == [1.0, 0.0]
    empty = DepthMetrics()
    empty.update(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(RuntimeError, match="no image with a valid depth pixel"):
        empty.compute()


def test_depth_per_image_rows_sum_to_the_batch_result() -> None:
    pred, gt = _case_a()
    m = DepthMetrics()
    m.update(pred, gt)  # image 0: case A
    m.update(_depth([[3.0]]), _depth([[1.0]]))  # image 1: abs_rel 2, rmse 2, delta1..3 0 (thresh 3)
    rows = m.per_image_counts()
    assert rows.shape == (2, 10)
    whole = m.compute()
    assert {k: float(v) for k, v in m.scores(rows.sum(0)).items()} == pytest.approx(whole)
    assert whole["abs_rel"] == pytest.approx((CASE_A["abs_rel"] + 2) / 2)
    assert whole["delta2"] == pytest.approx((CASE_A["delta2"] + 0) / 2)
    # a bootstrap resample (image 1 drawn twice) is a weighted sum of rows
    assert float(m.scores(rows[0] + 2 * rows[1])["rmse"]) == pytest.approx((CASE_A["rmse"] + 2 + 2) / 3)


def test_depth_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="0 < min_depth < max_depth"):
        DepthMetrics(min_depth=0.0)
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        DepthMetrics().update(torch.ones(2, 2, 2), torch.ones(1, 2, 2))
    m = DepthMetrics()
    m.sync()
    with pytest.raises(RuntimeError, match="after sync"):
        m.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2))


# ------------------------------------------------------------------------------------ panoptic

THINGS, STUFF = {1, 2, 5}, {3, 4}  # thing 5 and (in image 1 alone) stuff 4 have no segment at all


def _panoptic(rows: list[str], legend: dict[str, tuple[int, int]]) -> torch.Tensor:
    """Letter grid -> [H, W, 2] (category id, instance id)."""
    return torch.tensor([[legend[ch] for ch in row.split()] for row in rows], dtype=torch.long)


# Image 1 (4 x 6). Target: S stuff 3, V void (category 0), A/B things of category 1, C thing of category 2.
TARGET_1 = _panoptic(
    ["S S S S V V", "S S S S V V", "A A A B B C", "A A A B B C"],
    {"S": (3, 0), "V": (0, 0), "A": (1, 1), "B": (1, 2), "C": (2, 1)},
)
# Prediction: v void; S stuff 3 (its instance id is ignored); A and D things of category 1 (instance ids need
# not match the target's); a thing of category 2 lying wholly in target void.
PRED_1 = _panoptic(
    ["S S S v a a", "S S S S a a", "A A A A D D", "A A v D D D"],
    {"S": (3, 4), "v": (0, 0), "a": (2, 7), "A": (1, 9), "D": (1, 5)},
)
# By hand, IoU = |P ∩ G| / (|P| + |G| - |P ∩ G| - |P ∩ target void|):
# * stuff 3: pred 7 px, all inside target S (8 px; its pixel (0, 3) predicted void still counts):
#   IoU = 7 / (7 + 8 - 7 - 0) = 7/8 -> TP.
# * category 1: pred A (6 px) vs target A (6 px): intersection 5, IoU = 5 / (6 + 6 - 5) = 5/7 -> TP.
#   pred D (5 px) vs target B (4 px): intersection 3, IoU = 3 / (5 + 4 - 3) = 1/2, not > 1/2: no match,
#   so B is a FN and D (0 px in void) a FP.
# * category 2: target C (2 px) has no prediction of its category: FN. Pred a (4 px) lies wholly in
#   target void: unmatched but not a FP.
# Per category: 1: TP 1, FP 1, FN 1, IoU 5/7; 2: FN 1; 3: TP 1, IoU 7/8; 4 and 5: nothing (left out).
IMAGE_1 = {
    "PQ": (5 / 14 + 0 + 7 / 8) / 3,  # cat 1: (5/7) / (1 + 1/2 + 1/2) = 5/14; cat 2: 0 / (1/2) = 0; cat 3: 7/8
    "SQ": (5 / 7 + 0 + 7 / 8) / 3,  # SQ of cat 2 (no TP) is 0
    "RQ": (1 / 2 + 0 + 1) / 3,
    "PQ_th": (5 / 14 + 0) / 2,
    "SQ_th": (5 / 7 + 0) / 2,
    "RQ_th": (1 / 2 + 0) / 2,
    "PQ_st": 7 / 8,
    "SQ_st": 7 / 8,
    "RQ_st": 1.0,
}

# Image 2 (4 x 6): target stuff 3 on columns 2..5 (16 px), void on columns 0..1 (8 px).
TARGET_2 = _panoptic(["V V S S S S"] * 4, {"V": (0, 0), "S": (3, 0)})
# Prediction: F stuff 4; S and T are stuff 3 with different instance ids: one segment.
PRED_2 = _panoptic(
    ["F F S S S S", "F F S S S S", "S S F F T T", "S S F F T T"], {"F": (4, 0), "S": (3, 0), "T": (3, 5)}
)
# * stuff 3: pred 16 px (8 + 4 in void + 4 as T), 12 inside target S, 4 in void: IoU = 12 / (16 + 16 - 12 - 4) = 3/4.
# * stuff 4: 8 px, exactly half (4) in void: not more than half, so a FP.
IMAGE_2 = {
    "PQ": (3 / 4 + 0) / 2,
    "SQ": (3 / 4 + 0) / 2,
    "RQ": (1 + 0) / 2,
    "PQ_th": math.nan,  # no thing category has a segment
    "SQ_th": math.nan,
    "RQ_th": math.nan,
    "PQ_st": (3 / 4 + 0) / 2,
    "SQ_st": (3 / 4 + 0) / 2,
    "RQ_st": (1 + 0) / 2,
}
# Both images: cat 1: TP 1 FP 1 FN 1 IoU 5/7; cat 2: FN 1; cat 3: TP 2, IoU 7/8 + 3/4 = 13/8; cat 4: FP 1.
BOTH = {
    "PQ": (5 / 14 + 0 + 13 / 16 + 0) / 4,  # cat 3: (13/8) / 2
    "SQ": (5 / 7 + 0 + 13 / 16 + 0) / 4,
    "RQ": (1 / 2 + 0 + 1 + 0) / 4,
    "PQ_th": (5 / 14 + 0) / 2,
    "SQ_th": (5 / 7 + 0) / 2,
    "RQ_th": (1 / 2 + 0) / 2,
    "PQ_st": (13 / 16 + 0) / 2,
    "SQ_st": (13 / 16 + 0) / 2,
    "RQ_st": (1 + 0) / 2,
}


def test_panoptic_quality_of_one_image_by_hand() -> None:
    m = PanopticMetrics(things=THINGS, stuff=STUFF)
    m.update(PRED_1[None], TARGET_1[None])
    result = m.compute()
    assert list(result) == list(PANOPTIC_METRIC_NAMES)
    assert result == pytest.approx(IMAGE_1, rel=1e-12)
    # columns: things 1, 2, 5 then stuff 3, 4; blocks TP | FP | FN | IoU sum
    assert m.categories == [1, 2, 5, 3, 4]
    row = m.per_image_counts()[0].reshape(4, 5)
    assert row[:3].tolist() == [[1, 0, 0, 1, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert row[3] == pytest.approx([5 / 7, 0, 0, 7 / 8, 0])


def test_stuff_instance_ids_are_ignored_and_half_void_is_still_a_false_positive() -> None:
    m = PanopticMetrics(things=THINGS, stuff=STUFF)
    m.update(PRED_2[None], TARGET_2[None])
    assert m.compute() == pytest.approx(IMAGE_2, rel=1e-12, nan_ok=True)


def test_panoptic_batch_and_per_image_sums() -> None:
    m = PanopticMetrics(things=THINGS, stuff=STUFF)
    m.update(torch.stack([PRED_1, PRED_2]), torch.stack([TARGET_1, TARGET_2]))
    assert m.compute() == pytest.approx(BOTH, rel=1e-12)
    rows = m.per_image_counts()
    assert rows.shape == (2, 20)
    np.testing.assert_allclose(rows.sum(0), m.totals.numpy())
    per_image = [{k: float(v) for k, v in m.scores(r).items()} for r in rows]
    assert per_image[0] == pytest.approx(IMAGE_1, rel=1e-12)
    assert per_image[1] == pytest.approx(IMAGE_2, rel=1e-12, nan_ok=True)
    # two updates of one image each accumulate the same state
    one_by_one = PanopticMetrics(things=THINGS, stuff=STUFF)
    one_by_one.update(PRED_1[None], TARGET_1[None])
    one_by_one.update(PRED_2[None], TARGET_2[None])
    np.testing.assert_array_equal(one_by_one.per_image_counts(), rows)
    assert one_by_one.compute() == pytest.approx(BOTH, rel=1e-12)


def test_categories_without_any_segment_are_left_out() -> None:
    # Only thing 1 exists, perfectly predicted: PQ 1 although things 2 and 5 and stuff 3 and 4 score nothing.
    target = _panoptic(["A A V", "A A V"], {"A": (1, 3), "V": (0, 0)})
    m = PanopticMetrics(things=THINGS, stuff=STUFF)
    m.update(target[None], target[None])
    r = m.compute()
    assert (r["PQ"], r["SQ"], r["RQ"], r["PQ_th"]) == (1.0, 1.0, 1.0, 1.0)
    assert math.isnan(r["PQ_st"]) and math.isnan(r["RQ_st"])


def test_predicted_void_inside_a_target_segment_counts_as_a_miss() -> None:
    # COCO (and here): target thing 1 is 3 px; the prediction leaves all 3 void: a FN (TP 0 FP 0 FN 1), PQ_th 0.
    # The stuff pixel is matched (IoU 1). PQ = (0 + 1) / 2.
    target = _panoptic(["A A A S"], {"A": (1, 1), "S": (3, 0)})
    pred = _panoptic(["v v v S"], {"v": (0, 0), "S": (3, 0)})
    m = PanopticMetrics(things=THINGS, stuff=STUFF)
    m.update(pred[None], target[None])
    r = m.compute()
    assert (r["PQ"], r["PQ_th"], r["PQ_st"]) == (0.5, 0.0, 1.0)


def test_torchmetrics_departs_from_coco_where_the_prediction_has_void() -> None:
    """Why PanopticMetrics is not a wrapper of torchmetrics' PanopticQuality (see the module docstring)."""
    from torchmetrics.detection import PanopticQuality

    def torchmetrics_pq(pred: torch.Tensor, target: torch.Tensor) -> float:
        tm = PanopticQuality(things=THINGS, stuffs=STUFF, allow_unknown_preds_category=True)
        return float(tm(pred[None], target[None]))

    # Above: torchmetrics drops the unmatched target (mostly predicted void) instead of counting a FN.
    target = _panoptic(["A A A S"], {"A": (1, 1), "S": (3, 0)})
    pred = _panoptic(["v v v S"], {"v": (0, 0), "S": (3, 0)})
    assert torchmetrics_pq(pred, target) == pytest.approx(1.0)  # COCO: 0.5
    # Image 1: it also takes predicted void out of the target's area: stuff IoU 7/7 and thing A
    # 5 / (6 + 6 - 5 - 1) = 5/6, where COCO has 7/8 and 5/7.
    assert torchmetrics_pq(PRED_1, TARGET_1) == pytest.approx((5 / 6 / 2 + 0 + 1) / 3)  # COCO: IMAGE_1["PQ"]


def _blocky(rng: np.random.Generator, choices: list[tuple[int, int]]) -> torch.Tensor:
    """A random 3 x 4 map of (category, instance) blown up to 6 x 8, with a few pixels changed."""
    coarse = np.array(choices)[rng.integers(0, len(choices), size=(3, 4))]
    fine = coarse.repeat(2, axis=0).repeat(2, axis=1)
    noise = rng.random((6, 8)) < 0.15
    fine[noise] = np.array(choices)[rng.integers(0, len(choices), size=int(noise.sum()))]
    return torch.from_numpy(fine)


def test_agrees_with_torchmetrics_where_the_prediction_has_no_void() -> None:
    from torchmetrics.detection import PanopticQuality

    rng = np.random.default_rng(0)
    segments = [(1, 1), (1, 2), (2, 1), (2, 2), (5, 1), (3, 0), (4, 0)]
    target = torch.stack([_blocky(rng, [*segments, (0, 0)]) for _ in range(8)])
    pred = torch.stack([_blocky(rng, segments) for _ in range(8)])
    copied = torch.from_numpy(rng.random((4, 6, 8, 1)) < 0.7)
    pred[::2] = torch.where(copied, target[::2], pred[::2])  # some good predictions
    pred[pred[..., 0] == 0] = torch.tensor([3, 0])  # no predicted void
    mine = PanopticMetrics(things=THINGS, stuff=STUFF)
    mine.update(pred, target)
    r = mine.compute()
    tm = PanopticQuality(things=THINGS, stuffs=STUFF, return_sq_and_rq=True)
    pq, sq, rq = tm(pred, target).tolist()
    assert 0.05 < r["PQ"] < 0.95  # a non-trivial case
    # torchmetrics divides int64 areas with `/`, which gives float32 IoUs: agreement to float32 precision
    assert (r["PQ"], r["SQ"], r["RQ"]) == pytest.approx((pq, sq, rq), rel=1e-6)


def test_panoptic_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="both things and stuff"):
        PanopticMetrics(things={1, 2}, stuff={2})
    with pytest.raises(ValueError, match="both empty"):
        PanopticMetrics(things=set(), stuff=set())
    m = PanopticMetrics(things={1}, stuff={2})
    with pytest.raises(ValueError, match=r"\[N, H, W, 2\]"):
        m.update(TARGET_1, TARGET_1)
    with pytest.raises(ValueError, match="integer"):
        m.update(TARGET_1[None].float(), TARGET_1[None].float())
    with pytest.raises(RuntimeError, match="no images evaluated"):
        m.compute()
    m.sync()
    with pytest.raises(RuntimeError, match="twice"):
        m.sync()


# ---------------------------------------------------------------------------------------- DDP


def _depth_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 2 x 2 images: case A, one image with a single valid pixel, one without any."""
    pred, gt = _case_a()
    return (
        torch.cat([pred, _depth([[3.0, 1.0], [1.0, 1.0]]), torch.ones(1, 2, 2)]),
        torch.cat([gt, _depth([[1.0, 0.0], [0.0, 0.0]]), torch.zeros(1, 2, 2)]),
    )


def _panoptic_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([PRED_1, PRED_2, PRED_2]), torch.stack([TARGET_1, TARGET_2, TARGET_1])


def _rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One of two gloo processes: images i with i % 2 == rank (as ShardSampler deals them), sync, compute."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        depth_pred, depth_gt = _depth_batch()
        pan_pred, pan_target = _panoptic_batch()
        depth = DepthMetrics()
        panoptic = PanopticMetrics(things=THINGS, stuff=STUFF)
        for i in range(rank, 3, 2):
            depth.update(depth_pred[i : i + 1], depth_gt[i : i + 1])
            panoptic.update(pan_pred[i : i + 1], pan_target[i : i + 1])
        depth.sync()
        panoptic.sync()
        result = {
            "depth": depth.compute(),
            "depth_rows": depth.per_image_counts().tolist(),
            "panoptic": panoptic.compute(),
            "panoptic_rows": panoptic.per_image_counts().tolist(),
            "panoptic_images": panoptic.images,
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sync_across_two_gloo_processes_equals_one_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    start = time.perf_counter()
    mp.spawn(_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    elapsed = time.perf_counter() - start
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    depth, panoptic = DepthMetrics(), PanopticMetrics(things=THINGS, stuff=STUFF)
    depth.update(*_depth_batch())
    panoptic.update(*_panoptic_batch())
    for rank in ranks:
        assert rank["depth"] == pytest.approx(depth.compute(), rel=1e-12)
        np.testing.assert_allclose(rank["depth_rows"], depth.per_image_counts(), rtol=1e-12)  # dataset order
        assert rank["panoptic"] == pytest.approx(panoptic.compute(), rel=1e-12, nan_ok=True)
        np.testing.assert_allclose(rank["panoptic_rows"], panoptic.per_image_counts(), rtol=1e-12)
        assert rank["panoptic_images"] == 3
    # the one-process values by hand: depth averages case A and (gt 1, pred 3) (the empty image is skipped)
    assert ranks[0]["depth"]["abs_rel"] == pytest.approx((CASE_A["abs_rel"] + 2) / 2)
    assert elapsed < 60, f"two-process run took {elapsed:.0f} s"
