"""COCO panoptic segmentation data: ``data.format: coco_panoptic``.

Default layout (COCO 2017 panoptic, as distributed)::

    ROOT/
      annotations/
        panoptic_train2017.json
        panoptic_val2017.json
        panoptic_train2017/   000000000009.png ...
        panoptic_val2017/     000000000139.png ...
      train2017/   000000000009.jpg ...
      val2017/     000000000139.jpg ...

Paths are templates relative to ``root`` in which ``{split}`` becomes the split name
(``train``/``val``), so other layouts only need ``ann_file`` / ``png_dir`` / ``image_dir`` set.

The JSON holds ``images``, ``categories`` (``id``, ``name``, ``isthing``) and ``annotations``:
one per image, with the ``file_name`` of its PNG, its ``image_id`` and ``segments_info``
(``id``, ``category_id``, ``iscrowd``, ``bbox``, ``area`` per segment). The PNG is RGB and
encodes a segment id per pixel as ``R + 256 * G + 256**2 * B``; id 0 is void (unlabelled).
This is COCO's "format-data" page, section "Panoptic Segmentation", and ``rgb2id`` of the COCO
``panopticapi`` (``panopticapi/utils.py``).

Items are ``(image FloatTensor[3, H, W] in [0, 1], target)`` at the image's own size (the
Panoptic FPN's torchvision transform resizes). The target, for a Panoptic FPN (Mask R-CNN plus a
semantic branch):

- ``boxes`` float32 ``[K, 4]`` xyxy (pixel edges), ``labels`` int64 ``[K]`` in ``1..T``,
  ``masks`` uint8 ``[K, H, W]``, ``area`` float32 ``[K]`` (pixels), ``iscrowd`` int64 ``[K]``
  (zeros), ``image_id`` (the COCO image id): the non-crowd thing segments that have pixels in
  the PNG, in ``segments_info`` order. Thing categories are renumbered ``1..T`` in category-id
  order (``.thing_ids[label - 1]`` gives back the id). Boxes and areas come from the PNG, not
  from the JSON's ``bbox`` / ``area``.
- ``semantic`` int64 ``[H, W]``: stuff categories ``0..S-1`` in category-id order
  (``.stuff_ids[s]``), every thing pixel (crowd included) ``S``, void ``255``.
- ``panoptic`` int64 ``[H, W, 2]``: (category id, instance id) per pixel, what
  :class:`~dysample_swap.finetune.metrics_panoptic.PanopticMetrics` takes. A thing's instance id
  is its row in ``masks`` plus one; stuff has instance id 0. Void pixels and crowd segments
  (thing or stuff) are ``(0, 0)``: category 0 is never a category, so the metric treats them as
  void, which is how it stands in for COCO's crowd rule.

Checked when the dataset is built: the JSON parses and has images/annotations/categories; every
category has an ``id`` (not 0) and ``isthing``; every image has exactly one annotation and every
annotation names a known image; every segment has an ``id`` (not 0, unique in its image) and a
``category_id`` that is in ``categories`` (else an error naming the JSON, the image and the id);
every image and PNG file exists. Checked when an item is loaded: the image and PNG are readable,
the PNG is RGB (or palette / RGBA), it has the size of its image, and every non-zero segment id
in it is in the image's ``segments_info`` (else an error naming the PNG and the id). A segment of
``segments_info`` with no pixel in the PNG is not an error (COCO has some): it is left out of the
target.

Keys of ``data:``:

- ``root`` (required): dataset folder.
- ``ann_file`` (default ``annotations/panoptic_{split}2017.json``).
- ``png_dir`` (default ``annotations/panoptic_{split}2017``): the panoptic PNGs.
- ``image_dir`` (default ``{split}2017``).
- ``max_samples`` (optional): keep only the first N images (by image id), e.g. for a quick run.
- ``task`` (optional): must be ``panoptic`` if given.

Batch items with :func:`dysample_swap.finetune.data.detection_collate` (the dataset's
``.collate``): images differ in size.

Example:
    >>> build_coco_panoptic({"format": "coco_panoptic", "root": "/nonexistent"}, "val")
    Traceback (most recent call last):
    ...
    dysample_swap.finetune.data.common.DatasetError: /nonexistent/annotations/panoptic_val2017.json: annotation file not found; set data.ann_file (relative to data.root, '{split}' is replaced by the split name)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dysample_swap.finetune.data.common import (
    DEFAULT_IGNORE_INDEX,
    DatasetError,
    _open,
    check_config,
    check_split,
    image_to_unit_tensor,
    load_image,
    require_dir,
)

#: Value of ``semantic`` for void / unlabelled pixels.
VOID_LABEL = DEFAULT_IGNORE_INDEX
_PATH_FIX = "(relative to data.root, '{split}' is replaced by the split name)"
_PNG_MODES = ("RGB", "RGBA", "P")


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG pixels ``[H, W, 3]`` -> segment ids ``uint32 [H, W]``: ``R + 256 G + 256² B``.

    Example:
        >>> rgb_to_segment_ids(np.array([[[0, 0, 0], [1, 2, 3], [255, 255, 255]]], dtype=np.uint8)).tolist()
        [[0, 197121, 16777215]]
    """
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + np.uint32(256) * rgb[..., 1] + np.uint32(256 * 256) * rgb[..., 2]


def segment_ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids ``[H, W]`` -> ``uint8 [H, W, 3]`` panoptic PNG pixels (inverse of :func:`rgb_to_segment_ids`).

    Example:
        >>> segment_ids_to_rgb(np.array([[197121]])).tolist()
        [[[1, 2, 3]]]
    """
    ids = np.asarray(ids, dtype=np.uint32)
    return np.stack([(ids >> shift) & 0xFF for shift in (0, 8, 16)], axis=-1).astype(np.uint8)


class PanopticDataset(torch.utils.data.Dataset):
    """Category bookkeeping and target building shared by the panoptic datasets.

    ``categories`` is a list of ``{"id", "name", "isthing"}``; things become labels ``1..T`` and
    stuff indices ``0..S-1``, both in id order. :meth:`make_target` turns a segment-id map and
    its segments into the target described in the module docstring.

    Example:
        >>> ds = PanopticDataset([{"id": 9, "name": "sky", "isthing": 0}, {"id": 3, "name": "car", "isthing": 1}])
        >>> ds.num_classes, ds.class_names, ds.num_stuff, ds.stuff_names, ds.thing_ids, ds.stuff_ids
        (2, ['background', 'car'], 1, ['sky'], [3], [9])
        >>> ids = np.array([[0, 5, 5], [7, 7, 5]])
        >>> target = ds.make_target(ids, [{"id": 5, "category_id": 3}, {"id": 7, "category_id": 9}], 1)
        >>> target["boxes"].tolist(), target["labels"].tolist(), target["semantic"].tolist()
        ([[1.0, 0.0, 3.0, 2.0]], [1], [[255, 1, 1], [0, 0, 1]])
        >>> target["panoptic"][..., 0].tolist(), target["panoptic"][..., 1].tolist()
        ([[0, 3, 3], [9, 9, 3]], [[0, 1, 1], [0, 0, 1]])
    """

    def __init__(self, categories: Sequence[Mapping[str, Any]]) -> None:
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        self.categories: dict[int, dict[str, Any]] = {
            int(c["id"]): {"name": str(c["name"]), "isthing": bool(c["isthing"])} for c in ordered
        }
        self.thing_ids = [cat_id for cat_id, c in self.categories.items() if c["isthing"]]
        self.stuff_ids = [cat_id for cat_id, c in self.categories.items() if not c["isthing"]]
        self.class_names = ["background", *(self.categories[i]["name"] for i in self.thing_ids)]
        self.stuff_names = [self.categories[i]["name"] for i in self.stuff_ids]
        self.num_classes = len(self.thing_ids) + 1
        self.num_stuff = len(self.stuff_ids)
        self.ignore_index = VOID_LABEL
        self._label_of = {cat_id: k for k, cat_id in enumerate(self.thing_ids, start=1)}
        self._stuff_of = {cat_id: s for s, cat_id in enumerate(self.stuff_ids)}

    @property
    def collate(self) -> Callable[[Sequence[tuple[torch.Tensor, dict[str, Any]]]], Any]:
        """:func:`dysample_swap.finetune.data.detection_collate` (images may differ in size).

        Example:
            >>> PanopticDataset([]).collate.__name__
            'detection_collate'
        """
        from dysample_swap.finetune.data import detection_collate  # the package imports this module

        return detection_collate

    def make_target(self, ids: np.ndarray, segments: Sequence[Mapping[str, Any]], image_id: int) -> dict[str, Any]:
        """Target dict from a segment-id map ``[H, W]`` (0 = void) and its ``segments_info``.

        Every non-zero id of ``ids`` must be a segment's ``id`` and every ``category_id`` a known
        category (callers check both). Segments without pixels are left out.
        """
        height, width = ids.shape
        present, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(height, width)
        position = {int(seg_id): k for k, seg_id in enumerate(present)}
        num_stuff = self.num_stuff
        semantic = np.full((height, width), VOID_LABEL, dtype=np.int64)
        panoptic = np.zeros((height, width, 2), dtype=np.int64)
        masks: list[np.ndarray] = []
        labels: list[int] = []
        for seg in segments:
            k = position.get(int(seg["id"]))
            if k is None or int(seg["id"]) == 0:
                continue  # listed, but no pixel in the map
            mask = inverse == k
            cat_id = int(seg["category_id"])
            crowd = bool(seg.get("iscrowd", 0))
            isthing = self.categories[cat_id]["isthing"]
            semantic[mask] = num_stuff if isthing else self._stuff_of[cat_id]
            if crowd:
                continue  # void in panoptic, left out of the instances
            if isthing:
                masks.append(mask)
                labels.append(self._label_of[cat_id])
                panoptic[mask] = (cat_id, len(masks))
            else:
                panoptic[mask] = (cat_id, 0)
        stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
        boxes = np.zeros((len(masks), 4), dtype=np.float32)
        for k, mask in enumerate(masks):
            rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
            y0, y1 = np.flatnonzero(rows)[[0, -1]]
            x0, x1 = np.flatnonzero(cols)[[0, -1]]
            boxes[k] = (x0, y0, x1 + 1, y1 + 1)
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(stacked.astype(np.uint8)),
            "image_id": int(image_id),
            "area": torch.from_numpy(stacked.sum(axis=(1, 2)).astype(np.float32)),
            "iscrowd": torch.zeros(len(masks), dtype=torch.int64),
            "semantic": torch.from_numpy(semantic),
            "panoptic": torch.from_numpy(panoptic),
        }


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found; set data.ann_file {_PATH_FIX}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a COCO panoptic JSON (top level is not an object)")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: COCO panoptic JSON lacks {', '.join(missing)}; it needs images, annotations and categories lists"
        )
    return data


def _check_categories(categories: list[dict[str, Any]], path: Path) -> None:
    seen: set[int] = set()
    for cat in categories:
        missing = [k for k in ("id", "name", "isthing") if k not in cat]
        if missing:
            raise DatasetError(
                f"{path}: category {cat.get('id', cat.get('name'))} lacks {', '.join(missing)}; "
                f"panoptic categories need id, name and isthing (0 or 1)"
            )
        if int(cat["id"]) == 0 or int(cat["id"]) in seen:
            what = "id 0 (0 means void)" if int(cat["id"]) == 0 else "a duplicate id"
            raise DatasetError(f"{path}: category {cat['name']!r} has {what}; give every category its own id >= 1")
        seen.add(int(cat["id"]))


def _match_annotations(data: dict[str, Any], path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(image, annotation)`` pairs sorted by image id, with every segment checked."""
    images = {img["id"]: img for img in data["images"]}
    cat_ids = {int(cat["id"]) for cat in data["categories"]}
    ann_of: dict[Any, dict[str, Any]] = {}
    for i, ann in enumerate(data["annotations"]):
        missing = [k for k in ("image_id", "file_name", "segments_info") if k not in ann]
        if missing:
            raise DatasetError(f"{path}: annotation {i} lacks {', '.join(missing)}; COCO panoptic needs all three")
        image_id = ann["image_id"]
        if image_id not in images:
            raise DatasetError(
                f"{path}: annotation {i} ({ann['file_name']}) refers to image id {image_id}, which is not in 'images'"
            )
        if image_id in ann_of:
            raise DatasetError(f"{path}: image id {image_id} has two annotations; COCO panoptic has one per image")
        ann_of[image_id] = ann
        name = images[image_id].get("file_name", ann["file_name"])
        seen: set[int] = set()
        for seg in ann["segments_info"]:
            if "id" not in seg or "category_id" not in seg:
                raise DatasetError(f"{path}: image {image_id} ({name}) has a segment without id or category_id: {seg}")
            seg_id = int(seg["id"])
            if seg_id == 0 or seg_id in seen:
                what = "id 0 (0 means void in the PNG)" if seg_id == 0 else f"duplicate id {seg_id}"
                raise DatasetError(
                    f"{path}: image {image_id} ({name}) has a segment with {what}; segment ids must be unique and >= 1"
                )
            seen.add(seg_id)
            if int(seg["category_id"]) not in cat_ids:
                raise DatasetError(
                    f"{path}: image {image_id} ({name}): segment {seg_id} has category_id {seg['category_id']}, "
                    f"which is not in 'categories'; add the category or fix the segment"
                )
    pairs = []
    for image_id in sorted(images):
        if image_id not in ann_of:
            raise DatasetError(
                f"{path}: image id {image_id} ({images[image_id].get('file_name')}) has no annotation; "
                f"add one (empty segments_info for an unlabelled image) or drop the image"
            )
        pairs.append((images[image_id], ann_of[image_id]))
    return pairs


def _load_segment_ids(path: Path) -> np.ndarray:
    with _open(path, "panoptic PNG") as img:
        if img.mode not in _PNG_MODES:
            raise DatasetError(
                f"{path}: panoptic PNG has PIL mode {img.mode!r}; it must be RGB, "
                f"encoding segment id R + 256*G + 256^2*B per pixel"
            )
        rgb = np.asarray(img.convert("RGB"))
    return rgb_to_segment_ids(rgb)


class CocoPanoptic(PanopticDataset):
    """COCO panoptic dataset yielding ``(image [3, H, W] in [0, 1], target)`` (module docstring).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (3, 2)).save(root / "a.jpg")
        >>> Image.fromarray(segment_ids_to_rgb(np.array([[0, 300, 300], [7, 7, 300]]))).save(root / "a.png")
        >>> _ = (root / "gt.json").write_text(json.dumps({
        ...     "images": [{"id": 4, "file_name": "a.jpg", "width": 3, "height": 2}],
        ...     "annotations": [{"image_id": 4, "file_name": "a.png", "segments_info": [
        ...         {"id": 300, "category_id": 18, "iscrowd": 0}, {"id": 7, "category_id": 184, "iscrowd": 0}]}],
        ...     "categories": [{"id": 18, "name": "dog", "isthing": 1}, {"id": 184, "name": "tree", "isthing": 0}]}))
        >>> ds = CocoPanoptic(root / "gt.json", root, root)
        >>> image, target = ds[0]
        >>> target["labels"].tolist(), target["semantic"].tolist(), ds.stuff_names
        ([1], [[255, 1, 1], [0, 0, 1]], ['tree'])
    """

    def __init__(self, ann_path: Path, png_dir: Path, image_dir: Path, max_samples: int | None = None) -> None:
        data = _read_json(ann_path)
        if not data["images"]:
            raise DatasetError(f"{ann_path}: empty dataset (no images)")
        _check_categories(data["categories"], ann_path)
        super().__init__(data["categories"])
        pairs = _match_annotations(data, ann_path)
        if max_samples is not None:
            pairs = pairs[:max_samples]
        for img, ann in pairs:
            if not (image_dir / img["file_name"]).is_file():
                raise DatasetError(
                    f"{image_dir / img['file_name']}: image file not found, but listed in {ann_path} "
                    f"(image id {img['id']}); set data.image_dir {_PATH_FIX}"
                )
            if not (png_dir / ann["file_name"]).is_file():
                raise DatasetError(
                    f"{png_dir / ann['file_name']}: panoptic PNG not found, but listed in {ann_path} "
                    f"(image id {img['id']}); set data.png_dir {_PATH_FIX}"
                )
        self.ann_path = ann_path
        self.png_dir = png_dir
        self.image_dir = image_dir
        self.samples = pairs
        self.image_ids = [img["id"] for img, _ in pairs]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        info, ann = self.samples[index]
        image_path = self.image_dir / info["file_name"]
        png_path = self.png_dir / ann["file_name"]
        image = load_image(image_path)
        if (info.get("width", image.width), info.get("height", image.height)) != (image.width, image.height):
            raise DatasetError(
                f"{image_path}: image is {image.width}x{image.height} but {self.ann_path} "
                f"says {info['width']}x{info['height']} (image id {info['id']})"
            )
        ids = _load_segment_ids(png_path)
        if ids.shape != (image.height, image.width):
            raise DatasetError(
                f"{png_path}: panoptic PNG is {ids.shape[1]}x{ids.shape[0]} but its image {image_path} is "
                f"{image.width}x{image.height}; they must have the same size"
            )
        listed = {int(seg["id"]) for seg in ann["segments_info"]}
        unknown = [int(i) for i in np.unique(ids) if i != 0 and int(i) not in listed]
        if unknown:
            raise DatasetError(
                f"{png_path}: segment id(s) {unknown[:10]} are in the PNG but not in segments_info of image "
                f"{info['id']} in {self.ann_path}; add them to segments_info or paint those pixels 0 (void)"
            )
        return image_to_unit_tensor(image), self.make_target(ids, ann["segments_info"], info["id"])


def build_coco_panoptic(config: Mapping[str, Any], split: str) -> CocoPanoptic:
    """Build the COCO panoptic dataset for ``split`` ("train" or "val").

    Example:
        >>> build_coco_panoptic({"format": "coco_panoptic", "root": ".", "max_samples": 0}, "val")
        Traceback (most recent call last):
        ...
        ValueError: data.max_samples must be a positive int, got 0
    """
    check_config(config, "coco_panoptic", ("root",), ("ann_file", "png_dir", "image_dir", "max_samples", "task"))
    check_split(split)
    task = config.get("task", "panoptic")
    if task != "panoptic":
        raise ValueError(f"data.task for coco_panoptic must be panoptic, got {task!r}")
    max_samples = config.get("max_samples")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"data.max_samples must be a positive int, got {max_samples!r}")
    root = Path(config["root"])
    ann_path = root / str(config.get("ann_file", "annotations/panoptic_{split}2017.json")).format(split=split)
    png_dir = root / str(config.get("png_dir", "annotations/panoptic_{split}2017")).format(split=split)
    image_dir = root / str(config.get("image_dir", "{split}2017")).format(split=split)
    if ann_path.is_file():
        require_dir(png_dir, "panoptic PNG", f"set data.png_dir {_PATH_FIX}")
        require_dir(image_dir, "image", f"set data.image_dir {_PATH_FIX}")
    return CocoPanoptic(ann_path, png_dir, image_dir, max_samples)
