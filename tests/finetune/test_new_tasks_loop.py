"""The depth and panoptic recipes on files in the real formats, with one-line errors for bad data,
exact resume, bf16 autocast, and two-process DDP (MaskFormer too) whose metrics equal one process's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dysample_swap.cli import main
from dysample_swap.finetune.checkpoint import load_checkpoint

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_data_panoptic import SEGMENTS_42  # noqa: E402
from test_data_panoptic import _write as write_coco_panoptic  # noqa: E402

QUIET = ["--set", "train.progress=never", "--set", "swap.policy.verbose=false"]


def _nyu(root: Path, *, eight_bit: bool = False) -> Path:
    """The toolbox's layout: scene folders of 8-bit RGB and 16-bit depth PNGs (mm), two split files."""
    rng = np.random.default_rng(0)
    lines = []
    for k in range(4):
        scene = root / f"scene_{k}"
        scene.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(scene / f"rgb_{k:05d}.jpg")
        depth = rng.integers(500, 9000, (48, 64)).astype(np.uint16)
        depth[:4] = 0  # no measurement
        image = Image.fromarray((depth // 40).astype(np.uint8)) if eight_bit and k == 3 else Image.fromarray(depth)
        image.save(scene / f"sync_depth_{k:05d}.png")
        lines.append(f"/scene_{k}/rgb_{k:05d}.jpg /scene_{k}/sync_depth_{k:05d}.png 518.8579")
    (root / "nyu_train.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "nyu_test.txt").write_text("\n".join(lines[2:]) + "\n")
    return root


def _coco_panoptic(root: Path, **overrides: object) -> Path:
    for split in ("train", "val"):
        write_coco_panoptic(root, split, **overrides)
    return root


@pytest.mark.slow
def test_the_depth_recipe_trains_on_nyu_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _nyu(tmp_path / "nyu")
    data = f"data={{format: nyu, root: {root}, image_size: 64}}"  # DPT takes square inputs; the truth stays 48 x 64
    assert (
        main(["finetune", "nyu_depth_dpt", "--preset", "cpu", "--set", data, *QUIET, "--out", str(tmp_path / "r")]) == 0
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps"] == 2 and 0.0 <= summary["metrics"]["delta1"] <= 1.0 and summary["metrics"]["rmse"] > 0
    assert np.load(tmp_path / "r" / "per_image_counts.npy").shape[0] == 2  # the two test images


def test_an_8_bit_depth_png_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _nyu(tmp_path / "nyu", eight_bit=True)
    data = f"data={{format: nyu, root: {root}, image_size: 64}}"
    assert (
        main(["finetune", "nyu_depth_dpt", "--preset", "cpu", "--set", data, *QUIET, "--out", str(tmp_path / "r")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sync_depth_00003.png" in err and "16-bit" in err


@pytest.mark.slow
def test_the_panoptic_recipe_trains_on_coco_panoptic_files(tmp_path: Path) -> None:
    root = _coco_panoptic(tmp_path / "coco")
    data = f"data={{format: coco_panoptic, root: {root}}}"
    argv = ["finetune", "panoptic_fpn_coco", "--preset", "cpu", "--set", data, "--set", "train.batch_size=2"]
    assert main([*argv, *QUIET, "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps"] == 2 and set(summary["metrics"]) >= {"PQ", "PQ_th", "PQ_st", "SQ", "RQ"}
    config = json.loads(json.dumps(load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["signature"]))
    assert config["num_classes"] == 3 and config["num_stuff"] == 2  # person, dog (+ background); grass, tree


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"categories": [{"id": 184, "name": "tree", "isthing": 0}, {"id": 18, "name": "dog", "isthing": 1}]},
            "segment 131075 has category_id 1, which is not in 'categories'",
        ),
        (
            {
                "annotations": [
                    {"image_id": 42, "file_name": "000042.png", "segments_info": SEGMENTS_42[:3]},
                    {"image_id": 7, "file_name": "000007.png", "segments_info": SEGMENTS_42[:1]},
                ]
            },
            r"000042\.png: segment id\(s\) \[1000, 70000\] are in the PNG but not in segments_info",
        ),
    ],
    ids=["category not in categories", "PNG id not in the JSON"],
)
def test_bad_panoptic_data_is_a_one_line_error(
    overrides: dict, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import re

    root = _coco_panoptic(tmp_path / "coco", **overrides)
    data = f"data={{format: coco_panoptic, root: {root}}}"
    assert (
        main(["finetune", "panoptic_fpn_coco", "--preset", "cpu", "--set", data, *QUIET, "--out", str(tmp_path / "r")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(message, err), err


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["nyu_depth_dpt", "panoptic_fpn_coco"])
def test_an_interrupted_run_resumes_to_the_same_weights(recipe: str, tmp_path: Path) -> None:
    steps = ["--set", "train.max_steps=4"]
    assert main(["finetune", recipe, "--preset", "cpu", *steps, *QUIET, "--out", str(tmp_path / "whole")]) == 0
    stopped = ["finetune", recipe, "--preset", "cpu", *steps, *QUIET, "--out", str(tmp_path / "parts")]
    assert main([*stopped, "--set", "train.stop_after=2"]) == 0
    assert load_checkpoint(tmp_path / "parts" / "checkpoints" / "last.pt")["step"] == 2
    assert main([*stopped, "--resume"]) == 0
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    parts = load_checkpoint(tmp_path / "parts" / "checkpoints" / "last.pt")["model"]
    assert whole.keys() == parts.keys()
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["nyu_depth_dpt", "panoptic_fpn_coco"])
def test_bf16_autocast_trains(recipe: str, tmp_path: Path) -> None:
    argv = ["finetune", recipe, "--preset", "cpu", "--set", "train.amp=bf16", *QUIET, "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert np.isfinite(summary["final_loss"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, headline", [("nyu_depth_dpt", "abs_rel"), ("panoptic_fpn_coco", "PQ"), ("maskformer_ade20k", "mIoU")]
)
def test_two_process_ddp_metrics_equal_one_process(recipe: str, headline: str, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo): the distributed evaluation of 3 validation images (odd, so
    the shards differ in size) equals a one-process evaluation of the checkpoint rank 0 saved."""
    quick = ["--preset", "cpu", "--set", "data.num_val_samples=3", *QUIET]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = [*command, "-m", "dysample_swap.cli", "finetune", recipe, *quick, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # A rank aborted inside the C++ runtime, not in Python (seen once in 14 runs of these tests on
        # the 2-core VM; the cause was not found): run once more, and say so in a warning.
        warnings.warn(
            f"torchrun: a rank aborted without a Python error, ran again:\n{proc.stderr[-1500:]}", stacklevel=1
        )
        shutil.rmtree(tmp_path / "ddp", ignore_errors=True)
        proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
    checkpoint = tmp_path / "ddp" / "checkpoints" / "last.pt"
    assert main(["evaluate", recipe, *quick, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "one")]) == 0
    single = json.loads((tmp_path / "one" / "eval.json").read_text())["metrics"]
    assert single.keys() == summary["metrics"].keys()
    for key, value in single.items():
        assert summary["metrics"][key] == pytest.approx(value, abs=1e-9), key
    assert headline in single
