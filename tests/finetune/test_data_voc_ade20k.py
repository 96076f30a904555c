"""Pascal VOC and ADE20K layouts: palette masks, 255 borders, ADE label shift, split lists, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dysample_swap.finetune.data import DatasetError, build_dataset


def _palette_png(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252) + [224, 224, 192]
    img.putpalette(palette)
    img.save(path)


def _voc(root: Path, ids: dict[str, list[str]], labels: np.ndarray) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for split, names in ids.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            Image.new("RGB", labels.shape[::-1], (90, 30, 200)).save(voc / "JPEGImages" / f"{name}.jpg")
            _palette_png(voc / "SegmentationClass" / f"{name}.png", labels)
    return voc


def test_voc_reads_palette_indices_with_255_border(tmp_path: Path) -> None:
    labels = np.array([[0, 0, 255, 15], [0, 255, 15, 15], [255, 20, 20, 20]])
    _voc(tmp_path, {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}, labels)
    cfg = {"format": "voc", "root": str(tmp_path / "VOCdevkit"), "image_size": [3, 4]}
    train = build_dataset(cfg, "train")
    assert len(train) == 2 and train.num_classes == 21 and train.class_names[15] == "person"
    image, mask = train[1]
    assert mask.tolist() == labels.tolist() and mask.dtype == torch.int64
    assert image.shape == (3, 3, 4)
    assert len(build_dataset(cfg, "val")) == 1


def test_voc_missing_listed_file_and_bad_label_name_the_file(tmp_path: Path) -> None:
    labels = np.zeros((3, 4), int)
    voc = _voc(tmp_path, {"train": ["a", "b"]}, labels)
    cfg = {"format": "voc", "root": str(voc), "image_size": 4}
    (voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"JPEGImages/b\.jpg: missing, but listed in .*train\.txt line 2"):
        build_dataset(cfg, "train")
    Image.new("RGB", (4, 3)).save(voc / "JPEGImages" / "b.jpg")
    _palette_png(voc / "SegmentationClass" / "b.png", np.full((3, 4), 21))
    with pytest.raises(DatasetError, match=r"SegmentationClass/b\.png: mask has label\(s\) \[21\]"):
        build_dataset(cfg, "train")[1]
    with pytest.raises(DatasetError, match=r"val\.txt: split list not found"):
        build_dataset(cfg, "val")


def _ade(root: Path, split_dir: str, stem: str, raw: np.ndarray) -> Path:
    ade = root / "ADEChallengeData2016"
    (ade / "images" / split_dir).mkdir(parents=True, exist_ok=True)
    (ade / "annotations" / split_dir).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", raw.shape[::-1], (10, 200, 40)).save(ade / "images" / split_dir / f"{stem}.jpg")
    Image.fromarray(raw.astype(np.uint8)).save(ade / "annotations" / split_dir / f"{stem}.png")
    return ade


def test_ade20k_shifts_labels_and_maps_splits(tmp_path: Path) -> None:
    raw = np.array([[0, 1, 2], [150, 75, 0]])
    ade = _ade(tmp_path, "training", "ADE_train_00000001", raw)
    _ade(tmp_path, "validation", "ADE_val_00000001", np.ones((2, 3), int))
    cfg = {"format": "ade20k", "root": str(ade), "image_size": [2, 3]}
    train = build_dataset(cfg, "train")
    assert train.num_classes == 150 and train.ignore_index == 255 and train.class_names[74] == "computer"
    assert train[0][1].tolist() == [[255, 0, 1], [149, 74, 255]]
    assert build_dataset(cfg, "val")[0][1].tolist() == [[0, 0, 0], [0, 0, 0]]


def test_ade20k_errors_name_the_file(tmp_path: Path) -> None:
    ade = _ade(tmp_path, "training", "a", np.array([[151, 1]]))
    cfg = {"format": "ade20k", "root": str(ade), "image_size": 2}
    with pytest.raises(DatasetError, match=r"annotations/training/a\.png: mask has label\(s\) \[150\]"):
        build_dataset(cfg, "train")[0]
    Image.fromarray(np.ones((3, 2), np.uint8)).save(ade / "annotations" / "training" / "a.png")
    with pytest.raises(DatasetError, match=r"annotations/training/a\.png: mask is 2x3 .* is 2x1"):
        build_dataset(cfg, "train")[0]
    with pytest.raises(DatasetError, match=r"images/validation: images directory not found"):
        build_dataset(cfg, "val")
    with pytest.raises(KeyError, match="did you mean 'image_size'"):
        build_dataset({**cfg, "imagesize": 3}, "train")
