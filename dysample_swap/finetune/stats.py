"""Statistics behind ``compare``: mean and spread over seeds, and paired bootstrap intervals.

* :func:`mean_std`: mean and sample standard deviation (``ddof=1``) of one metric over seeds.
* :func:`paired_bootstrap`: the 95% (``level``) percentile interval of the difference
  ``other - reference`` of every metric, resampling validation images and seeds *paired*: each
  resample draws one multiset of images and one multiset of seeds, and both arms are scored on
  exactly those. Metrics are recomputed from summed per-image sufficient statistics (for mIoU:
  per-class intersection and union pixel counts), so a resample's mIoU is the dataset-level mIoU
  of the resampled images, not a mean of per-image IoUs.

With one image "unit" per seed holding the seed's final metric values and the identity as the
statistic, the same function is the paired bootstrap over seeds alone (:func:`seed_bootstrap`).

Example:
    >>> mean_std([0.5, 0.7])
    (0.6, 0.1414)
    >>> ref = np.array([[[1.0, 1.0], [0.0, 1.0]]])      # 1 seed, 2 images, stats (sum, count)
    >>> oth = ref + np.array([[[1.0, 0.0], [1.0, 0.0]]])   # every image's value + 1
    >>> ratio = lambda s: {"mean": s[..., 0] / s[..., 1]}
    >>> iv = paired_bootstrap(ratio, ref, oth, resamples=200, generator=0)["mean"]
    >>> iv.estimate, iv.low, iv.high, iv.excludes_zero
    (1.0, 1.0, 1.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Method names written to summary.json and printed under the compare table.
IMAGES_AND_SEEDS = "paired bootstrap over validation images and seeds"
SEEDS_ONLY = "paired bootstrap over seeds"

Statistic = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(values: Sequence[float | None], digits: int = 4) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of the finite values, rounded to ``digits``.

    ``None``/NaN values (a class absent in a run) are left out; the std is ``None`` for fewer
    than two values and the mean is ``None`` for none.

    Example:
        >>> mean_std([1.0, 2.0, 3.0, 4.0])
        (2.5, 1.291)
        >>> mean_std([0.25]), mean_std([None])
        ((0.25, None), (None, None))
    """
    finite = _finite(values)
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return round(mean, digits) + 0.0, None
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return round(mean, digits) + 0.0, round(math.sqrt(var), digits)


@dataclass(frozen=True)
class Interval:
    """A difference ``other - reference``: the point estimate and its bootstrap interval.

    ``estimate`` is the mean over seeds of the difference on all images; ``low``/``high`` are
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the resampled differences
    (``None`` when no resample gave a finite value, e.g. a class absent everywhere).

    Example:
        >>> Interval(0.1, 0.02, 0.2).excludes_zero, Interval(0.1, -0.01, 0.2).excludes_zero
        (True, False)
    """

    estimate: float | None
    low: float | None
    high: float | None

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (and is not a single point at 0).

        Example:
            >>> Interval(0.0, 0.0, 0.0).excludes_zero
            False
        """
        if self.low is None or self.high is None:
            return False
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self, digits: int = 4) -> dict[str, float | bool | None]:
        """``{"mean", "low", "high", "excludes_zero"}`` with rounded numbers (for summary.json).

        Example:
            >>> Interval(0.123456, 0.1, 0.2).to_dict()
            {'mean': 0.1235, 'low': 0.1, 'high': 0.2, 'excludes_zero': True}
        """

        def r(v: float | None) -> float | None:
            return None if v is None else round(v, digits) + 0.0  # + 0.0: no "-0.0"

        return {"mean": r(self.estimate), "low": r(self.low), "high": r(self.high), "excludes_zero": self.excludes_zero}


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN where every value is NaN (and no warning).

    Example:
        >>> nanmean(np.array([[1.0, np.nan], [np.nan, np.nan]]), axis=1).tolist()
        [1.0, nan]
    """
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _percentile(values: np.ndarray, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else None


def resample_weights(rng: np.random.Generator, resamples: int, count: int) -> np.ndarray:
    """``[resamples, count]`` multiplicities: row ``b`` counts how often each of ``count`` items
    was drawn in ``count`` draws with replacement (the rows sum to ``count``).

    Example:
        >>> w = resample_weights(np.random.default_rng(0), 3, 5)
        >>> w.shape, w.sum(axis=1).tolist()
        ((3, 5), [5.0, 5.0, 5.0])
    """
    draws = rng.integers(0, count, size=(resamples, count))
    weights = np.zeros((resamples, count))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    return weights


def paired_bootstrap(
    statistic: Statistic,
    reference: np.ndarray,
    other: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    generator: np.random.Generator | int = 0,
) -> dict[str, Interval]:
    """Paired bootstrap interval of ``statistic(other) - statistic(reference)``, per metric.

    Args:
        statistic: maps summed sufficient statistics ``[..., K]`` to ``{metric: values[...]}``,
            vectorised over the leading dimensions.
        reference, other: per-image sufficient statistics ``[seeds, images, K]``; the same seeds
            and images, in the same order, for both arms.
        resamples: number of bootstrap resamples.
        level: coverage of the interval (0.95: the 2.5 and 97.5 percentiles).
        generator: a ``numpy`` generator or a seed for ``np.random.default_rng``. The draws are,
            in order: image multiplicities (:func:`resample_weights` over images), then seed
            indices ``integers(0, seeds, (resamples, seeds))``.

    Each resample ``b`` weights image ``i`` by how often it was drawn, recomputes every metric of
    each drawn seed from the weighted sums, and averages ``other - reference`` over the drawn
    seeds. The estimate is the same on all images and all seeds, each once.

    Example:
        >>> counts = lambda s: {"acc": s[..., 0] / s[..., 1]}        # correct pixels / pixels
        >>> ref = np.array([[[3.0, 4.0], [1.0, 4.0]]])               # 1 seed, 2 images
        >>> oth = np.array([[[4.0, 4.0], [1.0, 4.0]]])
        >>> paired_bootstrap(counts, ref, oth, resamples=100)["acc"].estimate   # (5-4)/8
        0.125
    """
    reference, other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape or reference.ndim != 3:
        raise ValueError(
            f"reference and other must both be [seeds, images, K] arrays of the same "
            f"shape (paired); got {reference.shape} and {other.shape}"
        )
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level} and {resamples}")
    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
    seeds, images, _ = reference.shape
    weights = resample_weights(rng, resamples, images)  # [B, I]
    seed_draws = rng.integers(0, seeds, size=(resamples, seeds))  # [B, S]

    def scores(stats: np.ndarray) -> tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]:
        whole = statistic(stats.sum(axis=1))  # {m: [S]}
        resampled = statistic(np.einsum("bi,sik->sbk", weights, stats))  # {m: [S, B]}
        return whole, resampled

    ref_whole, ref_boot = scores(reference)
    oth_whole, oth_boot = scores(other)
    tail = 100.0 * (1.0 - level) / 2.0
    result = {}
    for name in ref_whole:
        per_seed = np.asarray(oth_whole[name], dtype=np.float64) - ref_whole[name]
        diff = np.asarray(oth_boot[name], dtype=np.float64) - ref_boot[name]  # [S, B]
        drawn = diff[seed_draws, np.arange(resamples)[:, None]]  # [B, S]
        boot = nanmean(drawn, axis=1)
        estimate = nanmean(per_seed[None, :], axis=1)[0]
        result[name] = Interval(
            None if math.isnan(estimate) else float(estimate), _percentile(boot, tail), _percentile(boot, 100.0 - tail)
        )
    return result


def seed_bootstrap(
    reference: Mapping[str, Sequence[float | None]],
    other: Mapping[str, Sequence[float | None]],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    generator: np.random.Generator | int = 0,
) -> dict[str, Interval]:
    """Paired bootstrap over seeds of per-seed metric values (``{metric: [value per seed]}``).

    Seed ``k`` of ``reference`` is paired with seed ``k`` of ``other``. Needs at least two seeds
    to say anything: with one, the interval is the single difference.

    Example:
        >>> iv = seed_bootstrap({"AP": [0.30, 0.32]}, {"AP": [0.35, 0.37]}, resamples=50)["AP"]
        >>> round(iv.estimate, 4), round(iv.low, 4), round(iv.high, 4)
        (0.05, 0.05, 0.05)
    """
    names = [m for m in reference if m in other]

    def stack(values: Mapping[str, Sequence[float | None]]) -> np.ndarray:
        table = [[np.nan if v is None else float(v) for v in values[m]] for m in names]
        return np.asarray(table, dtype=np.float64).T[:, None, :]  # [S, 1, M]

    def identity(stats: np.ndarray) -> dict[str, np.ndarray]:
        return {m: stats[..., k] for k, m in enumerate(names)}

    return paired_bootstrap(
        identity, stack(reference), stack(other), resamples=resamples, level=level, generator=generator
    )
