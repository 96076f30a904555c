"""COCO JSON format: xywh -> xyxy, polygon and RLE masks, crowd handling, category renumbering,
real COCO evaluation against ``.coco``, and bad-data errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from dysample_swap.finetune.data import DatasetError, build_dataset
from dysample_swap.finetune.metrics import DetectionMetrics

W, H = 12, 10


def _rle_square() -> tuple[dict, np.ndarray]:
    mask = np.zeros((H, W), np.uint8)
    mask[5:9, 6:11] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.flatten(order="F").tolist()
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _write(root: Path, split: str = "val", **overrides: object) -> Path:
    rle, _ = _rle_square()
    crowd = np.zeros((H, W), np.uint8)
    crowd[0:3, 8:12] = 1
    data = {
        "images": [
            {"id": 42, "file_name": "x.jpg", "width": W, "height": H},
            {"id": 7, "file_name": "y.png", "width": W, "height": H},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 42,
                "category_id": 3,
                "bbox": [1, 1, 4, 3],
                "area": 12,
                "iscrowd": 0,
                "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]],
            },
            {
                "id": 2,
                "image_id": 42,
                "category_id": 18,
                "bbox": [6, 5, 5, 4],
                "area": 20,
                "iscrowd": 0,
                "segmentation": rle,
            },
            {
                "id": 3,
                "image_id": 42,
                "category_id": 18,
                "bbox": [8, 0, 4, 3],
                "area": 12,
                "iscrowd": 1,
                "segmentation": _uncompressed_rle(crowd),
            },
        ],
    }
    data.update(overrides)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(exist_ok=True)
    Image.new("RGB", (W, H), (255, 0, 0)).save(root / f"{split}2017" / "x.jpg")
    Image.new("RGB", (W, H), (0, 0, 255)).save(root / f"{split}2017" / "y.png")
    path = root / "annotations" / f"instances_{split}2017.json"
    path.write_text(json.dumps(data))
    return path


def test_targets_boxes_labels_and_polygon_rle_masks(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = build_dataset({"format": "coco", "root": str(tmp_path), "task": "instance"}, "val")
    assert len(ds) == 2 and ds.num_classes == 3 and ds.class_names == ["background", "car", "dog"]
    assert ds.category_ids == [3, 18]
    image, target = ds[ds.image_ids.index(42)]
    assert image.shape == (3, H, W) and image[0].min() > 0.95 and image[2].max() < 0.05
    assert target["image_id"] == 42
    assert target["boxes"].tolist() == [[1.0, 1.0, 5.0, 4.0], [6.0, 5.0, 11.0, 9.0]]  # crowd left out
    assert target["labels"].tolist() == [1, 2]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (2, H, W)
    assert np.array_equal(masks[1].numpy(), _rle_square()[1])
    rows, cols = torch.nonzero(masks[0], as_tuple=True)  # polygon filled inside its box
    assert rows.min() >= 1 and rows.max() <= 4 and cols.min() >= 1 and cols.max() <= 5 and masks[0].sum() >= 9
    _, empty = ds[ds.image_ids.index(7)]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, H, W)
    boxes_only = build_dataset({"format": "coco", "root": str(tmp_path)}, "val")
    assert "masks" not in boxes_only[0][1]


def test_dataset_coco_evaluates_crowd_as_ignore(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = build_dataset({"format": "coco", "root": str(tmp_path), "task": "instance"}, "val")
    _, target = ds[ds.image_ids.index(42)]
    pred = {
        "boxes": torch.cat([target["boxes"], torch.tensor([[8.0, 0.0, 12.0, 3.0]])]),
        "labels": torch.tensor([1, 2, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.95]),
        "masks": torch.cat([target["masks"], torch.zeros(1, H, W, dtype=torch.uint8)]).float().unsqueeze(1),
    }
    pred["masks"][2, 0, 0:3, 8:12] = 1.0
    metrics = DetectionMetrics(iou_types=("bbox", "segm"), coco_gt=ds.coco)
    metrics.update([pred], [target])
    result = metrics.compute()
    # the extra, highest-scoring detection lies on the crowd region: ignored, not a false positive
    assert result["bbox/AP"] == pytest.approx(1.0) and result["segm/AP"] == pytest.approx(1.0)


def test_custom_paths_with_split_template(tmp_path: Path) -> None:
    _write(tmp_path, split="train")
    (tmp_path / "annotations" / "instances_train2017.json").rename(tmp_path / "train.json")
    (tmp_path / "train2017").rename(tmp_path / "imgs_train")
    cfg = {"format": "coco", "root": str(tmp_path), "ann_file": "{split}.json", "image_dir": "imgs_{split}"}
    assert len(build_dataset(cfg, "train")) == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {
                "annotations": [
                    {"id": 9, "image_id": 42, "category_id": 3, "bbox": [8, 2, 6, 3], "area": 1, "iscrowd": 0}
                ]
            },
            r"instances_val2017\.json: annotation 9 has box .* outside its image x\.jpg \(12x10\)",
        ),
        (
            {
                "annotations": [
                    {"id": 9, "image_id": 5, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}
                ]
            },
            r"instances_val2017\.json: annotation 9 refers to image id 5",
        ),
        (
            {
                "annotations": [
                    {"id": 9, "image_id": 42, "category_id": 4, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}
                ]
            },
            r"instances_val2017\.json: annotation 9 has category_id 4",
        ),
        ({"images": []}, r"instances_val2017\.json: empty dataset"),
    ],
)
def test_bad_json_content_raises_naming_the_file(tmp_path: Path, override: dict, message: str) -> None:
    _write(tmp_path, **override)
    with pytest.raises(DatasetError, match=message):
        build_dataset({"format": "coco", "root": str(tmp_path)}, "val")


def test_missing_unreadable_and_wrong_size_images_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path)
    cfg = {"format": "coco", "root": str(tmp_path)}
    (tmp_path / "val2017" / "y.png").unlink()
    with pytest.raises(DatasetError, match=r"val2017/y\.png: image file not found, but listed in .*image id 7"):
        build_dataset(cfg, "val")
    Image.new("RGB", (W + 1, H)).save(tmp_path / "val2017" / "y.png")
    ds = build_dataset(cfg, "val")
    with pytest.raises(DatasetError, match=r"val2017/y\.png: image is 13x10 but .* says 12x10"):
        ds[ds.image_ids.index(7)]
    (tmp_path / "val2017" / "x.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    with pytest.raises(DatasetError, match=r"val2017/x\.jpg: unreadable image"):
        ds[ds.image_ids.index(42)]
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: not valid JSON"):
        build_dataset(cfg, "val")
    with pytest.raises(DatasetError, match=r"instances_train2017\.json: annotation file not found"):
        build_dataset(cfg, "train")
