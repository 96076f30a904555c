"""Pascal VOC segmentation data: ``data.format: voc``.

Layout (``root`` is the ``VOC2012`` folder; ``VOCdevkit`` holding ``VOC2012`` also works)::

    VOCdevkit/VOC2012/
      JPEGImages/                 2007_000032.jpg ...
      SegmentationClass/          2007_000032.png ...   (palette PNGs: index = class)
      ImageSets/Segmentation/     train.txt  val.txt    (one image id per line)

21 classes (0 = background); palette index 255 (the white object borders) is ignored.
Every id listed in the split file must have both files, else :class:`DatasetError` names the
missing file.

Keys of ``data:``:

- ``root`` (required): the ``VOC2012`` (or ``VOCdevkit``) folder.
- ``image_size`` (default 512): int or ``[height, width]``.
- ``mask_dir`` (default ``SegmentationClass``): e.g. ``SegmentationClassAug`` for the SBD-augmented set.

Example:
    >>> len(VOC_CLASSES)
    21
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dysample_swap.finetune.data.common import (
    DatasetError,
    SegmentationFiles,
    check_config,
    parse_image_size,
    require_dir,
)

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _voc_root(root: Path) -> Path:
    if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
        return root / "VOC2012"
    return require_dir(
        root / "JPEGImages",
        "JPEGImages",
        "set data.root to the VOC2012 folder (holding JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)",
    ).parent


def build_voc(config: Mapping[str, Any], split: str) -> SegmentationFiles:
    """Build the Pascal VOC segmentation dataset for ``split`` (any ``ImageSets/Segmentation/<split>.txt``).

    Example:
        >>> build_voc({"format": "voc", "root": "/nonexistent"}, "train")
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: /nonexistent/JPEGImages: JPEGImages directory not found; set data.root to the VOC2012 folder (holding JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)
    """
    check_config(config, "voc", ("root",), ("image_size", "mask_dir"))
    root = _voc_root(Path(config["root"]))
    list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise DatasetError(
            f"{list_file}: split list not found; VOC needs "
            f"ImageSets/Segmentation/{split}.txt with one image id per line"
        )
    mask_dir = root / str(config.get("mask_dir", "SegmentationClass"))
    pairs = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        image_id = line.strip()
        if not image_id:
            continue
        image_path = root / "JPEGImages" / f"{image_id}.jpg"
        mask_path = mask_dir / f"{image_id}.png"
        for path in (image_path, mask_path):
            if not path.is_file():
                raise DatasetError(
                    f"{path}: missing, but listed in {list_file} line {line_no}; "
                    f"add the file or remove the id from the list"
                )
        pairs.append((image_path, mask_path))
    return SegmentationFiles(
        pairs, len(VOC_CLASSES), VOC_CLASSES, parse_image_size(config.get("image_size", 512)), source=str(list_file)
    )
