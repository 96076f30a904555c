"""Panoptic quality (PQ, SQ, RQ) by the COCO panoptic definitions (Kirillov et al., CVPR 2019).

:class:`PanopticMetrics` takes panoptic maps as torchmetrics' ``PanopticQuality`` does: integer
tensors ``[N, H, W, 2]`` of (category id, instance id) per pixel. A segment is the set of pixels
of one (category, instance) pair; a stuff category is one segment per image whatever its instance
ids; a category in neither ``things`` nor ``stuff`` is void (unlabelled), in the target and in the
prediction alike. Per image, as ``pq_compute_single_core`` of the COCO ``panopticapi`` does:

* a predicted and a target segment of the same category match when ``IoU > 0.5``, with the
  target's void pixels taken out of the predicted segment:
  ``IoU = |P ∩ G| / (|P| + |G| - |P ∩ G| - |P ∩ void|)``; the match is unique;
* an unmatched target segment is a false negative (FN);
* an unmatched predicted segment is a false positive (FP) unless more than half of its area lies
  in target void;
* predicted void pixels belong to no predicted segment; inside a target segment they count in
  the union like any other miss.

Per category over the dataset, ``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``
(0 without a TP) and ``RQ = TP / (TP + FP/2 + FN/2)``; a category with ``TP + FP + FN == 0`` is
left out of the means. ``PQ``/``SQ``/``RQ`` average over all categories, ``*_th`` over things,
``*_st`` over stuff (NaN where no category is left).

Crowd regions: the ``(category, instance)`` format has no ``iscrowd`` flag, so COCO's crowd
rule (an unmatched prediction is not a FP when more than half of it lies in void plus a crowd
region of its own category) cannot be expressed. Mark crowd pixels void in the target (a
category in neither set): that excuses a prediction lying mostly in the crowd region whatever its
category, and leaves those pixels out of a matched pair's union, where COCO keeps them.

Why not ``torchmetrics.detection.PanopticQuality``: it subtracts the *predicted*-void part of a
target segment from the union too and does not count a target segment that is mostly predicted
void as a FN; COCO does neither (the tests show both on hand-computed maps). Where the
prediction has no void pixel the two agree (also tested).

Example:
    >>> import torch
    >>> target = torch.tensor([[[[1, 1], [1, 1], [2, 0], [2, 0]]]])   # 1 x 1 x 4: thing 1 (2 px), stuff 2
    >>> pred = torch.tensor([[[[1, 7], [2, 0], [2, 0], [2, 0]]]])     # IoU: thing 1/2, stuff 2/3
    >>> m = PanopticMetrics(things={1}, stuff={2}); m.update(pred, target)
    >>> r = m.compute(); r["PQ_th"], round(r["SQ_st"], 4), r["RQ"]   # thing: 1 FP + 1 FN; stuff: 1 TP
    (0.0, 0.6667, 0.5)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dysample_swap.finetune.distributed import interleave_shards, world_size
from dysample_swap.finetune.stats import nanmean

#: The metrics :meth:`PanopticMetrics.compute` returns, in this order.
PANOPTIC_METRIC_NAMES = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
#: Blocks of :meth:`PanopticMetrics.per_image_counts` (each one column per category).
PANOPTIC_COUNT_NAMES = ("tp", "fp", "fn", "iou_sum")


class PanopticMetrics:
    """Dataset-level PQ, SQ and RQ, over all categories, things and stuff (COCO definitions).

    ``update`` takes predicted and target panoptic maps ``[N, H, W, 2]`` (category id, instance
    id); ``compute`` returns fractions ``PQ SQ RQ PQ_th SQ_th RQ_th PQ_st SQ_st RQ_st`` (the
    module docstring has the matching rules and what is void).

    The per-image sums (per category: TP, FP, FN, sum of matched IoUs) are kept:
    :meth:`per_image_counts` gives them, and :meth:`scores` turns any sum of rows into metrics
    (what a bootstrap over images needs). Across DDP ranks, call :meth:`sync` once before
    :meth:`compute`: it sums the totals with ``all_reduce`` and gathers the per-image rows.

    Example:
        >>> m = PanopticMetrics(things={1, 2}, stuff={3})
        >>> m.categories, m.num_things
        ([1, 2, 3], 2)
    """

    def __init__(self, things: Collection[int], stuff: Collection[int]) -> None:
        things_set, stuff_set = {int(c) for c in things}, {int(c) for c in stuff}
        if things_set & stuff_set:
            raise ValueError(f"categories {sorted(things_set & stuff_set)} are both things and stuff")
        if not things_set | stuff_set:
            raise ValueError("things and stuff are both empty: no category to score")
        self.things, self.stuff = things_set, stuff_set
        #: Category ids in column order: things, then stuff, each sorted.
        self.categories = sorted(things_set) + sorted(stuff_set)
        self.num_things = len(things_set)
        self.reset()

    @property
    def num_categories(self) -> int:
        """Number of scored categories (things and stuff).

        Example:
            >>> PanopticMetrics(things=[1], stuff=[5, 6]).num_categories
            3
        """
        return len(self.categories)

    def reset(self) -> None:
        """Forget everything accumulated (and any previous :meth:`sync`).

        Example:
            >>> m = PanopticMetrics({1}, {2}); m.reset(); m.images, m.totals.tolist()
            (0, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        """
        self.totals = torch.zeros(4 * self.num_categories, dtype=torch.float64)
        self.images = 0
        self._per_image: list[torch.Tensor] = []
        self._synced = False

    def _check(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[-1] != 2:
            raise ValueError(
                f"pred and target must both be [N, H, W, 2] (category id, instance id) maps; got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point() or pred.is_complex() or target.is_complex():
            raise ValueError("pred and target must be integer (category id, instance id) tensors")
        return pred.long().flatten(1, 2), target.long().flatten(1, 2)

    def update(
        self, pred: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor | Sequence[torch.Tensor]
    ) -> None:
        """Add a batch of predicted and target panoptic maps ``[N, H, W, 2]`` (or two equally long
        lists of ``[H, W, 2]`` maps, for images of different sizes).

        Example:
            >>> m = PanopticMetrics(things={1}, stuff=set())
            >>> same = torch.tensor([[[[1, 4], [1, 4]]]])
            >>> m.update(same, same); m.per_image_counts().tolist()   # tp, fp, fn, iou sum
            [[1.0, 0.0, 0.0, 1.0]]
            >>> m.update([same[0], same[0, :, :1]], [same[0], same[0, :, :1]]); m.images
            3
        """
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            if len(pred) != len(target):
                raise ValueError(f"{len(pred)} predicted maps for {len(target)} targets")
            for one_pred, one_target in zip(pred, target):
                self.update(one_pred.unsqueeze(0), one_target.unsqueeze(0))
            return
        if self._synced:
            raise RuntimeError(
                "update() after sync(): the state is already the global sum; call reset() before accumulating again"
            )
        pred, target = self._check(pred, target)
        rows = torch.stack([self._image_counts(p, t) for p, t in zip(pred, target)]).cpu()
        self.totals += rows.sum(0)
        self.images += rows.shape[0]
        self._per_image.append(rows)

    def _segments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[P, 2]`` (category, instance) -> segment index per pixel (-1: void) and the column of
        each segment's category."""
        ids = torch.tensor(self.categories, device=pixels.device)
        category, instance = pixels[:, 0], pixels[:, 1]
        known = torch.isin(category, ids)
        is_stuff = torch.isin(category, ids[self.num_things :])
        instance = torch.where(is_stuff, torch.zeros_like(instance), instance)
        segment = torch.full_like(category, -1)
        pairs, index = torch.unique(torch.stack([category, instance], 1)[known], dim=0, return_inverse=True)
        segment[known] = index
        column = (pairs[:, :1] == ids[None, :]).long().argmax(1)
        return segment, column

    def _image_counts(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One image's ``[4C]`` row: TP, FP, FN and sum of matched IoUs per category."""
        c = self.num_categories
        pred_segment, pred_column = self._segments(pred)
        gt_segment, gt_column = self._segments(target)
        n_pred, n_gt = len(pred_column), len(gt_column)
        joint = torch.bincount((pred_segment + 1) * (n_gt + 1) + (gt_segment + 1), minlength=(n_pred + 1) * (n_gt + 1))
        joint = joint.view(n_pred + 1, n_gt + 1)  # row/column 0: void
        intersection = joint[1:, 1:]
        pred_void = joint[1:, 0]  # predicted segment ∩ target void
        pred_area, gt_area = joint[1:].sum(1), joint[:, 1:].sum(0)
        union = pred_area[:, None] + gt_area[None, :] - intersection - pred_void[:, None]
        match = (pred_column[:, None] == gt_column[None, :]) & (2 * intersection > union)  # IoU > 0.5, exactly
        iou = intersection[match].double() / union[match].double()
        matched_column = gt_column[match.nonzero()[:, 1]]
        gt_matched, pred_matched = match.any(0), match.any(1)
        false_positive = ~pred_matched & (2 * pred_void <= pred_area)  # not more than half in void

        def per_category(columns: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
            return torch.bincount(columns, weights=weights, minlength=c).double()

        return torch.cat(
            [
                per_category(matched_column),
                per_category(pred_column[false_positive]),
                per_category(gt_column[~gt_matched]),
                per_category(matched_column, iou),
            ]
        )

    def per_image_counts(self) -> np.ndarray:
        """Per image seen, ``float64 [images, 4 * num_categories]``: in blocks of one column per
        category (:attr:`categories` order), TP, FP, FN and the sum of matched IoUs.

        Any subset (or multiset) of rows, summed and passed to :meth:`scores`, gives that
        subset's metrics. Rows are in :meth:`update` order; after :meth:`sync`, in dataset order
        for shards dealt out as :class:`~dysample_swap.finetune.distributed.ShardSampler` does.

        Example:
            >>> PanopticMetrics({1}, {2}).per_image_counts().shape
            (0, 8)
        """
        if not self._per_image:
            return np.zeros((0, 4 * self.num_categories), dtype=np.float64)
        return torch.cat(self._per_image).numpy()

    def scores(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics from summed :meth:`per_image_counts` rows ``[..., 4C]``, vectorised over the
        leading dimensions (keys :data:`PANOPTIC_METRIC_NAMES`).

        Example:
            >>> m = PanopticMetrics(things={1}, stuff={2, 3})
            >>> r = m.scores(np.array([1, 0, 0,  0, 1, 0,  0, 0, 0,  0.8, 0, 0]))  # tp | fp | fn | iou
            >>> float(r["PQ_th"]), float(r["PQ_st"]), float(r["RQ"])      # stuff 3 has no segment
            (0.8, 0.0, 0.5)
        """
        c, t = self.num_categories, self.num_things
        counts = np.asarray(counts, dtype=np.float64)
        tp, fp, fn, iou = (counts[..., k * c : (k + 1) * c] for k in range(4))
        present = tp + fp + fn > 0
        denominator = np.maximum(tp + 0.5 * fp + 0.5 * fn, 0.5)
        per_category = {
            "PQ": np.where(present, iou / denominator, np.nan),
            "SQ": np.where(present, iou / np.maximum(tp, 1.0), np.nan),  # 0 without a TP (iou sum 0)
            "RQ": np.where(present, tp / denominator, np.nan),
        }
        result: dict[str, np.ndarray] = {}
        for suffix, columns in (("", slice(None)), ("_th", slice(None, t)), ("_st", slice(t, None))):
            for name, values in per_category.items():
                result[name + suffix] = nanmean(values[..., columns], axis=-1)
        return {name: result[name] for name in PANOPTIC_METRIC_NAMES}

    def sync(self, process_group: Any = None) -> None:
        """Sum the totals over all ranks of ``process_group`` (no-op in a single process) and
        gather the per-image rows.

        Call once, after the last :meth:`update` and before :meth:`compute`; a second call
        raises instead of double counting.

        Example:
            >>> m = PanopticMetrics({1}, {2}); m.sync()   # not distributed: nothing to reduce
        """
        if self._synced:
            raise RuntimeError("sync() called twice; the statistics are already summed over ranks")
        world = world_size(process_group)
        if world > 1:
            state = torch.cat([self.totals, torch.tensor([float(self.images)], dtype=torch.float64)])
            if dist.get_backend(process_group) == "nccl":
                state = state.cuda()
            dist.all_reduce(state, op=dist.ReduceOp.SUM, group=process_group)
            shards: list[Any] = [None] * world
            dist.all_gather_object(shards, self.per_image_counts(), group=process_group)
            state = state.cpu()
            self.totals, self.images = state[:-1].clone(), int(state[-1])
            rows = interleave_shards(shards)
            self._per_image = [torch.from_numpy(np.stack(rows))] if rows else []
        self._synced = True

    def compute(self) -> dict[str, float]:
        """``PQ SQ RQ PQ_th SQ_th RQ_th PQ_st SQ_st RQ_st`` as Python floats (fractions).

        Example:
            >>> PanopticMetrics({1}, {2}).compute()
            Traceback (most recent call last):
            ...
            RuntimeError: no images evaluated: call update() first
        """
        if self.images == 0:
            raise RuntimeError("no images evaluated: call update() first")
        return {k: float(v) for k, v in self.scores(self.totals.numpy()).items()}
