"""Datasets for fine-tuning: one module per format, one builder for all.

``build_dataset(config, split)`` takes a recipe's ``data:`` mapping; ``config["format"]`` picks
the loader, and each loader's module docstring lists the keys it accepts:

============= ========================================================== ===================================
format        module                                                     task
============= ========================================================== ===================================
synthetic     :mod:`~dysample_swap.finetune.data.synthetic`              segmentation / detection / instance
              :mod:`~dysample_swap.finetune.data.synthetic_depth`        depth
              :mod:`~dysample_swap.finetune.data.synthetic_panoptic`     panoptic
folder        :mod:`~dysample_swap.finetune.data.folder`                 segmentation
voc           :mod:`~dysample_swap.finetune.data.voc`                    segmentation
ade20k        :mod:`~dysample_swap.finetune.data.ade20k`                 segmentation
coco          :mod:`~dysample_swap.finetune.data.coco`                   detection / instance
nyu           :mod:`~dysample_swap.finetune.data.nyu`                    depth
depth_folder  :mod:`~dysample_swap.finetune.data.depth_folder`           depth
coco_panoptic :mod:`~dysample_swap.finetune.data.coco_panoptic`          panoptic
============= ========================================================== ===================================

Segmentation datasets yield ``(FloatTensor[3, H, W] ImageNet-normalised, LongTensor[H, W])``
and expose ``num_classes``, ``class_names``, ``ignore_index``. Detection datasets yield
``(FloatTensor[3, H, W] in [0, 1], target dict)`` in torchvision format, expose ``num_classes``
(background included), ``class_names`` and ``coco`` (pycocotools ground truth); batch them with
:func:`detection_collate`. Depth datasets yield ``(image as for segmentation, FloatTensor[H, W]
depth in metres, 0 = no measurement)`` and expose ``min_depth``, ``max_depth``, ``eval_crop``.
Panoptic datasets yield ``(image in [0, 1], target dict)``: Mask R-CNN's keys for the things plus
``semantic`` and ``panoptic`` maps, and expose ``thing_ids``, ``stuff_ids``, ``num_stuff`` and
``categories``.

Example:
    >>> ds = build_dataset({"format": "synthetic", "num_samples": 2, "image_size": 16}, "train")
    >>> len(ds), ds.num_classes
    (2, 6)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from dysample_swap.finetune.data.ade20k import build_ade20k
from dysample_swap.finetune.data.coco import build_coco_dataset
from dysample_swap.finetune.data.coco_panoptic import build_coco_panoptic
from dysample_swap.finetune.data.common import DatasetError
from dysample_swap.finetune.data.depth_folder import build_depth_folder
from dysample_swap.finetune.data.folder import build_folder
from dysample_swap.finetune.data.nyu import build_nyu
from dysample_swap.finetune.data.synthetic import build_synthetic
from dysample_swap.finetune.data.synthetic_depth import build_synthetic_depth
from dysample_swap.finetune.data.synthetic_panoptic import build_synthetic_panoptic
from dysample_swap.finetune.data.voc import build_voc

__all__ = ["FORMATS", "DatasetError", "build_dataset", "detection_collate", "is_detection"]


def build_any_synthetic(config: Mapping[str, Any], split: str) -> torch.utils.data.Dataset:
    """Synthetic data for ``config["task"]``: shapes (segmentation, detection, instance), depth
    scenes or panoptic scenes.

    Example:
        >>> build_any_synthetic({"format": "synthetic", "task": "depth", "num_samples": 2}, "train").max_depth
        10.0
    """
    task = config.get("task", "segmentation")
    if task == "depth":
        return build_synthetic_depth(config, split)
    if task == "panoptic":
        return build_synthetic_panoptic(config, split)
    return build_synthetic(config, split)


FORMATS: dict[str, Callable[[Mapping[str, Any], str], torch.utils.data.Dataset]] = {
    "synthetic": build_any_synthetic,
    "folder": build_folder,
    "voc": build_voc,
    "ade20k": build_ade20k,
    "coco": build_coco_dataset,
    "nyu": build_nyu,
    "depth_folder": build_depth_folder,
    "coco_panoptic": build_coco_panoptic,
}


def build_dataset(config: Mapping[str, Any], split: str) -> torch.utils.data.Dataset:
    """Build the dataset described by a recipe's ``data:`` mapping for ``split``.

    Example:
        >>> build_dataset({"format": "vocc", "root": "x"}, "train")
        Traceback (most recent call last):
        ...
        KeyError: "data.format: unknown format 'vocc' (did you mean 'voc'?); valid formats: synthetic, folder, voc, ade20k, coco, nyu, depth_folder, coco_panoptic"
    """
    if "format" not in config:
        raise KeyError(f"data.format: missing; set it to one of {', '.join(FORMATS)}")
    fmt = config["format"]
    if fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), list(FORMATS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise KeyError(f"data.format: unknown format '{fmt}'{hint}; valid formats: {', '.join(FORMATS)}")
    return FORMATS[fmt](config, split)


def is_detection(config: Mapping[str, Any]) -> bool:
    """Whether the ``data:`` mapping describes detection/instance data (targets are dicts).

    Example:
        >>> is_detection({"format": "synthetic", "task": "instance"}), is_detection({"format": "voc"})
        (True, False)
    """
    return config.get("format") == "coco" or config.get("task") in ("detection", "instance")


def detection_collate(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Collate detection samples into ``(list_of_images, list_of_targets)`` (sizes may differ).

    Example:
        >>> images, targets = detection_collate([(torch.zeros(3, 4, 4), {"image_id": 1}),
        ...                                      (torch.zeros(3, 5, 6), {"image_id": 2})])
        >>> len(images), [t["image_id"] for t in targets]
        (2, [1, 2])
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
