"""Depth, panoptic and MaskFormer through the whole recipe loop: compare (2 arms x 2 seeds) with
intervals over images and seeds, resume, evaluate and visualize, all from the command line."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from PIL import Image

from dysample_swap.cli import main
from dysample_swap.finetune.stats import IMAGES_AND_SEEDS

CASES = {
    "nyu_depth_dpt": ("dysample+", "abs_rel", ("delta1", "delta2", "delta3", "abs_rel", "rmse", "silog")),
    "panoptic_fpn_coco": ("dysample+", "PQ", ("PQ", "SQ", "RQ", "PQ_th", "PQ_st")),
    "maskformer_ade20k": ("dysample-s+", "mIoU", ("mIoU", "bIoU")),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(CASES))
def test_two_arms_two_seeds_give_intervals_over_images_and_seeds(
    recipe: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    variant, headline, keys = CASES[recipe]
    out = tmp_path / "cmp"
    argv = ["compare", recipe, "--preset", "cpu", "--arms", f"original,{variant}", "--seeds", "2", "--out", str(out)]
    assert main([*argv, "--set", "train.progress=never"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert headline in printed
    summary = json.loads((out / "summary.json").read_text())
    differences = summary["differences"]
    assert differences["method"] == IMAGES_AND_SEEDS and differences["images"] == 2 and differences["seeds"] == 2
    for key in keys:
        interval = differences["arms"][variant][key]
        assert set(interval) >= {"mean", "low", "high", "excludes_zero"}
        # the estimate is the mean over seeds of each seed's difference, from the runs' own summaries
        runs = {
            arm: [json.loads((out / arm / f"seed{s}" / "summary.json").read_text())["metrics"][key] for s in (0, 1)]
            for arm in ("original", variant)
        }
        if None in runs["original"] + runs[variant]:
            continue
        expected = statistics.mean(b - a for a, b in zip(runs["original"], runs[variant]))
        assert interval["mean"] == pytest.approx(expected, abs=1e-4)
        assert interval["low"] is not None and interval["low"] <= interval["mean"] + 1e-9 <= interval["high"] + 2e-9
    assert summary["arms"]["original"]["swapped_sites"] == 0 and summary["arms"][variant]["swapped_sites"] >= 3
    assert (out / "predictions.png").is_file() and (out / "curves.png").is_file()
    assert (out / "original" / "seed0" / "per_image_counts.npy").is_file()

    # resuming a finished comparison keeps every run
    assert main([*argv, "--resume", "--set", "train.progress=never"]) == 0
    assert "kept 4 finished run(s)" in capsys.readouterr().out

    # evaluate a checkpoint of the swapped arm, and draw its offsets
    checkpoint = out / variant / "seed1" / "checkpoints" / "last.pt"
    evaluated = tmp_path / "eval"
    assert main(["evaluate", recipe, "--preset", "cpu", "--checkpoint", str(checkpoint), "--out", str(evaluated)]) == 0
    result = json.loads((evaluated / "eval.json").read_text())
    trained = json.loads((out / variant / "seed1" / "summary.json").read_text())["metrics"]
    assert result["metrics"][headline] == pytest.approx(trained[headline], abs=1e-6)
    assert (evaluated / "predictions.png").is_file()
    image = tmp_path / "image.png"
    Image.new("RGB", (64, 64), (90, 120, 200)).save(image)
    offsets = tmp_path / "offsets.png"
    assert main(["visualize", str(checkpoint), str(image), "--out", str(offsets)]) == 0, capsys.readouterr().err
    assert offsets.stat().st_size > 0
