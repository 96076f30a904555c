"""The ``finetune``, ``evaluate``, ``compare`` and ``visualize`` sub-commands of ``dysample-swap``.

Example:
    $ dysample-swap finetune demo --set train.max_steps=50 --out runs/demo-ft
    $ dysample-swap finetune demo --out runs/demo-ft --resume
    $ dysample-swap evaluate demo --checkpoint runs/demo-ft/checkpoints/last.pt
    $ dysample-swap compare recipes/demo.yaml --arms original,dysample,dysample+ --seeds 2 --out runs/demo
    $ dysample-swap compare recipes/demo.yaml --arms original,dysample,dysample+ --seeds 3 --out runs/demo --resume
    $ dysample-swap visualize runs/demo/dysample+/seed0/checkpoints/last.pt image.png --out offsets.png
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
HEADLINE = ("mIoU", "bIoU", "pixel_acc", "bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``finetune``, ``evaluate``, ``compare`` and ``visualize`` to the ``dysample-swap``
    sub-commands.

    Example:
        >>> parser = argparse.ArgumentParser(prog="dysample-swap")
        >>> register(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["compare", "demo", "--set", "train.max_steps=5"]).overrides
        ['train.max_steps=5']
    """

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe", help="recipe name in recipes/ (e.g. demo) or a YAML path")
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a recipe key, e.g. train.lr=1e-3 (value read as YAML; repeatable)",
        )
        parser.add_argument(
            "--preset",
            help="apply one of the recipe's presets first (e.g. cpu: "
            "the paper recipes' CPU-sized smoke test on synthetic data)",
        )

    ft = commands.add_parser(
        "finetune",
        help="train a model (DySample-swapped by default)",
        description="Train the recipe's model; writes config.yaml, "
        "metrics.jsonl, checkpoints/last.pt, summary.json, curves.png and "
        "predictions.png to --out. Multi-process: torchrun --nproc_per_node N "
        "-m dysample_swap.cli finetune ...",
    )
    common(ft)
    ft.add_argument("--out", type=Path, help="run directory (default runs/<recipe name>)")
    ft.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from checkpoints/last.pt (same settings; only "
        "the budget, log/eval/checkpoint intervals and resources may change)",
    )
    ft.set_defaults(run=finetune_command)

    ev = commands.add_parser("evaluate", help="score a checkpoint on the recipe's validation data")
    common(ev)
    ev.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file (last.pt)")
    ev.add_argument("--out", type=Path, help="also write eval.json and predictions.png here")
    ev.set_defaults(run=evaluate_command)

    cmp = commands.add_parser(
        "compare",
        help="train the original and swapped versions side by side",
        description="Train the original model and one version per upsampler "
        "(--arms), each with every seed (--seeds; same initial weights, data "
        "order and budget within a seed); print mean +- std per arm and each "
        "arm's difference from the original with a 95%% paired bootstrap "
        "interval; write summary.json, curves.png, predictions.png and "
        "offsets_<arm>.png for DySample arms.",
    )
    common(cmp)
    cmp.add_argument("--out", type=Path, help="output directory (default runs/<recipe>-compare)")
    cmp.add_argument(
        "--arms",
        help="comma-separated upsampler names, 'original' included, e.g. "
        "original,dysample,dysample+,carafe (default: original and swap.variant)",
    )
    cmp.add_argument("--seeds", type=int, help="seeds per arm: seed, seed+1, ... (default 1)")
    cmp.add_argument(
        "--jobs",
        type=int,
        help="train this many runs at a time in worker processes (default 0: one after another in this process)",
    )
    again = cmp.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the comparison in --out: keep its finished runs, continue the "
        "interrupted ones, train the missing ones (more --arms/--seeds allowed; "
        "other settings must be the same)",
    )
    again.add_argument(
        "--overwrite", action="store_true", help="replace the comparison in --out (its runs are deleted and retrained)"
    )
    cmp.set_defaults(run=compare_command)

    vis = commands.add_parser(
        "visualize",
        help="draw a DySample site's sampling offsets on an image",
        description="Run a trained checkpoint's model on an image and draw, "
        "for one DySample site, the sampling offsets (arrows over the image "
        "region of the upsampled feature), their length and, for dynamic-"
        "scope variants, the scope factor (the paper's Fig. 7).",
    )
    vis.add_argument("checkpoint", type=Path, help="training checkpoint (RUN/checkpoints/last.pt)")
    vis.add_argument("image", type=Path, help="image file (preprocessed as the recipe does)")
    vis.add_argument("--site", help="DySample module path or index (default: the finest site); --list-sites shows them")
    vis.add_argument("--group", type=int, help="draw this channel group (default: mean over groups)")
    vis.add_argument("--arrows", type=int, default=24, help="arrows along each side (default 24)")
    vis.add_argument("--out", type=Path, default=Path("offsets.png"), help="PNG to write")
    vis.add_argument("--list-sites", action="store_true", help="list the DySample sites and exit")
    vis.add_argument(
        "--trust-spec",
        action="store_true",
        help="build the checkpoint's model even if its config names a "
        "package.module:function spec, which runs that module's code: only for a "
        "checkpoint whose origin you trust (smp:, torchvision:, timm: specs need no flag)",
    )
    vis.set_defaults(run=visualize_command)


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


def _spread_cell(spread: Mapping[str, Any] | None) -> str:
    """``mean ± std`` with as many decimals for both as the mean's size calls for."""
    if not spread or spread.get("mean") is None:
        return "-"
    mean, std = spread["mean"], spread.get("std")
    decimals = 4 if abs(mean) < 10 else 2 if abs(mean) < 1000 else 0
    return f"{mean:.{decimals}f}" + ("" if std is None else f" ± {std:.{decimals}f}")


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _interval_cell(diff: Mapping[str, Any] | None) -> str:
    if not diff or diff.get("mean") is None:
        return "-"
    if diff.get("low") is None or diff.get("high") is None:
        return _signed(diff["mean"])
    mark = " *" if diff.get("excludes_zero") else ""
    return f"{_signed(diff['mean'])} [{_signed(diff['low'])}, {_signed(diff['high'])}]{mark}"


#: Rows of the compare table after the metrics: (label, summary key).
SPEED_ROWS = (
    ("train img/s", "train_img_per_s"),
    ("train time (s)", "train_time_s"),
    ("peak memory (MB)", "peak_memory_mb"),
    ("final train loss", "final_loss"),
)
SIZE_ROWS = (
    ("steps", "steps"),
    ("parameters", "parameters"),
    ("added parameters", "added_parameters"),
    ("swapped sites", "swapped_sites"),
)


def compare_table(summary: Mapping[str, Any]) -> str:
    """The tables ``compare`` prints: per arm ``mean ± std`` over seeds of every metric, the
    training throughput, time, peak memory and sizes; then each arm's difference from
    ``original`` with its interval (``*``: the interval excludes zero) and how it was computed.

    Example:
        >>> m = lambda v: {"values": [v], "mean": v, "std": None}
        >>> arm = {"metrics": {"mIoU": m(0.5)}, "train_img_per_s": m(10.0), "train_time_s": m(1.0),
        ...        "peak_memory_mb": m(900.0), "final_loss": m(0.3), "parameters": 100,
        ...        "added_parameters": 0, "swapped_sites": 0, "steps": 5}
        >>> s = {"arms": {"original": arm, "dysample": {**arm, "metrics": {"mIoU": m(0.6)}}},
        ...      "differences": {"method": "paired bootstrap over validation images and seeds",
        ...                      "level": 0.95, "resamples": 1000, "arms": {"dysample": {"mIoU":
        ...      {"mean": 0.1, "low": 0.05, "high": 0.15, "excludes_zero": True}}}}}
        >>> print(*compare_table(s).splitlines()[-4:-1], sep=chr(10))
        difference  dysample - original
        ----------  ----------------------------
        mIoU        +0.1000 [+0.0500, +0.1500] *
    """
    arms = list(summary["arms"])
    records = summary["arms"]
    metrics = ordered_metrics(records[arms[0]]["metrics"])
    rows: list[list[Any]] = [[k, *[_spread_cell(records[a]["metrics"].get(k)) for a in arms]] for k in metrics]
    rows += [[label, *[_spread_cell(records[a].get(key)) for a in arms]] for label, key in SPEED_ROWS]
    rows += [[label, *[records[a].get(key) for a in arms]] for label, key in SIZE_ROWS]
    values = format_table(["metric", *arms], rows)
    diffs = summary["differences"]
    others = [a for a in arms if a in diffs["arms"]]
    diff_rows = [[k, *[_interval_cell(diffs["arms"][a].get(k)) for a in others]] for k in metrics]
    table = format_table(["difference", *[f"{a} - original" for a in others]], diff_rows)
    if diffs.get("method"):
        how = (
            f"mean over seeds; {diffs['level']:.0%} interval: {diffs['method']} "
            f"({diffs['resamples']} resamples); * = the interval excludes 0"
        )
    else:
        how = f"mean over seeds; no interval: {diffs.get('note', 'not enough runs')}"
    return f"{values}\n\n{table}\n{how}"


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
        print(
            f"dysample-swap {command}: interrupted at step {stop.step}; checkpoint written to "
            f"{stop.checkpoint}; continue with --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except (ConfigError, CheckpointError, DatasetError, KeyError, ValueError, FloatingPointError) as err:
        return _error(command, err)
    finally:
        shutdown_distributed()


def _config(args: argparse.Namespace, extra: Sequence[str] = ()) -> Any:
    return load_config(args.recipe, [*args.overrides, *extra], preset=args.preset)


def finetune_command(args: argparse.Namespace) -> int:
    """``dysample-swap finetune RECIPE [--set K=V ...] [--out DIR] [--resume]``.

    Example:
        >>> # finetune_command(argparse.Namespace(recipe="demo", overrides=[], out=None, resume=False))
    """
    from dysample_swap.finetune.runner import run_finetune

    def job() -> int:
        cfg = _config(args)
        out = args.out or Path("runs") / cfg.name
        ctx = init_distributed(cfg.train.device)
        start = time.perf_counter()
        summary = run_finetune(cfg, out, resume=args.resume, ctx=ctx)
        if ctx.is_main:
            rows = [[k, summary["metrics"][k]] for k in ordered_metrics(summary["metrics"])]
            rows += [["train img/s", summary["train_img_per_s"]], ["steps", summary["steps"]]]
            print(format_table(["metric", summary["arm"]], rows))
            print(
                f"\nrun directory: {out}  (summary.json, metrics.jsonl, config.yaml, "
                f"checkpoints/last.pt)\nplots: {', '.join(summary['plots'].values())}\n"
                f"wall time: {time.perf_counter() - start:.1f} s"
            )
            if not summary["completed"]:
                print(
                    f"stopped at step {summary['steps']} of {summary['total_steps']} "
                    "(train.stop_after); continue with --resume"
                )
        return 0

    return _run("finetune", job)


def evaluate_command(args: argparse.Namespace) -> int:
    """``dysample-swap evaluate RECIPE --checkpoint FILE [--set K=V ...] [--out DIR]``.

    Example:
        >>> # evaluate_command(argparse.Namespace(recipe="demo", overrides=[], checkpoint=Path("last.pt"), out=None))
    """
    from dysample_swap.finetune.runner import run_evaluate

    def job() -> int:
        cfg = _config(args)
        ctx = init_distributed(cfg.train.device)
        result = run_evaluate(cfg, args.checkpoint, args.out, ctx=ctx)
        if ctx.is_main:
            metrics = result["metrics"]
            print(
                format_table(
                    ["metric", f"{result['arm']} (step {result['step']})"],
                    [[k, metrics[k]] for k in ordered_metrics(metrics)],
                )
            )
            if args.out:
                print(f"\nwrote {args.out / 'eval.json'}")
        return 0

    return _run("evaluate", job)


def compare_command(args: argparse.Namespace) -> int:
    """``dysample-swap compare RECIPE [--arms A,B,...] [--seeds N] [--jobs N] [--set K=V ...]
    [--out DIR] [--resume | --overwrite]``.

    Example:
        >>> # compare_command(argparse.Namespace(recipe="demo", overrides=[], preset=None,
        >>> #     out=Path("runs/demo"), arms="original,dysample,dysample+", seeds=2, jobs=None,
        >>> #     resume=False, overwrite=False))
    """
    from dysample_swap.finetune.runner import compare_arms, compare_seeds, run_compare

    def job() -> int:
        flags = [
            f"compare.{key}={value}"
            for key, value in (("arms", args.arms), ("seeds", args.seeds), ("jobs", args.jobs))
            if value is not None
        ]
        cfg = _config(args, flags)
        out = args.out or Path("runs") / f"{cfg.name}-compare"
        ctx = init_distributed(cfg.train.device)
        start = time.perf_counter()
        arms, seeds = compare_arms(cfg), compare_seeds(cfg)
        if ctx.is_main:
            print(
                f"{cfg.name}: {len(arms)} arms ({', '.join(arms)}) x {len(seeds)} seed(s) "
                f"({', '.join(map(str, seeds))}) -> {out}",
                flush=True,
            )
        summary = run_compare(
            cfg, out, ctx=ctx, report=lambda line: print(line, flush=True), resume=args.resume, overwrite=args.overwrite
        )
        if ctx.is_main:
            print(
                f"\n{cfg.name}: {len(arms)} arms x {len(seeds)} seed(s); within a seed every arm "
                f"has the same initial weights, data order and budget ({summary['steps']} steps "
                f"x {summary['batch_size']} images x {summary['world_size']} process(es))\n"
            )
            print(compare_table(summary))
            print(
                f"\nplots: {', '.join(summary['plots'].values())}\nsummary: {out / 'summary.json'}"
                f" (runs in {out}/<arm>/seed<k>/)\nwall time: {time.perf_counter() - start:.1f} s"
            )
        return 0

    return _run("compare", job)


def visualize_command(args: argparse.Namespace) -> int:
    """``dysample-swap visualize CHECKPOINT IMAGE [--site S] [--group G] [--arrows N] [--out PNG]
    [--trust-spec]``.

    Example:
        >>> # visualize_command(argparse.Namespace(checkpoint=Path("last.pt"), image=Path("a.png"),
        >>> #     site=None, group=None, arrows=24, out=Path("offsets.png"), list_sites=False,
        >>> #     trust_spec=False))
    """
    from dysample_swap.finetune.visualize import dysample_sites, load_checkpoint_model, visualize_offsets

    def job() -> int:
        if args.list_sites:
            model, _, _ = load_checkpoint_model(args.checkpoint, trust_spec=args.trust_spec)
            sites = dysample_sites(model)
            print(
                format_table(
                    ["index", "DySample site", "module"],
                    [[k, name, dict(model.named_modules())[name].extra_repr()] for k, name in enumerate(sites)],
                )
                if sites
                else "no DySample sites (an 'original' arm, or another upsampler)"
            )
            return 0
        site = int(args.site) if args.site is not None and args.site.lstrip("-").isdigit() else args.site
        field = visualize_offsets(
            args.checkpoint,
            args.image,
            site=site,
            out=args.out,
            group=args.group,
            arrows=args.arrows,
            title=f"{args.checkpoint} on {args.image.name}",
            trust_spec=args.trust_spec,
        )
        length = field.magnitude(args.group)
        line = (
            f"{field.site} ({field.variant}, {field.input_size[0]}x{field.input_size[1]} -> "
            f"{field.output_size[0]}x{field.output_size[1]}): offset length mean "
            f"{float(length.mean()):.4f}, max {float(length.max()):.4f} input px"
        )
        if field.scope is not None:
            line += f"; dynamic scope mean {float(field.scope.nanmean()):.4f} (static: 0.25)"
        print(f"{line}\nwrote {field.path}")
        return 0

    return _run("visualize", job)
