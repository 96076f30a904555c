"""`dysample-swap compare` with several arms and seeds: same start per seed, summary statistics,
table, plots, offset pictures, worker processes. A tiny two-stage decoder keeps it to seconds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dysample_swap.cli import main
from dysample_swap.finetune.config import build_config, known_upsamplers, load_config
from dysample_swap.finetune.metrics import SegmentationMetrics
from dysample_swap.finetune.runner import run_compare

PNG = b"\x89PNG\r\n\x1a\n"


class TinyNet(nn.Module):
    """Two stride-2 convolutions, then nearest x2 and bilinear x2 upsampling, then a head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear")
        self.head = nn.Conv2d(16, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up2(torch.relu(self.mid(self.up1(self.down(x))))))


class FusedNet(nn.Module):
    """A tiny U-Net: the first x2 upsampling is concatenated with the stride-2 feature (its guide); the last is not."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())
        self.fuse = nn.Conv2d(64, 32, 3, padding=1)
        self.head = nn.Conv2d(32, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        y = torch.cat([F.interpolate(self.enc2(skip), scale_factor=2.0, mode="bilinear"), skip], dim=1)
        return self.head(F.interpolate(torch.relu(self.fuse(y)), scale_factor=2.0, mode="bilinear"))


def fused_net(num_classes: int) -> nn.Module:
    """The model spec ``test_compare:fused_net:num_classes=N`` builds this."""
    return FusedNet(num_classes)


def tiny_net(num_classes: int) -> nn.Module:
    """The model spec ``test_compare:tiny_net:num_classes=N`` builds this."""
    return TinyNet(num_classes)


TINY = [
    "model.spec=test_compare:tiny_net:num_classes={num_classes}",
    "data.image_size=24",
    "data.num_samples=12",
    "data.num_val_samples=6",
    "train.batch_size=4",
    "train.max_steps=3",
    "train.lr=0.01",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=0",
    "eval.batch_size=6",
    "eval.num_images=2",
    "train.progress=never",
    "swap.policy.verbose=false",
    "compare.resamples=200",
]


def _argv(*overrides: str) -> list[str]:
    return [arg for value in (*TINY, *overrides) for arg in ("--set", value)]


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def _first_loss(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]


@pytest.mark.slow
def test_three_arms_two_seeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    status = main(
        ["compare", "demo", "--arms", "original,dysample,dysample+", "--seeds", "2", "--out", str(out), *_argv()]
    )
    stdout = capsys.readouterr().out
    assert status == 0
    arms = ["original", "dysample", "dysample+"]

    # Every run in its own directory, with what the summary is built from.
    for arm in arms:
        for seed in (0, 1):
            run = out / arm / f"seed{seed}"
            for name in ("summary.json", "metrics.jsonl", "config.yaml", "per_image_counts.npy", "checkpoints/last.pt"):
                assert (run / name).is_file(), run / name
    # Per seed: the same initial weights and batches in every arm (the swap starts out exact,
    # so the first loss, computed before any update, agrees); another seed starts elsewhere.
    for seed in (0, 1):
        losses = [_first_loss(out / arm / f"seed{seed}") for arm in arms]
        assert losses == pytest.approx([losses[0]] * 3, rel=1e-5)
    assert _first_loss(out / "original" / "seed0") != pytest.approx(_first_loss(out / "original" / "seed1"))

    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["arms"]) == arms and summary["seeds"] == [0, 1]
    for arm in arms:
        record = summary["arms"][arm]
        runs = [json.loads((out / arm / f"seed{s}" / "summary.json").read_text()) for s in (0, 1)]
        miou = record["metrics"]["mIoU"]
        assert miou["values"] == [r["metrics"]["mIoU"] for r in runs]
        assert miou["mean"] == pytest.approx(statistics.mean(miou["values"]), abs=1e-4)
        assert miou["std"] == pytest.approx(statistics.stdev(miou["values"]), abs=1e-4)
        for key in ("train_img_per_s", "peak_memory_mb"):
            assert len(record[key]["values"]) == 2 and record[key]["mean"] > 0
        assert record["swapped_sites"] == (0 if arm == "original" else 2)
        assert record["runs"] == {"0": f"{arm}/seed0", "1": f"{arm}/seed1"}
        # The per-image statistics add up to each run's dataset-level metrics.
        counts = np.load(out / arm / "seed0" / "per_image_counts.npy")
        scores = SegmentationMetrics(6).scores(counts.sum(0))
        assert float(scores["mIoU"]) == pytest.approx(runs[0]["metrics"]["mIoU"])
        assert counts.shape == (6, 30)

    diffs = summary["differences"]
    assert diffs["method"] == "paired bootstrap over validation images and seeds"
    assert (diffs["reference"], diffs["level"], diffs["resamples"], diffs["images"]) == ("original", 0.95, 200, 6)
    assert sorted(diffs["arms"]) == ["dysample", "dysample+"]
    for arm in ("dysample", "dysample+"):
        d = diffs["arms"][arm]["mIoU"]
        expected = (
            summary["arms"][arm]["metrics"]["mIoU"]["mean"] - summary["arms"]["original"]["metrics"]["mIoU"]["mean"]
        )
        assert d["mean"] == pytest.approx(expected, abs=2e-4)
        assert d["low"] <= d["high"] and d["excludes_zero"] == (d["low"] > 0 or d["high"] < 0)

    # The printed tables: mean ± std per arm, intervals against the original, how they were made.
    lines = stdout.splitlines()
    assert next(line for line in lines if line.startswith("metric")).split() == ["metric", *arms]
    assert next(line for line in lines if line.startswith("difference")).split() == [
        "difference",
        "dysample",
        "-",
        "original",
        "dysample+",
        "-",
        "original",
    ]
    miou_rows = [line for line in lines if line.startswith("mIoU ")]
    assert "±" in miou_rows[0] and "[" in miou_rows[1]
    assert any("paired bootstrap over validation images and seeds (200 resamples)" in line for line in lines)
    assert any(line.startswith(("peak memory (MB)", "train img/s")) for line in lines)
    assert "[6/6] dysample+, seed 1" in stdout  # progress, one line per run

    for name in ("curves.png", "predictions.png", "offsets_dysample.png", "offsets_dysample+.png"):
        assert _is_png(out / name), name
    assert not (out / "offsets_original.png").exists()


def test_arms_are_checked(capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "demo", "--arms", "dysample,dysample+", *_argv()]) == 2
    assert "'original' (the reference" in capsys.readouterr().err
    assert main(["compare", "demo", "--arms", "original,dysampel", *_argv()]) == 2
    assert "unknown upsampler 'dysampel' (did you mean 'dysample'?)" in capsys.readouterr().err
    assert load_config("demo", ["compare.arms=original, dysample"]).compare.arms == ["original", "dysample"]


@pytest.mark.slow
def test_worker_processes_give_the_sequential_result(tmp_path: Path) -> None:
    cfg = build_config(load_config("demo").to_dict(), [*TINY, "compare.arms=[original,dysample+]"])
    inline = run_compare(cfg, tmp_path / "inline")
    pooled = run_compare(build_config(cfg.to_dict(), ["compare.jobs=2"]), tmp_path / "pooled")
    for arm in ("original", "dysample+"):
        a, b = inline["arms"][arm]["metrics"], pooled["arms"][arm]["metrics"]
        assert [a[m]["mean"] for m in a] == pytest.approx([b[m]["mean"] for m in a], abs=2e-3, nan_ok=True)
        assert _first_loss(tmp_path / "inline" / arm / "seed0") == pytest.approx(
            _first_loss(tmp_path / "pooled" / arm / "seed0"), rel=1e-5
        )


def _swap_accepts(name: str) -> bool:
    from dysample_swap import swap_upsamplers

    if name not in known_upsamplers():
        return False
    try:
        swap_upsamplers(TinyNet(2), name, example_inputs=(torch.rand(1, 3, 16, 16),), verbose=False)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("rival", ["carafe", "deconv", "pixelshuffle", "bilinear"])
def test_a_rival_upsampler_is_an_arm_like_any_other(rival: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not _swap_accepts(rival):
        pytest.skip(f"swap_upsamplers does not take {rival!r} in this checkout")
    status = main(
        ["compare", "demo", "--arms", f"original,{rival}", "--out", str(tmp_path), *_argv("train.max_steps=1")]
    )
    assert status == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"][rival]["swapped_sites"] == 2 and rival in summary["differences"]["arms"]
    assert not (tmp_path / f"offsets_{rival}.png").exists()  # no DySample: nothing to draw


def test_a_guided_upsampler_is_an_arm(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """FADE at the fused site only (the unfused one is skipped, with its reason), DySample+ at both."""
    spec = "model.spec=test_compare:fused_net:num_classes={num_classes}"
    argv = ["compare", "demo", "--arms", "original,dysample+,fade", "--out", str(tmp_path)]
    status = main([*argv, *_argv("train.max_steps=1", spec)])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"]["dysample+"]["swapped_sites"] == 2 and summary["arms"]["fade"]["swapped_sites"] == 1
    assert {"dysample+", "fade"} <= set(summary["differences"]["arms"])


@pytest.mark.slow
def test_a_guided_arm_on_the_detection_task(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """FADE takes Faster R-CNN's three FPN laterals as its guides, through the detection recipe's own loop."""
    argv = ["compare", "fasterrcnn_coco", "--preset", "cpu", "--arms", "original,fade", "--out", str(tmp_path)]
    assert main([*argv, "--set", "train.progress=never"]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"]["original"]["swapped_sites"] == 0 and summary["arms"]["fade"]["swapped_sites"] == 3
    assert "fade" in summary["differences"]["arms"]


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_an_occupied_out_is_refused_unless_resume_or_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    quick = ["train.max_steps=2", "eval.num_images=0", "compare.visualize=false"]
    assert main(["compare", "demo", "--out", str(out), *_argv(*quick)]) == 0
    first = _files(out)
    capsys.readouterr()

    assert main(["compare", "demo", "--out", str(out), *_argv(*quick)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out} already holds a comparison" in err
    assert "--resume" in err and "--overwrite" in err
    # Changed settings (the budget too: every arm of a comparison shares one) are refused.
    for change, said in (
        ("train.lr=0.5", "train.lr is 0.01 in the run but 0.5 here"),
        ("train.max_steps=3", "train.max_steps is 2 in the run but 3 here"),
    ):
        assert main(["compare", "demo", "--out", str(out), "--resume", *_argv(*quick, change)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err
    assert _files(out) == first  # nothing deleted or rewritten

    # --resume with everything finished keeps every run as it was.
    assert main(["compare", "demo", "--out", str(out), "--resume", *_argv(*quick)]) == 0
    assert "kept 2 finished run(s)" in capsys.readouterr().out
    again = _files(out)
    runs = [name for name in first if name.startswith(("original/", "dysample+/"))]
    assert runs and {name: again[name] for name in runs} == {name: first[name] for name in runs}


def test_resume_continues_a_comparison_and_overwrite_replaces_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    quick = ["eval.num_images=0", "compare.visualize=false", "train.eval_every=0"]
    # Stopped after 2 of 3 steps (as after Ctrl-C), then resumed with a second seed added.
    assert main(["compare", "demo", "--out", str(out), *_argv(*quick, "train.stop_after=2")]) == 0
    assert main(["compare", "demo", "--out", str(out), "--resume", "--seeds", "2", *_argv(*quick)]) == 0
    stdout = capsys.readouterr().out
    assert "resuming original, seed 0" in stdout and "training dysample+, seed 1" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["steps"] == 3
    # The resumed runs match runs trained without a stop (same seed, same steps).
    assert main(["compare", "demo", "--out", str(tmp_path / "straight"), *_argv(*quick)]) == 0
    for arm in ("original", "dysample+"):
        resumed, straight = out / arm / "seed0", tmp_path / "straight" / arm / "seed0"
        assert (resumed / "metrics.jsonl").read_text().count('"train"') == 3
        assert [
            json.loads(line).get("loss")
            for line in (resumed / "metrics.jsonl").read_text().splitlines()
            if '"train"' in line
        ] == [
            json.loads(line).get("loss")
            for line in (straight / "metrics.jsonl").read_text().splitlines()
            if '"train"' in line
        ]

    stale = out / "original" / "seed1" / "stale.txt"
    stale.write_text("from the replaced comparison")
    assert main(["compare", "demo", "--out", str(out), "--overwrite", *_argv(*quick)]) == 0
    assert not stale.exists() and json.loads((out / "summary.json").read_text())["seeds"] == [0]
