"""In-memory COCO ground truth built from torchvision-style targets (pycocotools ``COCO``).

Used by the synthetic detection data (its ``.coco``) and by
:class:`dysample_swap.finetune.metrics.DetectionMetrics` when no ground truth is given, so that
evaluation always runs the real ``COCOeval``.

Example:
    >>> import torch
    >>> target = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]), "labels": torch.tensor([1]),
    ...           "image_id": 7}
    >>> anns = target_annotations(target)
    >>> anns[0]["bbox"], anns[0]["area"]
    ([1.0, 2.0, 4.0, 4.0], 16.0)
    >>> coco = build_coco([{"id": 7, "height": 8, "width": 8}], anns, ["shape"])
    >>> coco.getImgIds(), coco.getCatIds()
    ([7], [1])
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Binary masks ``[K, H, W]`` -> COCO RLEs with ``str`` counts (JSON- and pickle-friendly).

    Example:
        >>> rle = encode_masks(np.ones((1, 2, 3), dtype=np.uint8))[0]
        >>> rle["size"], float(mask_utils.area(rle))
        ([2, 3], 6.0)
    """
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def target_annotations(target: Mapping[str, Any]) -> list[dict[str, Any]]:
    """COCO annotation dicts (without ``id``) for one torchvision target.

    Boxes are xyxy and become xywh; ``area`` is the mask area when ``masks`` are present, else
    the box area; ``iscrowd`` comes from ``target["iscrowd"]`` when present, else 0.

    Example:
        >>> t = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 1}
        >>> target_annotations(t)
        []
    """
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float64).reshape(-1, 4).tolist()
    labels = torch.as_tensor(target["labels"]).reshape(-1).tolist()
    crowd = torch.as_tensor(target.get("iscrowd", torch.zeros(len(labels)))).reshape(-1).tolist()
    image_id = int(target["image_id"])
    rles: list[dict[str, Any]] | None = None
    if "masks" in target:
        rles = encode_masks(torch.as_tensor(target["masks"]).to(torch.uint8).cpu().numpy())
    anns = []
    for k, ((x1, y1, x2, y2), label) in enumerate(zip(boxes, labels)):
        ann: dict[str, Any] = {
            "image_id": image_id,
            "category_id": int(label),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "iscrowd": int(crowd[k]),
        }
        if rles is not None:
            ann["segmentation"] = rles[k]
            ann["area"] = float(mask_utils.area(rles[k]))
        else:
            ann["area"] = (x2 - x1) * (y2 - y1)
        anns.append(ann)
    return anns


def build_coco(
    images: Sequence[Mapping[str, Any]], annotations: Sequence[Mapping[str, Any]], class_names: Sequence[str]
) -> COCO:
    """A pycocotools ``COCO`` object from image records, annotations and class names.

    Categories get ids ``1..len(class_names)`` (torchvision labels); annotation ids are
    assigned ``1..N`` in order.

    Example:
        >>> build_coco([{"id": 1, "height": 4, "width": 4}], [], ["a", "b"]).loadCats(2)[0]["name"]
        'b'
    """
    dataset = {
        "images": [dict(img) for img in images],
        "annotations": [{**ann, "id": i} for i, ann in enumerate(annotations, start=1)],
        "categories": [{"id": i, "name": name} for i, name in enumerate(class_names, start=1)],
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
