"""Evaluation metrics: mIoU + boundary IoU for segmentation, COCO AP for detection.

:class:`SegmentationMetrics` keeps sufficient statistics (a confusion matrix from torchmetrics,
plus per-class boundary intersection and union pixel counts), so results over a dataset are exact
and reducing across DDP ranks is a sum. Boundary IoU follows Cheng et al., "Boundary IoU:
Improving Object-Centric Image Segmentation Evaluation" (CVPR 2021): for each class, the
boundary region of a mask is the set of its pixels within distance ``d`` of its contour
(``d = max(1, round(ratio * image diagonal))``, chessboard distance, the image border counting
as contour as in the reference code); the class's boundary IoU is
``|P ∩ P_d ∩ G ∩ G_d| / |(P ∩ P_d) ∪ (G ∩ G_d)|`` summed over the dataset.

:class:`DetectionMetrics` runs pycocotools ``COCOeval`` (the official COCO protocol) on
torchvision-format predictions, for boxes and/or masks.

:class:`DepthMetrics` (monocular depth, :mod:`~dysample_swap.finetune.metrics_depth`) and
:class:`PanopticMetrics` (COCO PQ / SQ / RQ, :mod:`~dysample_swap.finetune.metrics_panoptic`)
live in their own modules and are re-exported here.

Example:
    >>> import torch
    >>> m = SegmentationMetrics(2, class_names=["bg", "fg"])
    >>> m.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 1], [0, 1]]]))
    >>> round(m.compute()["IoU/fg"], 4), m.compute()["pixel_acc"]
    (0.6667, 0.75)
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchmetrics.functional.classification import multiclass_confusion_matrix

from dysample_swap.finetune.data.coco_gt import build_coco, encode_masks, target_annotations
from dysample_swap.finetune.distributed import world_size
from dysample_swap.finetune.metrics_depth import DepthMetrics as DepthMetrics
from dysample_swap.finetune.metrics_panoptic import PanopticMetrics as PanopticMetrics
from dysample_swap.finetune.stats import nanmean

IOU_TYPES = ("bbox", "segm")
#: COCOeval ``stats`` positions and the names they get in :meth:`DetectionMetrics.compute`.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def boundary_dilation(height: int, width: int, ratio: float) -> int:
    """Boundary width in pixels: ``max(1, round(ratio * sqrt(H^2 + W^2)))`` (Cheng et al.).

    Example:
        >>> boundary_dilation(512, 512, 0.02), boundary_dilation(8, 8, 0.02)
        (14, 1)
    """
    return max(1, int(round(ratio * math.hypot(height, width))))


def label_boundary(labels: torch.Tensor, dilation: int) -> torch.Tensor:
    """Pixels of a label map ``[N, H, W]`` within ``dilation`` px of a differently labelled pixel
    or of the image border.

    For every class ``c``, ``(labels == c) & label_boundary(labels, d)`` is the boundary region
    of the mask ``labels == c`` in Cheng et al.'s sense (mask minus its erosion by a
    ``(2d+1)^2`` square, outside the image counting as background): a pixel survives the
    erosion exactly when its whole window lies inside the image and holds its own label. So
    one window min/max pass serves all classes at once. The square max-pool runs as a row pass
    then a column pass.

    Example:
        >>> m = torch.zeros(1, 5, 5, dtype=torch.long); m[0, 1:4, 1:4] = 1
        >>> label_boundary(m, 1)[0].int().tolist()[2]
        [1, 1, 0, 1, 1]
    """
    size = 2 * dilation + 1
    padded = F.pad(labels.unsqueeze(1).float(), (dilation,) * 4, value=-1.0)

    def window_max(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.max_pool2d(x, (1, size), stride=1), (size, 1), stride=1)[:, 0]

    own = labels.float()
    return (window_max(padded) != own) | (-window_max(-padded) != own)


class SegmentationMetrics:
    """Dataset-level mIoU, boundary IoU (bIoU) and pixel accuracy, per class and mean.

    ``update`` takes predicted and true class indices ``[N, H, W]``; pixels whose target is
    ``ignore_index`` are skipped. ``compute`` returns fractions in ``[0, 1]``: ``mIoU``,
    ``bIoU``, ``pixel_acc`` and ``IoU/<name>``, ``bIoU/<name>`` per class. A class absent from
    both predictions and targets gets NaN and is left out of the means.

    Across DDP ranks, call :meth:`sync` once before :meth:`compute` (it sums
    :meth:`state_tensors` with ``all_reduce``); every rank then holds the global result.

    Example:
        >>> m = SegmentationMetrics(3)
        >>> m.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))
        >>> r = m.compute(); r["mIoU"], r["bIoU"], math.isnan(r["IoU/class1"])
        (1.0, 1.0, True)
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        boundary_dilation_ratio: float = 0.02,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} collides with class {ignore_index} "
                f"(num_classes {num_classes}); use a value >= num_classes, e.g. 255"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_dilation_ratio = boundary_dilation_ratio
        names = list(class_names) if class_names is not None else [f"class{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class_names for num_classes={num_classes}")
        self.class_names = names
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated (and any previous :meth:`sync`).

        Example:
            >>> m = SegmentationMetrics(2); m.reset(); int(m.state_tensors().sum())
            0
        """
        c = self.num_classes
        self.confusion = torch.zeros(c, c, dtype=torch.int64)  # rows: target, cols: prediction
        self.boundary_intersection = torch.zeros(c, dtype=torch.int64)
        self.boundary_union = torch.zeros(c, dtype=torch.int64)
        self._per_image: list[torch.Tensor] = []
        self._synced = False

    def _check(self, preds: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if preds.dim() == 2:
            preds, targets = preds.unsqueeze(0), targets.unsqueeze(0)
        if preds.shape != targets.shape or preds.dim() != 3:
            raise ValueError(
                f"preds and targets must both be [N, H, W] class indices; got "
                f"{tuple(preds.shape)} and {tuple(targets.shape)}"
            )
        if preds.is_floating_point() or targets.is_floating_point():
            raise ValueError("preds and targets must be integer class indices; take logits.argmax(1) before update()")
        valid = targets != self.ignore_index
        for name, values in (("targets", targets[valid]), ("preds", preds[valid])):
            if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
                bad = values[(values < 0) | (values >= self.num_classes)].unique()[:5].tolist()
                raise ValueError(
                    f"{name} hold label(s) {bad} outside 0..{self.num_classes - 1} (ignore index {self.ignore_index})"
                )
        return preds.long(), targets.long()

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``preds`` and ``targets`` are ``LongTensor[N, H, W]`` class indices.

        Example:
            >>> m = SegmentationMetrics(2)
            >>> m.update(torch.ones(2, 3, 3, dtype=torch.long), torch.ones(2, 3, 3, dtype=torch.long))
            >>> int(m.confusion[1, 1])
            18
        """
        if self._synced:
            raise RuntimeError(
                "update() after sync(): the state is already the global sum; call reset() before accumulating again"
            )
        preds, targets = self._check(preds, targets)
        self.confusion += multiclass_confusion_matrix(
            preds.reshape(-1),
            targets.reshape(-1),
            self.num_classes,
            ignore_index=self.ignore_index,
            validate_args=False,
        ).cpu()
        counts = self._image_counts(preds, targets)
        c = self.num_classes
        self.boundary_intersection += counts[:, 3 * c : 4 * c].sum(0)
        self.boundary_union += counts[:, 4 * c :].sum(0)
        self._per_image.append(counts)

    def _image_counts(self, preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per image ``[N, 5C]``: true positives, predicted, ground-truth, boundary intersection
        and boundary union pixel counts per class (the layout of :meth:`per_image_counts`)."""
        n, height, width = targets.shape
        c = self.num_classes
        dilation = boundary_dilation(height, width, self.boundary_dilation_ratio)
        valid = targets != self.ignore_index
        pred_band = label_boundary(preds, dilation) & valid
        gt_band = label_boundary(targets, dilation) & valid
        correct = valid & (preds == targets)
        image = torch.arange(n, device=targets.device).view(n, 1, 1).expand_as(targets) * c

        def count(labels: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
            return torch.bincount((image + labels)[where], minlength=n * c).view(n, c).cpu()

        b_pred, b_gt = count(preds, pred_band), count(targets, gt_band)
        b_inter = count(targets, pred_band & gt_band & correct)
        return torch.cat(
            [count(targets, correct), count(preds, valid), count(targets, valid), b_inter, b_pred + b_gt - b_inter],
            dim=1,
        )

    def state_tensors(self) -> torch.Tensor:
        """All statistics as one ``int64`` vector (confusion matrix, boundary ∩, boundary ∪);
        the statistics of several shards are the sum of their vectors.

        Example:
            >>> SegmentationMetrics(3).state_tensors().shape
            torch.Size([15])
        """
        return torch.cat([self.confusion.reshape(-1), self.boundary_intersection, self.boundary_union])

    def load_state_tensors(self, state: torch.Tensor) -> None:
        """Replace the statistics with ``state`` (e.g. the sum of every shard's :meth:`state_tensors`).

        Per-image counts are not part of this state; :meth:`per_image_counts` is then empty.

        Example:
            >>> a = SegmentationMetrics(2); a.load_state_tensors(torch.arange(8)); a.confusion.tolist()
            [[0, 1], [2, 3]]
        """
        c = self.num_classes
        if state.numel() != c * c + 2 * c:
            raise ValueError(f"state has {state.numel()} values; {c} classes need {c * c + 2 * c}")
        state = state.reshape(-1).to(device="cpu", dtype=torch.int64)
        self.confusion = state[: c * c].reshape(c, c).clone()
        self.boundary_intersection = state[c * c : c * c + c].clone()
        self.boundary_union = state[c * c + c :].clone()
        self._per_image = []

    def per_image_counts(self) -> np.ndarray:
        """Sufficient statistics of every image seen, ``int64 [images, 5 * num_classes]``.

        Per class, in blocks of ``num_classes`` columns: true positives, predicted pixels,
        ground-truth pixels (all over non-ignored pixels), boundary intersection, boundary union.
        Any subset (or multiset) of rows, summed and passed to :meth:`scores`, gives that subset's
        dataset-level metrics: what a bootstrap over images needs. Rows are in :meth:`update`
        order; after :meth:`sync` they are in dataset order for shards dealt out as
        :class:`~dysample_swap.finetune.distributed.ShardSampler` does (image ``i`` on rank
        ``i % world_size``).

        Example:
            >>> m = SegmentationMetrics(2)
            >>> m.update(torch.tensor([[[0, 1]]]), torch.tensor([[[1, 1]]]))
            >>> m.per_image_counts().tolist()   # tp, pred, gt, boundary ∩, boundary ∪
            [[0, 1, 1, 1, 0, 2, 0, 1, 1, 2]]
        """
        if not self._per_image:
            return np.zeros((0, 5 * self.num_classes), dtype=np.int64)
        return torch.cat(self._per_image).numpy()

    def sync(self, process_group: Any = None) -> None:
        """Sum the statistics over all ranks of ``process_group`` (no-op in a single process)
        and gather the per-image counts.

        Call once, after the last :meth:`update` and before :meth:`compute`; a second call
        raises instead of double counting.

        Example:
            >>> m = SegmentationMetrics(2); m.sync()   # not distributed: nothing to reduce
        """
        if self._synced:
            raise RuntimeError("sync() called twice; the statistics are already summed over ranks")
        world = world_size(process_group)
        if world > 1:
            state = self.state_tensors()
            if dist.get_backend(process_group) == "nccl":
                state = state.cuda()
            dist.all_reduce(state, op=dist.ReduceOp.SUM, group=process_group)
            shards: list[Any] = [None] * world
            dist.all_gather_object(shards, self.per_image_counts(), group=process_group)
            self.load_state_tensors(state)
            rows = [shards[i % world][i // world] for i in range(sum(len(s) for s in shards))]
            self._per_image = [torch.from_numpy(np.stack(rows))] if rows else []
        self._synced = True

    def scores(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics from summed :meth:`per_image_counts` rows ``[..., 5C]``, vectorised over the
        leading dimensions: ``mIoU``, ``bIoU``, ``pixel_acc``, ``IoU/<name>``, ``bIoU/<name>``.

        A class with no pixel in prediction or ground truth gets NaN and is left out of the means.

        Example:
            >>> m = SegmentationMetrics(2, class_names=["bg", "fg"])
            >>> r = m.scores(np.array([1, 2, 1, 3, 2, 2, 1, 1, 1, 2]))  # tp, pred, gt, b∩, b∪
            >>> float(r["IoU/bg"]), round(float(r["mIoU"]), 4), float(r["pixel_acc"])
            (0.5, 0.5833, 0.75)
        """
        c = self.num_classes
        counts = np.asarray(counts, dtype=np.float64)
        tp, pred, gt = counts[..., :c], counts[..., c : 2 * c], counts[..., 2 * c : 3 * c]
        b_inter, b_union = counts[..., 3 * c : 4 * c], counts[..., 4 * c :]
        union = pred + gt - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
            biou = np.where(b_union > 0, b_inter / np.maximum(b_union, 1), np.nan)
            total = gt.sum(-1)
            result = {
                "mIoU": nanmean(iou, axis=-1),
                "bIoU": nanmean(biou, axis=-1),
                "pixel_acc": np.where(total > 0, tp.sum(-1) / np.maximum(total, 1), np.nan),
            }
        for k, name in enumerate(self.class_names):
            result[f"IoU/{name}"] = iou[..., k]
        for k, name in enumerate(self.class_names):
            result[f"bIoU/{name}"] = biou[..., k]
        return result

    def compute(self) -> dict[str, float]:
        """Mean and per-class IoU / boundary IoU and pixel accuracy, as Python floats.

        Example:
            >>> SegmentationMetrics(2).compute()
            Traceback (most recent call last):
            ...
            RuntimeError: no pixels evaluated: call update() with at least one non-ignored target pixel first
        """
        if int(self.confusion.sum()) == 0:
            raise RuntimeError("no pixels evaluated: call update() with at least one non-ignored target pixel first")
        counts = torch.cat(
            [
                self.confusion.diag(),
                self.confusion.sum(0),
                self.confusion.sum(1),
                self.boundary_intersection,
                self.boundary_union,
            ]
        ).numpy()
        return {k: float(v) for k, v in self.scores(counts).items()}


def _binary_masks(masks: torch.Tensor) -> np.ndarray:
    """Mask R-CNN output ``[K, 1, H, W]`` probabilities (or ``[K, H, W]`` bool) -> uint8 ``[K, H, W]``."""
    if masks.dim() == 4:
        masks = masks[:, 0]
    binary = masks > 0.5 if masks.is_floating_point() else masks != 0
    return binary.to(torch.uint8).cpu().numpy()


class DetectionMetrics:
    """COCO box / mask AP with pycocotools ``COCOeval`` on torchvision-format outputs.

    ``coco_gt`` is the split's ground truth (a dataset's ``.coco``; crowd regions count as
    "ignore" as in the official protocol). Without it, the ground truth is built from the targets
    passed to :meth:`update` (``masks`` needed for ``segm``). Only images seen by :meth:`update`
    are evaluated. Mask predictions are thresholded at 0.5. An image id seen twice (e.g. the
    padding of ``DistributedSampler``) counts once: the first occurrence is kept.

    Across DDP ranks, call :meth:`sync` once before :meth:`compute`: it all-gathers the
    per-image records so every rank computes the same result.

    Example:
        >>> t = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1]), "image_id": 1}
        >>> p = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "scores": torch.tensor([0.9]),
        ...      "labels": torch.tensor([1])}
        >>> m = DetectionMetrics(); m.update([p], [t]); round(m.compute()["bbox/AP"], 6)
        1.0
    """

    def __init__(self, iou_types: Sequence[str] = ("bbox",), coco_gt: COCO | None = None) -> None:
        iou_types = tuple(iou_types)
        if not iou_types or any(t not in IOU_TYPES for t in iou_types):
            raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}")
        self.iou_types = iou_types
        self.coco_gt = coco_gt
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated predictions (and any previous :meth:`sync`).

        Example:
            >>> m = DetectionMetrics(); m.reset(); m.state_objects()
            {'detections': {}, 'ground_truth': {}}
        """
        self._detections: dict[int, dict[str, list[dict[str, Any]]]] = {}
        self._ground_truth: dict[int, dict[str, Any]] = {}
        self._synced = False

    def update(self, predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch of model outputs and their targets (torchvision detection format).

        Example:
            >>> m = DetectionMetrics()
            >>> m.update([{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}],
            ...          [{"boxes": torch.tensor([[1.0, 1.0, 3.0, 3.0]]), "labels": torch.tensor([2]), "image_id": 5}])
            >>> m.compute()["bbox/AP"]
            0.0
        """
        if self._synced:
            raise RuntimeError("update() after sync(): call reset() before accumulating again")
        if len(predictions) != len(targets):
            raise ValueError(
                f"{len(predictions)} predictions for {len(targets)} targets; pass one prediction dict per target"
            )
        for pred, target in zip(predictions, targets):
            image_id = int(target["image_id"])
            if image_id in self._detections:
                continue
            if self.coco_gt is not None and image_id not in self.coco_gt.imgs:
                raise ValueError(
                    f"image_id {image_id} is not in the ground truth coco_gt; "
                    f"targets must come from the dataset whose .coco was given"
                )
            self._detections[image_id] = self._convert(pred, image_id)
            if self.coco_gt is None:
                self._ground_truth[image_id] = self._ground_truth_record(target, pred, image_id)

    def _convert(self, pred: Mapping[str, Any], image_id: int) -> dict[str, list[dict[str, Any]]]:
        boxes = torch.as_tensor(pred["boxes"], dtype=torch.float64).reshape(-1, 4).cpu()
        scores = torch.as_tensor(pred["scores"]).reshape(-1).tolist()
        labels = torch.as_tensor(pred["labels"]).reshape(-1).tolist()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        out: dict[str, list[dict[str, Any]]] = {}
        if "bbox" in self.iou_types:
            out["bbox"] = [
                {"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
                for b, s, c in zip(xywh, scores, labels)
            ]
        if "segm" in self.iou_types:
            if "masks" not in pred:
                raise ValueError(
                    "iou_types has 'segm' but a prediction has no 'masks'; use a "
                    "mask-predicting model (Mask R-CNN) or iou_types=('bbox',)"
                )
            rles = encode_masks(_binary_masks(torch.as_tensor(pred["masks"])))
            out["segm"] = [
                {"image_id": image_id, "category_id": int(c), "segmentation": r, "score": float(s)}
                for r, s, c in zip(rles, scores, labels)
            ]
        return out

    def _ground_truth_record(self, target: Mapping[str, Any], pred: Mapping[str, Any], image_id: int) -> dict[str, Any]:
        if "segm" in self.iou_types and "masks" not in target:
            raise ValueError(
                "iou_types has 'segm' but a target has no 'masks' and no coco_gt was "
                "given; pass masks in the targets or coco_gt=dataset.coco"
            )
        sized = target.get("masks", pred.get("masks"))
        height, width = (int(sized.shape[-2]), int(sized.shape[-1])) if sized is not None else (0, 0)
        return {"image": {"id": image_id, "height": height, "width": width}, "annotations": target_annotations(target)}

    def state_objects(self) -> dict[str, Any]:
        """This process's records (plain picklable Python objects), for gathering across ranks.

        Example:
            >>> sorted(DetectionMetrics().state_objects())
            ['detections', 'ground_truth']
        """
        return {"detections": self._detections, "ground_truth": self._ground_truth}

    def load_state_objects(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Replace the records with the union of several shards' :meth:`state_objects`
        (first occurrence of an image id wins).

        Example:
            >>> m = DetectionMetrics()
            >>> m.load_state_objects([{"detections": {1: {}}, "ground_truth": {}},
            ...                       {"detections": {2: {}, 1: {}}, "ground_truth": {}}])
            >>> sorted(m.state_objects()["detections"])
            [1, 2]
        """
        detections: dict[int, Any] = {}
        ground_truth: dict[int, Any] = {}
        for state in states:
            for image_id, record in state["detections"].items():
                detections.setdefault(image_id, record)
            for image_id, record in state["ground_truth"].items():
                ground_truth.setdefault(image_id, record)
        self._detections, self._ground_truth = detections, ground_truth

    def sync(self, process_group: Any = None) -> None:
        """Gather every rank's records onto every rank (no-op in a single process); call once.

        Example:
            >>> m = DetectionMetrics(); m.sync()   # not distributed: nothing to gather
        """
        if self._synced:
            raise RuntimeError("sync() called twice; the records are already gathered")
        world = world_size(process_group)
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, self.state_objects(), group=process_group)
            self.load_state_objects(gathered)
        self._synced = True

    def _ground_truth_coco(self) -> COCO:
        if self.coco_gt is not None:
            return self.coco_gt
        records = [self._ground_truth[i] for i in sorted(self._ground_truth)]
        annotations = [ann for r in records for ann in r["annotations"]]
        labels = [ann["category_id"] for ann in annotations] + [
            det["category_id"] for dets in self._detections.values() for kind in dets.values() for det in kind
        ]
        num_labels = max(labels, default=0)
        return build_coco([r["image"] for r in records], annotations, [f"class{i}" for i in range(1, num_labels + 1)])

    def compute(self) -> dict[str, float]:
        """``<type>/AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` for each IoU type, as
        fractions in ``[0, 1]``; NaN where COCOeval has nothing to score (e.g. no small objects).

        Example:
            >>> DetectionMetrics().compute()
            Traceback (most recent call last):
            ...
            RuntimeError: no images evaluated: call update() first
        """
        if not self._detections:
            raise RuntimeError("no images evaluated: call update() first")
        coco_gt = self._ground_truth_coco()
        image_ids = sorted(self._detections)
        result: dict[str, float] = {}
        for iou_type in self.iou_types:
            dets = [copy.deepcopy(d) for i in image_ids for d in self._detections[i][iou_type]]
            with contextlib.redirect_stdout(io.StringIO()):
                if dets:
                    coco_dt = coco_gt.loadRes(dets)
                else:
                    coco_dt = build_coco(
                        coco_gt.dataset["images"], [], [c["name"] for c in coco_gt.dataset["categories"]]
                    )
                evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
                evaluator.params.imgIds = image_ids
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
            for name, value in zip(COCO_STAT_NAMES, evaluator.stats[: len(COCO_STAT_NAMES)]):
                result[f"{iou_type}/{name}"] = float(value) if value >= 0 else float("nan")
        return result
