"""Detection / instance segmentation with torchvision detectors (Faster R-CNN, RetinaNet, FCOS,
Mask R-CNN): in train mode the model takes ``(images, targets)`` and returns a loss dict, which is
summed.

Example:
    >>> DetectionTask(3, ["bg", "a", "b"], with_masks=False).main_metric
    'bbox/AP'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from dysample_swap.finetune.tasks.common import PALETTE, ImageListBatches


class DetectionTask(ImageListBatches):
    """Detection / instance segmentation with torchvision detectors: batches
    ``(list of images [3,H,W] in [0,1], list of target dicts)``.

    Example:
        >>> DetectionTask(3, ["bg", "a", "b"], with_masks=True).main_metric
        'segm/AP'
    """

    name = "detection"

    model_hint = "a torchvision detection model (FasterRCNN, RetinaNet, FCOS, MaskRCNN)"

    def __init__(
        self, num_classes: int, class_names: Sequence[str], *, with_masks: bool, score_threshold: float = 0.5
    ) -> None:
        from dysample_swap.finetune.data import detection_collate

        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.with_masks = with_masks
        self.score_threshold = score_threshold
        self.collate = detection_collate
        self.iou_types = ("bbox", "segm") if with_masks else ("bbox",)
        self.main_metric = "segm/AP" if with_masks else "bbox/AP"
        self.curve_metrics = tuple(f"{kind}/AP" for kind in self.iou_types)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: Any) -> list[dict[str, torch.Tensor]]:
        """Detections per image; Mask R-CNN's soft masks ``[K,1,H,W]`` become boolean ``[K,H,W]``.

        Example:
            >>> class Toy(torch.nn.Module):
            ...     def forward(self, images): return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}]
            >>> DetectionTask(2, "ab", with_masks=False).predict(Toy(), ([torch.zeros(3, 2, 2)], None))[0]["boxes"].shape
            torch.Size([0, 4])
        """
        outputs = model(batch[0])
        preds = []
        for out in outputs:
            pred = {k: v.detach() for k, v in out.items()}
            if "masks" in pred and pred["masks"].dim() == 4:
                pred["masks"] = pred["masks"][:, 0] > 0.5
            preds.append(pred)
        return preds

    def targets(self, batch: Any) -> list[dict[str, Any]]:
        """The ground truth part of a batch, as metrics take it.

        Example:
            >>> DetectionTask(2, "ab", with_masks=False).targets(([], [{"boxes": 1}]))
            [{'boxes': 1}]
        """
        return batch[1]

    def new_metrics(self, dataset: Any) -> Any:
        """Fresh COCO AP accumulator (pycocotools) against ``dataset.coco``.

        Example:
            >>> # DetectionTask(...).new_metrics(val_set).compute()["bbox/AP"]
        """
        from dysample_swap.finetune.metrics import DetectionMetrics

        return DetectionMetrics(iou_types=self.iou_types, coco_gt=dataset.coco)

    def to_cpu(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every tensor of per-image prediction/target dicts moved to the CPU.

        Example:
            >>> DetectionTask(2, "ab", with_masks=False).to_cpu([{"boxes": torch.zeros(1, 4), "image_id": 3}])[0]["image_id"]
            3
        """
        return [{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in d.items()} for d in value]

    def picture(self, image: torch.Tensor, target: dict[str, Any]) -> torch.Tensor:
        """Boxes with class names (and masks, if any) drawn on the image; predictions below
        ``eval.score_threshold`` are left out.

        Example:
            >>> t = DetectionTask(2, ["bg", "a"], with_masks=False)
            >>> t.picture(torch.zeros(3, 8, 8), {"boxes": torch.tensor([[1., 1., 5., 5.]]), "labels": torch.tensor([1])}).shape
            torch.Size([3, 8, 8])
        """
        keep = torch.ones(len(target["labels"]), dtype=torch.bool)
        if "scores" in target:
            keep = target["scores"].cpu() >= self.score_threshold
        labels = target["labels"].cpu()[keep].tolist()
        colours = [PALETTE[int(k) % len(PALETTE)] for k in labels]
        picture = self.image_uint8(image)
        if self.with_masks and "masks" in target and keep.any():
            masks = target["masks"].cpu()[keep].bool()
            picture = draw_segmentation_masks(picture, masks, alpha=0.5, colors=colours)
        if not labels:
            return picture
        names = [self.class_names[int(k)] if int(k) < len(self.class_names) else str(k) for k in labels]
        return draw_bounding_boxes(picture, target["boxes"].cpu()[keep], labels=names, colors=colours, width=1)
