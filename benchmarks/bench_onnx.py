"""ONNX Runtime (CPU) latency of swapped smp models against the originals, and of the sampler alone.

Each model (smp FPN and Unet, resnet34 encoder, random weights) is exported once with dynamic
height/width, as is its ``dysample+`` swap (``swap_upsamplers(model, "dysample+", verbose=False)``);
both sessions then run at each size, interleaved round by round, and the medians are compared.
The sampler-alone rows time one DySample (C=256, x2, the paper's workload) against ``F.interpolate``
bilinear, exported the same way. Every swapped session is also checked against PyTorch at a size
other than the export size.

Usage:
    python benchmarks/bench_onnx.py --threads 2 --rounds 10 [--dynamo]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from dysample_swap import DySample, swap_upsamplers


class Bilinear(nn.Module):
    """``F.interpolate`` x2 bilinear as a module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def export(model: nn.Module, example: torch.Tensor, path: Path, dynamo: bool) -> None:
    """Export with dynamic height and width."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {2: torch.export.Dim("h", min=32, max=1024), 3: torch.export.Dim("w", min=32, max=1024)}
            torch.onnx.export(
                model, (example,), str(path), input_names=["x"], dynamic_shapes=(dims,), dynamo=True, verbose=False
            )
        else:
            torch.onnx.export(
                model, (example,), str(path), input_names=["x"], dynamo=False, dynamic_axes={"x": {2: "h", 3: "w"}}
            )


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved(sessions: dict[str, ort.InferenceSession], feed: np.ndarray, rounds: int) -> dict[str, float]:
    """Median seconds of each session on the same input, alternating every round (one warm-up run each)."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for s in sessions.values():
        s.run(None, {"x": feed})
    for round_index in range(rounds):
        order = list(sessions) if round_index % 2 == 0 else list(reversed(sessions))
        for name in order:
            start = time.perf_counter()
            sessions[name].run(None, {"x": feed})
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def check(model: nn.Module, s: ort.InferenceSession, shape: tuple[int, ...]) -> float:
    """Largest |ORT - PyTorch| relative to max |PyTorch| at ``shape``."""
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model(x)
    (out,) = s.run(None, {"x": x.numpy()})
    return float(np.abs(out - expected.numpy()).max() / expected.abs().max().item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (and torch's)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[384, 512])
    parser.add_argument("--dynamo", action="store_true", help="torch.onnx.export(dynamo=True) instead of False")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"onnxruntime {ort.__version__} CPU, {args.threads} threads, median of {args.rounds} interleaved rounds, "
        f"torch.onnx.export(dynamo={args.dynamo}), exported at 256 px with dynamic H/W"
    )
    print("| model | size | original ms | swapped ms | swapped / original | ORT vs PyTorch at 320x448 (rel.) |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("FPN", "Unet"):
            original = getattr(smp, arch)("resnet34", encoder_weights=None, classes=5).eval()
            swapped = getattr(smp, arch)("resnet34", encoder_weights=None, classes=5).eval()
            swapped.load_state_dict(original.state_dict())
            swap_upsamplers(swapped, "dysample+", verbose=False)
            swapped.eval()
            example = torch.randn(1, 3, 256, 256)
            sessions = {}
            for name, model in (("original", original), ("swapped", swapped)):
                path = Path(tmp) / f"{arch}_{name}.onnx"
                export(model, example, path, args.dynamo)
                sessions[name] = session(path, args.threads)
            error = check(swapped, sessions["swapped"], (1, 3, 320, 448))
            for size in args.sizes:
                feed = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
                t = interleaved(sessions, feed, args.rounds)
                print(
                    f"| smp {arch} resnet34 | {size} | {1e3 * t['original']:.1f} | {1e3 * t['swapped']:.1f} | "
                    f"{t['swapped'] / t['original']:.2f}x | {error:.1e} |"
                )
        sampler = DySample.from_variant("dysample+", 256).eval()
        sessions = {}
        for name, model in (("bilinear", Bilinear()), ("dysample+", sampler)):
            path = Path(tmp) / f"alone_{name}.onnx"
            export(model, torch.randn(1, 256, 64, 64), path, args.dynamo)
            sessions[name] = session(path, args.threads)
        error = check(sampler, sessions["dysample+"], (1, 256, 47, 61))
        feed = np.random.default_rng(0).standard_normal((1, 256, 120, 120), dtype=np.float32)
        t = interleaved(sessions, feed, args.rounds)
        print(
            f"| sampler alone: dysample+ vs bilinear, 1x256x120x120 x2 | 120 | {1e3 * t['bilinear']:.1f} | "
            f"{1e3 * t['dysample+']:.1f} | {t['dysample+'] / t['bilinear']:.2f}x | {error:.1e} |"
        )


if __name__ == "__main__":
    main()
