"""Built-in synthetic depth scenes, ray cast on the fly: ``data.format: synthetic`` with ``task: depth``.

A pinhole camera at the origin looks down +z (x right, y down, as image coordinates); pixel
``(row v, column u)`` casts the ray ``((u + 0.5 - W/2) / f, (v + 0.5 - H/2) / f, 1)`` with the
focal length ``f = (W/2) / tan(30 deg)`` (60 degree horizontal field of view). Each scene has

- a back wall: a plane facing the camera, tilted about the vertical axis by up to ~20 degrees;
  it covers every pixel, so every ray hits something;
- usually (80 %) a horizontal floor plane ``y = h`` below the camera;
- 2 to 4 objects: axis-aligned boxes (slab intersection) and spheres (ray-sphere intersection),
  standing on the floor or floating.

Depth is exact and analytic: the z coordinate of the nearest hit (z-depth, not ray length). With
``near = min_depth + 0.15 (max_depth - min_depth)`` and ``far = max_depth - 0.02 (max_depth -
min_depth)``, the geometry is placed so that every hit lies in ``[near, far]``, strictly inside
``(min_depth, max_depth)``: every pixel is a valid measurement except one small rectangular hole
per sample (about 1-4 % of the pixels) set to 0, "no measurement", as a depth sensor leaves them.
The image is not affected by the hole.

Colours carry depth cues: each surface has its own colour, a solid 3-D checker texture (whose
squares shrink with distance), Lambertian shading by its normal under one directional light, and
a distance fog; plus a little pixel noise.

A sample is a pure function of ``(seed, split, index)`` (its own ``numpy`` generator seeded with
that triple, as :mod:`~dysample_swap.finetune.data.synthetic` does). A 64x64 sample takes a few
milliseconds (about 3 ms on one CPU core).

Keys of ``data:``:

- ``task`` (required value ``depth``; the recipe builder passes it).
- ``image_size`` (default 64): int or ``[height, width]``.
- ``num_samples`` (default 256): size of the ``train`` split.
- ``num_val_samples`` (default ``max(8, num_samples // 4)``): size of the ``val`` split.
- ``seed`` (default 0).
- ``min_depth`` (default 0.001) and ``max_depth`` (default 10.0): the evaluation range (metres).

Items: ``(FloatTensor[3, H, W] ImageNet-normalised, FloatTensor[H, W] depth in metres)``.

Example:
    >>> ds = build_synthetic_depth({"format": "synthetic", "task": "depth", "num_samples": 4, "image_size": 32}, "train")
    >>> image, depth = ds[0]
    >>> tuple(image.shape), tuple(depth.shape), ds.num_classes, ds.class_names, ds.eval_crop
    ((3, 32, 32), (32, 32), 1, ['depth'], None)
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from dysample_swap.finetune.data.common import (
    check_config,
    check_split,
    normalize_image,
    parse_image_size,
    sample_generator,
)
from dysample_swap.finetune.data.depth_folder import DEPTH_CLASS_NAMES, check_depth_range

#: Horizontal field of view of the camera, degrees.
FIELD_OF_VIEW = 60.0
#: Unit vector from a surface towards the light (up, left, towards the camera).
_LIGHT = np.array([-0.4, -0.8, -0.45]) / np.linalg.norm([-0.4, -0.8, -0.45])
_FOG_COLOUR = np.array([0.75, 0.78, 0.82])
_EPS = 1e-12


@dataclass(frozen=True)
class Plane:
    """The plane ``dot(normal, p) = offset`` (``normal`` need not be unit length).

    Example:
        >>> Plane((0.0, 0.0, 1.0), 4.0).offset
        4.0
    """

    normal: tuple[float, float, float]
    offset: float
    colour: tuple[float, float, float] = (0.6, 0.6, 0.6)
    checker: float = 0.5


@dataclass(frozen=True)
class Box:
    """Axis-aligned box between corners ``lo`` and ``hi``.

    Example:
        >>> Box((-1.0, -1.0, 3.0), (1.0, 1.0, 5.0)).hi
        (1.0, 1.0, 5.0)
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    colour: tuple[float, float, float] = (0.6, 0.6, 0.6)
    checker: float = 0.5


@dataclass(frozen=True)
class Sphere:
    """Sphere of ``radius`` around ``centre``.

    Example:
        >>> Sphere((0.0, 0.0, 5.0), 1.0).radius
        1.0
    """

    centre: tuple[float, float, float]
    radius: float
    colour: tuple[float, float, float] = (0.6, 0.6, 0.6)
    checker: float = 0.5


@dataclass(frozen=True)
class DepthScene:
    """What :func:`render_depth` draws: planes, boxes and spheres (the camera must be outside them).

    Example:
        >>> len(DepthScene(planes=(Plane((0.0, 0.0, 1.0), 4.0),)).planes)
        1
    """

    planes: Sequence[Plane] = field(default_factory=tuple)
    boxes: Sequence[Box] = field(default_factory=tuple)
    spheres: Sequence[Sphere] = field(default_factory=tuple)


def default_focal(width: int) -> float:
    """Focal length in pixels for the :data:`FIELD_OF_VIEW` across ``width`` pixels.

    Example:
        >>> round(default_focal(64), 3)
        55.426
    """
    return 0.5 * width / math.tan(math.radians(FIELD_OF_VIEW) / 2)


def camera_rays(height: int, width: int, focal: float) -> np.ndarray:
    """Ray directions ``[H * W, 3]`` through the pixel centres, row-major, each with z = 1.

    Example:
        >>> camera_rays(1, 3, 1.0).tolist()
        [[-1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    rays = np.stack([(xs - width / 2) / focal, (ys - height / 2) / focal, np.ones_like(xs)], axis=-1)
    return rays.reshape(-1, 3)


def _hit_plane(rays: np.ndarray, plane: Plane) -> tuple[np.ndarray, np.ndarray]:
    normal = np.asarray(plane.normal, dtype=np.float64)
    denom = rays @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = plane.offset / denom
    t = np.where((np.abs(denom) > _EPS) & (t > 0), t, np.inf)
    unit = normal / np.linalg.norm(normal)
    facing = np.where((denom > 0)[:, None], -unit, unit)  # the side the camera sees
    return t, facing


def _hit_sphere(rays: np.ndarray, sphere: Sphere) -> tuple[np.ndarray, np.ndarray]:
    centre = np.asarray(sphere.centre, dtype=np.float64)
    a = np.einsum("ij,ij->i", rays, rays)
    b = rays @ centre
    disc = b * b - a * (centre @ centre - sphere.radius**2)
    root = np.sqrt(np.maximum(disc, 0.0))
    t = (b - root) / a  # the nearer of the two intersections
    t = np.where((disc >= 0) & (t > 0), t, np.inf)
    normal = (rays * np.where(np.isfinite(t), t, 0.0)[:, None] - centre) / sphere.radius
    return t, normal


def _hit_box(rays: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    safe = np.where(np.abs(rays) < _EPS, _EPS, rays)
    t1 = np.asarray(box.lo, dtype=np.float64) / safe
    t2 = np.asarray(box.hi, dtype=np.float64) / safe
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    axis = near.argmax(axis=1)
    t_near, t_far = near.max(axis=1), far.min(axis=1)
    t = np.where((t_far >= t_near) & (t_near > 0), t_near, np.inf)
    normal = np.zeros_like(rays)
    rows = np.arange(len(rays))
    normal[rows, axis] = -np.sign(safe[rows, axis])  # the entry face points back along the ray
    return t, normal


def render_depth(
    scene: DepthScene, height: int, width: int, focal: float | None = None, max_depth: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Ray cast ``scene``: ``(image uint8 [H, W, 3], depth float32 [H, W])``.

    ``depth`` is the z coordinate of the nearest hit, 0 where a ray hits nothing. ``focal``
    (pixels) defaults to :func:`default_focal`; ``max_depth`` sets the fog's scale only.

    Example:
        >>> wall = Plane((0.0, 0.0, 1.0), 4.0)
        >>> ball = Sphere((0.0, 0.0, 3.0), 0.5)
        >>> image, depth = render_depth(DepthScene(planes=[wall], spheres=[ball]), 5, 5)
        >>> depth[2, 2].item(), depth[0, 0].item(), image.shape
        (2.5, 4.0, (5, 5, 3))
    """
    focal = default_focal(width) if focal is None else focal
    rays = camera_rays(height, width, focal)
    best = np.full(len(rays), np.inf)
    normals = np.zeros_like(rays)
    colours = np.zeros_like(rays)
    checkers = np.ones(len(rays))
    hits: list[tuple[tuple[np.ndarray, np.ndarray], Plane | Box | Sphere]] = []
    hits += [(_hit_plane(rays, p), p) for p in scene.planes]
    hits += [(_hit_box(rays, b), b) for b in scene.boxes]
    hits += [(_hit_sphere(rays, s), s) for s in scene.spheres]
    for (t, normal), obj in hits:
        closer = t < best
        best[closer] = t[closer]
        normals[closer] = normal[closer]
        colours[closer] = obj.colour
        checkers[closer] = obj.checker
    hit = np.isfinite(best)
    depth = np.where(hit, best * rays[:, 2], 0.0)  # z-depth: rays have z = 1, kept explicit
    points = rays * np.where(hit, best, 0.0)[:, None]
    parity = np.floor(points / checkers[:, None]).sum(axis=1) % 2
    shade = 0.35 + 0.65 * np.clip(normals @ _LIGHT, 0.0, 1.0)
    fog = np.clip(0.45 * depth / max_depth, 0.0, 0.45)[:, None]
    rgb = colours * (shade * (0.78 + 0.22 * parity))[:, None]
    rgb = np.where(hit[:, None], rgb * (1 - fog) + _FOG_COLOUR * fog, 0.0)
    image = np.clip(rgb.reshape(height, width, 3) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image, depth.reshape(height, width).astype(np.float32)


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.35, 0.9), rng.uniform(0.6, 1.0))
    return (r, g, b)


def random_depth_scene(
    rng: np.random.Generator, height: int, width: int, min_depth: float = 1e-3, max_depth: float = 10.0
) -> DepthScene:
    """Draw a scene whose every hit has z in ``[near, far]`` (module docstring) for this camera.

    Example:
        >>> scene = random_depth_scene(np.random.default_rng(0), 32, 32)
        >>> _, depth = render_depth(scene, 32, 32)
        >>> bool((depth > 1.0).all() and (depth < 10.0).all()), 2 <= len(scene.boxes) + len(scene.spheres) <= 4
        (True, True)
    """
    focal = default_focal(width)
    x_max, y_max = (width / 2 - 0.5) / focal, (height / 2 - 0.5) / focal  # outermost pixel-centre rays
    span = max_depth - min_depth
    near, far = min_depth + 0.15 * span, max_depth - 0.02 * span
    # back wall, tilted by angle a about the y axis; its depth runs from far_w * ratio(a) to far_w,
    # and |a| is limited so that the nearest wall point stays behind near + (far_w - near) / 2
    far_w = near + rng.uniform(0.6, 1.0) * (far - near)
    ratio_min = (near + 0.5 * (far_w - near)) / far_w
    a_max = min(0.35, math.atan((1 - ratio_min) / (max(x_max, _EPS) * (1 + ratio_min))))
    a = rng.uniform(-a_max, a_max)
    normal = (math.sin(a), 0.0, math.cos(a))
    planes = [Plane(normal, far_w * (math.cos(a) - abs(math.sin(a)) * x_max), _colour(rng), rng.uniform(0.4, 1.0))]
    wall_near = far_w * (math.cos(a) - abs(math.sin(a)) * x_max) / (math.cos(a) + abs(math.sin(a)) * x_max)
    floor_y = None
    if y_max > 0 and rng.uniform() < 0.8:
        floor_y = near * y_max * rng.uniform(1.0, 1.6)  # depth = floor_y / ray_y >= near on every row
        planes.append(Plane((0.0, 1.0, 0.0), floor_y, _colour(rng), rng.uniform(0.3, 0.8)))
    boxes: list[Box] = []
    spheres: list[Sphere] = []
    for _ in range(int(rng.integers(2, 5))):
        k = rng.uniform(0.06, 0.16)  # size relative to distance; front face at z * (1 - k) >= near
        z_lo = near / (1 - k)
        z = rng.uniform(z_lo, max(z_lo, wall_near))
        size = k * z
        x = rng.uniform(-0.8, 0.8) * x_max * z
        on_floor = floor_y is not None and rng.uniform() < 0.6
        if rng.uniform() < 0.5:
            y = floor_y - size if on_floor and floor_y is not None else rng.uniform(-0.7, 0.7) * y_max * z
            spheres.append(Sphere((x, y, z), size, _colour(rng), rng.uniform(0.1, 0.4) * size))
        else:
            hx, hy = size * rng.uniform(0.6, 1.4), size * rng.uniform(0.6, 1.4)
            y = floor_y - hy if on_floor and floor_y is not None else rng.uniform(-0.7, 0.7) * y_max * z
            boxes.append(
                Box((x - hx, y - hy, z - size), (x + hx, y + hy, z + size), _colour(rng), rng.uniform(0.1, 0.4) * size)
            )
    return DepthScene(planes=tuple(planes), boxes=tuple(boxes), spheres=tuple(spheres))


def _hole(rng: np.random.Generator, depth: np.ndarray) -> None:
    """Zero one random rectangle (about 1-4 % of the pixels, at least one pixel) in place."""
    height, width = depth.shape
    h = max(1, round(rng.uniform(0.1, 0.2) * height))
    w = max(1, round(rng.uniform(0.1, 0.2) * width))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    depth[top : top + h, left : left + w] = 0.0


class SyntheticDepth(torch.utils.data.Dataset):
    """Ray-cast synthetic depth scenes (module docstring): ``(image, depth in metres)`` items.

    Example:
        >>> ds = SyntheticDepth(3, (16, 16), seed=0, split="val")
        >>> _, d1 = ds[1]; _, d2 = ds[1]
        >>> bool(torch.equal(d1, d2)), bool((d1 == 0).any()), ds.min_depth, ds.max_depth
        (True, True, 0.001, 10.0)
    """

    num_classes = 1
    eval_crop: str | None = None

    def __init__(
        self,
        num_samples: int,
        image_size: tuple[int, int],
        *,
        seed: int,
        split: str,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
    ) -> None:
        check_split(split)
        check_depth_range(min_depth, max_depth)
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.split = split
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.class_names = list(DEPTH_CLASS_NAMES)

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Render sample ``index``: ``(image uint8 [H, W, 3], depth float32 [H, W])``, hole included.

        Example:
            >>> ds = SyntheticDepth(2, (8, 8), seed=0, split="train")
            >>> image, depth = ds.sample(0)
            >>> image.dtype, depth.dtype
            (dtype('uint8'), dtype('float32'))
        """
        rng = sample_generator(self.seed, self.split, index, self.num_samples)
        height, width = self.image_size
        scene = random_depth_scene(rng, height, width, self.min_depth, self.max_depth)
        image, depth = render_depth(scene, height, width, max_depth=self.max_depth)
        noise = rng.normal(0.0, 4.0, image.shape)
        image = np.clip(image + noise + 0.5, 0, 255).astype(np.uint8)
        _hole(rng, depth)
        return image, depth

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, depth = self.sample(index)
        return normalize_image(Image.fromarray(image)), torch.from_numpy(depth)


def build_synthetic_depth(config: Mapping[str, Any], split: str) -> SyntheticDepth:
    """Build the synthetic depth dataset for ``split`` ("train" or "val") from the ``data:`` mapping.

    Example:
        >>> ds = build_synthetic_depth({"format": "synthetic", "task": "depth", "num_samples": 8}, "val")
        >>> len(ds), ds.image_size
        (8, (64, 64))
    """
    check_config(
        config,
        "synthetic",
        (),
        ("task", "image_size", "num_samples", "num_val_samples", "seed", "min_depth", "max_depth"),
    )
    check_split(split)
    task = config.get("task", "depth")
    if task != "depth":
        raise ValueError(f"data.task must be 'depth' for synthetic depth scenes, got {task!r}")
    num_train = int(config.get("num_samples", 256))
    count = num_train if split == "train" else int(config.get("num_val_samples", max(8, num_train // 4)))
    if count < 1:
        raise ValueError(f"data.num_samples / data.num_val_samples must be >= 1, got {count} for {split}")
    return SyntheticDepth(
        count,
        parse_image_size(config.get("image_size", 64)),
        seed=int(config.get("seed", 0)),
        split=split,
        min_depth=float(config.get("min_depth", 1e-3)),
        max_depth=float(config.get("max_depth", 10.0)),
    )
