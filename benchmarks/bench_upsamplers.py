"""Benchmark the upsamplers on the paper's workload (Sec. 3.4): 1x256x120x120, x2, on the CPU.

Prints one Markdown table: forward and forward+backward latency (backward with a dense random upstream gradient; median over interleaved
rounds in a shuffled order, so every method sees the same machine state and none always
follows the heavy ones), the ratio of each to bilinear, peak
memory allocated during forward+backward (from the PyTorch profiler's allocation timeline),
parameters, and GFLOPs as ``torch.utils.flop_counter`` counts them (convolutions and matrix
products; interpolation and grid_sample count as 0 there). DySample rows run what a DySample runs
on the CPU (the compiled sampler); ``pytorch:`` rows are the same modules through the pure-PyTorch
sampler (``grid_sample``, what runs without a C compiler); ``exact:`` rows are DySample with
``positions="exact"`` (index-plus-fraction positions); ``paper:`` rows are the straightforward
implementation of the paper's formulas in ``paper_reference.py``. The last rows are the other
published upsamplers of the registry, each paper's configuration (``create_upsampler(name, C, 2)``):
LDA-AQU, and the guided IndexNet, A2U, FADE, SAPA-B and FreqFusion, which also read a guide of
shape 1xCx(2*size)x(2*size) (at the paper's workload 1x256x240x240, the skip connection's encoder
feature; its gradient is computed in the forward+backward column, as in a network).

Usage:
    python benchmarks/bench_upsamplers.py --threads 2 --rounds 30
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler quiet

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_reference import PaperDySample

from dysample_swap import ALL_UPSAMPLERS, UPSAMPLERS, VARIANTS, DySample, create_upsampler, needs_guide
from dysample_swap.upsamplers.dysample.sampling import dysample
from dysample_swap.upsamplers.dysample.variants import variant_settings


class Interpolate(nn.Module):
    """F.interpolate x2 as a module (no parameters)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(
            x, scale_factor=2, mode=self.mode, align_corners=False if self.mode == "bilinear" else None
        )


class PurePyTorch(nn.Module):
    """A DySample forced onto the pure-PyTorch sampler (``sampler="reference"``), same parameters."""

    def __init__(self, module: DySample) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        m = self.module
        return dysample(
            x,
            m.offset.weight,
            m.offset.bias,
            m.scope.weight if m.dyscope else None,
            m.scale,
            m.style,
            m.groups,
            positions=m.positions,
            init_pos=m.init_pos,
            sampler="reference",
        )


class WithGuide(nn.Module):
    """A guided upsampler called as ``forward(x)``: it reads the same high-resolution guide every time."""

    def __init__(self, module: nn.Module, guide: Tensor) -> None:
        super().__init__()
        self.module = module
        self.guide = guide  # a plain attribute: no parameter, no buffer

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x, self.guide)


PORTED = tuple(name for name in ALL_UPSAMPLERS if name not in UPSAMPLERS)
"""LDA-AQU, IndexNet, A2U, FADE, SAPA-B, FreqFusion: the registry's other published upsamplers."""


def build_methods(channels: int, size: int) -> dict[str, nn.Module]:
    """The upsamplers compared, with the paper's settings for deconv and pixel shuffle (Sec. 4).

    A guided one reads a ``1 x channels x 2*size x 2*size`` guide (that requires grad, as a network's feature).
    """
    methods: dict[str, nn.Module] = {
        "nearest": Interpolate("nearest"),
        "bilinear": Interpolate("bilinear"),
        "deconv": nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1),
        "pixelshuffle": nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)),
        "carafe": create_upsampler("carafe", channels, 2),
    }
    for variant in VARIANTS:
        methods[variant] = DySample.from_variant(variant, channels, scale=2)
        methods[f"pytorch:{variant}"] = PurePyTorch(methods[variant])
        if variant in ("dysample", "dysample+"):
            methods[f"exact:{variant}"] = DySample.from_variant(variant, channels, scale=2, positions="exact")
        settings = variant_settings(variant)
        methods[f"paper:{variant}"] = PaperDySample(
            channels, 2, settings["style"], settings["groups"], settings["dyscope"]
        )
    for name in PORTED:
        module = create_upsampler(name, channels, 2)
        if needs_guide(name):
            module = WithGuide(module, torch.randn(1, channels, 2 * size, 2 * size, requires_grad=True))
        methods[name] = module
    return methods


def peak_memory_mb(step: Callable[[], None]) -> float:
    """Peak bytes allocated by ``step`` (inputs excluded), from the profiler's allocation timeline."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def gflops(module: nn.Module, x: Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() / 1e9


def run(channels: int, size: int, rounds: int, warmup: int) -> list[dict[str, float | str]]:
    torch.manual_seed(0)
    methods = build_methods(channels, size)
    x = torch.randn(1, channels, size, size)
    x_grad = x.clone().requires_grad_(True)

    def forward(m: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                m(x)

        return step

    upstream = torch.randn(1, channels, 2 * size, 2 * size)  # dense: .sum() would add the same copy to both arms

    def train_step(m: nn.Module) -> Callable[[], None]:
        def step() -> None:
            m(x_grad).backward(upstream)

        return step

    fwd_times: dict[str, list[float]] = {name: [] for name in methods}
    bwd_times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for round_index in range(warmup + rounds):
        # a fresh order every round: no method always runs right after the heavy ones (cold caches)
        random.Random(round_index).shuffle(order)
        for name in order:
            module = methods[name]
            for step, store in ((forward(module), fwd_times), (train_step(module), bwd_times)):
                start = time.perf_counter()
                step()
                if round_index >= warmup:
                    store[name].append(time.perf_counter() - start)

    rows = []
    for name, module in methods.items():
        rows.append(
            {
                "method": name,
                "fwd_ms": 1e3 * statistics.median(fwd_times[name]),
                "fwdbwd_ms": 1e3 * statistics.median(bwd_times[name]),
                "peak_mb": peak_memory_mb(train_step(module)),
                "params": sum(p.numel() for p in module.parameters()),
                "gflops": gflops(module, x),
            }
        )
    return rows


def format_table(rows: list[dict[str, float | str]]) -> str:
    base = next(r for r in rows if r["method"] == "bilinear")
    lines = [
        "| method | fwd ms | fwd / bilinear | fwd+bwd ms | fwd+bwd / bilinear | peak MB (fwd+bwd) | params | GFLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['fwd_ms']:.2f} | {r['fwd_ms'] / base['fwd_ms']:.2f}x | {r['fwdbwd_ms']:.2f} | "
            f"{r['fwdbwd_ms'] / base['fwdbwd_ms']:.2f}x | {r['peak_mb']:.1f} | {r['params']:,} | {r['gflops']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=120, help="input height = width")
    parser.add_argument("--rounds", type=int, default=30, help="timed interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.channels, args.size, args.rounds, args.warmup)
    print(
        f"input 1x{args.channels}x{args.size}x{args.size}, x2, CPU, {args.threads} threads, "
        f"median of {args.rounds} interleaved rounds, torch {torch.__version__}"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
