"""What differs between tasks: batches, loss, predictions, metrics and pictures.

* :class:`SegmentationTask`: any model returning logits ``[N, K, H, W]`` (smp) or a dict with
  ``"out"`` (torchvision segmentation models; an ``"aux"`` head adds ``0.5 x`` its loss, as in
  torchvision's reference recipe). Loss: cross-entropy with the dataset's ignore index.
* :class:`DetectionTask`: torchvision detectors (Faster R-CNN, RetinaNet, FCOS, Mask R-CNN): in
  train mode the model takes ``(images, targets)`` and returns a loss dict, which is summed.

Example:
    >>> import torch
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
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from dysample_swap.finetune.data.common import IMAGENET_MEAN, IMAGENET_STD

#: Colours for classes in pictures (class k uses entry k modulo the length).
PALETTE = [
    (40, 40, 40),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
]


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
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return ((image.float().cpu() * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


class DetectionTask:
    """Detection / instance segmentation with torchvision detectors: batches
    ``(list of images [3,H,W] in [0,1], list of target dicts)``.

    Example:
        >>> DetectionTask(3, ["bg", "a", "b"], with_masks=True).main_metric
        'segm/AP'
    """

    name = "detection"

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

    def example_inputs(self, dataset: Any) -> list[torch.Tensor]:
        """One image of ``dataset`` as the list torchvision detectors take.

        Example:
            >>> len(DetectionTask(2, "ab", with_masks=False).example_inputs([(torch.zeros(3, 4, 4), {})]))
            1
        """
        return [dataset[0][0]]

    def to_device(self, batch: Any, device: torch.device) -> tuple[list, list]:
        """Move images and every tensor of the targets to ``device``.

        Example:
            >>> imgs, tgts = DetectionTask(2, "ab", with_masks=False).to_device(([torch.zeros(1)], [{"boxes": torch.zeros(0, 4)}]), torch.device("cpu"))
        """
        images, targets = batch
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
        return images, targets

    def batch_size(self, batch: Any) -> int:
        """Number of images in a batch.

        Example:
            >>> DetectionTask(2, "ab", with_masks=False).batch_size(([1, 2], [{}, {}]))
            2
        """
        return len(batch[0])

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Sum of the detector's loss dict (the model must be in train mode).

        Example:
            >>> class Toy(torch.nn.Module):
            ...     def forward(self, images, targets): return {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
            >>> float(DetectionTask(2, "ab", with_masks=False).loss(Toy(), ([], [])))
            3.0
        """
        images, targets = batch
        losses = model(images, targets)
        if not isinstance(losses, dict):
            raise TypeError(
                f"detection model in train mode returned {type(losses).__name__}, not a "
                "loss dict; use a torchvision detection model (FasterRCNN, RetinaNet, "
                "FCOS, MaskRCNN)"
            )
        return sum(v.float() for v in losses.values())

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

    def image_uint8(self, image: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` float image -> ``uint8 [3, H, W]``.

        Example:
            >>> DetectionTask(2, "ab", with_masks=False).image_uint8(torch.ones(3, 1, 1)).flatten().tolist()
            [255, 255, 255]
        """
        return (image.float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8)

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
