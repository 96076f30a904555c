"""Panoptic segmentation with a Panoptic FPN (:mod:`dysample_swap.models.panoptic_fpn`): batches
``(list of images [3,H,W] in [0,1], list of target dicts)`` as for Mask R-CNN, each target also
holding ``semantic`` (stuff index per pixel, ``num_stuff`` for any thing, 255 void) and
``panoptic`` (``[H, W, 2]`` COCO category id and instance id; ``(0, 0)`` void or crowd).

In train mode the model returns a loss dict (Mask R-CNN's losses plus ``loss_semantic``), which is
summed. In eval mode it returns per image a dict whose ``panoptic`` map labels each pixel with its
class in the model's own numbering (thing label ``k`` in ``1..T``, stuff ``s`` as ``T + 1 + s``,
0 unassigned) and an instance id; :meth:`PanopticTask.predict` turns the classes into the dataset's
category ids, which :class:`~dysample_swap.finetune.metrics_panoptic.PanopticMetrics` scores.

Example:
    >>> task = PanopticTask(thing_ids=[1, 3], stuff_ids=[7], names={1: "disc", 3: "tri", 7: "sky"})
    >>> task.category_of_class.tolist()       # model class -> category id (0: void)
    [0, 1, 3, 7]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.ops import masks_to_boxes
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from dysample_swap.finetune.tasks.common import PALETTE, ImageListBatches


class PanopticTask(ImageListBatches):
    """Panoptic segmentation: PQ / SQ / RQ (things and stuff), pictures of coloured segments.

    Args:
        thing_ids: COCO category ids of the thing classes, in the model's label order (label ``k``
            is ``thing_ids[k - 1]``).
        stuff_ids: COCO category ids of the stuff classes, in the semantic branch's order.
        names: category id -> name (for pictures).

    Example:
        >>> PanopticTask([1], [5, 6], {1: "a", 5: "b", 6: "c"}).main_metric
        'PQ'
    """

    name = "panoptic"
    main_metric = "PQ"
    curve_metrics = ("PQ", "PQ_th", "PQ_st")

    model_hint = "dysample_swap:panoptic_fpn_resnet50_fpn (a Mask R-CNN with a semantic branch)"

    def __init__(self, thing_ids: Sequence[int], stuff_ids: Sequence[int], names: Mapping[int, str]) -> None:
        from dysample_swap.finetune.data import detection_collate

        self.thing_ids = [int(c) for c in thing_ids]
        self.stuff_ids = [int(c) for c in stuff_ids]
        self.names = {int(k): str(v) for k, v in names.items()}
        self.num_classes = len(self.thing_ids) + 1  # Mask R-CNN's classes, background included
        self.num_stuff = len(self.stuff_ids)
        self.class_names = ["background", *(self.names.get(c, str(c)) for c in self.thing_ids)]
        self.collate = detection_collate
        #: Model class (0 void, 1..T things, T+1.. stuff) -> category id.
        self.category_of_class = torch.tensor([0, *self.thing_ids, *self.stuff_ids], dtype=torch.long)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: Any) -> list[torch.Tensor]:
        """Per image the panoptic map ``[H, W, 2]``: (category id, instance id), ``(0, 0)`` unassigned.

        Example:
            >>> class Toy(torch.nn.Module):
            ...     def forward(self, images): return [{"panoptic": torch.tensor([[[1, 1], [2, 0]]])}]
            >>> PanopticTask([4], [9], {}).predict(Toy(), ([torch.zeros(3, 1, 2)], None))[0].tolist()
            [[[4, 1], [9, 0]]]
        """
        outputs = model(batch[0])
        maps = []
        for out in outputs:
            if "panoptic" not in out:
                raise TypeError(
                    f"panoptic model returned keys {sorted(out)} without 'panoptic'; use "
                    "dysample_swap:panoptic_fpn_resnet50_fpn"
                )
            panoptic = out["panoptic"].long()
            classes = panoptic[..., 0].clamp(0, len(self.category_of_class) - 1)
            category = self.category_of_class.to(panoptic.device)[classes]
            maps.append(torch.stack([category, torch.where(category > 0, panoptic[..., 1], 0)], -1))
        return maps

    def targets(self, batch: Any) -> list[torch.Tensor]:
        """The ground-truth panoptic maps of a batch, as the metrics take them.

        Example:
            >>> PanopticTask([1], [2], {}).targets(([], [{"panoptic": torch.zeros(2, 2, 2)}]))[0].shape
            torch.Size([2, 2, 2])
        """
        return [t["panoptic"] for t in batch[1]]

    def new_metrics(self, dataset: Any) -> Any:
        """Fresh PQ accumulator over this task's things and stuff.

        Example:
            >>> PanopticTask([1], [2, 3], {}).new_metrics(None).categories
            [1, 2, 3]
        """
        from dysample_swap.finetune.metrics import PanopticMetrics

        return PanopticMetrics(things=self.thing_ids, stuff=self.stuff_ids)

    def to_cpu(self, value: list[torch.Tensor]) -> list[torch.Tensor]:
        """Maps moved to the CPU.

        Example:
            >>> PanopticTask([1], [2], {}).to_cpu([torch.zeros(1)])[0].device.type
            'cpu'
        """
        return [v.cpu() for v in value]

    def picture(self, image: torch.Tensor, target: torch.Tensor | Mapping[str, Any]) -> torch.Tensor:
        """Every segment of a panoptic map (a target dict's ``panoptic`` or a prediction) in its
        category's colour over the image, instances of a thing in shades of it and boxed with its
        category name; stuff is named at its top left corner, without a box; void pixels keep the image.

        Example:
            >>> t = PanopticTask([1], [2], {1: "disc", 2: "sky"})
            >>> pan = torch.tensor([[[1, 1], [2, 0]], [[0, 0], [2, 0]]])
            >>> t.picture(torch.zeros(3, 2, 2), pan).shape
            torch.Size([3, 2, 2])
        """
        panoptic = (target["panoptic"] if isinstance(target, Mapping) else target).cpu().long()
        picture = self.image_uint8(image)
        pairs = torch.unique(panoptic.flatten(0, 1), dim=0)
        pairs = pairs[pairs[:, 0] > 0]
        if len(pairs) == 0:
            return picture
        masks = torch.stack([(panoptic == pair).all(-1) for pair in pairs])
        colours, names = [], []
        for category, instance in pairs.tolist():
            base = PALETTE[1 + category % (len(PALETTE) - 1)]
            shade = 1.0 - 0.35 * ((instance - 1) % 3) / 2 if instance > 0 else 1.0
            colours.append(tuple(int(c * shade) for c in base))
            names.append(self.names.get(category, str(category)))
        picture = draw_segmentation_masks(picture, masks, alpha=0.6, colors=colours)
        boxes = masks_to_boxes(masks)
        for is_thing, width in ((False, 0), (True, 1)):  # stuff: its name only; things: box and name
            chosen = [k for k, pair in enumerate(pairs.tolist()) if (pair[1] > 0) == is_thing]
            if chosen:
                picture = draw_bounding_boxes(
                    picture,
                    boxes[chosen],
                    labels=[names[k] for k in chosen],
                    colors=[colours[k] for k in chosen],
                    width=width,
                )
        return picture
