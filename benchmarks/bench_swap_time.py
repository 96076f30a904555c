"""How long ``swap_upsamplers`` takes (one discovery forward + tracing + rewrite) on real models.

Run:  .venv/bin/python benchmarks/bench_swap_time.py [--threads 2] [--repeats 3]

Each repeat swaps a freshly built, randomly initialised model with the default example input
(smp: 1x3x128x128; torchvision detectors: one 3x128x160 image, discovered without the resize to
``min_size``); model construction is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from dysample_swap.surgery.example_inputs import default_inputs, native_size
from dysample_swap.surgery.model_spec import build_model
from dysample_swap.surgery.swap import swap_report, swap_upsamplers

MODELS = (
    "torchvision:fasterrcnn_resnet50_fpn",
    "smp:FPN:encoder_name=resnet34",
    "smp:Unet:encoder_name=resnet34",
    "smp:Segformer:encoder_name=mit_b0",
)


def time_forward(spec: str) -> float:
    """Seconds of one plain eval forward on the same default example input (the floor for a swap)."""
    model = build_model(spec).eval()
    inputs = default_inputs(model)[0]
    with torch.no_grad(), native_size(model, inputs):
        model(*inputs)  # warm-up
        start = time.perf_counter()
        model(*inputs)
        return time.perf_counter() - start


def time_swap(spec: str, repeats: int) -> tuple[float, float, int]:
    """Median and max seconds of ``swap_upsamplers`` on fresh models, and the sites swapped."""
    times = []
    swapped = 0
    for _ in range(repeats):
        model = build_model(spec)
        start = time.perf_counter()
        swap_upsamplers(model, "dysample+", verbose=False)
        times.append(time.perf_counter() - start)
        swapped = len(swap_report(model).swapped)
    return statistics.median(times), max(times), swapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    print(
        f"| model | swapped sites | one plain forward (s) | swap_upsamplers median (s) | max (s) | "
        f"median / forward |  ({args.threads} threads)"
    )
    print("|---|---|---|---|---|---|")
    for spec in MODELS:
        forward = time_forward(spec)
        median, worst, swapped = time_swap(spec, args.repeats)
        print(f"| `{spec}` | {swapped} | {forward:.2f} | {median:.2f} | {worst:.2f} | {median / forward:.1f} |")


if __name__ == "__main__":
    main()
