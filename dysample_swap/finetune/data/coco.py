"""COCO JSON detection / instance-segmentation data: ``data.format: coco``.

Default layout (COCO 2017)::

    ROOT/
      annotations/
        instances_train2017.json
        instances_val2017.json
      train2017/   000000000009.jpg ...
      val2017/     000000000139.jpg ...

Paths are templates relative to ``root`` in which ``{split}`` becomes the split name
(``train``/``val``), so other layouts only need ``ann_file`` / ``image_dir`` set.

Targets follow torchvision: ``boxes`` xyxy (COCO xywh converted), ``labels`` 1..K, ``image_id``
(the COCO image id), and for ``task: instance`` ``masks`` uint8 ``[K, H, W]`` decoded from
polygon or RLE segmentations with pycocotools. Crowd annotations (``iscrowd: 1``) and boxes with
zero width or height are left out of training targets; crowd regions stay in ``.coco`` where
COCOeval treats them as "ignore". COCO category ids (1..90 with gaps) are renumbered to labels
1..K in id order; ``.coco`` is the split's ground truth with the same renumbering, and
``.category_ids[label - 1]`` gives back the original id.

Checked when the dataset is built: the JSON parses and has images/annotations/categories,
every referenced image file exists, every annotation names a known image and category, and every
box lies inside its image (1 px tolerance; a box further out is an error naming the JSON file
and annotation id). Checked when an image is loaded: it is readable and has the size the JSON
gives.

Keys of ``data:``:

- ``root`` (required): dataset folder.
- ``task`` (default ``detection``): ``detection`` (boxes) or ``instance`` (boxes + masks).
- ``ann_file`` (default ``annotations/instances_{split}2017.json``).
- ``image_dir`` (default ``{split}2017``).

Example:
    >>> build_coco_dataset({"format": "coco", "root": "/nonexistent"}, "val")
    Traceback (most recent call last):
    ...
    dysample_swap.finetune.data.common.DatasetError: /nonexistent/annotations/instances_val2017.json: annotation file not found; set data.ann_file (relative to data.root, '{split}' is replaced by the split name)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO

from dysample_swap.finetune.data.coco_gt import build_coco
from dysample_swap.finetune.data.common import DatasetError, check_config, check_split, image_to_unit_tensor, load_image

_TASKS = ("detection", "instance")
_BOX_TOLERANCE = 1.0


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(
            f"{path}: annotation file not found; set data.ann_file (relative to "
            f"data.root, '{{split}}' is replaced by the split name)"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: COCO JSON lacks {', '.join(missing)}; it needs images, annotations and categories lists"
        )
    return data


def _check_annotations(data: dict[str, Any], path: Path) -> None:
    images = {img["id"]: img for img in data["images"]}
    cat_ids = {cat["id"] for cat in data["categories"]}
    for ann in data["annotations"]:
        ann_id = ann.get("id")
        if ann["image_id"] not in images:
            raise DatasetError(
                f"{path}: annotation {ann_id} refers to image id {ann['image_id']}, which is not in 'images'"
            )
        if ann["category_id"] not in cat_ids:
            raise DatasetError(
                f"{path}: annotation {ann_id} has category_id {ann['category_id']}, which is not in 'categories'"
            )
        img = images[ann["image_id"]]
        if "bbox" not in ann:
            raise DatasetError(f"{path}: annotation {ann_id} has no bbox; COCO needs [x, y, w, h]")
        x, y, w, h = ann["bbox"]
        ann.setdefault("area", w * h)
        if (
            w < 0
            or h < 0
            or x < -_BOX_TOLERANCE
            or y < -_BOX_TOLERANCE
            or x + w > img["width"] + _BOX_TOLERANCE
            or y + h > img["height"] + _BOX_TOLERANCE
        ):
            raise DatasetError(
                f"{path}: annotation {ann_id} has box [x, y, w, h] = {ann['bbox']} outside its image "
                f"{img['file_name']} ({img['width']}x{img['height']}); fix or drop the annotation"
            )


class CocoDetection(torch.utils.data.Dataset):
    """COCO JSON dataset yielding ``(image [3, H, W] in [0, 1], torchvision target)``.

    Example:
        >>> import json, tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (8, 6)).save(root / "a.png")
        >>> _ = (root / "gt.json").write_text(json.dumps({
        ...     "images": [{"id": 3, "file_name": "a.png", "width": 8, "height": 6}],
        ...     "annotations": [{"id": 1, "image_id": 3, "category_id": 18, "bbox": [1, 1, 4, 2],
        ...                      "area": 8, "iscrowd": 0}],
        ...     "categories": [{"id": 18, "name": "dog"}]}))
        >>> ds = CocoDetection(root / "gt.json", root, with_masks=False)
        >>> image, target = ds[0]
        >>> target["boxes"].tolist(), target["labels"].tolist(), ds.class_names
        ([[1.0, 1.0, 5.0, 3.0]], [1], ['background', 'dog'])
    """

    def __init__(self, ann_path: Path, image_dir: Path, with_masks: bool) -> None:
        data = _read_json(ann_path)
        if not data["images"]:
            raise DatasetError(f"{ann_path}: empty dataset (no images)")
        _check_annotations(data, ann_path)
        for img in data["images"]:
            if not (image_dir / img["file_name"]).is_file():
                raise DatasetError(
                    f"{image_dir / img['file_name']}: image file not found, but "
                    f"listed in {ann_path} (image id {img['id']})"
                )
        self.ann_path = ann_path
        self.image_dir = image_dir
        self.with_masks = with_masks
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in categories]
        self.class_names = ["background", *(c["name"] for c in categories)]
        self.num_classes = len(self.class_names)
        label_of = {cat_id: i for i, cat_id in enumerate(self.category_ids, start=1)}
        annotations = [{**ann, "category_id": label_of[ann["category_id"]]} for ann in data["annotations"]]
        self.coco: COCO = build_coco(data["images"], annotations, self.class_names[1:])
        self.image_ids = sorted(self.coco.getImgIds())

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        image = load_image(path)
        if (image.width, image.height) != (info["width"], info["height"]):
            raise DatasetError(
                f"{path}: image is {image.width}x{image.height} but {self.ann_path} "
                f"says {info['width']}x{info['height']} (image id {image_id})"
            )
        anns = [
            a
            for a in self.coco.imgToAnns[image_id]
            if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, info["width"])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, info["height"])
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "image_id": int(image_id),
        }
        if self.with_masks:
            target["masks"] = self._masks(anns, info, path)
        return image_to_unit_tensor(image), target

    def _masks(self, anns: list[dict[str, Any]], info: dict[str, Any], path: Path) -> torch.Tensor:
        height, width = info["height"], info["width"]
        masks = np.zeros((len(anns), height, width), dtype=np.uint8)
        for k, ann in enumerate(anns):
            if "segmentation" not in ann:
                raise DatasetError(
                    f"{self.ann_path}: annotation {ann.get('id')} of {path.name} has "
                    f"no segmentation; task 'instance' needs one (or use 'detection')"
                )
            masks[k] = self.coco.annToMask(ann)
        return torch.from_numpy(masks)


def build_coco_dataset(config: Mapping[str, Any], split: str) -> CocoDetection:
    """Build the COCO JSON dataset for ``split`` ("train" or "val").

    Example:
        >>> build_coco_dataset({"format": "coco", "root": ".", "task": "panoptic"}, "val")
        Traceback (most recent call last):
        ...
        ValueError: data.task for coco must be one of detection, instance, got 'panoptic'
    """
    check_config(config, "coco", ("root",), ("task", "ann_file", "image_dir"))
    check_split(split)
    task = config.get("task", "detection")
    if task not in _TASKS:
        raise ValueError(f"data.task for coco must be one of {', '.join(_TASKS)}, got {task!r}")
    root = Path(config["root"])
    ann_path = root / str(config.get("ann_file", "annotations/instances_{split}2017.json")).format(split=split)
    image_dir = root / str(config.get("image_dir", "{split}2017")).format(split=split)
    return CocoDetection(ann_path, image_dir, with_masks=task == "instance")
