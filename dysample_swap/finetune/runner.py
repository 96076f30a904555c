"""End-to-end jobs behind the CLI: :func:`run_finetune`, :func:`run_evaluate`, :func:`run_compare`.

Each job reads a validated :class:`~dysample_swap.finetune.config.Config`, builds the datasets
and the model, trains and/or evaluates with :mod:`dysample_swap.finetune.engine`, and (rank 0
only) writes ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``curves.png`` and
``predictions.png`` to the run directory.

``compare`` trains every arm (``original``, the unswapped network, and one arm per upsampler
name) once per seed. For a given seed every arm starts from the same initial weights of the
original network (built from that seed; the swap then adds the new upsampler) and reads the same
batches in the same order, for the same budget, so within a seed the arms differ only in their
upsamplers. Runs go one after another in this process, or ``compare.jobs`` at a time in worker
processes; either way each writes ``OUT/<arm>/seed<k>/`` and the summary is built from those files.

Example:
    >>> import tempfile
    >>> from dysample_swap.finetune.config import load_config
    >>> cfg = load_config("demo", ["data.image_size=32", "data.num_samples=8",
    ...     "data.num_val_samples=2", "train.batch_size=4", "train.max_steps=1",
    ...     "train.progress=never", "eval.num_images=1", "swap.policy.verbose=false",
    ...     "compare.resamples=20"])
    >>> out = Path(tempfile.mkdtemp())
    >>> summary = run_compare(cfg, out)
    >>> list(summary["arms"]), summary["arms"]["dysample+"]["swapped_sites"]  # 1x1 -> 2x2 skipped
    (['original', 'dysample+'], 4)
    >>> sorted(p.name for p in out.iterdir())
    ['config.yaml', 'curves.png', 'dysample+', 'offsets_dysample+.png', 'original', 'predictions.png', 'summary.json']
    >>> ckpt = out / "dysample+" / "seed0" / "checkpoints" / "last.pt"
    >>> run_evaluate(cfg, ckpt)["metrics"]["bIoU"] == summary["arms"]["dysample+"]["metrics"]["bIoU"]["values"][0]
    True
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dysample_swap.finetune.builders import build_base_model, load_datasets, make_arm, seed_everything, signature
from dysample_swap.finetune.checkpoint import CheckpointError, check_signature, load_checkpoint, load_model_state
from dysample_swap.finetune.config import (
    BUDGET,
    ORIGINAL,
    RESUME_FREE,
    Config,
    ConfigError,
    build_config,
    check_resume,
    known_upsamplers,
    load_config,
    save_config,
)
from dysample_swap.finetune.distributed import DistContext, barrier, init_distributed
from dysample_swap.finetune.engine import Arm, FitResult, Trainer, count_parameters, evaluate
from dysample_swap.finetune.memory import PeakMemory
from dysample_swap.finetune.plots import plot_curves, plot_predictions
from dysample_swap.finetune.runlog import json_safe, read_log
from dysample_swap.finetune.stats import IMAGES_AND_SEEDS, SEEDS_ONLY, mean_std, paired_bootstrap, seed_bootstrap
from dysample_swap.finetune.tasks import DetectionTask, Task, make_task

#: File (in each run directory) with the final evaluation's per-image sufficient statistics.
PER_IMAGE_FILE = "per_image_counts.npy"


def prediction_rows(
    arms: Sequence[Arm], task: Any, val_set: Any, count: int, device: torch.device
) -> list[list[torch.Tensor]]:
    """Pictures for the first ``count`` validation images: image, ground truth, each arm (and, for
    a task with an ``error_picture`` such as depth, each arm's error map after its prediction);
    :func:`prediction_titles` names the columns.

    Example:
        >>> # rows = prediction_rows([arm], task, val_set, 4, torch.device("cpu"))
    """
    errors = getattr(task, "error_picture", None)
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
            if errors is not None:
                row.append(errors(pred, target))
        rows.append(row)
    return rows


def prediction_titles(task: Any, arms: Sequence[str]) -> list[str]:
    """Column titles of :func:`prediction_rows`.

    Example:
        >>> from dysample_swap.finetune.tasks import DepthTask
        >>> prediction_titles(DepthTask(1e-3, 10.0), ["original"])
        ['image', 'ground truth', 'original prediction', 'original |error| / depth']
    """
    errors = hasattr(task, "error_picture")
    titles = ["image", "ground truth"]
    for arm in arms:
        titles += [f"{arm} prediction", f"{arm} |error| / depth"] if errors else [f"{arm} prediction"]
    return titles


def arm_summary(
    cfg: Config, arm: Arm, result: FitResult, ctx: DistContext, wall_time: float, peak: PeakMemory
) -> dict[str, Any]:
    """The ``summary.json`` record of one trained run.

    Example:
        >>> # arm_summary(cfg, arm, result, ctx, 12.3, peak)["train_img_per_s"]
    """
    names = set(arm.new_parameters or ())
    added = sum(p.numel() for key, p in arm.model.named_parameters() if key in names)
    return {
        "recipe": cfg.name,
        "task": cfg.task,
        "arm": arm.name,
        "seed": cfg.seed,
        "model": arm.signature["model"],
        "variant": arm.signature["variant"],
        "swapped_sites": arm.swapped_sites,
        "parameters": count_parameters(arm.model),
        "added_parameters": added,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "completed": result.completed,
        "world_size": ctx.world_size,
        "batch_size": cfg.train.batch_size,
        "train_img_per_s": round(result.img_per_s, 2),
        "train_time_s": round(result.train_time_s, 2),
        "wall_time_s": round(wall_time, 2),
        "final_loss": result.final_loss,
        "peak_memory_mb": peak.megabytes,
        "peak_memory_kind": peak.kind,
        "metrics": result.metrics,
        "checkpoint": "checkpoints/last.pt",
    }


def _write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    return path


def _train_arm(
    cfg: Config, arm: Arm, task: Any, train_set: Any, val_set: Any, ctx: DistContext, out_dir: Path, resume: bool
) -> tuple[FitResult, dict[str, Any]]:
    """Train ``arm`` into ``out_dir``; ``config.yaml`` is written first for a new run, and only
    after the checkpoint accepted the settings (:meth:`Trainer.load`) for a resumed one."""
    seed_everything(cfg.seed)
    if ctx.is_main and not resume:
        save_config(cfg, out_dir / "config.yaml")
    start = time.perf_counter()
    with PeakMemory(ctx.device) as peak:
        trainer = Trainer(cfg, arm, task, train_set, val_set, ctx, out_dir)
        result = trainer.fit(resume=resume)
    summary = arm_summary(cfg, arm, result, ctx, time.perf_counter() - start, peak)
    if ctx.is_main:
        save_config(cfg, out_dir / "config.yaml")
        _write_json(out_dir / "summary.json", summary)
        if result.per_image_counts is not None:
            np.save(out_dir / PER_IMAGE_FILE, result.per_image_counts)
    return result, summary


def run_finetune(cfg: Config, out_dir: Path, resume: bool = False, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train the recipe's model (swapped unless ``swap.enabled`` is false) into ``out_dir``.

    Without ``resume``, an ``out_dir`` that already holds a checkpoint is refused. With it, the
    run continues from its checkpoint if ``cfg`` keeps its settings (only the budget, intervals
    and resources may change: :data:`~dysample_swap.finetune.config.RESUME_FREE`).

    Example:
        >>> # run_finetune(load_config("demo"), Path("runs/demo-ft"))["metrics"]["mIoU"]
    """
    ctx = ctx or init_distributed(cfg.train.device)
    checkpoint = out_dir / "checkpoints" / "last.pt"
    if resume and not checkpoint.is_file():
        raise CheckpointError(
            f"nothing to resume: {checkpoint} does not exist; run without "
            "--resume, or pass the --out of the run to continue"
        )
    if not resume and checkpoint.is_file():
        raise CheckpointError(
            f"{out_dir} already holds a run ({checkpoint}); pass --resume to continue it, or choose another --out"
        )
    train_set, val_set = load_datasets(cfg)
    task = make_task(cfg.task, train_set, cfg.eval.score_threshold)
    base = build_base_model(
        cfg, task.num_classes, num_stuff=getattr(task, "num_stuff", 0), trust_spec=True
    )  # the caller's own recipe
    arm = make_arm(cfg, base, task, val_set, swapped=cfg.swap.enabled, verbose=ctx.is_main)
    result, summary = _train_arm(cfg, arm, task, train_set, val_set, ctx, out_dir, resume)
    if ctx.is_main:
        summary["plots"] = write_plots(
            cfg, [arm], {arm.name: [read_log(out_dir / "metrics.jsonl")]}, task, val_set, out_dir, ctx.device
        )
        _write_json(out_dir / "summary.json", summary)
    return summary


def write_plots(
    cfg: Config,
    arms: Sequence[Arm],
    logs: Mapping[str, Sequence[Sequence[dict]]],
    task: Any,
    val_set: Any,
    out_dir: Path,
    device: torch.device,
) -> dict[str, str]:
    """``curves.png`` (each arm's mean over its runs, band over seeds) and, if
    ``eval.num_images`` > 0, ``predictions.png`` (one column per arm in ``arms``) in ``out_dir``.

    Example:
        >>> # write_plots(cfg, [arm], {"original": [records]}, task, val_set, Path("runs/x"), device)
    """
    plots = {"curves": str(plot_curves(logs, task.curve_metrics, out_dir / "curves.png"))}
    if cfg.eval.num_images:
        rows = prediction_rows(arms, task, val_set, cfg.eval.num_images, device)
        titles = prediction_titles(task, [a.name for a in arms])
        plots["predictions"] = str(plot_predictions(rows, titles, out_dir / "predictions.png"))
    return plots


# ---------------------------------------------------------------------------------------- compare
def compare_arms(cfg: Config) -> list[str]:
    """The arms ``compare`` trains: ``compare.arms``, or ``original`` and ``swap.variant``.

    Example:
        >>> compare_arms(Config())
        ['original', 'dysample+']
    """
    return list(cfg.compare.arms) or [ORIGINAL, cfg.swap.variant]


def compare_seeds(cfg: Config) -> list[int]:
    """The seeds ``compare`` trains each arm with: ``seed``, ``seed + 1``, ... (``compare.seeds``).

    Example:
        >>> compare_seeds(build_config({"seed": 3}, ["compare.seeds=2"]))
        [3, 4]
    """
    return [cfg.seed + k for k in range(cfg.compare.seeds)]


def run_dir(out_dir: Path, arm: str, seed: int) -> Path:
    """Where the run of ``arm`` with ``seed`` lives inside a compare directory.

    Example:
        >>> run_dir(Path("runs/demo"), "dysample+", 1).as_posix()
        'runs/demo/dysample+/seed1'
    """
    return out_dir / arm / f"seed{seed}"


def train_one(
    cfg: Config,
    arm_name: str,
    out_dir: Path,
    ctx: DistContext,
    data: tuple[Any, Any] | None = None,
    verbose: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one arm of ``compare`` with ``cfg.seed`` into ``out_dir``: build the original
    network from the seed, swap in ``arm_name`` (unless ``original``), train (``resume``: from
    ``out_dir``'s checkpoint), evaluate.

    Example:
        >>> # train_one(cfg, "dysample+", Path("runs/demo/dysample+/seed0"), ctx)["metrics"]
    """
    train_set, val_set = data or load_datasets(cfg)
    task = make_task(cfg.task, train_set, cfg.eval.score_threshold)
    base = build_base_model(
        cfg, task.num_classes, num_stuff=getattr(task, "num_stuff", 0), trust_spec=True
    )  # the caller's own recipe
    arm = make_arm(cfg, base, task, val_set, swapped=arm_name != ORIGINAL, verbose=verbose, variant=arm_name)
    return _train_arm(cfg, arm, task, train_set, val_set, ctx, out_dir, resume)[1]


def _worker(config: dict[str, Any], arm_name: str, out_dir: str, threads: int, resume: bool) -> dict[str, Any]:
    """One compare run in a worker process (``compare.jobs`` > 0): quiet, ``threads`` threads."""
    torch.set_num_threads(threads)
    cfg = build_config(config, ["train.progress=never"])
    return json_safe(
        train_one(cfg, arm_name, Path(out_dir), init_distributed(cfg.train.device), verbose=False, resume=resume)
    )


def _run_all(
    cfg: Config, runs: Sequence[tuple[str, int, bool]], out_dir: Path, ctx: DistContext, report: Callable[[str], None]
) -> None:
    """Train every ``(arm, seed, resume)`` of ``runs`` (``resume``: continue the run's
    checkpoint): in this process or in ``compare.jobs`` workers."""
    total = len(runs)
    if cfg.compare.jobs == 0:
        data = load_datasets(cfg) if runs else None
        for k, (arm, seed, resume) in enumerate(runs, 1):
            report(f"[{k}/{total}] {'resuming' if resume else 'training'} {arm}, seed {seed}")
            start = time.perf_counter()
            seed_cfg = dataclasses.replace(cfg, seed=seed)
            summary = train_one(
                seed_cfg,
                arm,
                run_dir(out_dir, arm, seed),
                ctx,
                data,
                verbose=ctx.is_main and seed == cfg.seed,
                resume=resume,
            )
            report(f"[{k}/{total}] {arm}, seed {seed}: {_headline(summary)} ({time.perf_counter() - start:.0f} s)")
        return
    if ctx.distributed:
        raise ConfigError(
            "compare.jobs > 0 starts worker processes, which cannot join a torchrun "
            "process group; use compare.jobs=0 (the default) under torchrun"
        )
    threads = max(1, (os.cpu_count() or 1) // cfg.compare.jobs)
    report(f"training {total} runs, {cfg.compare.jobs} at a time in worker processes ({threads} thread(s) each)")
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(cfg.compare.jobs, mp_context=spawn) as pool:
        futures = {
            pool.submit(
                _worker,
                dataclasses.replace(cfg, seed=seed).to_dict(),
                arm,
                str(run_dir(out_dir, arm, seed)),
                threads,
                resume,
            ): (arm, seed)
            for arm, seed, resume in runs
        }
        try:
            for k, future in enumerate(concurrent.futures.as_completed(futures), 1):
                arm, seed = futures[future]
                summary = future.result()
                report(f"[{k}/{total}] {arm}, seed {seed}: {_headline(summary)} ({summary['wall_time_s']:.0f} s)")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _headline(summary: Mapping[str, Any]) -> str:
    metrics = summary["metrics"]
    name = next((k for k in ("mIoU", "segm/AP", "bbox/AP", "PQ", "abs_rel") if k in metrics), next(iter(metrics)))
    value = metrics[name]
    return f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"


def _spread(values: Sequence[Any]) -> dict[str, Any]:
    mean, std = mean_std(values)
    return {"values": list(values), "mean": mean, "std": std}


def summarize_compare(
    cfg: Config,
    out_dir: Path,
    arms: Sequence[str],
    seeds: Sequence[int],
    statistic: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None,
) -> dict[str, Any]:
    """``summary.json`` of a compare directory, from the runs' own ``summary.json`` (and
    per-image statistics) files: per arm and metric the value of every seed, mean and std; per
    arm against ``original`` the difference with its paired bootstrap interval.

    The interval resamples validation images and seeds where per-image statistics exist
    (segmentation, depth, panoptic: ``statistic`` recomputing the metrics from summed rows), else seeds alone
    (detection: COCO AP is not a sum over images), which needs two seeds or more.

    Example:
        >>> # summarize_compare(cfg, Path("runs/demo"), ["original", "dysample+"], [0], None)
    """
    runs = {(a, s): json.loads((run_dir(out_dir, a, s) / "summary.json").read_text()) for a in arms for s in seeds}
    per_image = {(a, s): run_dir(out_dir, a, s) / PER_IMAGE_FILE for a in arms for s in seeds}
    first = runs[arms[0], seeds[0]]
    result: dict[str, Any] = {
        "recipe": cfg.name,
        "task": cfg.task,
        "reference": ORIGINAL,
        "seeds": list(seeds),
        "steps": first["steps"],
        "batch_size": first["batch_size"],
        "world_size": first["world_size"],
        "arms": {},
    }
    for arm in arms:
        mine = [runs[arm, s] for s in seeds]
        record = {
            key: mine[0][key]
            for key in (
                "variant",
                "model",
                "swapped_sites",
                "parameters",
                "added_parameters",
                "steps",
                "peak_memory_kind",
            )
        }
        record["runs"] = {str(s): run_dir(Path(), arm, s).as_posix() for s in seeds}
        record["metrics"] = {m: _spread([r["metrics"].get(m) for r in mine]) for m in mine[0]["metrics"]}
        for key in ("train_img_per_s", "train_time_s", "peak_memory_mb", "final_loss", "wall_time_s"):
            record[key] = _spread([r[key] for r in mine])
        result["arms"][arm] = record
    c = cfg.compare
    images = statistic is not None and all(path.is_file() for path in per_image.values())
    method = IMAGES_AND_SEEDS if images else SEEDS_ONLY if len(seeds) >= 2 else None
    differences: dict[str, Any] = {
        "reference": ORIGINAL,
        "method": method,
        "level": c.level,
        "resamples": c.resamples,
        "generator_seed": 0,
        "seeds": len(seeds),
        "arms": {},
    }
    if images:
        counts = {key: np.load(path) for key, path in per_image.items()}
        differences["images"] = int(counts[arms[0], seeds[0]].shape[0])
    elif method is None:
        differences["note"] = (
            "one seed and no per-image statistics (detection AP): no interval; run with --seeds 2 or more"
        )
    for arm in arms:
        if arm == ORIGINAL:
            continue
        if images:
            assert statistic is not None  # images needs it
            intervals = paired_bootstrap(
                statistic,
                np.stack([counts[ORIGINAL, s] for s in seeds]),
                np.stack([counts[arm, s] for s in seeds]),
                resamples=c.resamples,
                level=c.level,
                generator=0,
            )
        else:
            values = {
                a: {m: result["arms"][a]["metrics"][m]["values"] for m in result["arms"][a]["metrics"]}
                for a in (ORIGINAL, arm)
            }
            intervals = seed_bootstrap(values[ORIGINAL], values[arm], resamples=c.resamples, level=c.level, generator=0)
        table = {}
        for metric, interval in intervals.items():
            entry = interval.to_dict()
            if method is None:
                entry.update(low=None, high=None, excludes_zero=False)
            table[metric] = entry
        differences["arms"][arm] = table
    result["differences"] = differences
    return result


def load_arm(cfg: Config, checkpoint: Path, task: Any, val_set: Any, state: Mapping[str, Any] | None = None) -> Arm:
    """Rebuild the arm a checkpoint holds (original or swapped, for the upsampler its signature
    names) and load its weights; the rest of the signature must match ``cfg``.

    Example:
        >>> # arm = load_arm(cfg, Path("runs/demo/dysample+/seed0/checkpoints/last.pt"), task, val_set)
    """
    state = state or load_checkpoint(checkpoint)
    found = state.get("signature", {})
    swapped = bool(found.get("swapped", cfg.swap.enabled))
    variant = found.get("variant") if swapped else None
    check_signature(
        checkpoint, found, signature(cfg, task.num_classes, swapped, variant, getattr(task, "num_stuff", 0))
    )
    arm = make_arm(
        cfg,
        build_base_model(cfg, task.num_classes, num_stuff=getattr(task, "num_stuff", 0), trust_spec=True),
        task,
        val_set,
        swapped=swapped,
        verbose=False,
        variant=variant,
    )  # cfg: the caller's recipe
    load_model_state(arm.model, state["model"], checkpoint)
    return arm


def _finished(run: Path) -> bool:
    """Whether the run directory ``run`` holds a run that trained its whole budget."""
    summary = run / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("completed") is True


def _claim_out(cfg: Config, out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check that ``out_dir`` may take this comparison: empty of one, or ``resume`` with the same
    settings (budget included), or ``overwrite``."""
    held = [path for path in (out_dir / "config.yaml", out_dir / "summary.json") if path.is_file()]
    if resume and overwrite:
        raise ConfigError("--resume continues the comparison in --out and --overwrite replaces it; pass one of them")
    if held and not (resume or overwrite):
        raise ConfigError(
            f"{out_dir} already holds a comparison ({held[0]}); pass --resume to train "
            "its missing runs (finished runs are kept), --overwrite to replace it, or "
            "choose another --out"
        )
    if resume:
        started = out_dir / "config.yaml"
        if not started.is_file():
            raise ConfigError(
                f"nothing to resume: {started} does not exist; run without --resume, "
                "or pass the --out of the comparison to continue"
            )
        check_resume(
            load_config(started).to_dict(), cfg, started, free=[key for key in RESUME_FREE if key not in BUDGET]
        )


def _clear_comparison(out_dir: Path) -> None:
    """Delete what a comparison wrote in ``out_dir``: its summary, offset pictures and the run
    directories of every arm it may have had (so no old run is kept by a later ``--resume``); the
    rest is rewritten."""
    (out_dir / "summary.json").unlink(missing_ok=True)
    for arm in (ORIGINAL, *known_upsamplers()):
        (out_dir / f"offsets_{arm}.png").unlink(missing_ok=True)
        shutil.rmtree(out_dir / arm, ignore_errors=True)


def run_compare(
    cfg: Config,
    out_dir: Path,
    ctx: DistContext | None = None,
    report: Callable[[str], None] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every arm of ``compare_arms(cfg)`` with every seed of ``compare_seeds(cfg)`` (same
    initial weights, data order and budget within a seed) and write ``out_dir/<arm>/seed<k>/``,
    ``out_dir/summary.json`` (:func:`summarize_compare`), ``curves.png``, ``predictions.png``
    (first seed) and ``offsets_<arm>.png`` for every arm with DySample modules (first seed, first
    validation image; :func:`~dysample_swap.finetune.visualize.visualize_offsets`).

    ``report`` receives one line per started / finished run (the CLI prints them).

    An ``out_dir`` that holds a comparison (its ``config.yaml`` or ``summary.json``) is refused,
    unless ``resume`` (train the runs it lacks, continue the unfinished ones from their
    checkpoints and keep the finished ones; the settings must be the comparison's, budget
    included, but arms and seeds may be added) or ``overwrite`` (delete its runs and summary,
    then train as into an empty ``out_dir``).

    Example:
        >>> # run_compare(load_config("demo", ["compare.arms=[original,dysample,dysample+]"]),
        >>> #             Path("runs/demo"))["differences"]["arms"]["dysample"]["mIoU"]
    """
    from dysample_swap.finetune.visualize import dysample_sites, visualize_offsets

    ctx = ctx or init_distributed(cfg.train.device)
    report = report if report is not None and ctx.is_main else (lambda line: None)
    start = time.perf_counter()
    arms, seeds = compare_arms(cfg), compare_seeds(cfg)
    _claim_out(cfg, out_dir, resume, overwrite)
    runs = [(arm, seed) for seed in seeds for arm in arms]
    kept = [run for run in runs if resume and _finished(run_dir(out_dir, *run))]
    todo = [
        (arm, seed, resume and (run_dir(out_dir, arm, seed) / "checkpoints" / "last.pt").is_file())
        for arm, seed in runs
        if (arm, seed) not in kept
    ]
    barrier(ctx)  # every rank has read out_dir before rank 0 changes it
    if ctx.is_main:
        if overwrite:
            _clear_comparison(out_dir)
        save_config(cfg, out_dir / "config.yaml")
    if kept:
        report(f"kept {len(kept)} finished run(s): {', '.join(f'{arm}, seed {seed}' for arm, seed in kept)}")
    _run_all(cfg, todo, out_dir, ctx, report)
    if not ctx.is_main:
        return {}
    train_set, val_set = load_datasets(cfg)
    task = make_task(cfg.task, train_set, cfg.eval.score_threshold)
    # per-image sums: segmentation, depth and panoptic; detection's AP is not a sum over images
    statistic = None if isinstance(task, DetectionTask) else task.new_metrics(val_set).scores
    summary = summarize_compare(cfg, out_dir, arms, seeds, statistic)
    first = dataclasses.replace(cfg, seed=seeds[0])
    models = [
        load_arm(first, run_dir(out_dir, arm, seeds[0]) / "checkpoints" / "last.pt", task, val_set) for arm in arms
    ]
    for arm in models:
        arm.model.to(ctx.device)
    logs = {arm: [read_log(run_dir(out_dir, arm, s) / "metrics.jsonl") for s in seeds] for arm in arms}
    summary["plots"] = write_plots(cfg, models, logs, task, val_set, out_dir, ctx.device)
    if cfg.compare.visualize:
        image = val_set[0][0]
        for arm in models:
            if dysample_sites(arm.model):
                path = out_dir / f"offsets_{arm.name}.png"
                visualize_offsets(
                    arm.model, image, out=path, task=task, title=f"{arm.name}, seed {seeds[0]}, validation image 0"
                )
                summary["plots"][f"offsets/{arm.name}"] = str(path)
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    _write_json(out_dir / "summary.json", summary)
    return summary


def run_evaluate(
    cfg: Config, checkpoint: Path, out_dir: Path | None = None, ctx: DistContext | None = None
) -> dict[str, Any]:
    """Score a checkpoint on the recipe's validation split.

    The checkpoint says whether its model was swapped and for which upsampler (so any run of a
    compare directory evaluates too); everything else must match the recipe. With ``out_dir``,
    writes ``eval.json`` and ``predictions.png`` there.

    Example:
        >>> # run_evaluate(load_config("demo"), Path("runs/demo/dysample+/seed0/checkpoints/last.pt"))
    """
    ctx = ctx or init_distributed(cfg.train.device)
    state = load_checkpoint(checkpoint)
    train_set, val_set = load_datasets(cfg)
    task: Task = make_task(cfg.task, train_set, cfg.eval.score_threshold)
    arm = load_arm(cfg, checkpoint, task, val_set, state)
    arm.model.to(ctx.device)
    metrics = evaluate(arm.model, task, val_set, cfg, ctx)
    result = {
        "recipe": cfg.name,
        "checkpoint": str(checkpoint),
        "arm": arm.name,
        "step": state.get("step"),
        "metrics": metrics,
    }
    if out_dir is not None and ctx.is_main:
        if cfg.eval.num_images:
            rows = prediction_rows([arm], task, val_set, cfg.eval.num_images, ctx.device)
            result["plots"] = {
                "predictions": str(
                    plot_predictions(rows, prediction_titles(task, [arm.name]), out_dir / "predictions.png")
                )
            }
        _write_json(out_dir / "eval.json", result)
    return result
