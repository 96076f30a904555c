"""Panoptic data: COCO panoptic (PNG id decoding, renumbering, crowd and void, bad-data errors)
checked against a hand-written layout, and synthetic panoptic scenes (determinism, pixelwise
consistency of instances, semantic and panoptic maps)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dysample_swap.finetune.data import DatasetError, detection_collate
from dysample_swap.finetune.data.coco_panoptic import build_coco_panoptic
from dysample_swap.finetune.data.synthetic_panoptic import build_synthetic_panoptic
from dysample_swap.finetune.metrics_panoptic import PanopticMetrics

# Image 42 (6 x 4). Segment ids above 255 so that G and B carry bits:
#   T = 5 tree (stuff 184), G = 1000 grass (stuff 125), D = 300 dog (thing 18),
#   P = 70000 person (thing 1), C = 131075 crowd of persons, 0 = void.
T, G, D, P, C = 5, 1000, 300, 70000, 131075
IDS_42 = [
    [T, T, T, T, 0, 0],
    [D, D, T, C, C, 0],
    [D, D, P, P, C, G],
    [G, G, P, P, G, G],
]
SEGMENTS_42 = [
    {"id": T, "category_id": 184, "iscrowd": 0, "bbox": [0, 0, 4, 2], "area": 5},
    {"id": D, "category_id": 18, "iscrowd": 0, "bbox": [0, 1, 2, 2], "area": 4},
    {"id": C, "category_id": 1, "iscrowd": 1, "bbox": [3, 1, 2, 2], "area": 3},
    {"id": P, "category_id": 1, "iscrowd": 0, "bbox": [2, 2, 2, 2], "area": 4},
    {"id": G, "category_id": 125, "iscrowd": 0, "bbox": [0, 2, 6, 2], "area": 5},
    {"id": 9999, "category_id": 18, "iscrowd": 0, "bbox": [0, 0, 1, 1], "area": 1},  # not in the PNG
]
# Image 7 (3 x 2): one tree pixel pair, the rest void, no thing.
IDS_7 = [[0, T, T], [0, 0, 0]]
CATEGORIES = [  # not in id order on purpose
    {"id": 184, "name": "tree", "isthing": 0, "supercategory": "plant"},
    {"id": 18, "name": "dog", "isthing": 1, "supercategory": "animal"},
    {"id": 125, "name": "grass", "isthing": 0, "supercategory": "plant"},
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
]


def _encode(ids: list[list[int]]) -> np.ndarray:
    """COCO's encoding by hand: id = R + 256 G + 256^2 B."""
    a = np.array(ids, dtype=np.int64)
    return np.stack([a % 256, (a // 256) % 256, a // 65536], axis=-1).astype(np.uint8)


def _write(root: Path, split: str = "val", **overrides: object) -> Path:
    data: dict[str, object] = {
        "info": {"description": "tiny"},
        "images": [
            {"id": 42, "file_name": "000042.jpg", "width": 6, "height": 4},
            {"id": 7, "file_name": "000007.jpg", "width": 3, "height": 2},
        ],
        "annotations": [
            {"image_id": 42, "file_name": "000042.png", "segments_info": SEGMENTS_42},
            {"image_id": 7, "file_name": "000007.png", "segments_info": [{"id": T, "category_id": 184, "iscrowd": 0}]},
        ],
        "categories": CATEGORIES,
    }
    data.update(overrides)
    png_dir = root / "annotations" / f"panoptic_{split}2017"
    png_dir.mkdir(parents=True, exist_ok=True)
    (root / f"{split}2017").mkdir(exist_ok=True)
    # PNG bytes under COCO's .jpg names keep the pixel values exact (PIL reads by content)
    Image.new("RGB", (6, 4), (255, 0, 0)).save(root / f"{split}2017" / "000042.jpg", format="PNG")
    Image.new("RGB", (3, 2), (0, 0, 255)).save(root / f"{split}2017" / "000007.jpg", format="PNG")
    Image.fromarray(_encode(IDS_42)).save(png_dir / "000042.png")
    Image.fromarray(_encode(IDS_7)).save(png_dir / "000007.png")
    path = root / "annotations" / f"panoptic_{split}2017.json"
    path.write_text(json.dumps(data))
    return path


def _cfg(root: Path, **kw: object) -> dict:
    return {"format": "coco_panoptic", "root": str(root), **kw}


def test_encoding_by_hand_uses_all_three_channels() -> None:
    rgb = _encode([[P, C, D]])[0]
    assert rgb.tolist() == [[112, 17, 1], [3, 0, 2], [44, 1, 0]]


def test_dataset_attributes_renumber_things_and_stuff_in_id_order(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = build_coco_panoptic(_cfg(tmp_path), "val")
    assert len(ds) == 2 and ds.image_ids == [7, 42]
    assert ds.num_classes == 3 and ds.class_names == ["background", "person", "dog"] and ds.thing_ids == [1, 18]
    assert ds.num_stuff == 2 and ds.stuff_names == ["grass", "tree"] and ds.stuff_ids == [125, 184]
    assert ds.categories == {
        1: {"name": "person", "isthing": True},
        18: {"name": "dog", "isthing": True},
        125: {"name": "grass", "isthing": False},
        184: {"name": "tree", "isthing": False},
    }
    assert ds.collate is detection_collate


def test_target_of_image_with_thing_stuff_crowd_void_and_absent_segment(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = build_coco_panoptic(_cfg(tmp_path), "val")
    image, target = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, 4, 6)  # not resized
    assert torch.equal(image, torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 4, 6))
    assert sorted(target) == ["area", "boxes", "image_id", "iscrowd", "labels", "masks", "panoptic", "semantic"]
    assert target["image_id"] == 42
    # things: dog (segment 300) then person (70000), in segments_info order; crowd and 9999 left out
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [2, 1]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[0.0, 1.0, 2.0, 3.0], [2.0, 2.0, 4.0, 4.0]]
    assert target["area"].tolist() == [4.0, 4.0]
    assert target["iscrowd"].dtype == torch.int64 and target["iscrowd"].tolist() == [0, 0]
    assert target["masks"].dtype == torch.uint8
    assert target["masks"].tolist() == [
        [[0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
        [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]],
    ]
    # semantic: grass 0, tree 1, every thing pixel (crowd too) 2, void 255
    assert target["semantic"].dtype == torch.int64
    assert target["semantic"].tolist() == [
        [1, 1, 1, 1, 255, 255],
        [2, 2, 1, 2, 2, 255],
        [2, 2, 2, 2, 2, 0],
        [0, 0, 2, 2, 0, 0],
    ]
    # panoptic: (COCO category id, instance id); crowd and void (0, 0)
    assert target["panoptic"].dtype == torch.int64 and target["panoptic"].shape == (4, 6, 2)
    assert target["panoptic"][..., 0].tolist() == [
        [184, 184, 184, 184, 0, 0],
        [18, 18, 184, 0, 0, 0],
        [18, 18, 1, 1, 0, 125],
        [125, 125, 1, 1, 125, 125],
    ]
    assert target["panoptic"][..., 1].tolist() == [
        [0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 2, 2, 0, 0],
        [0, 0, 2, 2, 0, 0],
    ]


def test_target_of_image_without_things(tmp_path: Path) -> None:
    _write(tmp_path)
    image, target = build_coco_panoptic(_cfg(tmp_path), "val")[0]
    assert image.shape == (3, 2, 3) and image[2].min() == 1.0 and image[:2].max() == 0.0
    assert target["image_id"] == 7
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (0, 2, 3) and target["masks"].dtype == torch.uint8
    assert target["area"].shape == (0,) and target["iscrowd"].shape == (0,)
    assert target["semantic"].tolist() == [[255, 1, 1], [255, 255, 255]]
    assert target["panoptic"][..., 0].tolist() == [[0, 184, 184], [0, 0, 0]]
    assert target["panoptic"][..., 1].tolist() == [[0, 0, 0], [0, 0, 0]]
    images, targets = detection_collate([build_coco_panoptic(_cfg(tmp_path), "val")[i] for i in (0, 1)])
    assert [t["image_id"] for t in targets] == [7, 42] and [tuple(x.shape) for x in images] == [(3, 2, 3), (3, 4, 6)]


def test_panoptic_target_scores_perfectly_against_itself(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = build_coco_panoptic(_cfg(tmp_path), "val")
    metrics = PanopticMetrics(things=ds.thing_ids, stuff=ds.stuff_ids)
    for i in range(len(ds)):
        panoptic = ds[i][1]["panoptic"][None]
        metrics.update(panoptic, panoptic)
    result = metrics.compute()
    assert result["PQ"] == pytest.approx(1.0) and result["PQ_th"] == pytest.approx(1.0)


def test_max_samples_custom_templates_and_task(tmp_path: Path) -> None:
    _write(tmp_path, split="train")
    assert build_coco_panoptic(_cfg(tmp_path, max_samples=1), "train").image_ids == [7]
    (tmp_path / "annotations" / "panoptic_train2017.json").rename(tmp_path / "pan_train.json")
    (tmp_path / "annotations" / "panoptic_train2017").rename(tmp_path / "png_train")
    (tmp_path / "train2017").rename(tmp_path / "img_train")
    cfg = _cfg(tmp_path, ann_file="pan_{split}.json", png_dir="png_{split}", image_dir="img_{split}", task="panoptic")
    ds = build_coco_panoptic(cfg, "train")
    assert len(ds) == 2 and ds[1][1]["labels"].tolist() == [2, 1]
    with pytest.raises(ValueError, match="data.task for coco_panoptic must be panoptic, got 'instance'"):
        build_coco_panoptic({**cfg, "task": "instance"}, "train")
    with pytest.raises(ValueError, match="data.max_samples must be a positive int, got -1"):
        build_coco_panoptic({**cfg, "max_samples": -1}, "train")
    with pytest.raises(KeyError, match="data.png_dirs: unknown key for format 'coco_panoptic' .*'png_dir'"):
        build_coco_panoptic({**cfg, "png_dirs": "x"}, "train")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {
                "annotations": [
                    {"image_id": 42, "file_name": "000042.png", "segments_info": SEGMENTS_42},
                    {"image_id": 7, "file_name": "000007.png", "segments_info": [{"id": T, "category_id": 99}]},
                ]
            },
            r"panoptic_val2017\.json: image 7 \(000007\.jpg\): segment 5 has category_id 99, which is not in 'categories'",
        ),
        (
            {"annotations": [{"image_id": 42, "file_name": "000042.png", "segments_info": SEGMENTS_42}]},
            r"panoptic_val2017\.json: image id 7 \(000007\.jpg\) has no annotation",
        ),
        (
            {"annotations": [{"image_id": 8, "file_name": "000042.png", "segments_info": []}]},
            r"panoptic_val2017\.json: annotation 0 \(000042\.png\) refers to image id 8, which is not in 'images'",
        ),
        (
            {"annotations": [{"image_id": 42, "segments_info": []}]},
            r"panoptic_val2017\.json: annotation 0 lacks file_name",
        ),
        (
            {
                "annotations": [
                    {"image_id": 42, "file_name": "000042.png", "segments_info": SEGMENTS_42},
                    {"image_id": 7, "file_name": "000007.png", "segments_info": [{"id": T, "category_id": 184}] * 2},
                ]
            },
            r"panoptic_val2017\.json: image 7 \(000007\.jpg\) has a segment with duplicate id 5",
        ),
        ({"categories": [{"id": 1, "name": "person"}]}, r"panoptic_val2017\.json: category 1 lacks isthing"),
        ({"images": []}, r"panoptic_val2017\.json: empty dataset"),
    ],
)
def test_bad_json_content_raises_naming_the_file(tmp_path: Path, override: dict, message: str) -> None:
    _write(tmp_path, **override)
    with pytest.raises(DatasetError, match=message):
        build_coco_panoptic(_cfg(tmp_path), "val")


def test_png_segment_missing_from_segments_info_names_png_and_id(tmp_path: Path) -> None:
    without_person = [s for s in SEGMENTS_42 if s["id"] != P]
    annotations = [
        {"image_id": 42, "file_name": "000042.png", "segments_info": without_person},
        {"image_id": 7, "file_name": "000007.png", "segments_info": [{"id": T, "category_id": 184}]},
    ]
    _write(tmp_path, annotations=annotations)
    ds = build_coco_panoptic(_cfg(tmp_path), "val")
    ds[0]
    with pytest.raises(
        DatasetError,
        match=r"panoptic_val2017/000042\.png: segment id\(s\) \[70000\] are in the PNG but not in segments_info "
        r"of image 42 in .*panoptic_val2017\.json",
    ):
        ds[1]


def test_missing_unreadable_and_wrong_size_files_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path)
    cfg = _cfg(tmp_path)
    png_dir = tmp_path / "annotations" / "panoptic_val2017"
    with pytest.raises(DatasetError, match=r"panoptic_train2017\.json: annotation file not found; set data\.ann_file"):
        build_coco_panoptic(cfg, "train")
    with pytest.raises(DatasetError, match=r"nope: panoptic PNG directory not found; set data\.png_dir"):
        build_coco_panoptic({**cfg, "png_dir": "nope"}, "val")
    with pytest.raises(DatasetError, match=r"nope: image directory not found; set data\.image_dir"):
        build_coco_panoptic({**cfg, "image_dir": "nope"}, "val")
    (png_dir / "000007.png").unlink()
    with pytest.raises(
        DatasetError,
        match=r"000007\.png: panoptic PNG not found, but listed in .*panoptic_val2017\.json \(image id 7\)",
    ):
        build_coco_panoptic(cfg, "val")
    Image.fromarray(_encode([[0, T], [0, T], [0, 0]])).save(png_dir / "000007.png")  # 2 x 3 instead of 3 x 2
    (tmp_path / "val2017" / "000042.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"val2017/000042\.jpg: image file not found, but listed in .*\(image id 42\)"
    ):
        build_coco_panoptic(cfg, "val")
    Image.new("RGB", (6, 5)).save(tmp_path / "val2017" / "000042.jpg", format="PNG")
    ds = build_coco_panoptic(cfg, "val")
    with pytest.raises(
        DatasetError,
        match=r"000007\.png: panoptic PNG is 2x3 but its image .*000007\.jpg is 3x2; they must have the same size",
    ):
        ds[0]
    with pytest.raises(DatasetError, match=r"000042\.jpg: image is 6x5 but .*panoptic_val2017\.json says 6x4"):
        ds[1]
    Image.new("L", (3, 2)).save(png_dir / "000007.png")
    with pytest.raises(DatasetError, match=r"000007\.png: panoptic PNG has PIL mode 'L'; it must be RGB"):
        ds[0]
    (png_dir / "000007.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"000007\.png: unreadable panoptic PNG"):
        ds[0]
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: not valid JSON"):
        build_coco_panoptic(cfg, "val")
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: COCO panoptic JSON lacks annotations, categories"):
        build_coco_panoptic(cfg, "val")


# --- synthetic panoptic scenes ---------------------------------------------------------------


def _syn(**kw: object) -> dict:
    return {"format": "synthetic", "task": "panoptic", "num_samples": 24, "image_size": 48, **kw}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_synthetic_same_seed_same_samples_in_any_order_other_seed_or_split_differs() -> None:
    a = build_synthetic_panoptic(_syn(seed=3), "train")
    b = build_synthetic_panoptic(_syn(seed=3), "train")
    forward = [a[i] for i in range(len(a))]
    backward = [b[i] for i in reversed(range(len(b)))][::-1]
    for (xa, ta), (xb, tb) in zip(forward, backward):
        assert torch.equal(xa, xb) and _equal(ta, tb)
    assert not torch.equal(build_synthetic_panoptic(_syn(seed=4), "train")[0][1]["panoptic"], forward[0][1]["panoptic"])
    assert not torch.equal(build_synthetic_panoptic(_syn(seed=3), "val")[0][1]["panoptic"], forward[0][1]["panoptic"])


def test_synthetic_attributes_and_builder_checks() -> None:
    ds = build_synthetic_panoptic(_syn(num_samples=40, image_size=[32, 40]), "val")
    assert len(ds) == 10 and ds[0][0].shape == (3, 32, 40) and ds[0][1]["image_id"] == 1
    assert ds.thing_ids == [1, 3, 4] and ds.stuff_ids == [7, 8, 9] and ds.num_classes == 4 and ds.num_stuff == 3
    assert ds.class_names == ["background", "disc", "triangle", "rectangle"]
    assert ds.stuff_names == ["sky", "wall", "ground"]
    assert ds.categories[3] == {"name": "triangle", "isthing": True} and ds.categories[8]["isthing"] is False
    assert ds.collate is detection_collate
    with pytest.raises(ValueError, match="data.task must be panoptic for synthetic panoptic data, got 'instance'"):
        build_synthetic_panoptic(_syn(task="instance"), "train")
    with pytest.raises(ValueError, match="data.num_shapes for synthetic panoptic data must be 1..8, got 0"):
        build_synthetic_panoptic(_syn(num_shapes=0), "train")
    with pytest.raises(KeyError, match="data.num_classes: unknown key for format 'synthetic'"):
        build_synthetic_panoptic(_syn(num_classes=3), "train")
    with pytest.raises(IndexError):
        ds[10]


def test_synthetic_instances_semantic_and_panoptic_agree_pixelwise() -> None:
    ds = build_synthetic_panoptic(_syn(num_samples=60, num_shapes=5), "train")
    thing_of_label = dict(enumerate(ds.thing_ids, start=1))
    stuff_index = {cat: s for s, cat in enumerate(ds.stuff_ids)}
    S = ds.num_stuff
    seen_crowd = seen_void = seen_touching = 0
    seen_categories: set[int] = set()
    for i in range(len(ds)):
        image, t = ds[i]
        height, width = t["semantic"].shape
        assert image.dtype == torch.float32 and image.min() >= 0.0 and image.max() <= 1.0
        masks, labels, boxes = t["masks"].bool(), t["labels"], t["boxes"]
        assert t["image_id"] == i + 1 and masks.shape == (len(labels), height, width) and len(labels) >= 1
        assert t["masks"].dtype == torch.uint8 and int(masks.sum(0).max()) <= 1  # disjoint visible parts
        assert t["iscrowd"].tolist() == [0] * len(labels) and t["area"].tolist() == masks.sum((1, 2)).float().tolist()
        cat, inst = t["panoptic"][..., 0], t["panoptic"][..., 1]
        for k, (mask, label, box) in enumerate(zip(masks, labels.tolist(), boxes.tolist())):
            rows, cols = torch.nonzero(mask, as_tuple=True)
            assert box == [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
            assert torch.equal(inst == k + 1, mask)  # instance id = row in masks + 1, nowhere else
            assert bool((cat[mask] == thing_of_label[label]).all()) and bool((t["semantic"][mask] == S).all())
        things = masks.any(0)
        is_thing_cat = torch.isin(cat, torch.tensor(ds.thing_ids))
        assert torch.equal(is_thing_cat, things) and bool((inst[~things] == 0).all())
        for cat_id, s in stuff_index.items():  # stuff: panoptic category <-> semantic index
            assert torch.equal(cat == cat_id, t["semantic"] == s)
        crowd = (t["semantic"] == S) & ~things
        void = t["semantic"] == 255
        assert torch.equal(cat == 0, crowd | void) and bool((inst[crowd | void] == 0).all())
        # crowd pixels are the scene's iscrowd segments, exactly
        scene = ds.scene(i)
        crowd_ids = [s["id"] for s in scene.segments if s["iscrowd"]]
        assert torch.equal(crowd, torch.from_numpy(np.isin(scene.ids, crowd_ids)))
        assert torch.equal(void, torch.from_numpy(scene.ids == 0))
        seen_crowd += bool(crowd.any())
        seen_void += bool(void.any())
        seen_categories |= set(cat.unique().tolist())
        dilated = torch.nn.functional.max_pool2d(masks[None].float(), 3, 1, 1)[0].bool()
        seen_touching += any(bool((dilated[a] & masks[b]).any()) for a in range(len(masks)) for b in range(a))
    assert seen_crowd >= 5 and seen_void >= 10 and seen_touching >= 5
    assert seen_categories == {0, *ds.thing_ids, *ds.stuff_ids}


def test_synthetic_sample_is_fast() -> None:
    ds = build_synthetic_panoptic(_syn(image_size=64), "train")
    ds[0]
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    assert (time.perf_counter() - start) / len(ds) < 0.05  # ~4 ms on one core; generous for a loaded CI
