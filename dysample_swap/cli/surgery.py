"""The ``inspect`` and ``swap`` sub-commands of ``dysample-swap``.

Example:
    $ dysample-swap inspect smp:FPN:encoder_name=resnet34
    $ dysample-swap swap torchvision:fasterrcnn_resnet50_fpn --variant dysample+ --out frcnn.pt
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dysample_swap.surgery.model_spec import build_model, is_owned
from dysample_swap.surgery.persist import save_swapped, writable_target
from dysample_swap.surgery.swap import plan_swap, swap_upsamplers
from dysample_swap.upsamplers import ALL_UPSAMPLERS, UPSAMPLERS, upsampler_cost

MODEL_HELP = (
    "smp:ARCH[:k=v,...] (encoder_weights=None unless given), torchvision:NAME[:k=v,...] "
    "(weights=None, weights_backbone=None unless given), timm:NAME[:k=v,...], or "
    "package.module:function[:k=v,...] returning an nn.Module"
)


def _shape(text: str) -> list[int]:
    try:
        shape = [int(v) for v in text.lower().replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1x3x256x256") from None
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give NxCxHxW (a tensor) or CxHxW (one detector image)")
    return shape


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument(
        "--variant",
        default="dysample+",
        choices=ALL_UPSAMPLERS,
        help="DySample variant (default dysample+), or a rival upsampler for ablations",
    )
    parser.add_argument(
        "--input-shape",
        type=_shape,
        default=None,
        help="example input: NxCxHxW tensor, or CxHxW for one detector image "
        "(default: 1x3x128x128, or one 3x128x160 image for torchvision detectors)",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=None,
        metavar="PATH_OR_GLOB",
        help="only swap these sites (repeatable; a path also selects what is below it)",
    )
    parser.add_argument(
        "--exclude", action="append", default=None, metavar="PATH_OR_GLOB", help="never swap these sites (repeatable)"
    )
    parser.add_argument("--swap-final", action="store_true", help="also swap final-logit upsampling")
    parser.add_argument(
        "--groups-fallback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use the largest valid group count where the variant's groups do not divide the "
        "channels (default; --no-groups-fallback skips those sites)",
    )
    parser.add_argument(
        "--init",
        choices=("match", "paper"),
        default="match",
        help="match: identical outputs at swap time (default); paper: bilinear anchor, N(0, 0.001)",
    )
    parser.add_argument(
        "--chain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="x4/x8 sites as chains of x2 stages, as the paper (default; --no-chain: one module)",
    )
    parser.add_argument(
        "--positions",
        choices=("exact", "grid"),
        default="exact",
        help="exact: zero offsets reproduce the interpolation at every size (default); "
        "grid: the authors' grid_sample arithmetic (~1e-6 off at odd sizes)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="fail when nothing is eligible or an --include site cannot be swapped"
    )


def _inputs(args: argparse.Namespace) -> Any:
    import torch

    if args.input_shape is None:
        return None
    if len(args.input_shape) == 3:
        return ([torch.rand(*args.input_shape)],)
    return (torch.rand(*args.input_shape),)


def _policy(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "include": args.include,
        "exclude": args.exclude,
        "swap_final": args.swap_final,
        "groups_fallback": args.groups_fallback,
        "init": args.init,
        "strict": args.strict,
        "chain": args.chain,
        "positions": args.positions,
    }


def cost_table(report: Any, policy: dict[str, Any]) -> str:
    """Parameters and multiply-accumulates every upsampler would add at the sites ``report`` swaps.

    Example:
        >>> import torch, torch.nn as nn
        >>> from dysample_swap import plan_swap
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> print(cost_table(plan_swap(net, "dysample", torch.rand(1, 3, 16, 16)), {}).splitlines()[2])
        dysample         288  0.000
    """
    rows = [("upsampler", "params", "GMACs")]
    for name in UPSAMPLERS:
        params = macs = 0
        seen = set()
        for d in report.swapped:
            if (d.owner, d.replacement) in seen:
                continue
            seen.add((d.owner, d.replacement))
            cost = upsampler_cost(
                name,
                d.in_channels,
                d.upsampler_scale,
                tuple(d.input_shape[2:]),
                batch=d.input_shape[0],
                size=tuple(d.output_shape[2:]),
                chain=policy.get("chain", True),
                init=policy.get("init", "match"),
            )
            params, macs = params + cost.params, macs + cost.macs
        rows.append((name, f"{params:,}", f"{macs / 1e9:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [rows[0][0].ljust(widths[0]) + "  " + "  ".join(c.rjust(w) for c, w in zip(rows[0][1:], widths[1:]))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [r[0].ljust(widths[0]) + "  " + "  ".join(c.rjust(w) for c, w in zip(r[1:], widths[1:])) for r in rows[1:]]
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    """Print the site table, the parameter count the swap would add, and what every upsampler would cost there.

    The model is not changed.

    Example:
        >>> args = argparse.Namespace(
        ...     model="torchvision:lraspp_mobilenet_v3_large:num_classes=4", variant="dysample",
        ...     input_shape=None, include=None, exclude=None, swap_final=False,
        ...     groups_fallback=False, init="match", strict=False, chain=True, positions="exact")
        >>> run_inspect(args)  # doctest: +ELLIPSIS
        path ...
        1 swapped, 1 skipped; variant dysample adds 4,128 parameters
        ...
        carafe ...
        0
    """
    model = build_model(args.model, trust_spec=True)  # typed by the user on this command line
    report = plan_swap(model, args.variant, _inputs(args), verbose=False, **_policy(args))
    print(report.table())
    print("\nwhat each upsampler would add at the swapped sites (batch and sizes of the example input):")
    print(cost_table(report, _policy(args)))
    return 0


def run_swap(args: argparse.Namespace) -> int:
    """Swap, print the table, and write state dict + recipe to ``--out``.

    Example:
        >>> import os, tempfile
        >>> args = argparse.Namespace(
        ...     model="torchvision:lraspp_mobilenet_v3_large:num_classes=4", variant="dysample",
        ...     input_shape=None, include=None, exclude=None, swap_final=False,
        ...     groups_fallback=False, init="match", strict=False, chain=True, positions="exact",
        ...     out=os.path.join(tempfile.mkdtemp(), "lraspp.pt"))
        >>> run_swap(args)  # doctest: +ELLIPSIS
        path ...
        wrote ...lraspp.pt (rebuild with dysample_swap.load_swapped(...))
        0
    """
    writable_target(args.out)  # before the swap, not after it
    model = build_model(args.model, trust_spec=True)  # typed by the user on this command line
    swap_upsamplers(model, args.variant, _inputs(args), verbose=True, **_policy(args))
    save_swapped(model, args.out, args.model)
    trust = "" if is_owned(args.model) else ", trust_spec=True"  # its spec names the user's own code
    print(f"wrote {args.out} (rebuild with dysample_swap.load_swapped({str(args.out)!r}{trust}))")
    return 0


def _guarded(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ValueError, TypeError) as exc:
            print(f"dysample-swap {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` and ``swap`` sub-commands to the ``dysample-swap`` parser.

    Example:
        >>> parser = argparse.ArgumentParser(prog="dysample-swap")
        >>> register(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["inspect", "smp:FPN"]).model
        'smp:FPN'
    """
    inspect_parser = commands.add_parser(
        "inspect",
        help="list a model's upsampling sites and what swapping would do",
        description="Run MODEL once on an example input and print every upsampling call with the swap decision.",
    )
    _add_common(inspect_parser)
    inspect_parser.set_defaults(run=_guarded(run_inspect))
    swap_parser = commands.add_parser(
        "swap",
        help="swap a model's upsamplers for DySample and save it",
        description="Swap MODEL's eligible upsamplers for DySample; write the state dict and the recipe to FILE.",
    )
    _add_common(swap_parser)
    swap_parser.add_argument("--out", required=True, metavar="FILE", help="where to write state dict + recipe")
    swap_parser.set_defaults(run=_guarded(run_swap))
