"""Folder-of-images depth data: ``data.format: depth_folder``; also the shared depth loading.

Layout A (explicit splits, used when ``ROOT/train`` exists)::

    ROOT/
      train/
        images/  0001.jpg  0002.png ...
        depth/   0001.png  0002.npy ...
      val/
        images/ ...
        depth/  ...

Layout B (one pool, split deterministically)::

    ROOT/
      images/  0001.jpg ...
      depth/   0001.png ...

An image and its depth map share a stem (``0001.jpg`` <-> ``0001.png`` or ``0001.npy``). A depth
map is either

- a **16-bit grayscale PNG** (PIL mode ``I;16``) whose value divided by ``depth_scale`` is the
  depth in metres (default scale 1000.0: millimetres, as NYU Depth V2 and the
  Monocular-Depth-Estimation-Toolbox store it). 8-bit (``L``), palette or colour PNGs are refused:
  they cannot hold metric depth.
- a **.npy** array ``[H, W]`` (``[1, H, W]`` and ``[H, W, 1]`` are squeezed) of depth divided by
  ``depth_scale`` (default 1.0: the array holds metres). NaN and +/-inf mean "no measurement" and
  become 0; a negative value is an error naming the file.

Depth 0 means "no measurement" everywhere: the loss uses every pixel with a depth above 0, the
metrics only pixels with ``min_depth < depth < max_depth`` (as the depth toolbox does). Depths
outside that range are kept as read (not clipped).

In layout B the stems are sorted, shuffled with ``seed`` and the first ``round(val_fraction * N)``
(at least 1) form ``val``; the rest form ``train`` (as the ``folder`` format does).

Sizes: split ``train`` resizes the image (bilinear) and the depth (nearest, so no depth value is
invented at object edges) to ``image_size``. Split ``val`` resizes only the image; the depth map
keeps its native resolution, because the evaluation resizes the prediction to the ground truth
(as the toolbox does). Batching ``val`` samples therefore needs depth maps of one size per batch:
if the files differ in size, evaluate with batch size 1.

Keys of ``data:``:

- ``root`` (required): dataset folder.
- ``image_size`` (default 256): int or ``[height, width]``.
- ``depth_scale``: stored value / ``depth_scale`` = metres; default 1000.0 for PNG, 1.0 for .npy.
  When set, it applies to every depth file.
- ``min_depth`` (default 0.001) and ``max_depth`` (default 10.0): the evaluation range (metres).
- ``val_fraction`` (default 0.2) and ``seed`` (default 0): the layout-B split.

An image without a depth map (or a depth map without an image) is an error naming the file;
so is a depth map whose size differs from its image's.

Example:
    >>> build_depth_folder({"format": "depth_folder", "root": "/nonexistent"}, "train")
    Traceback (most recent call last):
    ...
    dysample_swap.finetune.data.common.DatasetError: /nonexistent: dataset root directory not found; set data.root to a folder holding images/ and depth/ (or train/ and val/ with those inside)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dysample_swap.finetune.data.common import (
    IMAGE_SUFFIXES,
    DatasetError,
    check_config,
    check_split,
    load_image,
    normalize_image,
    parse_image_size,
    require_dir,
)
from dysample_swap.finetune.data.folder import _split_pool

#: File suffixes accepted as depth maps.
DEPTH_SUFFIXES = (".png", ".npy")
#: ``depth_scale`` used when the ``data:`` mapping gives none: PNG in millimetres, .npy in metres.
DEFAULT_DEPTH_SCALE = {".png": 1000.0, ".npy": 1.0}
#: Class names of every depth dataset (one regression channel).
DEPTH_CLASS_NAMES = ("depth",)
#: PIL modes of a 16-bit grayscale PNG (older Pillow versions open it as ``I``).
_DEPTH_PNG_MODES = ("I;16", "I;16B", "I;16L", "I")
_MODE_WORDS = {"L": "8-bit grayscale", "P": "8-bit palette", "1": "1-bit", "LA": "8-bit grayscale + alpha"}
_OPTIONAL = ("image_size", "depth_scale", "min_depth", "max_depth", "val_fraction", "seed")


def check_depth_range(min_depth: float, max_depth: float) -> None:
    """Raise ``ValueError`` unless ``0 < min_depth < max_depth``.

    Example:
        >>> check_depth_range(1e-3, 10.0)
        >>> check_depth_range(5.0, 1.0)
        Traceback (most recent call last):
        ...
        ValueError: data.min_depth and data.max_depth must satisfy 0 < min_depth < max_depth (metres); got 5.0 and 1.0
    """
    if not 0.0 < min_depth < max_depth:
        raise ValueError(
            f"data.min_depth and data.max_depth must satisfy 0 < min_depth < max_depth (metres); "
            f"got {min_depth} and {max_depth}"
        )


def _load_depth_png(path: Path, scale: float) -> np.ndarray:
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as err:
        raise DatasetError(f"{path}: unreadable depth PNG ({err}); re-save it as a 16-bit grayscale PNG") from err
    with img:
        if img.mode not in _DEPTH_PNG_MODES:
            kind = _MODE_WORDS.get(img.mode, f"{img.mode}, not 16-bit grayscale")
            raise DatasetError(
                f"{path}: depth PNG has PIL mode {img.mode!r} ({kind}); it must be a 16-bit grayscale PNG "
                f"(mode 'I;16') holding depth * data.depth_scale ({scale:g}: millimetres), or a float .npy in metres"
            )
        return np.asarray(img, dtype=np.float32) / np.float32(scale)


def _load_depth_npy(path: Path, scale: float) -> np.ndarray:
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"{path}: unreadable depth .npy ({err}); save it with numpy.save") from err
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "fiu":
        raise DatasetError(f"{path}: depth .npy must hold one numeric array [H, W]; save a float array of metres")
    depth = raw.squeeze(axis=tuple(i for i in (0, raw.ndim - 1) if raw.ndim == 3 and raw.shape[i] == 1))
    if depth.ndim != 2:
        raise DatasetError(f"{path}: depth .npy has shape {raw.shape}; expected [H, W] (one depth per pixel)")
    depth = depth.astype(np.float32)
    depth[~np.isfinite(depth)] = 0.0
    if (depth < 0).any():
        raise DatasetError(
            f"{path}: depth .npy has negative values (min {float(depth.min()):g}); "
            f"store 0 (or NaN) for 'no measurement' and positive depths otherwise"
        )
    return depth / np.float32(scale)


def load_depth(path: Path, depth_scale: float | None = None) -> np.ndarray:
    """Read a depth map as ``float32 [H, W]`` metres (0 = no measurement).

    ``depth_scale`` divides the stored values; ``None`` takes :data:`DEFAULT_DEPTH_SCALE` for the
    file's suffix. A missing file, an unknown suffix, an 8-bit/colour PNG or a bad ``.npy`` raises
    :class:`DatasetError` naming the file.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "d.png"
        >>> Image.fromarray(np.array([[0, 2500]], dtype=np.uint16)).save(path)
        >>> load_depth(path).tolist()
        [[0.0, 2.5]]
        >>> load_depth(Path("/nonexistent.png"))
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: /nonexistent.png: depth file not found
    """
    if not path.is_file():
        raise DatasetError(f"{path}: depth file not found")
    suffix = path.suffix.lower()
    if suffix not in DEPTH_SUFFIXES:
        raise DatasetError(
            f"{path}: unknown depth file type {suffix!r}; use a 16-bit PNG (millimetres) or a .npy (metres)"
        )
    scale = DEFAULT_DEPTH_SCALE[suffix] if depth_scale is None else float(depth_scale)
    if suffix == ".png":
        return _load_depth_png(path, scale)
    return _load_depth_npy(path, scale)


def resize_depth_nearest(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a depth map to ``size = (H, W)`` with nearest neighbour: every output value is an input value.

    Example:
        >>> resize_depth_nearest(np.array([[1.0, 0.0], [3.0, 4.0]], np.float32), (4, 4))[:, 0].tolist()
        [1.0, 1.0, 3.0, 3.0]
    """
    height, width = size
    if depth.shape == (height, width):
        return depth
    resized = Image.fromarray(np.ascontiguousarray(depth, dtype=np.float32)).resize(
        (width, height), Image.Resampling.NEAREST
    )
    return np.array(resized, dtype=np.float32)


class DepthFiles(torch.utils.data.Dataset):
    """Depth dataset over a list of ``(image_path, depth_path)`` pairs.

    Each item is ``(image FloatTensor[3, H, W] ImageNet-normalised, depth FloatTensor[H, W] metres)``
    with 0 where there is no measurement. With ``image_size`` set, the image is resized to it
    (bilinear); the depth too (nearest) if ``resize_depth`` (training), else it keeps its native
    size (evaluation against the full-resolution ground truth). ``image_size=None`` keeps both native.

    Attributes: ``num_classes`` (1), ``class_names`` (``["depth"]``), ``min_depth`` and
    ``max_depth`` (the evaluation range), ``eval_crop`` (``"eigen"`` or ``None``), ``pairs`` and
    ``skipped_lines`` (entries the loader dropped, e.g. NYU split-file lines whose depth is ``None``).

    The first depth map is read when the dataset is built, so a wrong depth format fails at once;
    every other file is read and checked when its item is loaded.

    Example:
        >>> DepthFiles([], (8, 8), resize_depth=True, source="demo")
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: demo: empty dataset (no image/depth pairs found)
    """

    num_classes = 1

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        image_size: tuple[int, int] | None,
        *,
        resize_depth: bool,
        source: str,
        depth_scale: float | None = None,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        eval_crop: str | None = None,
        skipped_lines: int = 0,
    ) -> None:
        if not pairs:
            raise DatasetError(f"{source}: empty dataset (no image/depth pairs found)")
        check_depth_range(min_depth, max_depth)
        if depth_scale is not None and not depth_scale > 0:
            raise ValueError(f"data.depth_scale must be > 0 (stored value / depth_scale = metres), got {depth_scale}")
        self.pairs = list(pairs)
        self.image_size = image_size
        self.resize_depth = resize_depth
        self.source = source
        self.depth_scale = depth_scale
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.eval_crop = eval_crop
        self.skipped_lines = skipped_lines
        self.class_names = list(DEPTH_CLASS_NAMES)
        load_depth(self.pairs[0][1], depth_scale)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, depth_path = self.pairs[index]
        image = load_image(image_path)
        depth = load_depth(depth_path, self.depth_scale)
        if depth.shape != (image.height, image.width):
            raise DatasetError(
                f"{depth_path}: depth map is {depth.shape[1]}x{depth.shape[0]} (WxH) but its image "
                f"{image_path} is {image.width}x{image.height}; they must have the same size"
            )
        if self.image_size is not None:
            height, width = self.image_size
            if (image.height, image.width) != (height, width):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
                if self.resize_depth:
                    depth = resize_depth_nearest(depth, (height, width))
        return normalize_image(image), torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))


def pair_depth_by_stem(image_dir: Path, depth_dir: Path) -> list[tuple[Path, Path]]:
    """Pair every image in ``image_dir`` with ``depth_dir/<stem>.png`` or ``.npy``, sorted by stem.

    Raises :class:`DatasetError` naming the first image without a depth map, depth map without an
    image, or stem with both a ``.png`` and a ``.npy`` depth map.

    Example:
        >>> pair_depth_by_stem(Path("/nonexistent/images"), Path("/nonexistent/depth"))
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: /nonexistent/images: images directory not found; put the images there, named like their depth maps
    """
    require_dir(image_dir, "images", "put the images there, named like their depth maps")
    require_dir(depth_dir, "depth", "put one depth map (16-bit PNG or .npy) per image there, with the image's stem")
    images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    depths: dict[str, Path] = {}
    for path in sorted(depth_dir.iterdir()):
        if path.suffix.lower() not in DEPTH_SUFFIXES:
            continue
        if path.stem in depths:
            raise DatasetError(
                f"{path}: two depth maps for stem '{path.stem}' ({depths[path.stem].name} too); keep only one"
            )
        depths[path.stem] = path
    for stem in sorted(images):
        if stem not in depths:
            raise DatasetError(
                f"{images[stem]}: no depth map {depth_dir / stem}.png (or .npy); add it or remove the image"
            )
    for stem in sorted(depths):
        if stem not in images:
            raise DatasetError(
                f"{depths[stem]}: depth map without an image in {image_dir}; "
                f"add the image (same stem) or remove the depth map"
            )
    return [(images[s], depths[s]) for s in sorted(images)]


def build_depth_folder(config: Mapping[str, Any], split: str) -> DepthFiles:
    """Build the ``depth_folder`` dataset for ``split`` ("train" or "val").

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for sub in ("images", "depth"): (root / sub).mkdir()
        >>> for i in range(5):
        ...     Image.new("RGB", (8, 6)).save(root / "images" / f"{i}.jpg")
        ...     np.save(root / "depth" / f"{i}.npy", np.full((6, 8), 2.0, np.float32))
        >>> cfg = {"format": "depth_folder", "root": str(root), "image_size": 4}
        >>> train, val = build_depth_folder(cfg, "train"), build_depth_folder(cfg, "val")
        >>> len(train), len(val), tuple(train[0][1].shape), tuple(val[0][1].shape), val.class_names
        (4, 1, (4, 4), (6, 8), ['depth'])
    """
    check_config(config, "depth_folder", ("root",), _OPTIONAL)
    check_split(split)
    root = require_dir(
        Path(config["root"]),
        "dataset root",
        "set data.root to a folder holding images/ and depth/ (or train/ and val/ with those inside)",
    )
    if (root / "train").is_dir():
        base = require_dir(
            root / split,
            f"'{split}' split",
            f"layout A needs {root}/train and {root}/val, each with images/ and depth/",
        )
        pairs = pair_depth_by_stem(base / "images", base / "depth")
        source = str(base)
    else:
        pairs = _split_pool(
            pair_depth_by_stem(root / "images", root / "depth"),
            split,
            float(config.get("val_fraction", 0.2)),
            int(config.get("seed", 0)),
        )
        source = f"{root} ({split} part)"
    scale = config.get("depth_scale")
    return DepthFiles(
        pairs,
        parse_image_size(config.get("image_size", 256)),
        resize_depth=split == "train",
        source=source,
        depth_scale=None if scale is None else float(scale),
        min_depth=float(config.get("min_depth", 1e-3)),
        max_depth=float(config.get("max_depth", 10.0)),
    )
