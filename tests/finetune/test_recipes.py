"""Recipes: the packaged copy, the paper settings and their CPU presets, and name resolution from
a normal (non-editable) install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dysample_swap.finetune.config import ConfigError, load_config, packaged_recipes
from dysample_swap.finetune.runner import run_finetune

ROOT = Path(__file__).resolve().parents[2]
PAPER = (
    "segformer_b1_ade20k",
    "fasterrcnn_coco",
    "maskrcnn_coco",
    "nyu_depth_dpt",
    "depth_folder",
    "panoptic_fpn_coco",
    "maskformer_ade20k",
)


def test_packaged_recipes_are_the_top_level_recipes() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "recipes").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in packaged_recipes().glob("*.yaml")}
    assert sorted(shipped) == sorted(top)
    different = [name for name in top if shipped[name] != top[name]]
    assert not different, (
        f"dysample_swap/recipes/ differs from recipes/ in {different}; the "
        "package ships a copy: cp recipes/*.yaml dysample_swap/recipes/"
    )


def test_segformer_recipe_is_the_papers_schedule() -> None:
    cfg = load_config("segformer_b1_ade20k")
    t = cfg.train
    assert cfg.model.spec.startswith("smp:Segformer:encoder_name=mit_b1,encoder_weights=imagenet")
    assert (cfg.data["format"], cfg.data["image_size"]) == ("ade20k", 512)
    assert (t.optimizer, t.lr, t.weight_decay, t.betas) == ("adamw", 6e-5, 0.01, [0.9, 0.999])
    assert (t.schedule, t.poly_power, t.warmup_steps, t.warmup_ratio) == ("poly", 1.0, 1500, 1e-6)
    assert (t.max_steps, t.batch_size * 8, t.dysample_lr_mult) == (160000, 16, 1.0)
    text = (ROOT / "recipes" / "segformer_b1_ade20k.yaml").read_text()
    for number in ("41.68 / 27.80", "43.21 / 29.12", "43.28 / 29.23", "43.58 / 29.93"):  # Table 4
        assert number in text


@pytest.mark.parametrize(
    "name, numbers",
    [
        ("fasterrcnn_coco", ("37.5 / 58.2 / 40.8", "38.6 / 59.9 / 42.0", "38.7 / 60.0 / 42.2")),  # Table 6
        ("maskrcnn_coco", ("38.3 / 34.7", "39.2 / 35.4", "39.6 / 35.7")),  # Table 7
    ],
)
def test_detection_recipes_state_the_papers_numbers(name: str, numbers: tuple[str, ...]) -> None:
    cfg = load_config(name)
    assert "weights_backbone=IMAGENET1K_V1" in cfg.model.spec and cfg.train.epochs == 12
    text = (ROOT / "recipes" / f"{name}.yaml").read_text()
    for number in numbers:
        assert number in text


def test_presets() -> None:
    cfg = load_config("fasterrcnn_coco", ["train.max_steps=3"], preset="cpu")
    assert cfg.data["format"] == "synthetic" and "weights_backbone=None" in cfg.model.spec
    assert cfg.train.max_steps == 3 and cfg.train.epochs is None  # --set applies after it
    with pytest.raises(ConfigError, match="no preset 'gpu' \\(this recipe's presets: cpu\\)"):
        load_config("fasterrcnn_coco", preset="gpu")
    with pytest.raises(ConfigError, match="presets: none"):
        load_config("demo", preset="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_paper_recipe_cpu_preset_trains_two_steps(name: str, tmp_path: Path) -> None:
    cfg = load_config(name, ["train.progress=never", "swap.policy.verbose=false"], preset="cpu")
    summary = run_finetune(cfg, tmp_path / "run")
    assert summary["steps"] == 2 and summary["swapped_sites"] >= 3 and summary["completed"]
    assert summary["arm"] == cfg.swap.variant and summary["metrics"]


@pytest.mark.slow
def test_named_recipe_resolves_from_a_non_editable_install(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a clean copy: the build writes next to its sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "dysample_swap", source / "dysample_swap", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (target / "dysample_swap" / "recipes" / "demo.yaml").is_file()
    assert (
        target / "dysample_swap" / "upsamplers" / "dysample" / "csrc" / "sampler.c"
    ).is_file()  # the compiled sampler's source ships too
    assert (target / "dysample_swap" / "upsamplers" / "dysample" / "csrc" / "sampler_impl.h").is_file()
    elsewhere = tmp_path / "elsewhere"  # no ./recipes here, and no source tree nearby
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = (
        "import dysample_swap; from dysample_swap.finetune.config import resolve_recipe; "
        "print(dysample_swap.__file__); print(resolve_recipe('demo'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env, check=True, capture_output=True, text=True, timeout=300
    ).stdout.split()
    assert all(Path(p).is_relative_to(target) for p in found), found
    tiny = [
        "data.image_size=32",
        "data.num_samples=4",
        "data.num_val_samples=2",
        "train.batch_size=4",
        "train.max_steps=1",
        "train.checkpoint_every=0",
        "eval.num_images=0",
        "train.progress=never",
        "swap.policy.verbose=false",
    ]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "dysample_swap.cli",
            "finetune",
            "demo",
            "--out",
            "run",
            *[a for t in tiny for a in ("--set", t)],
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "run" / "summary.json").is_file()


@pytest.mark.parametrize("name", ["nyu_depth_dpt", "depth_folder", "panoptic_fpn_coco", "maskformer_ade20k"])
def test_inspect_shows_the_swap_of_each_new_recipes_model(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from dysample_swap.cli import main
    from dysample_swap.finetune.builders import load_datasets, model_spec
    from dysample_swap.finetune.tasks import make_task

    cfg = load_config(name, preset="cpu")
    task = make_task(cfg.task, load_datasets(cfg)[0])
    spec = model_spec(cfg, task.num_classes, getattr(task, "num_stuff", 0))
    assert "{num_" not in spec
    args = ["inspect", spec, "--input-shape", "1x3x64x64", "--variant", cfg.swap.variant]
    assert main(args) == 0
    out = capsys.readouterr().out
    swapped = [line for line in out.splitlines() if " swap " in f" {line} "]
    assert len(swapped) >= 3, out
