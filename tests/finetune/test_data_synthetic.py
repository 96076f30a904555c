"""Synthetic shapes: determinism by seed, value ranges, box/mask/COCO consistency, thin parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dysample_swap.finetune.data import build_dataset, detection_collate
from dysample_swap.finetune.data.common import IMAGENET_MEAN, IMAGENET_STD
from dysample_swap.finetune.metrics import label_boundary


def _cfg(**kw: object) -> dict:
    return {"format": "synthetic", "num_samples": 12, "image_size": 48, **kw}


def test_same_seed_same_samples_in_any_order_other_seed_or_split_differs() -> None:
    a = build_dataset(_cfg(seed=7), "train")
    b = build_dataset(_cfg(seed=7), "train")
    forward = [a[i] for i in range(len(a))]
    backward = [b[i] for i in reversed(range(len(b)))][::-1]
    for (xa, ya), (xb, yb) in zip(forward, backward):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_seed = build_dataset(_cfg(seed=8), "train")[0]
    val = build_dataset(_cfg(seed=7), "val")[0]
    assert not torch.equal(other_seed[1], forward[0][1])
    assert not torch.equal(val[1], forward[0][1])


def test_segmentation_items_are_normalised_images_and_in_range_masks() -> None:
    ds = build_dataset(_cfg(num_classes=3, image_size=[32, 40]), "train")
    assert ds.num_classes == 4 and ds.class_names == ["background", "disc", "ring", "bar"]
    assert ds.ignore_index == 255
    image, mask = ds[0]
    assert image.shape == (3, 32, 40) and image.dtype == torch.float32
    assert mask.shape == (32, 40) and mask.dtype == torch.int64
    masks = torch.stack([ds[i][1] for i in range(len(ds))])
    assert masks.min() == 0 and masks.max() <= 3 and len(masks.unique()) == 4
    raw = image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_instances_boxes_are_tight_around_disjoint_masks_and_match_coco() -> None:
    ds = build_dataset(_cfg(task="instance", num_val_samples=6), "val")
    assert len(ds) == 6 and ds.num_classes == 6
    total = 0
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.min() >= 0 and image.max() <= 1 and target["image_id"] == i + 1
        masks, boxes = target["masks"], target["boxes"]
        assert masks.dtype == torch.uint8 and masks.sum(0).max() <= 1  # visible parts are disjoint
        assert target["labels"].min() >= 1 and target["labels"].max() <= 6
        for mask, box in zip(masks, boxes):
            rows, cols = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        anns = ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=[i + 1]))
        assert [a["category_id"] for a in anns] == target["labels"].tolist()
        for ann, mask, box in zip(anns, masks, boxes):
            assert np.array_equal(ds.coco.annToMask(ann), mask.numpy())
            x, y, w, h = ann["bbox"]
            assert [x, y, x + w, y + h] == box.tolist()
        total += len(anns)
    assert len(ds.coco.getAnnIds()) == total


def test_detection_task_has_no_masks_and_collates_to_lists() -> None:
    ds = build_dataset(_cfg(task="detection"), "train")
    images, targets = detection_collate([ds[0], ds[1]])
    assert len(images) == 2 and "masks" not in targets[0] and targets[1]["image_id"] == 2


def test_shapes_have_thin_parts_and_every_class_appears() -> None:
    ds = build_dataset(_cfg(task="instance", num_samples=40, image_size=64), "train")
    thin_classes, seen = set(), set()
    for i in range(len(ds)):
        _, target = ds[i]
        # an instance is thin when every pixel lies within 2 px of its contour
        band = label_boundary(target["masks"].long(), 2) & target["masks"].bool()
        for label, mask, inner in zip(target["labels"].tolist(), target["masks"].bool(), band):
            seen.add(label)
            if torch.equal(inner, mask):
                thin_classes.add(ds.class_names[label])
    assert seen == {1, 2, 3, 4, 5}
    assert {"ring", "bar"} <= thin_classes and "disc" not in thin_classes


def test_config_errors_name_the_key() -> None:
    with pytest.raises(KeyError, match="did you mean 'num_samples'"):
        build_dataset(_cfg(num_sample=3), "train")
    with pytest.raises(ValueError, match="1..6"):
        build_dataset(_cfg(num_classes=9), "train")
    with pytest.raises(ValueError, match="data.task"):
        build_dataset(_cfg(task="stereo"), "train")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        build_dataset(_cfg(), "test")
