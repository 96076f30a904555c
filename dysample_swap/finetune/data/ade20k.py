"""ADE20K (SceneParsing, 150 classes) segmentation data: ``data.format: ade20k``.

Layout (``root`` is the ``ADEChallengeData2016`` folder)::

    ADEChallengeData2016/
      images/
        training/     ADE_train_00000001.jpg ...
        validation/   ADE_val_00000001.jpg ...
      annotations/
        training/     ADE_train_00000001.png ...   (0 = other, 1..150 = classes)
        validation/   ADE_val_00000001.png ...

Split ``train`` reads ``training/``, ``val`` reads ``validation/``. Labels are shifted as in the
benchmark: 0 ("other") becomes the ignore index 255 and classes 1..150 become 0..149. A raw
label above 150 is an error naming the file.

Keys of ``data:``:

- ``root`` (required): the ``ADEChallengeData2016`` folder.
- ``image_size`` (default 512): int or ``[height, width]``.

Example:
    >>> len(ADE20K_CLASSES), ADE20K_CLASSES[0], ADE20K_CLASSES[-1]
    (150, 'wall', 'flag')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dysample_swap.finetune.data.common import (
    DEFAULT_IGNORE_INDEX,
    SegmentationFiles,
    check_config,
    check_split,
    parse_image_size,
    require_dir,
)
from dysample_swap.finetune.data.folder import pair_by_stem

ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

_SPLIT_DIRS = {"train": "training", "val": "validation"}


def shift_ade_labels(mask: np.ndarray) -> np.ndarray:
    """Map raw ADE20K labels to training labels: 0 -> 255 (ignore), k -> k - 1.

    Example:
        >>> shift_ade_labels(np.array([0, 1, 150])).tolist()
        [255, 0, 149]
    """
    return np.where(mask == 0, DEFAULT_IGNORE_INDEX, mask - 1)


def build_ade20k(config: Mapping[str, Any], split: str) -> SegmentationFiles:
    """Build the ADE20K dataset for ``split`` ("train" or "val").

    Example:
        >>> build_ade20k({"format": "ade20k", "root": "/nonexistent"}, "val")
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: /nonexistent: ADE20K root directory not found; set data.root to the ADEChallengeData2016 folder
    """
    check_config(config, "ade20k", ("root",), ("image_size",))
    check_split(split)
    root = require_dir(Path(config["root"]), "ADE20K root", "set data.root to the ADEChallengeData2016 folder")
    sub = _SPLIT_DIRS[split]
    pairs = pair_by_stem(root / "images" / sub, root / "annotations" / sub)
    return SegmentationFiles(
        pairs,
        len(ADE20K_CLASSES),
        ADE20K_CLASSES,
        parse_image_size(config.get("image_size", 512)),
        source=str(root / "images" / sub),
        label_map=shift_ade_labels,
    )
