"""Built-in synthetic panoptic scenes, generated on the fly: ``data.format: synthetic``, ``task: panoptic``.

Each scene is split into up to three *stuff* regions, top to bottom ``sky`` (smooth blue
gradient), ``wall`` (bricks: mortar grid with offset joints) and ``ground`` (grainy, diagonal
streaks), whose boundaries are smooth sine curves (the wall is missing from about a quarter of
the scenes). On top lie 1 to ``num_shapes`` *thing* instances, shapes of :mod:`.synthetic`
(``disc``, ``triangle``, ``rectangle``) in one hue per category: later ones may touch and hide
earlier ones (z-order), never more than half of one. About a third of the scenes have one crowd
region (a cluster of small discs of one thing category, ``iscrowd: 1``, drawn behind the
instances), and about half have void pixels: a one-pixel seam along the sky's lower boundary
and/or an unlabelled black strip along one image edge.

Category ids are COCO-like and not contiguous on purpose: things ``1 disc``, ``3 triangle``,
``4 rectangle``; stuff ``7 sky``, ``8 wall``, ``9 ground``. Items are those of
:mod:`.coco_panoptic` (same target, same dataset attributes), rendered at ``image_size``, with
``image_id = index + 1``. A sample is a pure function of ``(seed, split, index)``.

Keys of ``data:``:

- ``task`` (default ``panoptic``): must be ``panoptic`` (other tasks are :mod:`.synthetic`).
- ``num_shapes`` (default 4): most thing instances per scene, 1..8; each scene draws 1..this.
- ``image_size`` (default 64): int or ``[height, width]``.
- ``num_samples`` (default 256): size of the ``train`` split.
- ``num_val_samples`` (default ``max(8, num_samples // 4)``): size of the ``val`` split.
- ``seed`` (default 0).

Example:
    >>> ds = build_synthetic_panoptic({"format": "synthetic", "task": "panoptic", "num_samples": 4}, "train")
    >>> image, target = ds[0]
    >>> tuple(image.shape), tuple(target["panoptic"].shape), ds.num_classes, ds.num_stuff
    ((3, 64, 64), (64, 64, 2), 4, 3)
    >>> ds.thing_ids, ds.stuff_ids, ds.class_names
    ([1, 3, 4], [7, 8, 9], ['background', 'disc', 'triangle', 'rectangle'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dysample_swap.finetune.data.coco_panoptic import PanopticDataset
from dysample_swap.finetune.data.common import check_config, check_split, parse_image_size, sample_generator
from dysample_swap.finetune.data.synthetic import (
    _MAX_HIDDEN,
    _MIN_AREA,
    _PLACEMENT_TRIES,
    SHAPE_CLASSES,
    _shape_colour,
    _shape_mask,
)

#: ``(category id, name)`` of the thing categories (names are :data:`.synthetic.SHAPE_CLASSES`).
THING_CATEGORIES = ((1, "disc"), (3, "triangle"), (4, "rectangle"))
#: ``(category id, name)`` of the stuff categories, top to bottom in a scene.
STUFF_CATEGORIES = ((7, "sky"), (8, "wall"), (9, "ground"))
#: The categories as a COCO panoptic JSON lists them.
CATEGORIES = [
    *({"id": i, "name": n, "isthing": 1} for i, n in THING_CATEGORIES),
    *({"id": i, "name": n, "isthing": 0} for i, n in STUFF_CATEGORIES),
]
MAX_SHAPES = 8
_CROWD_PROB = 0.35
_SEAM_PROB = 0.35
_STRIP_PROB = 0.25
_NO_WALL_PROB = 0.25


@dataclass(frozen=True)
class PanopticScene:
    """One rendered scene: ``image`` uint8 ``[H, W, 3]``, ``ids`` int64 ``[H, W]`` segment ids
    (0 = void) and ``segments`` (``id``, ``category_id``, ``iscrowd``; only segments with pixels:
    stuff top to bottom, then the crowd region, then the instances in drawing order).

    Example:
        >>> scene = render_panoptic_scene(np.random.default_rng(0), 16, 16, 3)
        >>> scene.image.shape, scene.ids.shape, {s["id"] for s in scene.segments} >= set(np.unique(scene.ids)) - {0}
        ((16, 16, 3), (16, 16), True)
    """

    image: np.ndarray
    ids: np.ndarray
    segments: list[dict[str, int]]


def _stuff_textures(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> list[np.ndarray]:
    """Sky, wall and ground textures ``[3, H, W]`` (floats around [0, 1]) over the whole grid."""
    height, width = ys.shape[0], xs.shape[1]
    sky_top, sky_low = (
        rng.uniform([0.15, 0.35, 0.65], [0.3, 0.5, 0.85]),
        rng.uniform([0.55, 0.7, 0.85], [0.7, 0.85, 1.0]),
    )
    t = (ys / height)[None]
    sky = sky_top[:, None, None] * (1 - t) + sky_low[:, None, None] * t + rng.normal(0, 0.01, (3, height, width))
    brick, mortar = rng.uniform([0.5, 0.2, 0.15], [0.7, 0.32, 0.25]), rng.uniform(0.7, 0.8)
    course = rng.uniform(4.0, 7.0)
    length = course * rng.uniform(1.8, 2.6)
    row = np.floor(ys / course)
    joint = ((xs + 0.5 * length * (row % 2)) % length) < 1.0
    bed = (ys % course) < 1.0
    wall = np.where((joint | bed)[None], mortar, brick[:, None, None] + rng.normal(0, 0.03, (3, height, width)))
    soil = rng.uniform([0.3, 0.35, 0.1], [0.45, 0.5, 0.2])
    angle = rng.uniform(0.5, 1.0)
    streaks = 0.07 * np.sign(np.sin(rng.uniform(0.8, 1.4) * (xs * np.cos(angle) + ys * np.sin(angle))))
    ground = soil[:, None, None] + streaks[None] + rng.normal(0, 0.08, (3, height, width))
    return [sky, wall, ground]


def _boundaries(rng: np.random.Generator, xs: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (per column) of the sky/wall and wall/ground boundaries: smooth sine curves."""
    x = xs[0] / width
    upper = height * (
        rng.uniform(0.2, 0.45)
        + rng.uniform(0.03, 0.1) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * x + rng.uniform(0, 6.3))
    )
    if rng.random() < _NO_WALL_PROB:
        return upper, upper
    gap = height * (
        rng.uniform(0.2, 0.35)
        + rng.uniform(0.0, 0.08) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * x + rng.uniform(0, 6.3))
    )
    return upper, upper + gap


def render_panoptic_scene(rng: np.random.Generator, height: int, width: int, num_shapes: int) -> PanopticScene:
    """Draw one scene: stuff regions, maybe void and a crowd region, then 1..``num_shapes`` instances.

    Example:
        >>> a = render_panoptic_scene(np.random.default_rng(3), 32, 32, 4)
        >>> b = render_panoptic_scene(np.random.default_rng(3), 32, 32, 4)
        >>> bool((a.image == b.image).all() and (a.ids == b.ids).all()) and a.segments == b.segments
        True
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    side = min(height, width)
    upper, lower = _boundaries(rng, xs, height, width)
    region = (ys >= upper[None]).astype(np.int64) + (ys >= lower[None])  # 0 sky, 1 wall, 2 ground
    textures = _stuff_textures(rng, ys, xs)
    image = np.choose(region[None], textures)
    ids = region + 1  # stuff segment ids 1, 2, 3
    candidates: list[dict[str, int]] = [
        {"id": k + 1, "category_id": cat_id, "iscrowd": 0} for k, (cat_id, _) in enumerate(STUFF_CATEGORIES)
    ]
    if rng.random() < _SEAM_PROB:  # unlabelled seam along the sky's lower boundary
        ids[np.abs(ys - upper[None]) < 0.5] = 0
    if rng.random() < _STRIP_PROB:  # unlabelled black strip along one edge
        edge, strip = int(rng.integers(4)), int(rng.integers(1, max(2, side // 16) + 1))
        band = [(ys < strip), (ys > height - strip), (xs < strip), (xs > width - strip)][edge]
        ids[band] = 0
        image[:, band] = 0.0
    next_id = len(STUFF_CATEGORIES) + 1
    if rng.random() < _CROWD_PROB:  # a crowd: a cluster of small discs of one thing category
        cls = int(rng.integers(len(THING_CATEGORIES)))
        cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
        crowd = np.zeros((height, width), dtype=bool)
        for _ in range(int(rng.integers(4, 8))):
            r = rng.uniform(0.04, 0.07) * side
            dy, dx = rng.normal(0, 0.1 * side, 2)
            crowd |= (ys - cy - dy) ** 2 + (xs - cx - dx) ** 2 <= r**2
        if crowd.sum() >= _MIN_AREA:
            ids[crowd] = next_id
            image[:, crowd] = _colour(rng, cls)[:, None] + rng.normal(0.0, 0.04, (3, int(crowd.sum())))
            candidates.append({"id": next_id, "category_id": THING_CATEGORIES[cls][0], "iscrowd": 1})
            next_id += 1
    masks: list[np.ndarray] = []
    full_areas: list[int] = []
    for _ in range(int(rng.integers(1, num_shapes + 1))):
        cls = int(rng.integers(len(THING_CATEGORIES)))
        for _try in range(_PLACEMENT_TRIES):
            shape = _shape_mask(THING_CATEGORIES[cls][1], rng, ys, xs, side)
            if shape.sum() < _MIN_AREA:
                continue
            kept = [m & ~shape for m in masks]
            if all(k.sum() >= (1 - _MAX_HIDDEN) * a for k, a in zip(kept, full_areas)):
                break
        else:
            continue  # no placement that keeps every earlier instance visible enough
        masks = [*kept, shape]
        full_areas.append(int(shape.sum()))
        ids[shape] = next_id
        image[:, shape] = _colour(rng, cls)[:, None] + rng.normal(0.0, 0.04, (3, int(shape.sum())))
        candidates.append({"id": next_id, "category_id": THING_CATEGORIES[cls][0], "iscrowd": 0})
        next_id += 1
    present = set(np.unique(ids).tolist())
    pixels = np.clip(image.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return PanopticScene(pixels, ids, [s for s in candidates if s["id"] in present])


def _colour(rng: np.random.Generator, thing_index: int) -> np.ndarray:
    """A thing category's colour, the hue :mod:`.synthetic` gives the same shape class."""
    return _shape_colour(rng, SHAPE_CLASSES.index(THING_CATEGORIES[thing_index][1]))


class SyntheticPanoptic(PanopticDataset):
    """Synthetic panoptic scenes with the items and attributes of :class:`.coco_panoptic.CocoPanoptic`.

    Example:
        >>> ds = SyntheticPanoptic(3, (32, 32), 4, seed=0, split="val")
        >>> image, target = ds[2]
        >>> target["image_id"], ds.stuff_names, sorted(target)
        (3, ['sky', 'wall', 'ground'], ['area', 'boxes', 'image_id', 'iscrowd', 'labels', 'masks', 'panoptic', 'semantic'])
    """

    def __init__(self, num_samples: int, image_size: tuple[int, int], num_shapes: int, seed: int, split: str) -> None:
        super().__init__(CATEGORIES)
        self.num_samples = num_samples
        self.image_size = image_size
        self.num_shapes = num_shapes
        self.seed = seed
        self.split = split

    def __len__(self) -> int:
        return self.num_samples

    def scene(self, index: int) -> PanopticScene:
        """Render sample ``index`` (pure function of seed, split and index).

        Example:
            >>> ds = SyntheticPanoptic(2, (16, 16), 3, seed=0, split="train")
            >>> bool((ds.scene(1).ids == ds.scene(1).ids).all())
            True
        """
        rng = sample_generator(self.seed, self.split, index, self.num_samples)
        return render_panoptic_scene(rng, *self.image_size, self.num_shapes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        scene = self.scene(index)
        image = torch.from_numpy(scene.image.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
        return image, self.make_target(scene.ids, scene.segments, index + 1)


def build_synthetic_panoptic(config: Mapping[str, Any], split: str) -> SyntheticPanoptic:
    """Build the synthetic panoptic dataset for ``split`` ("train" or "val") from the ``data:`` mapping.

    Example:
        >>> build_synthetic_panoptic({"format": "synthetic", "task": "panoptic", "num_shapes": 9}, "val")
        Traceback (most recent call last):
        ...
        ValueError: data.num_shapes for synthetic panoptic data must be 1..8, got 9
    """
    check_config(
        config, "synthetic", (), ("task", "num_shapes", "image_size", "num_samples", "num_val_samples", "seed")
    )
    check_split(split)
    task = config.get("task", "panoptic")
    if task != "panoptic":
        raise ValueError(f"data.task must be panoptic for synthetic panoptic data, got {task!r}")
    num_shapes = int(config.get("num_shapes", 4))
    if not 1 <= num_shapes <= MAX_SHAPES:
        raise ValueError(f"data.num_shapes for synthetic panoptic data must be 1..{MAX_SHAPES}, got {num_shapes}")
    num_train = int(config.get("num_samples", 256))
    count = num_train if split == "train" else int(config.get("num_val_samples", max(8, num_train // 4)))
    if count < 1:
        raise ValueError(f"data.num_samples / data.num_val_samples must be >= 1, got {count} for {split}")
    size = parse_image_size(config.get("image_size", 64))
    return SyntheticPanoptic(count, size, num_shapes, int(config.get("seed", 0)), split)
