"""Folder-of-images format: exact values, both layouts, and every bad-data error naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dysample_swap.finetune.data import DatasetError, build_dataset
from dysample_swap.finetune.data.common import normalize_image


def _write_pair(base: Path, stem: str, mask: np.ndarray, suffix: str = ".png") -> np.ndarray:
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    h, w = mask.shape
    pixels = (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 256).astype(np.uint8)
    Image.fromarray(pixels).save(base / "images" / f"{stem}{suffix}")
    Image.fromarray(mask.astype(np.uint8)).save(base / "masks" / f"{stem}.png")
    return pixels


def _cfg(root: Path, **kw: object) -> dict:
    return {"format": "folder", "root": str(root), "num_classes": 3, "image_size": [4, 6], **kw}


def test_layout_a_loads_exact_pixels_and_labels(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2, 255, 0, 0]] * 4)
    pixels = _write_pair(tmp_path / "train", "a", mask)
    _write_pair(tmp_path / "val", "b", np.zeros((4, 6), int))
    ds = build_dataset(_cfg(tmp_path, class_names=["bg", "x", "y"]), "train")
    assert len(ds) == 1 and ds.class_names == ["bg", "x", "y"] and ds.num_classes == 3
    image, labels = ds[0]
    assert labels.dtype == torch.int64 and labels.tolist() == mask.tolist()
    assert torch.allclose(image, normalize_image(Image.fromarray(pixels)))
    assert len(build_dataset(_cfg(tmp_path), "val")) == 1


def test_resize_uses_nearest_for_masks(tmp_path: Path) -> None:
    mask = np.zeros((8, 12), int)
    mask[:, 6:] = 2
    _write_pair(tmp_path / "train", "a", mask, suffix=".jpg")
    _write_pair(tmp_path / "val", "a", mask)
    image, labels = build_dataset(_cfg(tmp_path), "train")[0]
    assert image.shape == (3, 4, 6)
    assert labels.tolist() == [[0, 0, 0, 2, 2, 2]] * 4


def test_layout_b_split_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    for i in range(10):
        _write_pair(tmp_path, f"{i:02d}", np.full((4, 6), i % 3))
    train = build_dataset(_cfg(tmp_path, val_fraction=0.3, seed=1), "train")
    val = build_dataset(_cfg(tmp_path, val_fraction=0.3, seed=1), "val")
    train_stems = {p[0].stem for p in train.pairs}
    val_stems = {p[0].stem for p in val.pairs}
    assert len(val_stems) == 3 and not train_stems & val_stems and len(train_stems | val_stems) == 10
    again = build_dataset(_cfg(tmp_path, val_fraction=0.3, seed=1), "val")
    assert {p[0].stem for p in again.pairs} == val_stems


@pytest.mark.parametrize("case", ["label", "size", "unreadable", "rgb_mask"])
def test_bad_files_raise_dataset_error_naming_the_file(tmp_path: Path, case: str) -> None:
    base = tmp_path / "train"
    _write_pair(base, "good", np.zeros((4, 6), int))
    bad_mask = np.zeros((4, 6), int)
    if case == "label":
        bad_mask[0, 0] = 7
    _write_pair(base, "bad", bad_mask)
    culprit = base / "masks" / "bad.png"
    if case == "size":
        Image.fromarray(np.zeros((5, 6), np.uint8)).save(culprit)
    elif case == "unreadable":
        culprit = base / "images" / "bad.png"
        culprit.write_bytes(b"not an image at all")
    elif case == "rgb_mask":
        Image.new("RGB", (6, 4)).save(culprit)
    (tmp_path / "val").mkdir()
    ds = build_dataset(_cfg(tmp_path), "train")
    with pytest.raises(DatasetError, match=str(culprit)):
        ds[[p[0].stem for p in ds.pairs].index("bad")]
    assert ds[[p[0].stem for p in ds.pairs].index("good")][1].shape == (4, 6)


def test_missing_partner_and_empty_dataset_errors(tmp_path: Path) -> None:
    _write_pair(tmp_path / "train", "a", np.zeros((4, 6), int))
    Image.new("RGB", (6, 4)).save(tmp_path / "train" / "images" / "orphan.png")
    with pytest.raises(DatasetError, match=r"orphan\.png: no mask .*orphan\.png"):
        build_dataset(_cfg(tmp_path), "train")
    (tmp_path / "val" / "images").mkdir(parents=True)
    (tmp_path / "val" / "masks").mkdir()
    with pytest.raises(DatasetError, match="empty dataset"):
        build_dataset(_cfg(tmp_path), "val")
    with pytest.raises(KeyError, match="data.num_classes: required"):
        build_dataset({"format": "folder", "root": str(tmp_path)}, "val")
