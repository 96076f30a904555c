"""Shared pieces of the dataset loaders: errors, config checking, image/mask I/O, transforms.

Every loader in :mod:`dysample_swap.finetune.data` reports bad data with :class:`DatasetError`,
whose message names the offending file and says how to fix it.

Segmentation samples are a pure function of ``(split, index)``: no random augmentation, so
resuming a run or sharding it over processes never changes what a sample contains.

Example:
    >>> import numpy as np
    >>> from PIL import Image
    >>> image = Image.new("RGB", (8, 6))
    >>> mask = np.zeros((6, 8), dtype=np.int64)
    >>> x, y = resize_pair(image, mask, (4, 4))
    >>> tuple(x.shape), tuple(y.shape), y.dtype
    ((3, 4, 4), (4, 4), torch.int64)
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

#: ImageNet statistics used to normalise segmentation inputs (what smp / timm encoders expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Label value that losses and metrics skip.
DEFAULT_IGNORE_INDEX = 255
#: File suffixes accepted as images by the folder-style loaders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: The split names every loader understands.
SPLITS = ("train", "val")

#: The random stream of each split of the synthetic datasets.
SPLIT_STREAMS = {"train": 0, "val": 1}
#: PIL modes that hold one class index per pixel.
_INDEX_MASK_MODES = ("L", "P", "I", "I;16", "1")


class DatasetError(ValueError):
    """Bad or missing data; the message names the file and the fix.

    Example:
        >>> str(DatasetError("a.png: mask has label 7 but num_classes is 3"))
        'a.png: mask has label 7 but num_classes is 3'
    """


def check_config(config: Mapping[str, Any], fmt: str, required: Sequence[str], optional: Sequence[str]) -> None:
    """Reject a ``data:`` mapping with a missing key or a key the format does not know.

    ``format`` itself is always allowed. An unknown key's error names the closest valid key.

    Example:
        >>> check_config({"format": "voc", "root": "x"}, "voc", ["root"], ["image_size"])
        >>> check_config({"format": "voc", "rot": "x"}, "voc", [], ["root"])
        Traceback (most recent call last):
        ...
        KeyError: "data.rot: unknown key for format 'voc' (did you mean 'root'?); valid keys: format, root"
    """
    valid = ["format", *required, *optional]
    for key in config:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise KeyError(f"data.{key}: unknown key for format '{fmt}'{hint}; valid keys: {', '.join(valid)}")
    for key in required:
        if key not in config:
            raise KeyError(f"data.{key}: required for format '{fmt}' but missing; add it to the recipe's data: section")


def check_split(split: str, valid: Sequence[str] = SPLITS) -> None:
    """Raise ``ValueError`` for a split name the loader does not provide.

    Example:
        >>> check_split("val")
        >>> check_split("test")
        Traceback (most recent call last):
        ...
        ValueError: unknown split 'test'; valid splits: train, val
    """
    if split not in valid:
        raise ValueError(f"unknown split '{split}'; valid splits: {', '.join(valid)}")


def parse_image_size(value: int | Sequence[int], key: str = "data.image_size") -> tuple[int, int]:
    """Turn ``64`` or ``[64, 96]`` (height, width) into a ``(height, width)`` tuple.

    Example:
        >>> parse_image_size(64), parse_image_size([32, 48])
        ((64, 64), (32, 48))
    """
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"{key} must be a positive int or [height, width], got {value!r}")
    return size


def require_dir(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a directory, else raise :class:`DatasetError` naming it.

    Example:
        >>> require_dir(Path("/"), "root", "point data.root at the dataset")
        PosixPath('/')
    """
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} directory not found; {fix}")
    return path


@contextlib.contextmanager
def _open(path: Path, what: str) -> Iterator[Image.Image]:
    """Open ``path`` with PIL and decode it fully; missing or unreadable -> :class:`DatasetError`."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} file not found")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as err:
        # ImportError: an importer that patches Image.open (ultralytics does) may try a plugin on failure
        raise DatasetError(f"{path}: unreadable {what} ({err}); re-save it as PNG or JPEG") from err
    with img:
        yield img


def load_image(path: Path) -> Image.Image:
    """Open an image file as RGB, or raise :class:`DatasetError` naming the file.

    Example:
        >>> load_image(Path("/nonexistent.jpg"))
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: /nonexistent.jpg: image file not found
    """
    with _open(path, "image") as img:
        return img.convert("RGB")


def load_index_mask(path: Path) -> np.ndarray:
    """Read a class-index PNG (grayscale or palette) as an ``int64`` array of shape ``[H, W]``.

    Palette PNGs (VOC style) give palette indices, not colours. RGB masks are rejected: they
    must first be converted to one class index per pixel.

    Example:
        >>> load_index_mask(Path("/nonexistent.png"))
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: /nonexistent.png: mask file not found
    """
    with _open(path, "mask") as img:
        if img.mode not in _INDEX_MASK_MODES:
            raise DatasetError(
                f"{path}: mask has PIL mode {img.mode!r}; masks must hold one class index per "
                f"pixel (8-bit grayscale 'L' or palette 'P' PNG), not colours"
            )
        return np.asarray(img, dtype=np.int64)


def check_mask_labels(mask: np.ndarray, num_classes: int, ignore_index: int, path: Path) -> None:
    """Raise :class:`DatasetError` if ``mask`` has a label outside ``[0, num_classes)`` other
    than ``ignore_index``.

    Example:
        >>> check_mask_labels(np.array([[0, 2, 255]]), 3, 255, Path("m.png"))
        >>> check_mask_labels(np.array([[0, 5]]), 3, 255, Path("m.png"))
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: m.png: mask has label(s) [5] outside 0..2 (ignore index 255); fix the mask or set data.num_classes
    """
    labels = np.unique(mask)
    bad = labels[((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)]
    if bad.size:
        raise DatasetError(
            f"{path}: mask has label(s) {bad[:10].tolist()} outside 0..{num_classes - 1} "
            f"(ignore index {ignore_index}); fix the mask or set data.num_classes"
        )


def check_same_size(image: Image.Image, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    """Raise :class:`DatasetError` if the image and its mask differ in size.

    Example:
        >>> check_same_size(Image.new("RGB", (4, 3)), np.zeros((3, 4)), Path("a.jpg"), Path("a.png"))
    """
    if mask.shape != (image.height, image.width):
        raise DatasetError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{image_path} is {image.width}x{image.height}; they must have the same size"
        )


def normalize_image(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``FloatTensor[3, H, W]`` normalised with ImageNet mean/std.

    Example:
        >>> normalize_image(Image.new("RGB", (2, 2), (124, 116, 104)))[:, 0, 0].abs().max() < 0.01
        tensor(True)
    """
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def image_to_unit_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``FloatTensor[3, H, W]`` in ``[0, 1]`` (what torchvision detectors take).

    Example:
        >>> image_to_unit_tensor(Image.new("RGB", (2, 2), (255, 0, 0)))[:, 0, 0].tolist()
        [1.0, 0.0, 0.0]
    """
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def resize_pair(image: Image.Image, mask: np.ndarray, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image (bilinear) and mask (nearest) to ``size = (H, W)``; normalise the image.

    Example:
        >>> x, y = resize_pair(Image.new("RGB", (4, 4)), np.eye(4, dtype=np.int64), (2, 2))
        >>> y.tolist()
        [[1, 0], [0, 1]]
    """
    height, width = size
    if (image.height, image.width) != (height, width):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        mask_img = Image.fromarray(mask.astype(np.int32), mode="I")
        mask = np.asarray(mask_img.resize((width, height), Image.Resampling.NEAREST), dtype=np.int64)
    return normalize_image(image), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))


class SegmentationFiles(torch.utils.data.Dataset):
    """Segmentation dataset over a list of ``(image_path, mask_path)`` pairs.

    Each item is ``(image FloatTensor[3, H, W] ImageNet-normalised, mask LongTensor[H, W])`` at
    ``image_size``. Files are read and checked when the item is loaded: an unreadable image, a
    size mismatch, or a label outside the class range raises :class:`DatasetError` naming the file.

    ``label_map`` turns raw mask values into training labels before the check (ADE20K: 0 -> 255,
    k -> k - 1).

    Example:
        >>> ds = SegmentationFiles([], 2, ["bg", "fg"], (8, 8), source="demo")
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: demo: empty dataset (no image/mask pairs found)
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        num_classes: int,
        class_names: Sequence[str],
        image_size: tuple[int, int],
        *,
        source: str,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        label_map: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not pairs:
            raise DatasetError(f"{source}: empty dataset (no image/mask pairs found)")
        if len(class_names) != num_classes:
            raise ValueError(
                f"{source}: {len(class_names)} class names given for "
                f"{num_classes} classes; give exactly one name per class"
            )
        self.pairs = list(pairs)
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.image_size = image_size
        self.label_map = label_map

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[index]
        image = load_image(image_path)
        mask = load_index_mask(mask_path)
        check_same_size(image, mask, image_path, mask_path)
        if self.label_map is not None:
            mask = self.label_map(mask)
        check_mask_labels(mask, self.num_classes, self.ignore_index, mask_path)
        return resize_pair(image, mask, self.image_size)


def default_class_names(config: Mapping[str, Any], num_classes: int) -> list[str]:
    """``data.class_names`` if given (checked against ``num_classes``), else ``class0..classN-1``.

    Example:
        >>> default_class_names({}, 2)
        ['class0', 'class1']
    """
    names = config.get("class_names")
    if names is None:
        return [f"class{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(
            f"data.class_names has {len(names)} names but data.num_classes is "
            f"{num_classes}; give exactly one name per class"
        )
    return [str(n) for n in names]


def sample_generator(seed: int, split: str, index: int, num_samples: int) -> np.random.Generator:
    """The generator that renders synthetic sample ``index`` of a split of ``num_samples``: a sample
    is a pure function of (seed, split, index).

    Example:
        >>> a, b = sample_generator(0, "val", 1, 2), sample_generator(0, "val", 1, 2)
        >>> int(a.integers(1000)) == int(b.integers(1000))
        True
        >>> sample_generator(0, "val", 2, 2)
        Traceback (most recent call last):
        ...
        IndexError: index 2 out of range for 2 samples
    """
    if not 0 <= index < num_samples:
        raise IndexError(f"index {index} out of range for {num_samples} samples")
    return np.random.default_rng([seed, SPLIT_STREAMS[split], index])
