"""Semantic segmentation: any model returning logits ``[N, K, H, W]`` (smp) or a dict with ``"out"``
(torchvision segmentation models; an ``"aux"`` head adds ``0.5 x`` its loss, as in torchvision's
reference recipe). Loss: cross-entropy with the dataset's ignore index. transformers' MaskFormer and
Mask2Former train and predict their own way (:mod:`.mask_classification`).

Example:
    >>> task = SegmentationTask(num_classes=3, ignore_index=255, class_names=["a", "b", "c"])
    >>> model = torch.nn.Conv2d(3, 3, 1)
    >>> batch = (torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    >>> task.loss(model, batch).shape
    torch.Size([])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dysample_swap.finetune.tasks.common import PALETTE, normalized_to_uint8
from dysample_swap.finetune.tasks.mask_classification import (
    is_mask_classifier,
    mask_classification_loss,
    semantic_prediction,
)


def _segmentation_logits(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(output, dict):
        if "out" not in output:
            raise TypeError(
                f"segmentation model returned a dict with keys {sorted(output)}; "
                "expected 'out' (torchvision segmentation models) or a tensor"
            )
        return output["out"], output.get("aux")
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        raise TypeError(
            f"segmentation model must return logits [N, classes, H, W] or {{'out': ...}}; got {type(output).__name__}"
        )
    return output, None


class SegmentationTask:
    """Semantic segmentation: batches ``(images [N,3,H,W], masks [N,H,W])``.

    Example:
        >>> SegmentationTask(2, 255, ["bg", "fg"]).main_metric
        'mIoU'
    """

    name = "segmentation"
    main_metric = "mIoU"
    curve_metrics = ("mIoU", "bIoU")
    collate: Callable[[list], Any] | None = None

    def __init__(self, num_classes: int, ignore_index: int, class_names: Sequence[str]) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names)

    def example_inputs(self, dataset: Any) -> torch.Tensor:
        """One image of ``dataset`` as a ``[1, 3, H, W]`` batch (for swapping upsamplers).

        Example:
            >>> SegmentationTask(2, 255, "ab").example_inputs([(torch.zeros(3, 4, 4), None)]).shape
            torch.Size([1, 3, 4, 4])
        """
        return dataset[0][0].unsqueeze(0)

    def to_device(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Move a batch to ``device``.

        Example:
            >>> x, y = SegmentationTask(2, 255, "ab").to_device((torch.zeros(1), torch.ones(1)), torch.device("cpu"))
        """
        images, masks = batch
        return images.to(device, non_blocking=True), masks.to(device, non_blocking=True)

    def batch_size(self, batch: Any) -> int:
        """Number of images in a batch.

        Example:
            >>> SegmentationTask(2, 255, "ab").batch_size((torch.zeros(5, 3, 2, 2), None))
            5
        """
        return len(batch[0])

    def _logits(self, model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, Any]:
        logits, aux = _segmentation_logits(model(images))
        size = images.shape[-2:]
        if logits.shape[-2:] != size:  # models predicting at reduced resolution
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if aux is not None and aux.shape[-2:] != size:
            aux = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"model predicts {logits.shape[1]} classes but the dataset has "
                f"{self.num_classes}; put {{num_classes}} in model.spec "
                "(e.g. classes={num_classes}) or fix the class count"
            )
        return logits, aux

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Cross-entropy (float32) over non-ignored pixels, plus 0.5 x the aux head's loss.

        Example:
            >>> t = SegmentationTask(2, 255, "ab")
            >>> t.loss(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 255))).item() == 0.0
            True
        """
        images, masks = batch
        if is_mask_classifier(model):
            return mask_classification_loss(model, images, masks, self.ignore_index)
        logits, aux = self._logits(model, images)
        if bool((masks == self.ignore_index).all()):
            return logits.sum() * 0.0  # keeps the graph (DDP) while contributing nothing
        loss = F.cross_entropy(logits.float(), masks, ignore_index=self.ignore_index)
        if aux is not None:
            loss = loss + 0.5 * F.cross_entropy(aux.float(), masks, ignore_index=self.ignore_index)
        return loss

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Class index per pixel, ``[N, H, W]``.

        Example:
            >>> SegmentationTask(2, 255, "ab").predict(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 2, 2), None)).shape
            torch.Size([1, 2, 2])
        """
        if is_mask_classifier(model):
            return semantic_prediction(model, batch[0])
        return self._logits(model, batch[0])[0].argmax(1)

    def targets(self, batch: Any) -> torch.Tensor:
        """The ground truth part of a batch, as metrics take it.

        Example:
            >>> SegmentationTask(2, 255, "ab").targets((None, torch.ones(1, 2, 2))).shape
            torch.Size([1, 2, 2])
        """
        return batch[1]

    def new_metrics(self, dataset: Any) -> Any:
        """Fresh mIoU / boundary-IoU accumulator for this task.

        Example:
            >>> type(SegmentationTask(2, 255, "ab").new_metrics(None)).__name__
            'SegmentationMetrics'
        """
        from dysample_swap.finetune.metrics import SegmentationMetrics

        return SegmentationMetrics(self.num_classes, ignore_index=self.ignore_index, class_names=self.class_names)

    def to_cpu(self, value: torch.Tensor) -> torch.Tensor:
        """Predictions or targets moved to the CPU (where the metrics accumulate).

        Example:
            >>> SegmentationTask(2, 255, "ab").to_cpu(torch.zeros(1)).device.type
            'cpu'
        """
        return value.cpu()

    def picture(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Label map in class colours (``uint8 [3, H, W]``); ignored pixels are white.

        Example:
            >>> SegmentationTask(2, 255, "ab").picture(None, torch.tensor([[1, 255]]))[:, 0, :].T.tolist()
            [[230, 25, 75], [255, 255, 255]]
        """
        palette = torch.tensor(
            [PALETTE[k % len(PALETTE)] for k in range(self.num_classes)] + [(255, 255, 255)], dtype=torch.uint8
        )
        labels = labels.cpu().long()
        index = torch.where((labels >= 0) & (labels < self.num_classes), labels, self.num_classes)
        return palette[index].permute(2, 0, 1).contiguous()

    def image_uint8(self, image: torch.Tensor) -> torch.Tensor:
        """Undo the ImageNet normalisation: ``uint8 [3, H, W]``.

        Example:
            >>> SegmentationTask(2, 255, "ab").image_uint8(torch.zeros(3, 1, 1)).flatten().tolist()
            [124, 116, 104]
        """
        return normalized_to_uint8(image)
