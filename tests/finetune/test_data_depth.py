"""Depth datasets: NYU split files, depth folders (16-bit PNG / .npy) and ray-cast synthetic scenes.

Expected depths are written out by hand (png value / 1000, analytic ray intersections), never
computed with the code under test.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dysample_swap.finetune.data.common import DatasetError, normalize_image
from dysample_swap.finetune.data.depth_folder import build_depth_folder
from dysample_swap.finetune.data.nyu import EIGEN_CROP, build_nyu, eigen_crop_mask
from dysample_swap.finetune.data.synthetic_depth import (
    Box,
    DepthScene,
    Plane,
    Sphere,
    SyntheticDepth,
    build_synthetic_depth,
    render_depth,
)

# ---------------------------------------------------------------------------------------- helpers


def _png16(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)


def _rgb(path: Path, height: int, width: int, offset: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = ((np.arange(height * width * 3).reshape(height, width, 3) * 7 + offset) % 256).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _load_all(ds: torch.utils.data.Dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [ds[i] for i in range(len(ds))]  # type: ignore[arg-type]


#: 4x6 depth PNG (millimetres) and the metres it must read as.
_MM = np.array(
    [
        [0, 2500, 1000, 500, 1250, 3750],
        [2500, 0, 65535, 1, 8000, 9999],
        [500, 500, 500, 500, 500, 500],
        [0, 0, 0, 0, 0, 10000],
    ]
)
_METRES = [
    [0.0, 2.5, 1.0, 0.5, 1.25, 3.75],
    [2.5, 0.0, 65.535, 0.001, 8.0, 9.999],
    [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    [0.0, 0.0, 0.0, 0.0, 0.0, 10.0],
]


def test_pil_writes_and_reads_16bit_png_exactly(tmp_path: Path) -> None:
    _png16(tmp_path / "d.png", _MM)
    with Image.open(tmp_path / "d.png") as img:
        assert img.mode == "I;16"
        assert np.array_equal(np.asarray(img), _MM)


# ------------------------------------------------------------------------------------------- NYU


def _nyu_root(tmp_path: Path, lines: list[str], list_name: str = "nyu_train.txt") -> Path:
    """Toolbox layout: scenes under ROOT, list file in ROOT."""
    _rgb(tmp_path / "kitchen_0028b" / "rgb_00045.png", 4, 6)
    _png16(tmp_path / "kitchen_0028b" / "sync_depth_00045.png", _MM)
    _rgb(tmp_path / "bathroom" / "rgb_00001.jpg", 4, 6, offset=3)
    _png16(tmp_path / "bathroom" / "sync_depth_00001.png", np.full((4, 6), 1500))
    (tmp_path / list_name).write_text("\n".join(lines) + "\n")
    return tmp_path


_NYU_LINES = [
    "/kitchen_0028b/rgb_00045.png /kitchen_0028b/sync_depth_00045.png 518.8579",
    "bathroom/rgb_00001.jpg bathroom/sync_depth_00001.png 518.8579",
    "/kitchen_0028b/rgb_00099.png None 518.8579",
]


def test_nyu_reads_exact_metres_keeps_zero_and_skips_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _nyu_root(tmp_path, _NYU_LINES)
    pixels = np.asarray(Image.open(root / "kitchen_0028b" / "rgb_00045.png"))
    with caplog.at_level("WARNING"):
        ds = build_nyu({"format": "nyu", "root": str(root)}, "train")
    assert "skipped 1 line" in caplog.text and ds.skipped_lines == 1
    assert len(ds) == 2
    # sorted by image path, as the toolbox does: bathroom before kitchen
    assert [p[0].name for p in ds.pairs] == ["rgb_00001.jpg", "rgb_00045.png"]
    assert ds.num_classes == 1 and ds.class_names == ["depth"]
    assert (ds.min_depth, ds.max_depth, ds.eval_crop) == (1e-3, 10.0, "eigen")
    image, depth = ds[1]
    assert depth.dtype == torch.float32 and tuple(depth.shape) == (4, 6)
    assert torch.equal(depth, torch.tensor(_METRES, dtype=torch.float32))
    assert depth[0, 0].item() == 0.0 and depth[0, 1].item() == 2.5
    assert torch.allclose(image, normalize_image(Image.fromarray(pixels)))
    _, depth_b = ds[0]
    assert torch.equal(depth_b, torch.full((4, 6), 1.5))


def test_nyu_depth_scale_max_samples_and_split_template(tmp_path: Path) -> None:
    root = _nyu_root(tmp_path, _NYU_LINES, list_name="my_val.txt")
    cfg = {"format": "nyu", "root": str(root), "split_file": "my_{split}.txt", "depth_scale": 100.0, "max_samples": 1}
    ds = build_nyu(cfg, "val")
    assert len(ds) == 1 and ds.pairs[0][0].name == "rgb_00045.png"  # first line of the file
    assert ds[0][1][0, 1].item() == 25.0  # 2500 / 100


def test_nyu_root_mapping_for_bts_layout(tmp_path: Path) -> None:
    _nyu_root(tmp_path / "sync", _NYU_LINES[:1], list_name="train_list.txt")
    _nyu_root(tmp_path / "official_splits" / "test", _NYU_LINES[1:2], list_name="test_list.txt")
    root = {"train": str(tmp_path / "sync"), "val": str(tmp_path / "official_splits" / "test")}
    train = build_nyu({"format": "nyu", "root": root, "split_file": "train_list.txt"}, "train")
    val = build_nyu(
        {"format": "nyu", "root": root, "split_file": str(tmp_path / "official_splits/test/test_list.txt")}, "val"
    )
    assert train.pairs[0][0].parent.parent == tmp_path / "sync"
    assert val.pairs[0][0].name == "rgb_00001.jpg"


def test_nyu_train_resize_is_nearest_val_keeps_native_depth(tmp_path: Path) -> None:
    mm = np.full((8, 12), 1000)
    mm[:, 6:] = 3000
    mm[0:2, 0:2] = 0
    for split_name in ("nyu_train.txt", "nyu_test.txt"):
        _rgb(tmp_path / "s" / "rgb_0.png", 8, 12)
        _png16(tmp_path / "s" / "d_0.png", mm)
        (tmp_path / split_name).write_text("/s/rgb_0.png /s/d_0.png 518.8579\n")
    cfg = {"format": "nyu", "root": str(tmp_path), "image_size": [4, 6]}
    image, depth = build_nyu(cfg, "train")[0]
    assert tuple(image.shape) == (3, 4, 6) and tuple(depth.shape) == (4, 6)
    assert set(depth.flatten().tolist()) <= {0.0, 1.0, 3.0}  # nearest: no depth invented at the edges
    assert torch.equal(depth[2:, :3], torch.ones(2, 3)) and torch.equal(depth[:2, 3:], torch.full((2, 3), 3.0))
    image, depth = build_nyu(cfg, "val")[0]
    assert tuple(image.shape) == (3, 4, 6) and tuple(depth.shape) == (8, 12)
    assert depth[0, 0].item() == 0.0 and depth[0, 11].item() == 3.0 and depth[7, 0].item() == 1.0
    image, depth = build_nyu({"format": "nyu", "root": str(tmp_path)}, "train")[0]  # image_size null: native
    assert tuple(image.shape) == (3, 8, 12) and tuple(depth.shape) == (8, 12)


@pytest.mark.parametrize("case", ["8bit", "rgb_depth", "missing", "malformed", "bad_focal", "size", "no_split_file"])
def test_nyu_errors_name_the_file(tmp_path: Path, case: str) -> None:
    lines = list(_NYU_LINES[:2])
    culprit = "sync_depth_00045.png"
    expect = ["sync_depth_00045.png"]
    if case == "missing":
        lines[1] = "bathroom/rgb_00777.jpg bathroom/sync_depth_00001.png 518.8579"
        expect = ["rgb_00777.jpg", "line 2", "missing"]
    elif case == "malformed":
        lines.append("/kitchen_0028b/rgb_00045.png")
        expect = ["nyu_train.txt", "line 3", "rgb_path depth_path focal"]
    elif case == "bad_focal":
        lines.insert(0, "/kitchen 0028b/rgb_00045.png /kitchen_0028b/sync_depth_00045.png 518.8579")
        expect = ["nyu_train.txt", "line 1"]
    root = _nyu_root(tmp_path, lines)
    depth_png = root / "kitchen_0028b" / culprit
    if case == "8bit":
        Image.fromarray(np.full((4, 6), 25, np.uint8)).save(depth_png)
        expect = [str(depth_png), "16-bit", "'L'", "depth_scale", "millimetres"]
    elif case == "rgb_depth":
        Image.new("RGB", (6, 4)).save(depth_png)
        expect = [str(depth_png), "16-bit", "'RGB'"]
    elif case == "size":
        _png16(depth_png, np.ones((5, 6)))
        expect = [str(depth_png), "6x5", "6x4", "rgb_00045.png", "same size"]
    elif case == "no_split_file":
        (root / "nyu_train.txt").unlink()
        expect = [str(root / "nyu_train.txt"), "split file not found", "data.split_file"]
    with pytest.raises(DatasetError) as err:
        _load_all(build_nyu({"format": "nyu", "root": str(root)}, "train"))
    message = str(err.value)
    assert "\n" not in message
    for part in expect:
        assert part in message, (part, message)


def test_nyu_rejects_unknown_keys_and_bad_max_samples(tmp_path: Path) -> None:
    root = _nyu_root(tmp_path, _NYU_LINES)
    with pytest.raises(KeyError, match="did you mean 'depth_scale'"):
        build_nyu({"format": "nyu", "root": str(root), "depth_scal": 1000}, "train")
    with pytest.raises(ValueError, match="max_samples"):
        build_nyu({"format": "nyu", "root": str(root), "max_samples": 0}, "train")


def test_eigen_crop_is_the_toolbox_window() -> None:
    assert EIGEN_CROP == (45, 471, 41, 601)
    mask = eigen_crop_mask(480, 640)
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    assert (rows[0].item(), rows[-1].item(), cols[0].item(), cols[-1].item()) == (45, 470, 41, 600)
    assert int(mask.sum()) == 426 * 560


# ---------------------------------------------------------------------------------- depth_folder


def _folder_pair(base: Path, stem: str, depth: np.ndarray, suffix: str, height: int = 4, width: int = 6) -> np.ndarray:
    pixels = _rgb(base / "images" / f"{stem}.png", height, width)
    (base / "depth").mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        _png16(base / "depth" / f"{stem}.png", depth)
    else:
        np.save(base / "depth" / f"{stem}.npy", depth)
    return pixels


def _dcfg(root: Path, **kw: object) -> dict[str, object]:
    return {"format": "depth_folder", "root": str(root), "image_size": [4, 6], **kw}


def test_depth_folder_png_and_npy_exact_metres(tmp_path: Path) -> None:
    npy = np.array([[0.0, 1.5, np.nan, np.inf, -np.inf, 2.0]] * 4, dtype=np.float32)
    pixels = _folder_pair(tmp_path / "train", "a", _MM, ".png")
    _folder_pair(tmp_path / "train", "b", npy, ".npy")
    _folder_pair(tmp_path / "val", "c", _MM, ".png")
    ds = build_depth_folder(_dcfg(tmp_path), "train")
    assert len(ds) == 2 and ds.num_classes == 1 and ds.class_names == ["depth"]
    assert (ds.min_depth, ds.max_depth, ds.eval_crop) == (1e-3, 10.0, None)
    image, depth = ds[0]
    assert torch.equal(depth, torch.tensor(_METRES, dtype=torch.float32))
    assert torch.allclose(image, normalize_image(Image.fromarray(pixels)))
    _, depth = ds[1]  # .npy holds metres (scale 1.0); NaN / inf -> 0 = no measurement
    assert depth[0].tolist() == [0.0, 1.5, 0.0, 0.0, 0.0, 2.0]
    scaled = build_depth_folder(_dcfg(tmp_path, depth_scale=100.0, max_depth=80.0), "train")
    assert scaled[0][1][0, 1].item() == 25.0 and scaled[1][1][0, 5].item() == pytest.approx(0.02, rel=1e-6)
    assert scaled.max_depth == 80.0
    assert len(build_depth_folder(_dcfg(tmp_path), "val")) == 1


def test_depth_folder_train_nearest_val_native(tmp_path: Path) -> None:
    depth = np.full((8, 12), 1.0, np.float32)
    depth[:, 6:] = 4.0
    depth[:4, :] = 0.0
    for split in ("train", "val"):
        _folder_pair(tmp_path / split, "a", depth, ".npy", 8, 12)
    image, out = build_depth_folder(_dcfg(tmp_path), "train")[0]
    assert tuple(image.shape) == (3, 4, 6) and tuple(out.shape) == (4, 6)
    assert out.tolist() == [[0.0] * 6, [0.0] * 6, [1.0, 1.0, 1.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0, 4.0, 4.0, 4.0]]
    image, out = build_depth_folder(_dcfg(tmp_path), "val")[0]
    assert tuple(image.shape) == (3, 4, 6) and tuple(out.shape) == (8, 12)
    assert torch.equal(out, torch.from_numpy(depth))


def test_depth_folder_layout_b_split_is_deterministic_disjoint_complete(tmp_path: Path) -> None:
    for i in range(10):
        _folder_pair(tmp_path, f"{i:02d}", np.full((4, 6), 1000 + i), ".png")
    train = build_depth_folder(_dcfg(tmp_path, val_fraction=0.3, seed=1), "train")
    val = build_depth_folder(_dcfg(tmp_path, val_fraction=0.3, seed=1), "val")
    train_stems = {p[0].stem for p in train.pairs}
    val_stems = {p[0].stem for p in val.pairs}
    assert len(val_stems) == 3 and not train_stems & val_stems and len(train_stems | val_stems) == 10
    assert {p[0].stem for p in build_depth_folder(_dcfg(tmp_path, val_fraction=0.3, seed=1), "val").pairs} == val_stems


@pytest.mark.parametrize(
    "case", ["8bit", "no_depth", "no_image", "both_suffixes", "size", "negative_npy", "shape_npy", "missing_split"]
)
def test_depth_folder_errors_name_the_file(tmp_path: Path, case: str) -> None:
    base = tmp_path / "train"
    _folder_pair(base, "a", np.full((4, 6), 1000), ".png")
    _folder_pair(tmp_path / "val", "v", np.full((4, 6), 1000), ".png")
    if case == "8bit":
        culprit = base / "depth" / "b.png"
        _folder_pair(base, "b", np.zeros((4, 6)), ".png")
        Image.fromarray(np.full((4, 6), 9, np.uint8)).save(culprit)
        expect = [str(culprit), "16-bit", "'L'", "8-bit"]
    elif case == "no_depth":
        culprit = base / "images" / "b.png"
        _rgb(culprit, 4, 6)
        expect = [str(culprit), "no depth map", "b.png"]
    elif case == "no_image":
        culprit = base / "depth" / "b.npy"
        np.save(culprit, np.ones((4, 6), np.float32))
        expect = [str(culprit), "without an image"]
    elif case == "both_suffixes":
        np.save(base / "depth" / "a.npy", np.ones((4, 6), np.float32))
        expect = [str(base / "depth"), "two depth maps", "'a'"]
    elif case == "size":
        culprit = base / "depth" / "b.npy"
        _folder_pair(base, "b", np.ones((5, 6), np.float32), ".npy")
        expect = [str(culprit), "6x5", "6x4", "same size"]
    elif case == "negative_npy":
        culprit = base / "depth" / "b.npy"
        _folder_pair(base, "b", np.full((4, 6), -1.0, np.float32), ".npy")
        expect = [str(culprit), "negative"]
    elif case == "shape_npy":
        culprit = base / "depth" / "b.npy"
        _folder_pair(base, "b", np.ones((2, 4, 6), np.float32), ".npy")
        expect = [str(culprit), "(2, 4, 6)", "[H, W]"]
    else:
        (tmp_path / "val" / "images" / "v.png").unlink()
        (tmp_path / "val" / "depth" / "v.png").unlink()
        (tmp_path / "val" / "images").rmdir()
        culprit = tmp_path / "val" / "images"
        expect = [str(culprit), "images directory not found"]
    split = "val" if case == "missing_split" else "train"
    with pytest.raises(DatasetError) as err:
        _load_all(build_depth_folder(_dcfg(tmp_path), split))
    message = str(err.value)
    assert "\n" not in message
    for part in expect:
        assert part in message, (part, message)


# ------------------------------------------------------------------------------------- synthetic

WALL4 = Plane((0.0, 0.0, 1.0), 4.0)


def test_fronto_parallel_wall_gives_z_depth_not_ray_length() -> None:
    _, depth = render_depth(DepthScene(planes=[WALL4]), 16, 24, focal=10.0)
    # ray length at the corner would be 4 * sqrt(1 + 1.15^2 + 0.75^2) > 4; z-depth is 4 everywhere
    assert depth.dtype == np.float32 and (depth == 4.0).all()


def test_sphere_on_the_optical_axis() -> None:
    scene = DepthScene(planes=[Plane((0.0, 0.0, 1.0), 8.0)], spheres=[Sphere((0.0, 0.0, 5.0), 1.0)])
    _, depth = render_depth(scene, 33, 33, focal=10.0)  # pixel 16 is on the axis; pixel 16 + k has x/z = k / 10
    assert depth[16, 16] == pytest.approx(4.0, abs=1e-6)  # cz - r
    # ray (0.2, 0, 1): |t d - c|^2 = 1 -> 1.04 t^2 - 10 t + 24 = 0 -> t = (5 - sqrt(25 - 24.96)) / 1.04 = 4.8 / 1.04
    assert depth[16, 18] == pytest.approx(4.8 / 1.04, abs=1e-5)
    assert depth[18, 16] == pytest.approx(4.8 / 1.04, abs=1e-5)
    # ray (0.3, 0, 1) passes the sphere (tan of its angular radius is 0.2041): it sees the wall at z = 8
    assert depth[16, 19] == 8.0 and depth[16, 13] == 8.0


def test_box_front_and_side_faces() -> None:
    wall = Plane((0.0, 0.0, 1.0), 9.0)
    _, depth = render_depth(DepthScene(planes=[wall], boxes=[Box((-1.0, -1.0, 3.0), (1.0, 1.0, 4.0))]), 32, 32, 10.0)
    assert depth[15, 15] == 3.0 and depth[16, 17] == 3.0  # front face z = 3
    assert depth[0, 0] == 9.0  # ray (-1.55, -1.55, 1) misses the box
    # box right of the axis: ray (0.25, -0.05, 1) (pixel 18, row 15) misses the front face (x = 0.75 < 1 at z = 3)
    # and enters through the side x = 1 at t = 1 / 0.25 = 4
    _, depth = render_depth(DepthScene(planes=[wall], boxes=[Box((1.0, -1.0, 3.0), (2.0, 1.0, 6.0))]), 32, 32, 10.0)
    assert depth[15, 18] == 4.0


def test_floor_plane_depth_by_row_and_no_hit_is_zero() -> None:
    _, depth = render_depth(DepthScene(planes=[Plane((0.0, 1.0, 0.0), 1.5)]), 33, 5, focal=10.0)
    assert (depth[:17] == 0).all()  # rows at or above the horizon never reach the floor
    for row in range(17, 33):  # ray y = (row - 16) / 10 -> z = 1.5 / y
        assert depth[row, 2] == pytest.approx(15.0 / (row - 16), rel=1e-6)


def test_synthetic_depth_is_deterministic_per_seed_split_index() -> None:
    a = SyntheticDepth(4, (24, 32), seed=3, split="train")
    b = SyntheticDepth(4, (24, 32), seed=3, split="train")
    for i in range(4):
        (xa, da), (xb, db) = a[i], b[i]
        assert torch.equal(xa, xb) and torch.equal(da, db)
    assert not torch.equal(a[0][1], a[1][1])
    assert not torch.equal(a[0][1], SyntheticDepth(4, (24, 32), seed=4, split="train")[0][1])
    assert not torch.equal(a[0][1], SyntheticDepth(4, (24, 32), seed=3, split="val")[0][1])
    assert not torch.equal(a[3][1], b[2][1])
    with pytest.raises(IndexError):
        a[4]


@pytest.mark.parametrize(("size", "min_depth", "max_depth"), [((64, 64), 1e-3, 10.0), ((20, 36), 2.0, 5.0)])
def test_synthetic_depth_range_and_hole(size: tuple[int, int], min_depth: float, max_depth: float) -> None:
    ds = SyntheticDepth(12, size, seed=0, split="val", min_depth=min_depth, max_depth=max_depth)
    assert (ds.min_depth, ds.max_depth, ds.eval_crop, ds.num_classes) == (min_depth, max_depth, None, 1)
    spread = []
    for i in range(len(ds)):
        image, depth = ds[i]
        assert tuple(image.shape) == (3, *size) and tuple(depth.shape) == size and depth.dtype == torch.float32
        valid = depth > 0
        holes = (~valid).float().mean().item()
        assert 0.0 < holes <= 0.05
        assert ((depth[valid] > min_depth) & (depth[valid] < max_depth)).all()
        spread.append(depth[valid].max().item() - depth[valid].min().item())
        assert image.std().item() > 0.1
    assert min(spread) > 0.1 * (max_depth - min_depth)  # scenes have depth structure, not one flat wall


def test_synthetic_64px_sample_is_fast() -> None:
    ds = SyntheticDepth(20, (64, 64), seed=0, split="train")
    ds[0]
    start = time.perf_counter()
    for i in range(20):
        ds[i]
    assert (time.perf_counter() - start) / 20 < 0.025  # ~2-4 ms on one core; generous for a shared machine


def test_build_synthetic_depth_keys() -> None:
    cfg: Mapping[str, object] = {"format": "synthetic", "task": "depth", "num_samples": 10, "image_size": [16, 24]}
    train, val = build_synthetic_depth(cfg, "train"), build_synthetic_depth(cfg, "val")
    assert (len(train), len(val), train.image_size) == (10, 8, (16, 24))
    assert len(build_synthetic_depth({**cfg, "num_val_samples": 3, "max_depth": 20.0}, "val")) == 3
    with pytest.raises(ValueError, match="task must be 'depth'"):
        build_synthetic_depth({**cfg, "task": "segmentation"}, "train")
    with pytest.raises(KeyError, match="num_classes"):
        build_synthetic_depth({**cfg, "num_classes": 3}, "train")
    with pytest.raises(ValueError, match="min_depth"):
        build_synthetic_depth({**cfg, "min_depth": 5.0, "max_depth": 1.0}, "train")
