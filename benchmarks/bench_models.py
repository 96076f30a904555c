"""Eager PyTorch cost of DySample in whole networks, and how the sampler scales with threads.

Models: smp FPN, Unet and UPerNet (resnet34 encoder, random weights), each against its
``dysample+`` swap (``swap_upsamplers(model, "dysample+", verbose=False)``, same weights otherwise).
Timed interleaved round by round (original, swapped, then reversed), medians:

* no-grad inference at 512 px, batch 1 (eval mode);
* one training step at 256 px, batch 4: forward, cross-entropy against random labels, backward
  (train mode, gradients zeroed outside the timed region).

The threads table times the sampler alone (``dysample_sample`` with random offsets of about a
pixel, the paper's 1x256x120x120 x2, dense random upstream gradient), compiled (``sampler="native"``,
what DySample runs on the CPU) and pure PyTorch (``sampler="reference"``: ``grid_sample``), and
``F.interpolate`` bilinear, at 1 and at 2 threads.

Usage:
    python benchmarks/bench_models.py --threads 2 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from dysample_swap import dysample_sample, swap_upsamplers


def pair(arch: str) -> tuple[nn.Module, nn.Module]:
    """The original model and its dysample+ swap with the same weights."""
    original = getattr(smp, arch)("resnet34", encoder_weights=None, classes=5)
    swapped = getattr(smp, arch)("resnet34", encoder_weights=None, classes=5)
    swapped.load_state_dict(original.state_dict())
    swap_upsamplers(swapped, "dysample+", verbose=False)
    return original, swapped


def interleaved(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per step, alternating the order every round after one warm-up each."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(rounds):
        for name in list(steps) if round_index % 2 == 0 else list(reversed(steps)):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def inference_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            model(x)

    return step


def training_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()

    return step


def sampler_steps(threads: int, rounds: int, sampler: str) -> dict[str, float]:
    """Forward and forward+backward of the sampler alone and of bilinear at ``threads`` threads."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 256, 120, 120, generator=generator, requires_grad=True)
    offset = (torch.randn(1, 2 * 4 * 4, 120, 120, generator=generator) * 0.5).requires_grad_(True)
    upstream = torch.randn(1, 256, 240, 240, generator=generator)

    def sample_fwd() -> None:
        with torch.no_grad():
            dysample_sample(x, offset, 2, 4, sampler=sampler)

    def sample_bwd() -> None:
        dysample_sample(x, offset, 2, 4, sampler=sampler).backward(upstream)

    def bilinear_fwd() -> None:
        with torch.no_grad():
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def bilinear_bwd() -> None:
        F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).backward(upstream)

    return interleaved(
        {
            "sampler fwd": sample_fwd,
            "sampler fwd+bwd": sample_bwd,
            "bilinear fwd": bilinear_fwd,
            "bilinear fwd+bwd": bilinear_bwd,
        },
        rounds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=["FPN", "Unet", "UPerNet"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"eager PyTorch {torch.__version__}, CPU, {args.threads} threads, median of {args.rounds} interleaved rounds")
    print(
        "| model (resnet34, dysample+) | inference 512 px: original ms | swapped ms | swapped / original | "
        "train step 256 px x4: original ms | swapped ms | swapped / original |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for arch in args.models:
        original, swapped = pair(arch)
        x = torch.randn(1, 3, 512, 512)
        infer = interleaved(
            {"original": inference_step(original.eval(), x), "swapped": inference_step(swapped.eval(), x)}, args.rounds
        )
        batch, labels = torch.randn(4, 3, 256, 256), torch.randint(0, 5, (4, 256, 256))
        train = interleaved(
            {
                "original": training_step(original.train(), batch, labels),
                "swapped": training_step(swapped.train(), batch, labels),
            },
            args.rounds,
        )
        print(
            f"| smp {arch} | {1e3 * infer['original']:.1f} | {1e3 * infer['swapped']:.1f} | "
            f"{infer['swapped'] / infer['original']:.2f}x | {1e3 * train['original']:.1f} | "
            f"{1e3 * train['swapped']:.1f} | {train['swapped'] / train['original']:.2f}x |"
        )
    print()
    print("sampler alone (dysample_sample, 1x256x120x120 x2, groups 4) and bilinear, by thread count:")
    print(
        "| threads | sampler | sampler fwd ms | bilinear fwd ms | fwd ratio | sampler fwd+bwd ms | "
        "bilinear fwd+bwd ms | fwd+bwd ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for threads, sampler in ((1, "native"), (2, "native"), (1, "reference"), (2, "reference")):
        t = sampler_steps(threads, args.rounds, sampler)
        print(
            f"| {threads} | {sampler} | {1e3 * t['sampler fwd']:.1f} | {1e3 * t['bilinear fwd']:.1f} | "
            f"{t['sampler fwd'] / t['bilinear fwd']:.2f}x | {1e3 * t['sampler fwd+bwd']:.1f} | "
            f"{1e3 * t['bilinear fwd+bwd']:.1f} | {t['sampler fwd+bwd'] / t['bilinear fwd+bwd']:.2f}x |"
        )


if __name__ == "__main__":
    main()
