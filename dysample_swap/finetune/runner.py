"""End-to-end jobs behind the CLI: :func:`run_finetune`, :func:`run_evaluate`, :func:`run_compare`.

Each job reads a validated :class:`~dysample_swap.finetune.config.Config`, builds the datasets
and the model, trains and/or evaluates with :mod:`dysample_swap.finetune.engine`, and (rank 0
only) writes ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``curves.png`` and
``predictions.png`` to the run directory.

``compare`` builds the original model once, deep-copies it, swaps one copy, and trains both with
the same seed, data order and budget, so the only difference between the arms is the upsamplers.

Example:
    >>> import tempfile
    >>> from dysample_swap.finetune.config import load_config
    >>> cfg = load_config("demo", ["data.image_size=32", "data.num_samples=8",
    ...     "data.num_val_samples=2", "train.batch_size=4", "train.max_steps=1",
    ...     "train.progress=never", "eval.num_images=1", "swap.policy.verbose=false"])
    >>> out = Path(tempfile.mkdtemp())
    >>> summary = run_compare(cfg, out)
    >>> sorted(summary["arms"]), summary["arms"]["dysample"]["swapped_sites"]  # 1x1 -> 2x2 skipped
    (['baseline', 'dysample'], 4)
    >>> sorted(p.name for p in out.iterdir())
    ['baseline', 'config.yaml', 'curves.png', 'dysample', 'predictions.png', 'summary.json']
    >>> ckpt = out / "dysample" / "checkpoints" / "last.pt"
    >>> run_evaluate(cfg, ckpt)["metrics"]["bIoU"] == summary["arms"]["dysample"]["metrics"]["bIoU"]
    True
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dysample_swap.finetune.checkpoint import (
    CheckpointError, check_signature, load_checkpoint, load_model_state)
from dysample_swap.finetune.config import Config, ConfigError, save_config
from dysample_swap.finetune.distributed import DistContext, init_distributed
from dysample_swap.finetune.engine import Arm, FitResult, Trainer, count_parameters, evaluate
from dysample_swap.finetune.optim import dysample_parameters
from dysample_swap.finetune.plots import plot_curves, plot_predictions
from dysample_swap.finetune.runlog import json_safe, read_log
from dysample_swap.finetune.tasks import DetectionTask, SegmentationTask, make_task

BASELINE, DYSAMPLE = "baseline", "dysample"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Example:
        >>> seed_everything(0); a = torch.rand(1); seed_everything(0); bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_config(cfg: Config) -> dict[str, Any]:
    """The ``data:`` mapping for ``build_dataset``; formats that serve several tasks (synthetic,
    coco) get ``task`` from the recipe.

    Example:
        >>> data_config(Config(task="detection"))["task"]
        'detection'
    """
    data = dict(cfg.data)
    if data.get("format") in ("synthetic", "coco"):
        if data.setdefault("task", cfg.task) != cfg.task:
            raise ConfigError(f"data.task is {data['task']!r} but task is {cfg.task!r}; "
                              "drop data.task (it follows task) or make them equal")
    return data


def load_datasets(cfg: Config) -> tuple[Any, Any]:
    """The ``train`` and ``val`` splits of the recipe's data.

    Example:
        >>> train, val = load_datasets(Config(data={"format": "synthetic", "num_samples": 4}))
        >>> len(train), train.num_classes
        (4, 6)
    """
    from dysample_swap.finetune.data import build_dataset

    data = data_config(cfg)
    return build_dataset(data, "train"), build_dataset(data, "val")


def model_spec(cfg: Config, num_classes: int) -> str:
    """``model.spec`` with ``{num_classes}`` filled in.

    Example:
        >>> model_spec(Config(), 6)
        'smp:Unet:encoder_name=resnet18,encoder_weights=None,classes=6'
    """
    return cfg.model.spec.replace("{num_classes}", str(num_classes))


def build_base_model(cfg: Config, num_classes: int) -> torch.nn.Module:
    """The original network, randomly initialised from ``cfg.seed``.

    Example:
        >>> # build_base_model(load_config("demo"), 6)  ->  smp Unet
    """
    from dysample_swap.model_spec import build_model

    seed_everything(cfg.seed)
    return build_model(model_spec(cfg, num_classes))


def signature(cfg: Config, num_classes: int, swapped: bool) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into this recipe's model.

    Example:
        >>> signature(Config(), 6, swapped=False)["variant"] is None
        True
    """
    return {"task": cfg.task, "model": model_spec(cfg, num_classes), "num_classes": num_classes,
            "swapped": swapped, "variant": cfg.swap.variant if swapped else None,
            "policy": dict(cfg.swap.policy) if swapped else None}


def make_arm(cfg: Config, base: torch.nn.Module, task: Any, val_set: Any, swapped: bool,
             verbose: bool = True) -> Arm:
    """A deep copy of ``base``; with ``swapped=True`` its upsamplers are swapped for DySample.

    Example:
        >>> # arm = make_arm(cfg, base, task, val_set, swapped=True)
    """
    from dysample_swap.swap import swap_report, swap_upsamplers

    arm_model = model_spec(cfg, task.num_classes)
    model = copy.deepcopy(base)
    sites = 0
    if swapped:
        seed_everything(cfg.seed + 1)
        model.eval()
        policy = dict(cfg.swap.policy)
        policy.setdefault("verbose", verbose)
        model = swap_upsamplers(model, cfg.swap.variant, example_inputs=task.example_inputs(val_set),
                                **policy)
        sites = len(swap_report(model).swapped)
        if sites == 0:
            raise ConfigError(f"swapping {arm_model} replaced no upsampler (see the table above), so "
                              "there is no DySample to train; check swap.policy, pick a model "
                              "whose decoder/FPN upsamples, or set swap.enabled=false")
    model.train()
    return Arm(DYSAMPLE if swapped else BASELINE, model,
               signature(cfg, task.num_classes, swapped), swapped_sites=sites)


def prediction_rows(arms: Sequence[Arm], task: Any, val_set: Any, count: int,
                    device: torch.device) -> list[list[torch.Tensor]]:
    """Pictures for the first ``count`` validation images: image, ground truth, each arm.

    Example:
        >>> # rows = prediction_rows([arm], task, val_set, 4, torch.device("cpu"))
    """
    rows = []
    collate = task.collate or torch.utils.data.default_collate
    for index in range(min(count, len(val_set))):
        image, target = val_set[index]
        row = [task.image_uint8(image), task.picture(image, target)]
        batch = task.to_device(collate([(image, target)]), device)
        for arm in arms:
            arm.model.eval()
            pred = task.to_cpu(task.predict(arm.model, batch))[0]
            row.append(task.picture(image, pred))
        rows.append(row)
    return rows


def arm_summary(cfg: Config, arm: Arm, result: FitResult, ctx: DistContext,
                wall_time: float) -> dict[str, Any]:
    """The ``summary.json`` record of one trained arm.

    Example:
        >>> # arm_summary(cfg, arm, result, ctx, 12.3)["train_img_per_s"]
    """
    dys = sum(p.numel() for p in dysample_parameters(arm.model))
    return {
        "recipe": cfg.name, "task": cfg.task, "arm": arm.name, "model": arm.signature["model"],
        "variant": arm.signature["variant"], "swapped_sites": arm.swapped_sites,
        "parameters": count_parameters(arm.model), "dysample_parameters": dys,
        "steps": result.steps,
        "total_steps": result.total_steps, "completed": result.completed,
        "world_size": ctx.world_size, "batch_size": cfg.train.batch_size,
        "train_img_per_s": round(result.img_per_s, 2), "train_time_s": round(result.train_time_s, 2),
        "wall_time_s": round(wall_time, 2), "final_loss": result.final_loss,
        "metrics": result.metrics, "checkpoint": "checkpoints/last.pt",
    }


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    return path


def _train_arm(cfg: Config, arm: Arm, task: Any, train_set: Any, val_set: Any, ctx: DistContext,
               out_dir: Path, resume: bool) -> tuple[FitResult, dict[str, Any]]:
    seed_everything(cfg.seed)
    start = time.perf_counter()
    trainer = Trainer(cfg, arm, task, train_set, val_set, ctx, out_dir)
    result = trainer.fit(resume=resume)
    summary = arm_summary(cfg, arm, result, ctx, time.perf_counter() - start)
    if ctx.is_main:
        _write_json(out_dir / "summary.json", summary)
    return result, summary


def run_finetune(cfg: Config, out_dir: Path, resume: bool = False,
                 ctx: DistContext | None = None) -> dict[str, Any]:
    """Train the recipe's model (swapped unless ``swap.enabled`` is false) into ``out_dir``.

    Without ``resume``, an ``out_dir`` that already holds a checkpoint is refused.

    Example:
        >>> # run_finetune(load_config("demo"), Path("runs/demo-ft"))["metrics"]["mIoU"]
    """
    ctx = ctx or init_distributed(cfg.train.device)
    checkpoint = out_dir / "checkpoints" / "last.pt"
    if resume and not checkpoint.is_file():
        raise CheckpointError(f"nothing to resume: {checkpoint} does not exist; run without "
                              "--resume, or pass the --out of the run to continue")
    if not resume and checkpoint.is_file():
        raise CheckpointError(f"{out_dir} already holds a run ({checkpoint}); pass --resume to "
                              "continue it, or choose another --out")
    train_set, val_set = load_datasets(cfg)
    task = make_task(cfg.task, train_set, cfg.eval.score_threshold)
    base = build_base_model(cfg, task.num_classes)
    arm = make_arm(cfg, base, task, val_set, swapped=cfg.swap.enabled, verbose=ctx.is_main)
    if ctx.is_main:
        save_config(cfg, out_dir / "config.yaml")
    result, summary = _train_arm(cfg, arm, task, train_set, val_set, ctx, out_dir, resume)
    if ctx.is_main:
        summary["plots"] = write_plots(cfg, [arm], {arm.name: read_log(out_dir / "metrics.jsonl")},
                                       task, val_set, out_dir, ctx.device)
        _write_json(out_dir / "summary.json", summary)
    return summary


def write_plots(cfg: Config, arms: Sequence[Arm], logs: dict[str, list[dict[str, Any]]], task: Any,
                val_set: Any, out_dir: Path, device: torch.device) -> dict[str, str]:
    """``curves.png`` and (if ``eval.num_images`` > 0) ``predictions.png`` in ``out_dir``.

    Example:
        >>> # write_plots(cfg, [arm], logs, task, val_set, Path("runs/x"), torch.device("cpu"))
    """
    plots = {"curves": str(plot_curves(logs, task.curve_metrics, out_dir / "curves.png"))}
    if cfg.eval.num_images:
        rows = prediction_rows(arms, task, val_set, cfg.eval.num_images, device)
        titles = ["image", "ground truth", *[f"{a.name} prediction" for a in arms]]
        plots["predictions"] = str(plot_predictions(rows, titles, out_dir / "predictions.png"))
    return plots


def run_compare(cfg: Config, out_dir: Path, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train the original model and its DySample version (same seed, data order, budget) and
    write ``out_dir/{baseline,dysample}/`` plus ``out_dir/summary.json`` and the shared plots.

    Example:
        >>> # run_compare(load_config("demo"), Path("runs/demo"))["arms"]["dysample"]["metrics"]
    """
    ctx = ctx or init_distributed(cfg.train.device)
    start = time.perf_counter()
    train_set, val_set = load_datasets(cfg)
    task = make_task(cfg.task, train_set, cfg.eval.score_threshold)
    base = build_base_model(cfg, task.num_classes)
    arms = [make_arm(cfg, base, task, val_set, swapped=False),
            make_arm(cfg, base, task, val_set, swapped=True, verbose=ctx.is_main)]
    if ctx.is_main:
        save_config(cfg, out_dir / "config.yaml")
    summaries = {}
    for arm in arms:
        _, summaries[arm.name] = _train_arm(cfg, arm, task, train_set, val_set, ctx,
                                            out_dir / arm.name, resume=False)
    summary: dict[str, Any] = {"recipe": cfg.name, "task": cfg.task, "arms": summaries,
                               "delta": metric_delta(summaries[BASELINE]["metrics"],
                                                     summaries[DYSAMPLE]["metrics"])}
    if ctx.is_main:
        logs = {arm.name: read_log(out_dir / arm.name / "metrics.jsonl") for arm in arms}
        summary["plots"] = write_plots(cfg, arms, logs, task, val_set, out_dir, ctx.device)
        summary["wall_time_s"] = round(time.perf_counter() - start, 2)
        _write_json(out_dir / "summary.json", summary)
    return summary


def metric_delta(baseline: dict[str, float], other: dict[str, float]) -> dict[str, float]:
    """``other - baseline`` for every metric both have.

    Example:
        >>> metric_delta({"mIoU": 0.5}, {"mIoU": 0.625})
        {'mIoU': 0.125}
    """
    return {k: other[k] - baseline[k] for k in baseline if k in other}


def run_evaluate(cfg: Config, checkpoint: Path, out_dir: Path | None = None,
                 ctx: DistContext | None = None) -> dict[str, Any]:
    """Score a checkpoint on the recipe's validation split.

    The checkpoint says whether its model was swapped (so a compare run's ``baseline`` checkpoint
    evaluates too); everything else must match the recipe. With ``out_dir``, writes
    ``eval.json`` and ``predictions.png`` there.

    Example:
        >>> # run_evaluate(load_config("demo"), Path("runs/demo/dysample/checkpoints/last.pt"))
    """
    ctx = ctx or init_distributed(cfg.train.device)
    state = load_checkpoint(checkpoint)
    swapped = bool(state.get("signature", {}).get("swapped", cfg.swap.enabled))
    train_set, val_set = load_datasets(cfg)
    task: SegmentationTask | DetectionTask = make_task(cfg.task, train_set, cfg.eval.score_threshold)
    check_signature(checkpoint, state.get("signature", {}), signature(cfg, task.num_classes, swapped))
    base = build_base_model(cfg, task.num_classes)
    arm = make_arm(cfg, base, task, val_set, swapped=swapped, verbose=False)
    load_model_state(arm.model, state["model"], checkpoint)
    arm.model.to(ctx.device)
    metrics = evaluate(arm.model, task, val_set, cfg, ctx)
    result = {"recipe": cfg.name, "checkpoint": str(checkpoint), "arm": arm.name,
              "step": state.get("step"), "metrics": metrics}
    if out_dir is not None and ctx.is_main:
        if cfg.eval.num_images:
            rows = prediction_rows([arm], task, val_set, cfg.eval.num_images, ctx.device)
            result["plots"] = {"predictions": str(plot_predictions(
                rows, ["image", "ground truth", f"{arm.name} prediction"],
                out_dir / "predictions.png"))}
        _write_json(out_dir / "eval.json", result)
    return result
