"""Folder-of-images segmentation data: ``data.format: folder``.

Layout A (explicit splits, used when ``ROOT/train`` exists)::

    ROOT/
      train/
        images/  0001.jpg  0002.png ...
        masks/   0001.png  0002.png ...
      val/
        images/ ...
        masks/  ...

Layout B (one pool, split deterministically)::

    ROOT/
      images/  0001.jpg ...
      masks/   0001.png ...

An image and its mask share a stem (``0001.jpg`` <-> ``0001.png``). Masks are single-channel PNGs
(8-bit grayscale or palette) holding the class index of each pixel; ``ignore_index`` marks pixels
to skip. In layout B, the stems are sorted, shuffled with ``seed`` and the first
``round(val_fraction * N)`` (at least 1) form ``val``; the rest form ``train``.

Keys of ``data:``:

- ``root`` (required): dataset folder.
- ``num_classes`` (required): number of classes, labels ``0..num_classes-1``.
- ``image_size`` (default 256): int or ``[height, width]``; images and masks are resized to it.
- ``class_names``: list of ``num_classes`` names (default ``class0``, ``class1``, ...).
- ``ignore_index`` (default 255): mask value excluded from loss and metrics.
- ``val_fraction`` (default 0.2) and ``seed`` (default 0): the layout-B split.

An image without a mask (or a mask without an image) is an error naming the file.

Example:
    >>> build_folder({"format": "folder", "root": "/nonexistent", "num_classes": 2}, "train")
    Traceback (most recent call last):
    ...
    dysample_swap.finetune.data.common.DatasetError: /nonexistent: dataset root directory not found; set data.root to a folder holding images/ and masks/ (or train/ and val/ with those inside)
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dysample_swap.finetune.data.common import (
    DEFAULT_IGNORE_INDEX,
    IMAGE_SUFFIXES,
    DatasetError,
    SegmentationFiles,
    check_config,
    check_split,
    default_class_names,
    parse_image_size,
    require_dir,
)

_OPTIONAL = ("image_size", "class_names", "ignore_index", "val_fraction", "seed")


def pair_by_stem(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """Pair every image in ``image_dir`` with ``mask_dir/<stem>.png``, sorted by stem.

    Raises :class:`DatasetError` naming the first image without a mask or mask without an image.

    Example:
        >>> pair_by_stem(Path("/nonexistent/images"), Path("/nonexistent/masks"))
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: /nonexistent/images: images directory not found; put the images there, named like their masks
    """
    require_dir(image_dir, "images", "put the images there, named like their masks")
    require_dir(mask_dir, "masks", "put one PNG mask per image there, with the image's stem")
    images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    for stem in sorted(images):
        if stem not in masks:
            raise DatasetError(f"{images[stem]}: no mask {mask_dir / (stem + '.png')}; add it or remove the image")
    for stem in sorted(masks):
        if stem not in images:
            raise DatasetError(
                f"{masks[stem]}: mask without an image in {image_dir}; add the image (same stem) or remove the mask"
            )
    return [(images[s], masks[s]) for s in sorted(images)]


def _split_pool(pairs: list[tuple[Path, Path]], split: str, val_fraction: float, seed: int) -> list[tuple[Path, Path]]:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(pairs)))
    chosen = order[:n_val] if split == "val" else order[n_val:]
    return [pairs[i] for i in sorted(chosen)]


def build_folder(config: Mapping[str, Any], split: str) -> SegmentationFiles:
    """Build the ``folder`` segmentation dataset for ``split`` ("train" or "val").

    Example:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for sub in ("images", "masks"): (root / sub).mkdir()
        >>> for i in range(5):
        ...     Image.new("RGB", (8, 8)).save(root / "images" / f"{i}.png")
        ...     Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / f"{i}.png")
        >>> cfg = {"format": "folder", "root": str(root), "num_classes": 2, "image_size": 4}
        >>> len(build_folder(cfg, "train")), len(build_folder(cfg, "val"))
        (4, 1)
    """
    check_config(config, "folder", ("root", "num_classes"), _OPTIONAL)
    check_split(split)
    root = require_dir(
        Path(config["root"]),
        "dataset root",
        "set data.root to a folder holding images/ and masks/ (or train/ and val/ with those inside)",
    )
    if (root / "train").is_dir():
        base = require_dir(
            root / split,
            f"'{split}' split",
            f"layout A needs {root}/train and {root}/val, each with images/ and masks/",
        )
        pairs = pair_by_stem(base / "images", base / "masks")
        source = str(base)
    else:
        pairs = _split_pool(
            pair_by_stem(root / "images", root / "masks"),
            split,
            float(config.get("val_fraction", 0.2)),
            int(config.get("seed", 0)),
        )
        source = f"{root} ({split} part)"
    num_classes = int(config["num_classes"])
    return SegmentationFiles(
        pairs,
        num_classes,
        default_class_names(config, num_classes),
        parse_image_size(config.get("image_size", 256)),
        source=source,
        ignore_index=int(config.get("ignore_index", DEFAULT_IGNORE_INDEX)),
    )
