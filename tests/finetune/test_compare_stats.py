"""compare's statistics against hand-computed values: mean/std, paired bootstrap, per-image counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dysample_swap.finetune.metrics import SegmentationMetrics
from dysample_swap.finetune.stats import Interval, mean_std, paired_bootstrap, resample_weights, seed_bootstrap


def _mean(stats: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image (value, 1) rows summed -> the mean value (NaN without images)."""
    with np.errstate(invalid="ignore"):
        return {"mean": stats[..., 0] / stats[..., 1]}


def test_mean_and_sample_std() -> None:
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, round(math.sqrt(5 / 3), 4))  # ddof = 1
    assert mean_std([0.2, None, 0.4, float("nan")]) == (0.3, round(math.sqrt(0.02), 4))
    assert mean_std([0.7]) == (0.7, None)
    assert mean_std([]) == (None, None)
    assert mean_std([-1e-9, 1e-9]) == (0.0, 0.0)  # rounding never gives "-0.0"
    assert str(mean_std([-1e-9])[0]) == "0.0"


def test_two_images_one_better_gives_the_hand_computed_percentiles() -> None:
    # Image 0: both arms 0; image 1: other is 1 better. A resample of 2 images holds image 1
    # 0, 1 or 2 times (probabilities 1/4, 1/2, 1/4): mean difference 0, 0.5 or 1.
    ref = np.array([[[0.0, 1.0], [0.0, 1.0]]])
    other = np.array([[[0.0, 1.0], [1.0, 1.0]]])
    iv = paired_bootstrap(_mean, ref, other, resamples=4000, generator=1)["mean"]
    assert iv.estimate == 0.5
    assert (iv.low, iv.high) == (0.0, 1.0)
    assert not iv.excludes_zero


def test_constant_shift_and_identical_arms() -> None:
    rng = np.random.default_rng(5)
    ref = np.stack([rng.random((3, 7)), np.ones((3, 7))], axis=-1)  # 3 seeds, 7 images
    shifted = ref + np.array([0.25, 0.0])
    iv = paired_bootstrap(_mean, ref, shifted, resamples=300)["mean"]
    assert iv.estimate == pytest.approx(0.25) and iv.low == pytest.approx(0.25)
    assert iv.high == pytest.approx(0.25) and iv.excludes_zero
    same = paired_bootstrap(_mean, ref, ref.copy(), resamples=300)["mean"]
    assert (same.estimate, same.low, same.high, same.excludes_zero) == (0.0, 0.0, 0.0, False)
    worse = paired_bootstrap(_mean, shifted, ref, resamples=300)["mean"]
    assert worse.high == pytest.approx(-0.25) and worse.excludes_zero


def test_resamples_sum_statistics_not_per_image_ratios() -> None:
    # IoU-like: image A 1/2, image B 3/4; the dataset value is (1+3)/(2+4), not their mean.
    ref = np.array([[[0.0, 2.0], [0.0, 4.0]]])
    other = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    iv = paired_bootstrap(_mean, ref, other, resamples=2000)["mean"]
    assert iv.estimate == pytest.approx(4 / 6)
    # Possible resamples: {A, A} 1/2, {B, B} 3/4, {A, B} 4/6 -> percentiles 2.5 and 97.5.
    assert (iv.low, iv.high) == pytest.approx((0.5, 0.75))


def test_fixed_generator_matches_a_plain_loop_over_resamples() -> None:
    rng = np.random.default_rng(11)
    ref = np.stack([rng.random((2, 5)), np.ones((2, 5))], axis=-1)  # 2 seeds, 5 images
    other = ref + np.stack([rng.normal(0.1, 0.2, (2, 5)), np.zeros((2, 5))], axis=-1)
    got = paired_bootstrap(_mean, ref, other, resamples=50, generator=7)["mean"]
    # The documented draw order: image multiplicities, then seed indices.
    draws = np.random.default_rng(7)
    weights = resample_weights(draws, 50, 5)
    seeds = draws.integers(0, 2, size=(50, 2))
    boot = []
    for b in range(50):
        diffs = []
        for s in seeds[b]:
            o = (weights[b] * other[s, :, 0]).sum() / (weights[b] * other[s, :, 1]).sum()
            r = (weights[b] * ref[s, :, 0]).sum() / (weights[b] * ref[s, :, 1]).sum()
            diffs.append(o - r)
        boot.append(sum(diffs) / len(diffs))
    assert got.low == pytest.approx(np.percentile(boot, 2.5))
    assert got.high == pytest.approx(np.percentile(boot, 97.5))
    assert got.estimate == pytest.approx(np.mean(other[..., 0] - ref[..., 0]))
    again = paired_bootstrap(_mean, ref, other, resamples=50, generator=7)["mean"]
    assert again == got


def test_seed_bootstrap_pairs_seeds() -> None:
    # Per-seed differences 0.1 and 0.3: resample means 0.1, 0.2 or 0.3.
    iv = seed_bootstrap({"AP": [0.30, 0.50]}, {"AP": [0.40, 0.80]}, resamples=4000)["AP"]
    assert iv.estimate == pytest.approx(0.2)
    assert (iv.low, iv.high) == pytest.approx((0.1, 0.3))
    assert iv.excludes_zero


def test_class_absent_everywhere_has_no_interval() -> None:
    ref = np.array([[[0.0, 0.0], [0.0, 0.0]]])
    iv = paired_bootstrap(_mean, ref, ref.copy(), resamples=20)["mean"]
    assert iv == Interval(None, None, None) and not iv.excludes_zero
    assert iv.to_dict() == {"mean": None, "low": None, "high": None, "excludes_zero": False}


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(_mean, np.zeros((1, 2, 2)), np.zeros((1, 3, 2)))


def test_per_image_counts_by_hand_and_their_sum_gives_the_dataset_metrics() -> None:
    # 2 classes, 1x4 images. Image 0 perfect; image 1 predicts class 1 everywhere.
    target = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 1, 1]], [[1, 1, 1, 1]]])
    metrics = SegmentationMetrics(2, class_names=["bg", "fg"])
    metrics.update(pred, target)
    rows = metrics.per_image_counts()
    # tp (bg, fg), predicted, ground truth, then the boundary band: d = 1 and the 1-px-high
    # image border makes every pixel boundary, so the band counts equal the plain ones.
    assert rows.tolist() == [[2, 2, 2, 2, 2, 2, 2, 2, 2, 2], [0, 2, 0, 4, 2, 2, 0, 2, 2, 4]]
    summed = metrics.scores(rows.sum(0))
    whole = metrics.compute()
    assert whole["IoU/bg"] == pytest.approx(2 / 4) and whole["IoU/fg"] == pytest.approx(4 / 6)
    assert {k: float(v) for k, v in summed.items()} == pytest.approx(whole)
    only_first = metrics.scores(rows[0])
    assert float(only_first["mIoU"]) == 1.0
