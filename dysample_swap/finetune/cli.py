"""The ``finetune``, ``evaluate`` and ``compare`` sub-commands of ``dysample-swap``.

Example:
    $ dysample-swap finetune demo --set train.max_steps=50 --out runs/demo-ft
    $ dysample-swap finetune demo --out runs/demo-ft --resume
    $ dysample-swap evaluate demo --checkpoint runs/demo-ft/checkpoints/last.pt
    $ dysample-swap compare recipes/demo.yaml --out runs/demo
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dysample_swap.finetune.checkpoint import CheckpointError
from dysample_swap.finetune.config import ConfigError, load_config
from dysample_swap.finetune.distributed import init_distributed, shutdown_distributed
from dysample_swap.finetune.engine import TrainingInterrupted

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130

#: Metrics listed first in tables (when present), in this order.
HEADLINE = ("mIoU", "bIoU", "pixel_acc", "bbox/AP", "bbox/AP50", "bbox/AP75",
            "segm/AP", "segm/AP50", "segm/AP75")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``finetune``, ``evaluate`` and ``compare`` to the ``dysample-swap`` sub-commands.

    Example:
        >>> parser = argparse.ArgumentParser(prog="dysample-swap")
        >>> register(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["compare", "demo", "--set", "train.max_steps=5"]).overrides
        ['train.max_steps=5']
    """
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe", help="recipe name in recipes/ (e.g. demo) or a YAML path")
        parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="KEY=VALUE", help="override a recipe key, e.g. train.lr=1e-3 "
                            "(value read as YAML; repeatable)")

    ft = commands.add_parser("finetune", help="train a model (DySample-swapped by default)",
                             description="Train the recipe's model; writes config.yaml, "
                             "metrics.jsonl, checkpoints/last.pt, summary.json, curves.png and "
                             "predictions.png to --out. Multi-process: torchrun --nproc_per_node N "
                             "-m dysample_swap.cli finetune ...")
    common(ft)
    ft.add_argument("--out", type=Path, help="run directory (default runs/<recipe name>)")
    ft.add_argument("--resume", action="store_true",
                    help="continue the run in --out from checkpoints/last.pt")
    ft.set_defaults(run=finetune_command)

    ev = commands.add_parser("evaluate", help="score a checkpoint on the recipe's validation data")
    common(ev)
    ev.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file (last.pt)")
    ev.add_argument("--out", type=Path, help="also write eval.json and predictions.png here")
    ev.set_defaults(run=evaluate_command)

    cmp = commands.add_parser("compare", help="train original and DySample versions side by side",
                              description="Train the original model and its DySample version with "
                              "the same seed, data order and budget; print both and write "
                              "summary.json, curves.png and predictions.png.")
    common(cmp)
    cmp.add_argument("--out", type=Path, help="output directory (default runs/<recipe>-compare)")
    cmp.set_defaults(run=compare_command)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


def ordered_metrics(metrics: Mapping[str, float]) -> list[str]:
    """Metric names: headline ones first, then the rest in their given order.

    Example:
        >>> ordered_metrics({"IoU/disc": 1.0, "bIoU": 0.5, "mIoU": 0.7})
        ['mIoU', 'bIoU', 'IoU/disc']
    """
    head = [k for k in HEADLINE if k in metrics]
    return head + [k for k in metrics if k not in head]


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns.

    Example:
        >>> print(format_table(["metric", "value"], [["mIoU", 0.5]]))
        metric  value
        ------  ------
        mIoU    0.5000
    """
    cells = [list(header)] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compare_table(summary: Mapping[str, Any]) -> str:
    """The side-by-side table ``compare`` prints: metrics, throughput, timing, sizes.

    Example:
        >>> arm = {"metrics": {"mIoU": 0.5}, "train_img_per_s": 10.0, "train_time_s": 1.0,
        ...        "final_loss": 0.3, "parameters": 100, "swapped_sites": 0, "steps": 5}
        >>> s = {"arms": {"baseline": arm, "dysample": {**arm, "metrics": {"mIoU": 0.6}}},
        ...      "delta": {"mIoU": 0.1}}
        >>> "mIoU" in compare_table(s)
        True
    """
    base, dys = summary["arms"]["baseline"], summary["arms"]["dysample"]
    variant = dys.get("variant") or "dysample"
    rows: list[list[Any]] = [[k, base["metrics"][k], dys["metrics"].get(k), summary["delta"].get(k)]
                             for k in ordered_metrics(base["metrics"])]
    speed = [("train img/s", "train_img_per_s"), ("train time (s)", "train_time_s"),
             ("final train loss", "final_loss"), ("steps", "steps"), ("parameters", "parameters"),
             ("swapped sites", "swapped_sites")]
    for label, key in speed:
        b, d = base.get(key), dys.get(key)
        delta = d - b if isinstance(b, (int, float)) and isinstance(d, (int, float)) else None
        rows.append([label, b, d, delta])
    return format_table(["metric", "baseline", variant, "delta"], rows)


def _error(command: str, err: BaseException) -> int:
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    print(f"dysample-swap {command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _run(command: str, job: Any) -> int:
    """Run ``job()`` turning expected failures into a one-line error and an exit status."""
    from dysample_swap.finetune.data.common import DatasetError

    try:
        return job()
    except TrainingInterrupted as stop:
        print(f"dysample-swap {command}: interrupted at step {stop.step}; checkpoint written to "
              f"{stop.checkpoint}; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, CheckpointError, DatasetError, KeyError, ValueError,
            FloatingPointError) as err:
        return _error(command, err)
    finally:
        shutdown_distributed()


def finetune_command(args: argparse.Namespace) -> int:
    """``dysample-swap finetune RECIPE [--set K=V ...] [--out DIR] [--resume]``.

    Example:
        >>> # finetune_command(argparse.Namespace(recipe="demo", overrides=[], out=None, resume=False))
    """
    from dysample_swap.finetune.runner import run_finetune

    def job() -> int:
        cfg = load_config(args.recipe, args.overrides)
        out = args.out or Path("runs") / cfg.name
        ctx = init_distributed(cfg.train.device)
        start = time.perf_counter()
        summary = run_finetune(cfg, out, resume=args.resume, ctx=ctx)
        if ctx.is_main:
            rows = [[k, summary["metrics"][k]] for k in ordered_metrics(summary["metrics"])]
            rows += [["train img/s", summary["train_img_per_s"]], ["steps", summary["steps"]]]
            print(format_table(["metric", summary["arm"]], rows))
            print(f"\nrun directory: {out}  (summary.json, metrics.jsonl, config.yaml, "
                  f"checkpoints/last.pt)\nplots: {', '.join(summary['plots'].values())}\n"
                  f"wall time: {time.perf_counter() - start:.1f} s")
            if not summary["completed"]:
                print(f"stopped at step {summary['steps']} of {summary['total_steps']} "
                      "(train.stop_after); continue with --resume")
        return 0

    return _run("finetune", job)


def evaluate_command(args: argparse.Namespace) -> int:
    """``dysample-swap evaluate RECIPE --checkpoint FILE [--set K=V ...] [--out DIR]``.

    Example:
        >>> # evaluate_command(argparse.Namespace(recipe="demo", overrides=[], checkpoint=Path("last.pt"), out=None))
    """
    from dysample_swap.finetune.runner import run_evaluate

    def job() -> int:
        cfg = load_config(args.recipe, args.overrides)
        ctx = init_distributed(cfg.train.device)
        result = run_evaluate(cfg, args.checkpoint, args.out, ctx=ctx)
        if ctx.is_main:
            metrics = result["metrics"]
            print(format_table(["metric", f"{result['arm']} (step {result['step']})"],
                               [[k, metrics[k]] for k in ordered_metrics(metrics)]))
            if args.out:
                print(f"\nwrote {args.out / 'eval.json'}")
        return 0

    return _run("evaluate", job)


def compare_command(args: argparse.Namespace) -> int:
    """``dysample-swap compare RECIPE [--set K=V ...] [--out DIR]``.

    Example:
        >>> # compare_command(argparse.Namespace(recipe="demo", overrides=[], out=Path("runs/demo")))
    """
    from dysample_swap.finetune.runner import run_compare

    def job() -> int:
        cfg = load_config(args.recipe, args.overrides)
        out = args.out or Path("runs") / f"{cfg.name}-compare"
        ctx = init_distributed(cfg.train.device)
        start = time.perf_counter()
        summary = run_compare(cfg, out, ctx=ctx)
        if ctx.is_main:
            print(f"\n{cfg.name}: baseline vs DySample ({summary['arms']['dysample']['variant']}), "
                  f"same seed, data order and budget ({summary['arms']['baseline']['steps']} steps "
                  f"x {cfg.train.batch_size} images x {ctx.world_size} process(es))\n")
            print(compare_table(summary))
            print(f"\nplots: {', '.join(summary['plots'].values())}\nsummary: {out / 'summary.json'}"
                  f" (per-arm runs in {out / 'baseline'} and {out / 'dysample'})\n"
                  f"wall time: {time.perf_counter() - start:.1f} s")
        return 0

    return _run("compare", job)
