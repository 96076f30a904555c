"""Built-in synthetic shapes data, generated on the fly: ``data.format: synthetic``.

Each sample is a textured, noisy background (smooth gradient + stripes + pixel noise) with 2 to
4 shapes of these classes, in this order: ``disc``, ``ring`` (thin), ``bar`` (thin, rotated),
``triangle`` (sharp corners), ``cross`` (thin arms), ``rectangle`` (rotated). Shape colours are
drawn around one hue per class with jitter, so the class is learnable quickly while the thin
parts and sharp edges keep boundary quality hard. Later shapes may occlude earlier ones, but never
hide more than half of one. Everything is drawn with hard edges (no anti-aliasing).

A sample is a pure function of ``(seed, split, index)`` (its own ``numpy`` generator seeded with
that triple), so the same seed gives identical samples in any worker or order; ``train`` and
``val`` draw from different streams.

Keys of ``data:``:

- ``task`` (default ``segmentation``): ``segmentation``, ``detection`` (boxes) or
  ``instance`` (boxes + instance masks).
- ``num_classes`` (default 5): number of shape classes, 1..6, taken in the order above. The
  dataset's ``.num_classes`` is this plus one: label 0 is the background in both tasks.
- ``image_size`` (default 64): int or ``[height, width]``.
- ``num_samples`` (default 256): size of the ``train`` split.
- ``num_val_samples`` (default ``max(8, num_samples // 4)``): size of the ``val`` split.
- ``seed`` (default 0).

Segmentation items: ``(FloatTensor[3, H, W] ImageNet-normalised, LongTensor[H, W])``.
Detection items: ``(FloatTensor[3, H, W] in [0, 1], target)`` with ``boxes`` (xyxy, pixel
edges), ``labels`` (1..num_classes), ``image_id`` (= index + 1) and, for ``instance``, ``masks``;
``.coco`` holds the split's ground truth as an in-memory pycocotools ``COCO``.

Example:
    >>> ds = build_synthetic({"format": "synthetic", "num_samples": 4, "image_size": 32}, "train")
    >>> image, mask = ds[0]
    >>> tuple(image.shape), tuple(mask.shape), ds.num_classes
    ((3, 32, 32), (32, 32), 6)
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from dysample_swap.finetune.data.coco_gt import build_coco, target_annotations
from dysample_swap.finetune.data.common import (
    DEFAULT_IGNORE_INDEX,
    check_config,
    check_split,
    normalize_image,
    parse_image_size,
    sample_generator,
)

SHAPE_CLASSES = ("disc", "ring", "bar", "triangle", "cross", "rectangle")
TASKS = ("segmentation", "detection", "instance")
_MIN_AREA = 6  # pixels a shape must cover to be kept
_MAX_HIDDEN = 0.5  # a new shape may hide at most this share of an earlier one
_PLACEMENT_TRIES = 12


@dataclass(frozen=True)
class Scene:
    """One rendered sample: ``image`` uint8 ``[H, W, 3]``, ``labels`` (1-based class per
    instance) and ``masks`` bool ``[K, H, W]`` (visible part of each instance, disjoint).

    Example:
        >>> scene = render_scene(np.random.default_rng(0), 16, 16, 3)
        >>> scene.image.shape, scene.masks.shape[1:]
        ((16, 16, 3), (16, 16))
    """

    image: np.ndarray
    labels: np.ndarray
    masks: np.ndarray

    def semantic_mask(self) -> np.ndarray:
        """Class index per pixel (0 = background) as ``int64 [H, W]``.

        Example:
            >>> render_scene(np.random.default_rng(0), 8, 8, 2).semantic_mask().dtype
            dtype('int64')
        """
        out = np.zeros(self.image.shape[:2], dtype=np.int64)
        for label, mask in zip(self.labels, self.masks):
            out[mask] = label
        return out


def _shape_mask(kind: str, rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, side: int) -> np.ndarray:
    """Boolean mask of one randomly placed shape of ``kind`` on the pixel-centre grid."""
    size = rng.uniform(0.12, 0.25) * side
    cy, cx = rng.uniform(0.5 * size, ys.shape[0] - 0.5 * size), rng.uniform(0.5 * size, xs.shape[1] - 0.5 * size)
    theta = rng.uniform(0, np.pi)
    dy, dx = ys - cy, xs - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    thin = max(1.5, rng.uniform(0.03, 0.05) * side)
    if kind == "disc":
        return dx**2 + dy**2 <= size**2
    if kind == "ring":
        return np.abs(np.hypot(dx, dy) - size) <= thin / 2
    if kind == "bar":
        return (np.abs(u) <= 1.3 * size) & (np.abs(v) <= thin / 2)
    if kind == "cross":
        arm = 1.5 * thin / 2
        return ((np.abs(u) <= size) & (np.abs(v) <= arm)) | ((np.abs(v) <= size) & (np.abs(u) <= arm))
    if kind == "rectangle":
        return (np.abs(u) <= size * rng.uniform(0.5, 1.0)) & (np.abs(v) <= size * rng.uniform(0.4, 0.8))
    # triangle: three vertices around the centre; inside = same side of all three edges
    angles = theta + np.array([0.0, 2.0, 4.0]) * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
    vy, vx = cy + 1.2 * size * np.sin(angles), cx + 1.2 * size * np.cos(angles)
    signs = [(xs - vx[i]) * (vy[(i + 1) % 3] - vy[i]) - (ys - vy[i]) * (vx[(i + 1) % 3] - vx[i]) for i in range(3)]
    return ((signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)) | ((signs[0] <= 0) & (signs[1] <= 0) & (signs[2] <= 0))


def _background(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    height, width = ys.shape[0], xs.shape[1]
    base = rng.uniform(0.25, 0.55, 3)
    gradient = rng.uniform(-0.15, 0.15, 3)[:, None, None] * (xs / width - 0.5) + rng.uniform(-0.15, 0.15, 3)[
        :, None, None
    ] * (ys / height - 0.5)
    freq, angle = rng.uniform(0.15, 0.6), rng.uniform(0, np.pi)
    stripes = 0.06 * np.sin(freq * (xs * np.cos(angle) + ys * np.sin(angle)) + rng.uniform(0, 6.3))
    image = base[:, None, None] + gradient + stripes[None]
    return image + rng.normal(0.0, 0.05, (3, height, width))


def _shape_colour(rng: np.random.Generator, class_index: int) -> np.ndarray:
    hue = (class_index / len(SHAPE_CLASSES) + rng.uniform(-0.04, 0.04)) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.7, 1.0)))


def render_scene(rng: np.random.Generator, height: int, width: int, num_classes: int) -> Scene:
    """Draw one scene with 2-4 shapes from the first ``num_classes`` shape classes.

    Example:
        >>> a = render_scene(np.random.default_rng(1), 32, 32, 6)
        >>> b = render_scene(np.random.default_rng(1), 32, 32, 6)
        >>> bool((a.image == b.image).all()) and 2 <= len(a.labels) <= 4
        True
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    image = _background(rng, ys, xs)
    side = min(height, width)
    labels: list[int] = []
    masks: list[np.ndarray] = []
    full_areas: list[int] = []
    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.integers(num_classes))
        for _try in range(_PLACEMENT_TRIES):
            shape = _shape_mask(SHAPE_CLASSES[cls], rng, ys, xs, side)
            if shape.sum() < _MIN_AREA:
                continue
            kept = [m & ~shape for m in masks]
            if all(k.sum() >= (1 - _MAX_HIDDEN) * a for k, a in zip(kept, full_areas)):
                break
        else:
            continue  # no placement that keeps every earlier shape visible enough
        masks = kept + [shape]
        full_areas.append(int(shape.sum()))
        labels.append(cls + 1)
        colour = _shape_colour(rng, cls)[:, None] + rng.normal(0.0, 0.04, (3, int(shape.sum())))
        image[:, shape] = colour
    pixels = np.clip(image.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Scene(
        pixels, np.array(labels, dtype=np.int64), np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
    )


class _SyntheticBase(torch.utils.data.Dataset):
    def __init__(
        self, num_samples: int, image_size: tuple[int, int], num_shape_classes: int, seed: int, split: str
    ) -> None:
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.split = split
        self.num_classes = num_shape_classes + 1
        self.class_names = ["background", *SHAPE_CLASSES[:num_shape_classes]]

    def __len__(self) -> int:
        return self.num_samples

    def scene(self, index: int) -> Scene:
        """Render sample ``index`` (pure function of seed, split and index).

        Example:
            >>> ds = SyntheticSegmentation(2, (16, 16), 3, seed=0, split="val")
            >>> bool((ds.scene(1).image == ds.scene(1).image).all())
            True
        """
        rng = sample_generator(self.seed, self.split, index, self.num_samples)
        return render_scene(rng, *self.image_size, self.num_classes - 1)


class SyntheticSegmentation(_SyntheticBase):
    """Synthetic shapes as semantic segmentation (label 0 = background).

    Example:
        >>> ds = SyntheticSegmentation(2, (16, 16), 3, seed=0, split="train")
        >>> ds.class_names, ds.ignore_index
        (['background', 'disc', 'ring', 'bar'], 255)
    """

    ignore_index = DEFAULT_IGNORE_INDEX

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene = self.scene(index)
        return normalize_image(Image.fromarray(scene.image)), torch.from_numpy(scene.semantic_mask())


class SyntheticDetection(_SyntheticBase):
    """Synthetic shapes as COCO-style instances, with an in-memory COCO ground truth.

    Example:
        >>> ds = SyntheticDetection(2, (16, 16), 3, seed=0, split="val", with_masks=True)
        >>> image, target = ds[0]
        >>> sorted(target), len(ds.coco.getImgIds())
        (['boxes', 'image_id', 'labels', 'masks'], 2)
    """

    def __init__(
        self,
        num_samples: int,
        image_size: tuple[int, int],
        num_shape_classes: int,
        seed: int,
        split: str,
        with_masks: bool,
    ) -> None:
        super().__init__(num_samples, image_size, num_shape_classes, seed, split)
        self.with_masks = with_masks

    def _target(self, index: int, scene: Scene) -> dict[str, Any]:
        boxes = []
        for mask in scene.masks:
            rows, cols = np.nonzero(mask)
            boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        target: dict[str, Any] = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.from_numpy(scene.labels),
            "image_id": index + 1,
        }
        if self.with_masks:
            target["masks"] = torch.from_numpy(scene.masks.astype(np.uint8))
        return target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        scene = self.scene(index)
        image = torch.from_numpy(scene.image.astype(np.float32) / 255.0).permute(2, 0, 1)
        return image.contiguous(), self._target(index, scene)

    @cached_property
    def coco(self) -> COCO:
        """Ground truth of the whole split (instance masks included), rendered once on first use.

        Example:
            >>> ds = SyntheticDetection(3, (16, 16), 2, seed=0, split="val", with_masks=False)
            >>> ds.coco.getImgIds(), [c["name"] for c in ds.coco.loadCats(ds.coco.getCatIds())]
            ([1, 2, 3], ['disc', 'ring'])
        """
        height, width = self.image_size
        images, annotations = [], []
        for index in range(self.num_samples):
            scene = self.scene(index)
            target = self._target(index, scene)
            target["masks"] = torch.from_numpy(scene.masks.astype(np.uint8))
            images.append({"id": index + 1, "height": height, "width": width})
            annotations.extend(target_annotations(target))
        return build_coco(images, annotations, self.class_names[1:])


def build_synthetic(config: Mapping[str, Any], split: str) -> SyntheticSegmentation | SyntheticDetection:
    """Build the synthetic dataset for ``split`` ("train" or "val") from the ``data:`` mapping.

    Example:
        >>> ds = build_synthetic({"format": "synthetic", "task": "instance", "num_samples": 8}, "val")
        >>> len(ds), ds.num_classes
        (8, 6)
    """
    check_config(
        config, "synthetic", (), ("task", "num_classes", "image_size", "num_samples", "num_val_samples", "seed")
    )
    check_split(split)
    task = config.get("task", "segmentation")
    if task not in TASKS:
        raise ValueError(f"data.task must be one of {', '.join(TASKS)}, depth, panoptic; got {task!r}")
    num_shapes = int(config.get("num_classes", 5))
    if not 1 <= num_shapes <= len(SHAPE_CLASSES):
        raise ValueError(
            f"data.num_classes for synthetic data must be 1..{len(SHAPE_CLASSES)} "
            f"(shape classes: {', '.join(SHAPE_CLASSES)}), got {num_shapes}"
        )
    num_train = int(config.get("num_samples", 256))
    count = num_train if split == "train" else int(config.get("num_val_samples", max(8, num_train // 4)))
    if count < 1:
        raise ValueError(f"data.num_samples / data.num_val_samples must be >= 1, got {count} for {split}")
    size = parse_image_size(config.get("image_size", 64))
    seed = int(config.get("seed", 0))
    if task == "segmentation":
        return SyntheticSegmentation(count, size, num_shapes, seed, split)
    return SyntheticDetection(count, size, num_shapes, seed, split, with_masks=task == "instance")
