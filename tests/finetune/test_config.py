"""Recipes -> Config: overrides, typing, closest-key errors, the shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dysample_swap.finetune.config import (
    Config,
    ConfigError,
    build_config,
    load_config,
    parse_override,
    resolve_recipe,
    save_config,
)

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


def test_overrides_are_yaml_typed() -> None:
    cfg = build_config(
        {},
        [
            "train.lr=1e-3",
            "train.grad_clip=null",
            "train.milestones=[0.5, 0.75]",
            "swap.enabled=false",
            "train.max_steps=7",
            "seed=3",
            "data.image_size=[32, 48]",
        ],
    )
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.grad_clip is None
    assert cfg.train.milestones == [0.5, 0.75]
    assert cfg.swap.enabled is False
    assert cfg.train.max_steps == 7 and cfg.seed == 3
    assert cfg.data["image_size"] == [32, 48]


def test_override_beats_recipe_and_keeps_the_rest() -> None:
    cfg = build_config({"train": {"lr": 0.5, "batch_size": 3}}, ["train.lr=0.25"])
    assert (cfg.train.lr, cfg.train.batch_size) == (0.25, 3)


@pytest.mark.parametrize(
    "key, closest",
    [
        ("train.lrr", "train.lr"),
        ("train.warmup_step", "train.warmup_steps"),
        ("swap.varient", "swap.variant"),
        ("sed", "seed"),
    ],
)
def test_unknown_override_names_closest_key(key: str, closest: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key '{key}' \\(did you mean '{closest}'\\?\\)"):
        build_config({}, [f"{key}=1"])


def test_unknown_recipe_key_names_closest_key() -> None:
    with pytest.raises(ConfigError, match="unknown key 'train.bach_size'.*'train.batch_size'"):
        build_config({"train": {"bach_size": 4}})


def test_free_sections_accept_new_keys() -> None:
    cfg = build_config({}, ["swap.policy.include=[decoder.*]", "data.root=/tmp/x"])
    assert cfg.swap.policy == {"include": ["decoder.*"]}
    assert cfg.data["root"] == "/tmp/x"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.batch_size=2.5", "train.batch_size: expected an integer"),
        ("train.amp=fp8", "train.amp: 'fp8' is not one of none, bf16, fp16"),
        ("train.schedule=cosin", "did you mean 'cosine'"),
        ("swap.enabled=maybe", "swap.enabled: expected true or false"),
        ("train.milestones=[0.9, 0.5]", "increasing fractions"),
        ("train.epochs=3", "exactly one of train.max_steps and train.epochs"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
        ("swap.variant=dysampel", "swap.variant: unknown upsampler 'dysampel' \\(did you mean 'dysample'\\?\\)"),
        ("compare.seeds=0", "compare needs seeds >= 1"),
        ("compare.arms=[original, original]", "compare.arms must name distinct arms"),
    ],
)
def test_bad_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({}, [override])


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.lr")


def test_unquoted_exponent_reads_as_float() -> None:
    # PyYAML reads 6e-5 (no dot) as a string; float fields accept it anyway.
    assert build_config(yaml.safe_load("train: {lr: 6e-5}")).train.lr == pytest.approx(6e-5)


def test_recipe_by_name_and_path(tmp_path: Path) -> None:
    assert resolve_recipe("demo") == resolve_recipe("demo.yaml")
    path = tmp_path / "mine.yaml"
    path.write_text("train: {max_steps: 3}\n")
    cfg = load_config(path)
    assert cfg.name == "mine" and cfg.train.max_steps == 3
    with pytest.raises(ConfigError, match="recipe 'nosuch' not found.*known recipes: .*demo"):
        resolve_recipe("nosuch")


def test_recipe_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: {lrr: 1}\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 'train.lrr'"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = build_config({"name": "x"}, ["train.lr=0.5", "data.num_samples=4"])
    written = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert build_config(yaml.safe_load(written.read_text())) == cfg


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_validate(recipe: Path) -> None:
    cfg = load_config(recipe)
    assert isinstance(cfg, Config) and cfg.name == recipe.stem


def test_detection_recipes_follow_the_paper() -> None:
    for name in ("fasterrcnn_coco", "maskrcnn_coco"):
        t = load_config(name).train
        assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.schedule) == ("sgd", 0.02, 0.9, 1e-4, "step")
        assert t.milestones == pytest.approx([8 / 12, 11 / 12], abs=1e-3)
        assert t.warmup_steps > 0 and t.dysample_lr_mult == 1.0
