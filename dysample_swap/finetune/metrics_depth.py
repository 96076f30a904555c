"""Monocular depth metrics under the Monocular-Depth-Estimation-Toolbox / BTS protocol.

:class:`DepthMetrics` follows the toolbox (``depth/core/evaluation/metrics.py``, ``calculate``
and ``pre_eval_to_metrics``; ``DepthEncoderDecoder.encode_decode`` for the prediction):

* the prediction is clamped to ``[min_depth, max_depth]``, then resized to the target's size by
  bilinear interpolation (``align_corners=False``) when the sizes differ;
* valid pixels are ``min_depth < target < max_depth`` (a target of 0, "no measurement", is never
  valid);
* every metric is computed per image over its valid pixels, then averaged over images. An image
  without a valid pixel is skipped (the toolbox's ``calculate`` gives NaN and ``np.nanmean``
  drops it).

With ``gt`` and ``pred`` the valid pixels of one image, ``thresh = max(gt / pred, pred / gt)``:

=============  ======================================================================
``delta{k}``   ``mean(thresh < 1.25 ** k)`` for k = 1, 2, 3
``abs_rel``    ``mean(|gt - pred| / gt)``
``sq_rel``     ``mean((gt - pred) ** 2 / gt)``
``rmse``       ``sqrt(mean((gt - pred) ** 2))`` (metres)
``rmse_log``   ``sqrt(mean((log gt - log pred) ** 2))``
``log10``      ``mean(|log10 gt - log10 pred|)``
``silog``      ``100 * sqrt(mean(err ** 2) - mean(err) ** 2)``, ``err = log pred - log gt``
=============  ======================================================================

``silog`` is the toolbox's (and BTS's) formula: the variance form with weight 1 on the squared
mean (Eigen et al.'s lambda = 1, not the 0.85 of the training loss), times 100. Where rounding
makes the variance slightly negative the toolbox's NaN becomes 0; here the variance is clamped
at 0, which is the same. Everything is computed in float64.

Example:
    >>> import torch
    >>> m = DepthMetrics()
    >>> m.update(torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[1.0, 0.0]]]))  # second pixel: no depth
    >>> r = m.compute(); r["abs_rel"], r["delta1"]
    (0.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from dysample_swap.finetune.distributed import interleave_shards, world_size

#: The metrics :meth:`DepthMetrics.compute` returns, in this order.
DEPTH_METRIC_NAMES = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def _as_batch(depth: torch.Tensor, name: str) -> torch.Tensor:
    """``[N, H, W]`` or ``[N, 1, H, W]`` -> ``[N, 1, H, W]``."""
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"{name} must be depth maps [N, H, W] or [N, 1, H, W]; got {tuple(depth.shape)}")
    return depth


class DepthMetrics:
    """Per-image depth errors and accuracies averaged over images (toolbox / BTS protocol).

    ``update`` takes predicted and true depth in metres, ``[N, H, W]`` or ``[N, 1, H, W]``;
    ``compute`` returns ``delta1``, ``delta2``, ``delta3`` (fractions), ``abs_rel``,
    ``sq_rel``, ``rmse``, ``rmse_log``, ``log10`` and ``silog`` (the module docstring has the
    definitions), each the mean over images of the image's value.

    The per-image values are kept: :meth:`per_image` lists them, :meth:`per_image_counts` gives
    them as rows whose sums :meth:`scores` turns into metrics (what a bootstrap over images
    needs). Across DDP ranks, call :meth:`sync` once before :meth:`compute`; it gathers every
    rank's rows, so every rank holds the global result.

    Example:
        >>> m = DepthMetrics(max_depth=10.0)
        >>> m.update(torch.full((1, 2, 2), 2.0), torch.full((1, 2, 2), 4.0))   # half the depth
        >>> r = m.compute(); r["abs_rel"], r["rmse"], r["delta3"], r["silog"]
        (0.5, 2.0, 0.0, 0.0)
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        if not 0.0 < min_depth < max_depth:
            raise ValueError(
                f"need 0 < min_depth < max_depth (predictions are clamped to that range and logged); "
                f"got min_depth={min_depth}, max_depth={max_depth}"
            )
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen (and any previous :meth:`sync`).

        Example:
            >>> m = DepthMetrics(); m.reset(); m.per_image_counts().shape
            (0, 10)
        """
        self._per_image: list[torch.Tensor] = []
        self._synced = False

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true depth maps (metres; target 0 = no measurement).

        ``pred`` is clamped to ``[min_depth, max_depth]`` and, if its size differs from the
        target's, resized to it bilinearly (``align_corners=False``), as the toolbox does.

        Example:
            >>> m = DepthMetrics()
            >>> m.update(torch.full((2, 1, 2, 2), 3.0), torch.full((2, 4, 4), 3.0))   # resized
            >>> m.per_image()["rmse"]
            [0.0, 0.0]
        """
        if self._synced:
            raise RuntimeError("update() after sync(): the rows are already gathered; call reset() first")
        pred, target = _as_batch(pred, "pred"), _as_batch(target, "target")
        if pred.shape[0] != target.shape[0]:
            raise ValueError(f"{pred.shape[0]} predictions for {target.shape[0]} targets")
        # the depth range is compared in the target's own precision, as the toolbox's numpy does
        valid = ((target > self.min_depth) & (target < self.max_depth)).flatten(1)
        pred = pred.double().clamp(self.min_depth, self.max_depth)
        if pred.shape[-2:] != target.shape[-2:]:
            pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
        self._per_image.append(self._image_rows(pred.flatten(1), target.double().flatten(1), valid).cpu())

    def _image_rows(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``[N, 10]``: 1 (0 for an image without a valid pixel), then the nine metrics (0 there)."""
        count = valid.sum(1)
        gt = torch.where(valid, gt, 1.0)
        pred = torch.where(valid, pred, 1.0)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return torch.where(valid, x, 0.0).sum(1) / count.clamp_min(1)

        thresh = torch.maximum(gt / pred, pred / gt)
        err = pred.log() - gt.log()
        values = [mean((thresh < 1.25**k).double()) for k in (1, 2, 3)] + [
            mean((gt - pred).abs() / gt),
            mean((gt - pred) ** 2 / gt),
            mean((gt - pred) ** 2).sqrt(),
            mean(err**2).sqrt(),
            mean((gt.log10() - pred.log10()).abs()),
            (mean(err**2) - mean(err) ** 2).clamp_min(0.0).sqrt() * 100.0,
        ]
        seen = (count > 0).double()
        return torch.stack([seen] + [v * seen for v in values], dim=1)

    def per_image_counts(self) -> np.ndarray:
        """Per image seen, ``float64 [images, 10]``: 1, then the nine metrics in
        :data:`DEPTH_METRIC_NAMES` order; an image without a valid pixel has a row of zeros.

        Summing any subset (or multiset) of rows and passing it to :meth:`scores` gives that
        subset's metrics: what a bootstrap over images needs. Rows are in :meth:`update` order;
        after :meth:`sync`, in dataset order for shards dealt out as
        :class:`~dysample_swap.finetune.distributed.ShardSampler` does.

        Example:
            >>> m = DepthMetrics(); m.update(torch.tensor([[[1.5]]]), torch.tensor([[[1.0]]]))
            >>> m.per_image_counts()[0, :5].tolist()   # image, delta1, delta2, delta3, abs_rel
            [1.0, 0.0, 1.0, 1.0, 0.5]
        """
        if not self._per_image:
            return np.zeros((0, 1 + len(DEPTH_METRIC_NAMES)), dtype=np.float64)
        return torch.cat(self._per_image).numpy()

    def per_image(self) -> dict[str, list[float]]:
        """Every metric's value for each image seen (:meth:`per_image_counts` order); NaN for an
        image without a valid pixel (left out of :meth:`compute`).

        Example:
            >>> m = DepthMetrics()
            >>> m.update(torch.tensor([[[2.0]], [[5.0]]]), torch.tensor([[[1.0]], [[0.0]]]))
            >>> m.per_image()["abs_rel"]
            [1.0, nan]
        """
        rows = self.per_image_counts()
        seen = rows[:, 0] > 0
        return {name: np.where(seen, rows[:, k + 1], np.nan).tolist() for k, name in enumerate(DEPTH_METRIC_NAMES)}

    def scores(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics from summed :meth:`per_image_counts` rows ``[..., 10]``, vectorised over the
        leading dimensions: each metric's sum divided by the number of images (NaN for none).

        Example:
            >>> r = DepthMetrics().scores(np.array([2.0, 1.0, 2.0, 2.0, 0.5, 0, 0, 0, 0, 0]))
            >>> float(r["delta1"]), float(r["abs_rel"])
            (0.5, 0.25)
        """
        counts = np.asarray(counts, dtype=np.float64)
        images = counts[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                name: np.where(images > 0, counts[..., k + 1] / np.maximum(images, 1), np.nan)
                for k, name in enumerate(DEPTH_METRIC_NAMES)
            }

    def sync(self, process_group: Any = None) -> None:
        """Gather every rank's per-image rows onto every rank (no-op in a single process).

        Call once, after the last :meth:`update` and before :meth:`compute`; a second call
        raises instead of counting images twice.

        Example:
            >>> m = DepthMetrics(); m.sync()   # not distributed: nothing to gather
        """
        if self._synced:
            raise RuntimeError("sync() called twice; the per-image rows are already gathered")
        world = world_size(process_group)
        if world > 1:
            shards: list[Any] = [None] * world
            dist.all_gather_object(shards, self.per_image_counts(), group=process_group)
            rows = interleave_shards(shards)
            self._per_image = [torch.from_numpy(np.stack(rows))] if rows else []
        self._synced = True

    def compute(self) -> dict[str, float]:
        """The nine metrics (keys :data:`DEPTH_METRIC_NAMES`), means over images with a valid
        pixel, as Python floats.

        Example:
            >>> DepthMetrics().compute()
            Traceback (most recent call last):
            ...
            RuntimeError: no image with a valid depth pixel: call update() with targets in (min_depth, max_depth) first
        """
        counts = self.per_image_counts().sum(0)
        if counts[0] == 0:
            raise RuntimeError(
                "no image with a valid depth pixel: call update() with targets in (min_depth, max_depth) first"
            )
        return {k: float(v) for k, v in self.scores(counts).items()}
