"""The ``dysample-swap`` command: one entry point, one sub-command per job.

Sub-commands are registered by the modules that implement them, so this file only
dispatches:

* ``inspect`` / ``swap``                    -> :mod:`dysample_swap.cli.surgery`
* ``finetune`` / ``evaluate`` / ``compare`` -> :mod:`dysample_swap.finetune.cli`

Example:
    $ dysample-swap inspect smp:FPN:encoder_name=resnet34
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command registered.

    Example:
        >>> parser = build_parser()
        >>> parser.prog
        'dysample-swap'
    """
    from dysample_swap.cli import surgery as surgery_cli
    from dysample_swap.finetune import cli as finetune_cli

    parser = argparse.ArgumentParser(
        prog="dysample-swap",
        description="Swap the upsamplers of a PyTorch network for DySample, and fine-tune it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    surgery_cli.register(commands)
    finetune_cli.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status.

    Every sub-command parser sets ``run`` (a function of the parsed arguments that
    returns an exit status) through ``set_defaults``.

    Example:
        >>> main(["--help"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)
