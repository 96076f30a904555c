"""What differs between tasks: batches, loss, predictions, metrics and pictures.

One adapter per task, each in its own module:

* :class:`SegmentationTask` (:mod:`.segmentation`): semantic segmentation;
* :class:`DetectionTask` (:mod:`.detection`): detection and instance segmentation (torchvision detectors).

:func:`make_task` picks the adapter for a recipe's ``task``.

Example:
    >>> class DS: num_classes = 2; class_names = ["bg", "fg"]; ignore_index = 255
    >>> make_task("segmentation", DS()).main_metric
    'mIoU'
"""

from __future__ import annotations

from typing import Any

from dysample_swap.finetune.tasks.common import PALETTE
from dysample_swap.finetune.tasks.detection import DetectionTask
from dysample_swap.finetune.tasks.segmentation import SegmentationTask

__all__ = ["PALETTE", "DetectionTask", "SegmentationTask", "make_task"]


def make_task(task: str, dataset: Any, score_threshold: float = 0.5) -> SegmentationTask | DetectionTask:
    """The task adapter for ``task`` ("segmentation", "detection" or "instance") and a dataset.

    Example:
        >>> class DS: num_classes = 2; class_names = ["bg", "fg"]; ignore_index = 255
        >>> make_task("segmentation", DS()).num_classes
        2
    """
    if task == "segmentation":
        return SegmentationTask(dataset.num_classes, getattr(dataset, "ignore_index", 255), dataset.class_names)
    return DetectionTask(
        dataset.num_classes, dataset.class_names, with_masks=task == "instance", score_threshold=score_threshold
    )
