"""Recipe YAML -> validated :class:`Config`, with ``--set key=value`` overrides.

A recipe is a YAML file with the sections ``model``, ``swap``, ``data``, ``train`` and ``eval``
(plus ``name``, ``description``, ``task``, ``seed``). Every key has a default here, so a recipe
only writes what it changes. ``data`` is passed as-is to
:func:`dysample_swap.finetune.data.build_dataset`, which checks its keys per data format;
``swap.policy`` is passed as keyword arguments to :func:`dysample_swap.surgery.swap.swap_upsamplers`.

Overrides use dotted keys and YAML-typed values (``train.lr=1e-3``, ``train.grad_clip=null``,
``train.milestones=[0.5,0.9]``). A key that does not exist is an error naming the closest one.

Example:
    >>> cfg = build_config({"task": "segmentation"}, ["train.lr=1e-3", "train.amp=bf16"])
    >>> cfg.train.lr, cfg.train.amp
    (0.001, 'bf16')
    >>> build_config({}, ["train.lrr=1"])
    Traceback (most recent call last):
    ...
    dysample_swap.finetune.config.ConfigError: unknown key 'train.lrr' (did you mean 'train.lr'?)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message names the key and the fix.

    Example:
        >>> str(ConfigError("train.lr: expected a number"))
        'train.lr: expected a number'
    """


@dataclass
class ModelConfig:
    """What network to build.

    ``spec`` is a :func:`dysample_swap.surgery.model_spec.build_model` spec; the text ``{num_classes}``
    in it is replaced by the dataset's class count (detection and panoptic: things including
    background; depth: 1), and ``{num_stuff}`` by a panoptic dataset's stuff class count.

    Example:
        >>> ModelConfig().spec.startswith("smp:")
        True
    """

    spec: str = "smp:Unet:encoder_name=resnet18,encoder_weights=None,classes={num_classes}"


@dataclass
class SwapConfig:
    """How to swap the upsamplers (``enabled: false`` trains the original network).

    ``variant`` is any upsampler name that :func:`dysample_swap.swap_upsamplers` takes
    (:func:`known_upsamplers`).

    Example:
        >>> SwapConfig().variant
        'dysample+'
    """

    enabled: bool = True
    variant: str = "dysample+"
    policy: dict = field(default_factory=dict)


@dataclass
class CompareConfig:
    """What ``compare`` trains: ``arms`` (upsampler names; ``original`` is the unswapped
    reference, and every other arm is compared with it), ``seeds`` (seeds ``seed``,
    ``seed + 1``, ...; each seed fixes the initial weights and the data order of every arm),
    ``jobs`` (0: one run after another in this process; N: N worker processes at a time),
    and the bootstrap behind the intervals (``resamples``, ``level``). Empty ``arms``: the
    original and ``swap.variant``.

    Example:
        >>> CompareConfig().seeds, CompareConfig().level
        (1, 0.95)
    """

    arms: list[str] = field(default_factory=list)
    seeds: int = 1
    jobs: int = 0
    resamples: int = 1000
    level: float = 0.95
    visualize: bool = True


@dataclass
class TrainConfig:
    """Optimiser, schedule, precision, budget, logging and checkpoint settings.

    Budget: ``max_steps`` optimiser steps, or ``epochs`` passes over the training split (set the
    other to null). ``milestones`` (step schedule) are fractions of the budget.
    ``stop_after`` stops early after that many steps (with a checkpoint) while the schedule
    still follows the full budget: an interrupted run that ``--resume`` then completes.

    Example:
        >>> TrainConfig().schedule
        'poly'
    """

    max_steps: int | None = 1000
    epochs: int | None = None
    batch_size: int = 8
    num_workers: int = 0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 6.0e-5
    weight_decay: float = 0.01
    momentum: float = 0.9
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["poly", "step", "cosine", "constant"] = "poly"
    poly_power: float = 1.0
    milestones: list = field(default_factory=lambda: [8 / 12, 11 / 12])
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 1.0e-6
    grad_clip: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    dysample_lr_mult: float = 1.0
    dysample_only_steps: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    eval_every: int = 0
    stop_after: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: Literal["auto", "always", "never"] = "auto"


@dataclass
class EvalConfig:
    """Evaluation and prediction-grid settings.

    Example:
        >>> EvalConfig().num_images
        4
    """

    batch_size: int = 8
    num_images: int = 4
    score_threshold: float = 0.5


@dataclass
class Config:
    """A whole, validated recipe.

    Example:
        >>> Config().task
        'segmentation'
    """

    name: str = "recipe"
    description: str = ""
    task: Literal["segmentation", "detection", "instance", "depth", "panoptic"] = "segmentation"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    swap: SwapConfig = field(default_factory=SwapConfig)
    data: dict = field(default_factory=lambda: {"format": "synthetic"})
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``config.yaml`` in the run directory holds).

        Example:
            >>> Config().to_dict()["train"]["optimizer"]
            'adamw'
        """
        return dataclasses.asdict(self)


#: Sections whose keys are free (checked by the code that consumes them).
_OPEN_SECTIONS = ("data", "swap.policy")


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls: Any = Config, prefix: str = "") -> list[str]:
    """Every dotted key a recipe may set.

    Example:
        >>> "train.lr" in valid_keys()
        True
    """
    keys = []
    for name, hint in _hints(cls).items():
        key = f"{prefix}{name}"
        keys.append(key)
        if dataclasses.is_dataclass(hint):
            keys.extend(valid_keys(hint, key + "."))
    return keys


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; valid keys: {', '.join(valid_keys())}"
    return ConfigError(f"unknown key '{key}'{hint}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the annotation ``hint``; return it (numbers normalised)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _coerce(key, value, inner[0])
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_txt = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint_txt}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads "6e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if hint is list or origin is list:
        item = typing.get_args(hint)[0] if origin is list else float
        if isinstance(value, str) and item is str:  # "a,b,c" from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            example = "[a, b]" if item is str else "[0.5, 0.9]"
            raise ConfigError(f"{key}: expected a list such as {example}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"{key}: unsupported annotation {hint!r}")  # a bug in this module


def _from_mapping(cls: Any, raw: Mapping[str, Any], prefix: str = "") -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {raw!r}")
    hints = _hints(cls)
    values = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise _unknown(key)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _from_mapping(hint, value or {}, key + ".")
        else:
            values[name] = _coerce(key, value, hint)
    return cls(**values)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; the value is read as YAML.

    Example:
        >>> parse_override("train.milestones=[0.5, 0.75]")
        ('train.milestones', [0.5, 0.75])
        >>> parse_override("train.grad_clip=null")
        ('train.grad_clip', None)
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=1e-3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({err})") from err
    return key.strip(), parsed


def apply_override(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in the nested recipe mapping ``raw`` (in place).

    Keys inside ``data`` and ``swap.policy`` are free; anywhere else the key must exist.

    Example:
        >>> raw = {"train": {"lr": 1.0}}
        >>> apply_override(raw, "train.lr", 0.5); raw
        {'train': {'lr': 0.5}}
    """
    parts = key.split(".")
    open_prefix = next((p for p in _OPEN_SECTIONS if key.startswith(p + ".")), None)
    if open_prefix is None and key not in valid_keys():
        raise _unknown(key)
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])} is not a section; cannot set {key}")
        node = child
    node[parts[-1]] = value


def build_config(raw: Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> Config:
    """Validate a recipe mapping after applying ``KEY=VALUE`` overrides.

    ``data`` given in the recipe replaces the default ``data`` mapping as a whole.

    Example:
        >>> build_config({"train": {"max_steps": 5}}, ["seed=3"]).seed
        3
    """
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"a recipe is a mapping of sections (model:, data:, train:, ...), not a {type(raw).__name__}")
    tree = copy.deepcopy(dict(raw or {}))
    tree.setdefault("data", Config().data)
    for text in overrides:
        apply_override(tree, *parse_override(text))
    cfg = _from_mapping(Config, tree)
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
    """Cross-field rules a type check cannot express."""
    t = cfg.train
    if (t.max_steps is None) == (t.epochs is None):
        raise ConfigError(
            "set exactly one of train.max_steps and train.epochs (the other to null); "
            f"got max_steps={t.max_steps}, epochs={t.epochs}"
        )
    for key in ("max_steps", "epochs", "batch_size", "stop_after"):
        value = getattr(t, key)
        if value is not None and value < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {value}")
    for key in ("num_workers", "warmup_steps", "dysample_only_steps", "checkpoint_every", "eval_every"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(t, key)}")
    if t.log_every < 1:
        raise ConfigError(f"train.log_every must be >= 1, got {t.log_every}")
    if t.lr <= 0 or t.dysample_lr_mult < 0:
        raise ConfigError(
            f"train.lr must be > 0 and train.dysample_lr_mult >= 0; "
            f"got lr={t.lr}, dysample_lr_mult={t.dysample_lr_mult}"
        )
    if any(not 0.0 < m < 1.0 for m in t.milestones) or list(t.milestones) != sorted(t.milestones):
        raise ConfigError(
            f"train.milestones must be increasing fractions of the budget in (0, 1), "
            f"e.g. [0.667, 0.917] for epochs 8 and 11 of 12; got {t.milestones}"
        )
    if len(t.betas) != 2:
        raise ConfigError(f"train.betas must be two numbers, got {t.betas}")
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip must be > 0 or null, got {t.grad_clip}")
    if "format" not in cfg.data:
        raise ConfigError(
            "data.format is missing; use one of synthetic, folder, voc, ade20k, coco, nyu, depth_folder, coco_panoptic"
        )
    if cfg.eval.batch_size < 1 or cfg.eval.num_images < 0:
        raise ConfigError("eval.batch_size must be >= 1 and eval.num_images >= 0")
    known = known_upsamplers()
    _check_name("swap.variant", cfg.swap.variant, known)
    c = cfg.compare
    for arm in c.arms:
        _check_name("compare.arms", arm, (ORIGINAL, *known))
    if c.arms and (ORIGINAL not in c.arms or len(set(c.arms)) != len(c.arms) or len(c.arms) < 2):
        raise ConfigError(
            f"compare.arms must name distinct arms, '{ORIGINAL}' (the reference every "
            f"other arm is compared with) and at least one upsampler; got {c.arms}"
        )
    if c.seeds < 1 or c.jobs < 0 or c.resamples < 1 or not 0.0 < c.level < 1.0:
        raise ConfigError(
            f"compare needs seeds >= 1, jobs >= 0, resamples >= 1 and 0 < level < 1; "
            f"got seeds={c.seeds}, jobs={c.jobs}, resamples={c.resamples}, "
            f"level={c.level}"
        )


#: Keys a resumed run may change: labels, the budget (``finetune --resume`` continues to a larger
#: one), when to log, evaluate and checkpoint, and the resources used; none of them changes what
#: the steps compute. Every other key (model, swap, data, seed, optimiser, schedule, precision,
#: batch size, ...) must be as the run was started.
RESUME_FREE = (
    "name",
    "description",
    "train.max_steps",
    "train.epochs",
    "train.stop_after",
    "train.checkpoint_every",
    "train.log_every",
    "train.eval_every",
    "train.num_workers",
    "train.device",
    "train.progress",
    "eval.batch_size",
    "eval.num_images",
    "compare.arms",
    "compare.seeds",
    "compare.jobs",
    "compare.resamples",
    "compare.level",
    "compare.visualize",
)

#: The budget keys, fixed when a comparison resumes (its arms must share one budget).
BUDGET = ("train.max_steps", "train.epochs")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_differences(found: Mapping[str, Any], cfg: Config, free: Sequence[str] = RESUME_FREE) -> list[str]:
    """The settings where ``cfg`` differs from ``found`` (the config a run was started with, as
    :meth:`Config.to_dict` wrote it), apart from the keys in ``free``; one ``key: old -> new``
    text per difference.

    Example:
        >>> started = build_config({}, ["train.lr=0.01"]).to_dict()
        >>> resume_differences(started, build_config({}, ["train.lr=0.5", "train.max_steps=2000",
        ...                                                "data.seed=7"]))
        ['train.lr is 0.01 in the run but 0.5 here', 'data.seed is not set in the run but 7 here']
    """
    old, new = _flatten(found), _flatten(cfg.to_dict())
    missing = object()
    diffs = []
    for key in [*old, *(k for k in new if k not in old)]:
        before, after = old.get(key, missing), new.get(key, missing)
        if key in free or before == after:
            continue
        said = [f"{value!r}" if value is not missing else "not set" for value in (before, after)]
        diffs.append(f"{key} is {said[0]} in the run but {said[1]} here")
    return diffs


def check_resume(found: Mapping[str, Any], cfg: Config, where: str | Path, free: Sequence[str] = RESUME_FREE) -> None:
    """Raise :class:`ConfigError` if ``cfg`` changes a setting of the run recorded in ``where``
    (:func:`resume_differences`): resuming would then no longer continue that run.

    Example:
        >>> check_resume(Config().to_dict(), build_config({}, ["seed=1"]), "runs/x/config.yaml")
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.config.ConfigError: cannot resume runs/x/config.yaml with changed settings: seed is 0 in the run but 1 here; resume with the run's own recipe and --set overrides (its config.yaml), or train into a new --out
    """
    diffs = resume_differences(found, cfg, free)
    if diffs:
        raise ConfigError(
            f"cannot resume {where} with changed settings: {'; '.join(diffs)}; resume "
            "with the run's own recipe and --set overrides (its config.yaml), or train "
            "into a new --out"
        )


#: The arm name of the unswapped network in ``compare``.
ORIGINAL = "original"


def known_upsamplers() -> tuple[str, ...]:
    """Upsampler names ``swap_upsamplers(model, variant=...)`` accepts (``dysample_swap.ALL_UPSAMPLERS``).

    Example:
        >>> "dysample+" in known_upsamplers(), "fade" in known_upsamplers()
        (True, True)
    """
    import dysample_swap

    return tuple(dysample_swap.ALL_UPSAMPLERS)


def _check_name(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{key}: unknown upsampler {value!r}{hint}; choose from {', '.join(choices)}")


def packaged_recipes() -> Path:
    """The folder of recipes shipped inside the package (``dysample_swap/recipes``).

    Example:
        >>> (packaged_recipes() / "demo.yaml").is_file()
        True
    """
    return Path(__file__).resolve().parents[1] / "recipes"


def recipe_dirs() -> list[Path]:
    """Folders searched for a recipe given by name: ``./recipes``, then the recipes installed
    with the package (:func:`packaged_recipes`), so names resolve from any directory.

    Example:
        >>> recipe_dirs()[0] == Path("recipes")
        True
    """
    return [Path("recipes"), packaged_recipes()]


def resolve_recipe(recipe: str | Path) -> Path:
    """Find a recipe: an existing path, or a name (``demo`` or ``demo.yaml``) in :func:`recipe_dirs`.

    Example:
        >>> resolve_recipe("demo").name
        'demo.yaml'
    """
    path = Path(recipe)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    for folder in recipe_dirs():
        if (folder / name).is_file():
            return folder / name
    known = sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(
        f"recipe {str(recipe)!r} not found (not a file, not in "
        f"{', '.join(str(d) for d in recipe_dirs())}); known recipes: {', '.join(known)}"
    )


def load_config(recipe: str | Path, overrides: Sequence[str] = (), preset: str | None = None) -> Config:
    """Read a recipe file (by path or name) and build its :class:`Config`.

    A recipe may define ``presets``: named lists of ``KEY=VALUE`` overrides (e.g. ``cpu``, the
    paper recipes' CPU-sized smoke test on synthetic data). ``preset`` applies one of them before
    ``overrides``, so ``--set`` still wins.

    Example:
        >>> load_config("demo", ["train.max_steps=2"]).train.max_steps
        2
        >>> load_config("fasterrcnn_coco", preset="cpu").data["format"]
        'synthetic'
    """
    path = resolve_recipe(recipe)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    presets = raw.pop("presets", None) or {}
    if not isinstance(presets, dict) or not all(
        isinstance(v, list) and all(isinstance(o, str) for o in v) for v in presets.values()
    ):
        raise ConfigError(f"{path}: presets must map a name to a list of 'KEY=VALUE' strings")
    if preset is not None and preset not in presets:
        known = ", ".join(presets) or "none"
        raise ConfigError(f"{path}: no preset {preset!r} (this recipe's presets: {known})")
    try:
        return build_config(raw, [*presets.get(preset, []), *overrides])
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (``config.yaml`` in a run directory).

    Example:
        >>> import tempfile, os
        >>> p = save_config(Config(), os.path.join(tempfile.mkdtemp(), "config.yaml"))
        >>> build_config(yaml.safe_load(p.read_text())) == Config()
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path
