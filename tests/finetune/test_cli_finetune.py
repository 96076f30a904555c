"""`dysample-swap finetune / evaluate / compare` end to end on tiny synthetic data."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from dysample_swap.cli import main
from dysample_swap.finetune.checkpoint import load_checkpoint
from dysample_swap.surgery import persist as persist_module

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"

#: The demo recipe shrunk to seconds: 32 px images, 16 training samples, batch 4.
TINY_SEG = [
    "data.image_size=32",
    "data.num_samples=16",
    "data.num_val_samples=4",
    "train.batch_size=4",
    "train.max_steps=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.eval_every=1",
    "train.checkpoint_every=1",
    "eval.batch_size=4",
    "eval.num_images=2",
    "train.progress=never",
]

#: torchvision detectors at 64 px with few proposals, so a step takes about a second on CPU.
SMALL_RCNN = (
    "min_size=64,max_size=64,rpn_pre_nms_top_n_train=100,rpn_post_nms_top_n_train=50,"
    "rpn_pre_nms_top_n_test=50,rpn_post_nms_top_n_test=25,box_batch_size_per_image=32,"
    "box_detections_per_img=20,num_classes={num_classes}"
)


def _overrides(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_finetune_resume_and_evaluate_segmentation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    status, stdout, _ = _run(capsys, "finetune", "demo", "--out", str(out), *_overrides(TINY_SEG + ["train.lr=0.002"]))
    assert status == 0
    assert "mIoU" in stdout and "bIoU" in stdout and "train img/s" in stdout
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["lr"] == 0.002 and resolved["data"]["image_size"] == 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arm"] == "dysample+" and summary["swapped_sites"] > 0 and summary["completed"]
    assert summary["peak_memory_mb"] > 0 and summary["added_parameters"] > 0
    assert summary["steps"] == 2 and summary["train_img_per_s"] > 0
    assert set(summary["metrics"]) >= {"mIoU", "bIoU", "pixel_acc"}
    assert _is_png(out / "curves.png") and _is_png(out / "predictions.png")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
    assert [r["step"] for r in records if r["split"] == "val"] == [1, 2]

    # Same --out without --resume: refused, nothing overwritten.
    status, _, err = _run(capsys, "finetune", "demo", "--out", str(out), *_overrides(TINY_SEG))
    assert status == 2 and "already holds a run" in err and "--resume" in err

    # --resume with a bigger budget continues from step 2.
    status, _, _ = _run(
        capsys,
        "finetune",
        "demo",
        "--out",
        str(out),
        "--resume",
        *_overrides(TINY_SEG + ["train.lr=0.002", "train.max_steps=3"]),
    )
    assert status == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 3
    summary = json.loads((out / "summary.json").read_text())

    # evaluate scores the saved model exactly as the end of training did.
    status, stdout, _ = _run(
        capsys,
        "evaluate",
        "demo",
        "--checkpoint",
        str(out / "checkpoints" / "last.pt"),
        "--out",
        str(tmp_path / "ev"),
        *_overrides(TINY_SEG),
    )
    assert status == 0 and "dysample+ (step 3)" in stdout
    evaluated = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert evaluated["metrics"] == pytest.approx(summary["metrics"], abs=1e-9)
    assert _is_png(tmp_path / "ev" / "predictions.png")

    # A checkpoint evaluated with another recipe's model: a clear error. (The upsampler comes
    # from the checkpoint, so any arm of a compare run evaluates with the same recipe.)
    status, _, err = _run(
        capsys,
        "evaluate",
        "demo",
        "--checkpoint",
        str(out / "checkpoints" / "last.pt"),
        *_overrides(TINY_SEG + ["data.num_classes=3"]),
    )
    assert status == 2 and "does not match this recipe" in err
    assert "num_classes is 6 in the checkpoint but 4 here" in err


def test_compare_segmentation_default_arms(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Without --arms: the original model against the recipe's swap.variant, one seed.
    status, stdout, _ = _run(
        capsys, "compare", "demo", "--out", str(tmp_path), *_overrides(TINY_SEG + ["train.checkpoint_every=0"])
    )
    assert status == 0
    header = next(line for line in stdout.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "original", "dysample+"]
    for row in ("mIoU", "bIoU", "train img/s", "peak memory (MB)", "swapped sites"):
        assert any(line.startswith(row) for line in stdout.splitlines()), row
    assert str(tmp_path / "curves.png") in stdout and str(tmp_path / "predictions.png") in stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["arms"]) == ["original", "dysample+"] and summary["seeds"] == [0]
    base, dys = summary["arms"]["original"], summary["arms"]["dysample+"]
    assert base["swapped_sites"] == 0 and dys["swapped_sites"] > 0
    assert dys["parameters"] - base["parameters"] == dys["added_parameters"] > 0
    diff = summary["differences"]["arms"]["dysample+"]["mIoU"]
    assert diff["mean"] == pytest.approx(dys["metrics"]["mIoU"]["mean"] - base["metrics"]["mIoU"]["mean"], abs=2e-4)
    for name in ("original", "dysample+"):
        assert load_checkpoint(tmp_path / name / "seed0" / "checkpoints" / "last.pt")["arm"] == name
    assert _is_png(tmp_path / "curves.png") and _is_png(tmp_path / "predictions.png")
    assert _is_png(tmp_path / "offsets_dysample+.png") and not (tmp_path / "offsets_original.png").exists()
    # Same initial weights and data order, and the swap starts out exact: the first step's loss
    # (computed before any update) is the same in both arms.
    first = [
        json.loads((tmp_path / arm / "seed0" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
        for arm in ("original", "dysample+")
    ]
    assert first[0] == pytest.approx(first[1], rel=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["finetune", "demo", "--set", "train.lrr=1"], "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
        (["compare", "nosuch"], "recipe 'nosuch' not found"),
        (
            ["finetune", "smp_fpn_folder", "--set", "data.root=/nonexistent"],
            "/nonexistent: dataset root directory not found",
        ),
        (["finetune", "demo", "--set", "data.imagesize=32"], "did you mean 'image_size'?"),
        (["evaluate", "demo", "--checkpoint", "/nonexistent.pt"], "checkpoint file not found"),
        (["finetune", "demo", "--resume", "--out", "/nonexistent/run"], "nothing to resume"),
    ],
)
def test_errors_are_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    status, _, err = _run(capsys, *argv)
    assert status == 2
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "dysample_swap.cli",
        "finetune",
        "demo",
        "--out",
        str(out),
        *_overrides(TINY_SEG + ["train.max_steps=100000", "train.eval_every=0", "train.checkpoint_every=0"]),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["step"] >= 2
    assert state["step"] == int(err.split("interrupted at step ")[1].split(";")[0])


def _detection_recipe(tmp_path: Path, task: str, model: str) -> Path:
    recipe = {
        "name": f"tiny_{task}",
        "task": task,
        "model": {"spec": f"torchvision:{model}:{SMALL_RCNN}"},
        "data": {"format": "synthetic", "image_size": 64, "num_samples": 4, "num_val_samples": 2, "num_classes": 2},
        "train": {
            "max_steps": 1,
            "batch_size": 2,
            "optimizer": "sgd",
            "lr": 0.005,
            "schedule": "step",
            "warmup_steps": 1,
            "warmup_ratio": 0.001,
            "log_every": 1,
            "progress": "never",
            "grad_clip": 10.0,
        },
        "eval": {"batch_size": 2, "num_images": 2, "score_threshold": 0.0},
    }
    path = tmp_path / f"tiny_{task}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
def test_compare_detection(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = _detection_recipe(tmp_path, "detection", "fasterrcnn_resnet50_fpn")
    status, stdout, _ = _run(capsys, "compare", str(recipe), "--out", str(tmp_path / "out"))
    assert status == 0
    assert any(line.startswith("bbox/AP ") for line in stdout.splitlines())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["arms"]["dysample+"]["swapped_sites"] == 3  # the FPN's top-down upsampling
    assert "bbox/AP50" in summary["arms"]["original"]["metrics"]
    # COCO AP is not a sum over images: with one seed there is no interval, and the table says so.
    assert summary["differences"]["method"] is None and "no interval" in stdout
    assert _is_png(tmp_path / "out" / "predictions.png")


@pytest.mark.slow
def test_finetune_and_evaluate_instance_segmentation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = _detection_recipe(tmp_path, "instance", "maskrcnn_resnet50_fpn")
    out = tmp_path / "run"
    status, _, _ = _run(capsys, "finetune", str(recipe), "--out", str(out))
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"bbox/AP", "segm/AP"} <= set(summary["metrics"])
    status, stdout, _ = _run(capsys, "evaluate", str(recipe), "--checkpoint", str(out / "checkpoints" / "last.pt"))
    assert status == 0 and "segm/AP" in stdout
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["signature"]["task"] == "instance"


# ---------------------------------------------------------------- damaged runs, changed settings
#: A two-stage tiny decoder (tests/finetune/test_compare.py) at 24 px: a run takes a fraction of a second.
TINY_NET = [
    "model.spec=test_compare:tiny_net:num_classes={num_classes}",
    "data.image_size=24",
    "data.num_samples=8",
    "data.num_val_samples=2",
    "train.batch_size=4",
    "train.max_steps=1",
    "train.lr=0.01",
    "train.log_every=1",
    "eval.batch_size=2",
    "eval.num_images=0",
    "train.progress=never",
    "swap.policy.verbose=false",
]


def _one_line_error(err: str) -> str:
    assert err.startswith("dysample-swap ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _damaged(kind: str) -> bytes:
    if kind == "empty":
        return b""
    if kind == "garbage":
        return bytes(range(256)) * 40
    whole = io.BytesIO()
    torch.save({"format_version": 1, "model": {"w": torch.arange(4096.0)}}, whole)
    return whole.getvalue()[: len(whole.getvalue()) // 2]


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_a_damaged_checkpoint_is_a_one_line_error(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(_damaged(kind))
    image = tmp_path / "image.png"
    image.write_bytes(
        base64.b64decode(  # a 1x1 PNG
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
        )
    )
    for argv in (
        ["finetune", "demo", "--out", str(tmp_path / "run"), "--resume"],
        ["evaluate", "demo", "--checkpoint", str(checkpoint)],
        ["visualize", str(checkpoint), str(image)],
    ):
        status, _, err = _run(capsys, *argv, *(_overrides(TINY_NET) if argv[0] != "visualize" else []))
        assert status == 2, (argv, err)
        line = _one_line_error(err)
        assert f"{checkpoint}: cannot read checkpoint" in line
        assert "truncated or corrupt" in line or "empty, 0 bytes" in line
        assert "delete it and train again" in line


def test_resume_refuses_changed_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert _run(capsys, "finetune", "demo", "--out", str(out), *_overrides(TINY_NET))[0] == 0
    before = {
        name: (out / name).read_bytes()
        for name in ("config.yaml", "checkpoints/last.pt", "metrics.jsonl", "summary.json")
    }
    status, _, err = _run(
        capsys,
        "finetune",
        "demo",
        "--out",
        str(out),
        "--resume",
        *_overrides(TINY_NET + ["train.lr=0.5", "data.seed=7"]),
    )
    assert status == 2
    line = _one_line_error(err)
    assert "train.lr is 0.01 in the run but 0.5 here" in line
    assert "data.seed is 0 in the run but 7 here" in line
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing rewritten
    # The budget, intervals and resources may change: the run continues, config.yaml follows.
    status, _, err = _run(
        capsys,
        "finetune",
        "demo",
        "--out",
        str(out),
        "--resume",
        *_overrides(TINY_NET + ["train.max_steps=2", "train.eval_every=1", "train.device=cpu"]),
    )
    assert status == 0, err
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 2


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: writes past it store what fits, then ENOSPC."""

    room = 4096

    def write(self, data: Any) -> int:
        left = self.room - self.tell()
        if len(data) > left:
            super().write(bytes(data)[: max(left, 0)])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_during_a_checkpoint_write(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    assert _run(capsys, "finetune", "demo", "--out", str(out), *_overrides(TINY_NET))[0] == 0
    saved = (out / "checkpoints" / "last.pt").read_bytes()
    assert len(saved) > _FullDisk.room
    monkeypatch.setattr(persist_module, "open", _FullDisk, raising=False)  # where every atomic write opens
    status, _, err = _run(
        capsys, "finetune", "demo", "--out", str(out), "--resume", *_overrides(TINY_NET + ["train.max_steps=2"])
    )
    assert status == 2
    line = _one_line_error(err)
    assert f"{out / 'checkpoints' / 'last.pt'}: disk full while writing the checkpoint" in line
    assert "the partial file was removed; the previous checkpoint is kept" in line
    assert os.listdir(out / "checkpoints") == ["last.pt"]  # no temporary file left
    assert (out / "checkpoints" / "last.pt").read_bytes() == saved  # last.pt intact
