"""NYU Depth V2 as the Monocular-Depth-Estimation-Toolbox and BTS distribute it: ``data.format: nyu``.

Layout (the toolbox's ``data/nyu``, ``docs/dataset_prepare.md``: BTS's ``sync`` training scenes
and the official test scenes in one folder, plus the toolbox's split files from ``splits/``)::

    ROOT/
      nyu_train.txt  nyu_test.txt
      kitchen_0028b/  rgb_00045.jpg  sync_depth_00045.png ...   (training scenes)
      bathroom/       rgb_00045.jpg  sync_depth_00045.png ...   (official test scenes)

A split file has one sample per line, ``rgb_path depth_path focal``, paths relative to ``ROOT``
(a leading ``/`` is dropped, as the toolbox's ``remove_leading_slash`` does), e.g.
``/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579``. Extra fields after
the focal length (some copies of BTS's ``nyudepthv2_test_files_with_gt.txt`` add a segmentation
path) are ignored. BTS itself keeps the two parts apart (``sync/`` and ``official_splits/test/``
with ``nyudepthv2_train_files_with_gt.txt`` / ``nyudepthv2_test_files_with_gt.txt``); for that
layout give ``root`` as a mapping ``{train: .../sync, val: .../official_splits/test}`` and
``split_file`` as the path of the BTS list.

Images are 8-bit RGB JPG/PNG; depth maps are 16-bit PNGs in millimetres, so
``metres = png / depth_scale`` with ``depth_scale`` 1000 and 0 = no measurement. An 8-bit or
colour depth PNG is an error naming the file.

What the toolbox does (``depth/datasets/nyu.py``, ``configs/_base_/datasets/nyu.py``) and this
loader follows:

- split files ``nyu_train.txt`` (train) and ``nyu_test.txt`` (val/test: the official NYU test
  scenes, Eigen's test split) in the data root; ``depth_scale=1000``, ``min_depth=1e-3``, ``max_depth=10``;
- a line whose depth path is ``None`` is skipped and the count logged (here: a ``logging``
  warning and the dataset's ``skipped_lines``);
- samples are sorted by image path ("make sure the same order"), so index ``i`` is the toolbox's
  ``i``-th image;
- evaluation: valid pixels are ``min_depth < gt < max_depth`` inside the Eigen crop
  ``eval_mask[45:471, 41:601]`` of the 480x640 ground truth (``eigen_crop=True``; also BTS's
  ``bts_eval.py``), see :data:`EIGEN_CROP` and :func:`eigen_crop_mask`. The dataset's
  ``eval_crop`` is ``"eigen"``.

Not copied: the toolbox's training augmentation (``NYUCrop`` ``[45:472, 43:608]``, random
rotation, flip, 416x544 random crop, colour jitter) and its test-time flip; samples here are a
pure function of the index.

Sizes: by default (``image_size: null``) images and depth keep the native 480x640. With
``image_size`` set, split ``train`` resizes the image (bilinear) and the depth (nearest: no depth
is invented at edges) to it, while split ``val`` resizes only the image: the depth stays 480x640
and the evaluation resizes the prediction to it, as the toolbox does.

Keys of ``data:``:

- ``root`` (required): the data folder; or ``{train: DIR, val: DIR}`` for one folder per split.
- ``split_file``: list file, relative to the root unless absolute; ``{split}`` is replaced by the
  split name (``train``/``val``). Default ``nyu_train.txt`` for train, ``nyu_test.txt`` for val.
- ``depth_scale`` (default 1000.0): png value / depth_scale = metres.
- ``min_depth`` (default 0.001) and ``max_depth`` (default 10.0): the evaluation range (metres).
- ``image_size`` (default null = native 480x640): int or ``[height, width]``.
- ``max_samples``: keep only the first N samples (lines with a depth map) of the split file.

Errors (:class:`DatasetError`, one line naming the file): split file missing, a line with fewer
than two fields or a focal length that is not a number (with its line number), a listed file
missing (with the line number), a depth PNG that is not 16-bit, an image/depth size mismatch.

Example:
    >>> build_nyu({"format": "nyu", "root": "/nonexistent"}, "val")
    Traceback (most recent call last):
    ...
    dysample_swap.finetune.data.common.DatasetError: /nonexistent/nyu_test.txt: split file not found; copy the toolbox's splits/nyu_test.txt into data.root or set data.split_file
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dysample_swap.finetune.data.common import DatasetError, check_config, check_split, parse_image_size
from dysample_swap.finetune.data.depth_folder import DepthFiles

logger = logging.getLogger(__name__)

#: Default split file per split (the toolbox's ``configs/_base_/datasets/nyu.py``).
NYU_SPLIT_FILES = {"train": "nyu_train.txt", "val": "nyu_test.txt"}
#: The toolbox's NYU settings: png / 1000 = metres, evaluation range (1e-3, 10) metres.
NYU_DEPTH_SCALE = 1000.0
NYU_MIN_DEPTH = 1e-3
NYU_MAX_DEPTH = 10.0
#: Native (height, width) of the NYU Depth V2 images and depth maps.
NYU_SIZE = (480, 640)
#: Eigen crop as ``(top, bottom, left, right)`` slice bounds on a 480x640 map: rows 45..470 and
#: columns 41..600 (the toolbox's ``eval_mask[45:471, 41:601] = 1``).
EIGEN_CROP = (45, 471, 41, 601)
_OPTIONAL = ("split_file", "depth_scale", "min_depth", "max_depth", "image_size", "max_samples")


def eigen_crop_mask(height: int = NYU_SIZE[0], width: int = NYU_SIZE[1]) -> torch.Tensor:
    """``BoolTensor[height, width]``, True inside the Eigen crop.

    At 480x640 it is exactly the toolbox's ``[45:471, 41:601]``; at another size the bounds are
    scaled proportionally (rounded to the nearest pixel).

    Example:
        >>> m = eigen_crop_mask()
        >>> int(m.sum()) == (471 - 45) * (601 - 41), bool(m[45, 41]), bool(m[44, 41]), bool(m[470, 600])
        (True, True, False, True)
        >>> eigen_crop_mask(48, 64).nonzero()[[0, -1]].tolist()
        [[4, 4], [46, 59]]
    """
    top, bottom, left, right = EIGEN_CROP
    nat_h, nat_w = NYU_SIZE
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[
        round(top * height / nat_h) : round(bottom * height / nat_h),
        round(left * width / nat_w) : round(right * width / nat_w),
    ] = True
    return mask


def _resolve(base: Path, name: str) -> Path:
    """``base/name`` with leading slashes of ``name`` dropped (the toolbox's ``remove_leading_slash``)."""
    return base / name.lstrip("/\\")


def read_split_file(list_file: Path, root: Path, max_samples: int | None = None) -> tuple[list[tuple[Path, Path]], int]:
    """Parse a ``rgb_path depth_path focal`` list into ``(pairs sorted by image path, skipped count)``.

    Lines whose depth path is ``None`` are skipped and counted; blank lines are ignored. Every
    listed file must exist. ``max_samples`` keeps the first N pairs in file order (before sorting).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "list.txt").write_text("/a/rgb_1.jpg\\n")
        >>> read_split_file(root / "list.txt", root)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.data.common.DatasetError: .../list.txt line 1: expected 'rgb_path depth_path focal', got '/a/rgb_1.jpg'; fix or remove the line
    """
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: split file not found; set data.split_file to the list of the split")
    pairs: list[tuple[Path, Path]] = []
    skipped = 0
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        malformed = len(fields) < 2
        if len(fields) >= 3:
            try:
                float(fields[2])
            except ValueError:
                malformed = True
        if malformed or fields[0] == "None":
            raise DatasetError(
                f"{list_file} line {line_no}: expected 'rgb_path depth_path focal', got {line.strip()!r}; "
                f"fix or remove the line"
            )
        if fields[1] == "None":
            skipped += 1
            continue
        image_path, depth_path = _resolve(root, fields[0]), _resolve(root, fields[1])
        for path in (image_path, depth_path):
            if not path.is_file():
                raise DatasetError(
                    f"{path}: missing, but listed in {list_file} line {line_no}; "
                    f"add the file, fix data.root or remove the line"
                )
        pairs.append((image_path, depth_path))
        if max_samples is not None and len(pairs) >= max_samples:
            break
    return sorted(pairs), skipped


def build_nyu(config: Mapping[str, Any], split: str) -> DepthFiles:
    """Build the NYU Depth V2 dataset for ``split`` ("train" or "val").

    Example:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp()); (root / "scene").mkdir()
        >>> Image.new("RGB", (8, 6)).save(root / "scene" / "rgb_0.jpg")
        >>> Image.fromarray(np.full((6, 8), 1500, np.uint16)).save(root / "scene" / "sync_depth_0.png")
        >>> line = "/scene/rgb_0.jpg /scene/sync_depth_0.png 518.8579\\n"
        >>> _ = (root / "nyu_test.txt").write_text(line)
        >>> ds = build_nyu({"format": "nyu", "root": str(root)}, "val")
        >>> image, depth = ds[0]
        >>> tuple(image.shape), depth[0, 0].item(), ds.eval_crop, ds.max_depth
        ((3, 6, 8), 1.5, 'eigen', 10.0)
    """
    check_config(config, "nyu", ("root",), _OPTIONAL)
    check_split(split)
    root_value = config["root"]
    if isinstance(root_value, Mapping):
        if split not in root_value:
            raise KeyError(f"data.root: a mapping must give a folder for '{split}' (keys: train, val)")
        root_value = root_value[split]
    root = Path(str(root_value))
    split_name = config.get("split_file", NYU_SPLIT_FILES[split])
    list_file = root / str(split_name).format(split=split)
    if not list_file.is_file():
        hint = (
            f"copy the toolbox's splits/{NYU_SPLIT_FILES[split]} into data.root or set data.split_file"
            if "split_file" not in config
            else "fix data.split_file (relative to data.root unless absolute; {split} becomes train/val)"
        )
        raise DatasetError(f"{list_file}: split file not found; {hint}")
    max_samples = config.get("max_samples")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)):
        raise ValueError(f"data.max_samples must be a positive int or null, got {max_samples!r}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"data.max_samples must be a positive int or null, got {max_samples!r}")
    pairs, skipped = read_split_file(list_file, root, max_samples)
    if skipped:
        logger.warning("%s: skipped %d line(s) whose depth path is None (as the toolbox does)", list_file, skipped)
    size = config.get("image_size")
    return DepthFiles(
        pairs,
        None if size is None else parse_image_size(size),
        resize_depth=split == "train",
        source=str(list_file),
        depth_scale=float(config.get("depth_scale", NYU_DEPTH_SCALE)),
        min_depth=float(config.get("min_depth", NYU_MIN_DEPTH)),
        max_depth=float(config.get("max_depth", NYU_MAX_DEPTH)),
        eval_crop="eigen",
        skipped_lines=skipped,
    )
