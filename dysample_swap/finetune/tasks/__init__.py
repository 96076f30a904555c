"""What differs between tasks: batches, loss, predictions, metrics and pictures.

One adapter per task, each in its own module:

* :class:`SegmentationTask` (:mod:`.segmentation`): semantic segmentation;
* :class:`DetectionTask` (:mod:`.detection`): detection and instance segmentation (torchvision detectors);
* :class:`DepthTask` (:mod:`.depth`): monocular depth estimation;
* :class:`PanopticTask` (:mod:`.panoptic`): panoptic segmentation (Panoptic FPN).

MaskFormer and Mask2Former are semantic segmenters of :class:`SegmentationTask` that train and
predict their own way (:mod:`.mask_classification`).

:func:`make_task` picks the adapter for a recipe's ``task``.

Example:
    >>> class DS: num_classes = 2; class_names = ["bg", "fg"]; ignore_index = 255
    >>> make_task("segmentation", DS()).main_metric
    'mIoU'
"""

from __future__ import annotations

from typing import Any

from dysample_swap.finetune.tasks.common import PALETTE
from dysample_swap.finetune.tasks.depth import DepthTask
from dysample_swap.finetune.tasks.detection import DetectionTask
from dysample_swap.finetune.tasks.panoptic import PanopticTask
from dysample_swap.finetune.tasks.segmentation import SegmentationTask

__all__ = ["PALETTE", "DepthTask", "DetectionTask", "PanopticTask", "SegmentationTask", "Task", "make_task"]

#: Any task adapter.
Task = SegmentationTask | DetectionTask | DepthTask | PanopticTask


def make_task(task: str, dataset: Any, score_threshold: float = 0.5) -> Task:
    """The task adapter for ``task`` ("segmentation", "detection", "instance", "depth" or
    "panoptic") and a dataset (depth: its ``min_depth``, ``max_depth``, ``eval_crop``; panoptic:
    its ``thing_ids``, ``stuff_ids`` and ``categories``).

    Example:
        >>> class DS: num_classes = 2; class_names = ["bg", "fg"]; ignore_index = 255
        >>> make_task("segmentation", DS()).num_classes
        2
    """
    if task == "segmentation":
        return SegmentationTask(dataset.num_classes, getattr(dataset, "ignore_index", 255), dataset.class_names)
    if task == "depth":
        return DepthTask(dataset.min_depth, dataset.max_depth, getattr(dataset, "eval_crop", None))
    if task == "panoptic":
        names = {int(k): str(v["name"]) for k, v in dataset.categories.items()}
        return PanopticTask(dataset.thing_ids, dataset.stuff_ids, names)
    return DetectionTask(
        dataset.num_classes, dataset.class_names, with_masks=task == "instance", score_threshold=score_threshold
    )
