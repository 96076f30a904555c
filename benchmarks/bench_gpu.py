"""DySample on a GPU: the Triton sampler against bilinear interpolation, the authors' ``grid_sample`` arithmetic
and the ``gather`` sampler; its deterministic mode; swapped-vs-original training steps of real models.

One run prints, in this order (every timing a median over interleaved rounds, each arm measured in turn with
CUDA events, so all arms see the same clocks; peak memory is ``torch.cuda.max_memory_allocated`` above what was
allocated before the call):

1. the module (DySample+, x2) at the paper's workload 1x256x120x120 and at batch 16 x 256x128x128: forward
   and forward+backward (dense random upstream gradient), float32 and bfloat16 autocast, eager and
   ``torch.compile`` (compiled at the paper workload only, to stay inside the time budget), with each arm's
   ratio to bilinear ``F.interpolate`` and its peak memory;
2. swap-time exactness on the GPU: zero offsets against ``F.interpolate``;
3. the deterministic input gradient: its cost against the atomic one (the sampler alone), and whether two
   runs' gradients are bit-identical (and what ``grid_sample`` does under ``torch.use_deterministic_algorithms``);
4. a training step (forward, loss, backward, optimizer step) of smp FPN and Unet (512 px, batch 8, float32)
   and ultralytics YOLOv8s (640 px, batch 16, float16 AMP with a gradient scaler, its own loss): the
   original network, the swapped one with today's CUDA sampler (``"auto"``), and with ``sampler="triton"``.

``--dry-run`` runs everything at tiny sizes on the CPU through Triton's interpreter, with one round and no
``torch.compile`` (the tests run it, so the script cannot rot before a GPU is lent).

Usage:
    python benchmarks/bench_gpu.py [--rounds 20] [--json results.json]
    python benchmarks/bench_gpu.py --dry-run
"""

from __future__ import annotations

import os
import sys

if "--dry-run" in sys.argv:  # before triton is imported anywhere
    os.environ.setdefault("TRITON_INTERPRET", "1")

import argparse
import functools
import json
import statistics
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap import DySample, swap_upsamplers
from dysample_swap.upsamplers.dysample.sampling import dysample_sample

ARMS = {  # name -> DySample keyword arguments (None: bilinear F.interpolate)
    "bilinear": None,
    "authors grid_sample": {"positions": "grid", "sampler": "reference"},
    "gather (exact)": {"positions": "exact", "sampler": "gather"},
    "triton exact": {"positions": "exact", "sampler": "triton"},
    "triton grid": {"positions": "grid", "sampler": "triton"},
}


class Bilinear(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one call (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1e3


def _peak_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    _sync(device)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, device: torch.device, warmup: int = 2) -> dict:
    """Median milliseconds and peak MiB of each function, measured round by round in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_time_once(fn, device))
    return {name: (statistics.median(times[name]), _peak_mib(fn, device)) for name, fn in fns.items()}


def _module(arm: str, channels: int, device: torch.device) -> nn.Module:
    settings = ARMS[arm]
    if settings is None:
        return Bilinear().to(device)
    return DySample.from_variant("dysample+", channels, **settings).to(device)


def _step(module: nn.Module, x: Tensor, upstream: Tensor | None, autocast: bool) -> Callable[[], Any]:
    device = x.device
    context = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()

    def forward() -> None:
        with torch.no_grad(), context:
            module(x)

    def train() -> None:
        with context:
            out = module(x)
        out.backward(upstream.to(out.dtype))

    return forward if upstream is None else train


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3f}{unit}" if value < 10 else f"{value:.1f}{unit}"


def bench_modules(device: torch.device, rounds: int, dry: bool, results: dict) -> None:
    workloads = {"1x256x120x120": (1, 256, 120, 120), "16x256x128x128": (16, 256, 128, 128)}
    if dry:
        workloads = {"1x16x6x6": (1, 16, 6, 6), "2x16x5x7": (2, 16, 5, 7)}
    paper = next(iter(workloads))
    print("\n## 1. The module, x2 (DySample+ arms)\n", flush=True)
    print("| workload | precision | mode | pass | arm | ms | x bilinear | peak MiB |")
    print("|---|---|---|---|---|---:|---:|---:|")
    for workload, shape in workloads.items():
        for precision in ("float32", "bf16 autocast"):
            for mode in ("eager", "compile"):
                if mode == "compile" and (dry or workload != paper):
                    continue
                for pass_name in ("forward", "forward+backward"):
                    fns = {}
                    for arm in ARMS:
                        torch.manual_seed(0)
                        module = _module(arm, shape[1], device)
                        if mode == "compile":
                            torch._dynamo.reset()
                            module = torch.compile(module)
                        x = torch.randn(shape, device=device, requires_grad=pass_name != "forward")
                        upstream = None
                        if pass_name != "forward":
                            out_shape = (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
                            upstream = torch.randn(out_shape, device=device)
                        fns[arm] = _step(module, x, upstream, precision != "float32")
                    measured = interleaved(fns, rounds, device)
                    base = measured["bilinear"][0]
                    for arm, (ms, peak) in measured.items():
                        key = f"{workload}|{precision}|{mode}|{pass_name}|{arm}"
                        results["modules"][key] = {"ms": ms, "ratio": ms / base, "peak_mib": peak}
                        print(
                            f"| {workload} | {precision} | {mode} | {pass_name} | {arm} | {_fmt(ms)} | "
                            f"{ms / base:.2f} | {_fmt(peak)} |",
                            flush=True,
                        )


def check_exactness(device: torch.device, dry: bool, results: dict) -> None:
    print("\n## 2. Zero offsets against F.interpolate (swap-time exactness on this device)\n", flush=True)
    print("| size | anchor | sampler | max abs difference |")
    print("|---|---|---|---:|")
    shape = (1, 16, 5, 7) if dry else (2, 256, 61, 47)
    x = torch.randn(shape, device=device)
    offset = torch.zeros(shape[0], 2 * 4 * 4, *shape[2:], device=device)
    for size in ((2 * shape[2], 2 * shape[3]), (2 * shape[2] - 1, 2 * shape[3] + 1)):
        for anchor, mode in (("bilinear", "bilinear"), ("nearest", "nearest")):
            want = F.interpolate(x, size=size, mode=mode)
            for sampler in ("gather", "triton"):
                got = dysample_sample(x, offset, 2, 4, size=size, anchor=anchor, positions="exact", sampler=sampler)
                diff = float((got - want).abs().max())
                results["exactness"][f"{size}|{anchor}|{sampler}"] = diff
                print(f"| {size[0]}x{size[1]} | {anchor} | {sampler} | {diff:.3g} |", flush=True)
            if device.type == "cuda":  # the same call on the CPU, where the exact positions are F.interpolate's
                on_cpu = F.interpolate(x.cpu(), size=size, mode=mode)
                diff = float((want.cpu() - on_cpu).abs().max())
                results["exactness"][f"{size}|{anchor}|F.interpolate cuda vs cpu"] = diff
                print(f"| {size[0]}x{size[1]} | {anchor} | F.interpolate: CUDA vs CPU | {diff:.3g} |", flush=True)


def _sampler_grads(x: Tensor, offset: Tensor, upstream: Tensor, deterministic: bool) -> tuple[Tensor, ...]:
    """Both gradients of the Triton sampler alone, with deterministic algorithms on or off."""
    torch.use_deterministic_algorithms(deterministic)
    try:
        out = dysample_sample(x, offset, 2, 4, positions="exact", sampler="triton")
        return torch.autograd.grad(out, (x, offset), upstream)
    finally:
        torch.use_deterministic_algorithms(False)


def bench_deterministic(device: torch.device, rounds: int, dry: bool, results: dict) -> None:
    print("\n## 3. Deterministic input gradient (the sampler alone, exact positions, forward+backward)\n", flush=True)
    shapes = {"1x256x120x120": (1, 256, 120, 120), "16x256x128x128": (16, 256, 128, 128)}
    if dry:
        shapes = {"1x16x6x6": (1, 16, 6, 6)}
    print(
        "| workload | atomic ms | deterministic ms | ratio | two deterministic runs bit-identical | two atomic runs |"
    )
    print("|---|---:|---:|---:|---|---|")
    for workload, shape in shapes.items():
        torch.manual_seed(0)
        x = torch.randn(shape, device=device, requires_grad=True)
        offset = (torch.randn(shape[0], 32, *shape[2:], device=device) * 0.5).requires_grad_()
        upstream = torch.randn(shape[0], shape[1], 2 * shape[2], 2 * shape[3], device=device)

        run = functools.partial(_sampler_grads, x, offset, upstream, deterministic=False)
        deterministic = functools.partial(_sampler_grads, x, offset, upstream, deterministic=True)
        measured = interleaved({"atomic": run, "deterministic": deterministic}, rounds, device)
        first, second = deterministic(), deterministic()
        same = all(torch.equal(a, b) for a, b in zip(first, second))
        atomic_same = all(torch.equal(a, b) for a, b in zip(run(), run()))
        ratio = measured["deterministic"][0] / measured["atomic"][0]
        results["deterministic"][workload] = {
            "atomic_ms": measured["atomic"][0],
            "deterministic_ms": measured["deterministic"][0],
            "ratio": ratio,
            "bit_identical": same,
            "atomic_bit_identical": atomic_same,
        }
        print(
            f"| {workload} | {_fmt(measured['atomic'][0])} | {_fmt(measured['deterministic'][0])} | {ratio:.2f} | "
            f"{same} | {atomic_same} |",
            flush=True,
        )
    if device.type == "cuda":
        x = torch.randn(1, 8, 6, 6, device=device, requires_grad=True)
        module = DySample(8, groups=2).to(device)
        torch.use_deterministic_algorithms(True)
        try:
            module(x).sum().backward()
            verdict = "ran"
        except RuntimeError as error:
            verdict = str(error).splitlines()[0][:120]
        finally:
            torch.use_deterministic_algorithms(False)
        results["deterministic"]["grid_sample_under_deterministic"] = verdict
        print(f"\n`grid_sample` path (positions='grid', sampler='auto') under deterministic algorithms: {verdict}")


MODEL_ARMS = {  # name -> (positions, sampler) of every swapped DySample; None: the original network
    "original": None,
    "swapped grid_sample": ("grid", "reference"),
    "swapped gather": ("exact", "gather"),
    "swapped auto": ("exact", "auto"),
}


def _configure(model: nn.Module, arm: str) -> nn.Module:
    """Set the swapped modules' positions and sampler as the arm says."""
    positions, sampler = MODEL_ARMS[arm] or ("exact", "auto")
    for module in model.modules():
        if isinstance(module, DySample):
            module.positions, module.sampler = positions, sampler
    return model


def _smp_step(name: str, size: int, batch: int, device: torch.device) -> dict[str, Callable[[], Any]]:
    import segmentation_models_pytorch as smp

    classes = 21
    images = torch.randn(batch, 3, size, size, device=device)
    masks = torch.randint(0, classes, (batch, size, size), device=device)
    steps = {}
    for arm in MODEL_ARMS:
        torch.manual_seed(0)
        model = getattr(smp, name)(encoder_name="resnet34", encoder_weights=None, classes=classes)
        if arm != "original":
            swap_upsamplers(model, "dysample+", example_inputs=torch.randn(1, 3, 64, 64), verbose=False)
            _configure(model, arm)
        model = model.to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(model: nn.Module = model, optimizer: torch.optim.Optimizer = optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), masks).backward()
            optimizer.step()

        steps[arm] = step
    return steps


def _yolo_step(size: int, batch: int, device: torch.device) -> dict[str, Callable[[], Any]]:
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=generator).to(device)
    per_image = 4
    boxes = torch.rand(batch * per_image, 4, generator=generator) * 0.4 + 0.3
    boxes[:, 2:] = torch.rand(batch * per_image, 2, generator=generator) * 0.3 + 0.05
    batch_data = {
        "img": images,
        "batch_idx": torch.arange(batch).repeat_interleave(per_image).float().to(device),
        "cls": torch.randint(0, 80, (batch * per_image, 1), generator=generator).float().to(device),
        "bboxes": boxes.to(device),
    }
    steps = {}
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    for arm in MODEL_ARMS:
        torch.manual_seed(0)
        model = DetectionModel("yolov8s.yaml", nc=80, verbose=False)
        if arm != "original":
            with warnings.catch_warnings():  # "swapping the network alone": this benchmark never calls YOLO.train()
                warnings.simplefilter("ignore", UserWarning)
                swap_upsamplers(model, "dysample+", example_inputs=torch.rand(1, 3, 64, 64), verbose=False)
            _configure(model, arm)
        model.args = get_cfg()
        model = model.to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")

        def step(model: nn.Module = model, optimizer: Any = optimizer, scaler: Any = scaler) -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype):
                loss, _ = model.loss(batch_data)
            scaler.scale(loss.sum()).backward()
            scaler.step(optimizer)
            scaler.update()

        steps[arm] = step
    return steps


def bench_models(device: torch.device, rounds: int, dry: bool, results: dict) -> None:
    print("\n## 4. Training step: original vs swapped (DySample+)\n", flush=True)
    print("| model | arm | ms | x original | peak MiB |")
    print("|---|---|---:|---:|---:|")
    setups = {
        "smp FPN 512px b8 fp32": lambda: _smp_step("FPN", 64 if dry else 512, 1 if dry else 8, device),
        "smp Unet 512px b8 fp32": lambda: _smp_step("Unet", 64 if dry else 512, 1 if dry else 8, device),
        "YOLOv8s 640px b16 AMP": lambda: _yolo_step(64 if dry else 640, 2 if dry else 16, device),
    }
    for name, setup in setups.items():
        try:
            steps = setup()
        except ImportError as error:
            print(f"| {name} | skipped: {error} | | | |", flush=True)
            continue
        measured = interleaved(steps, rounds, device, warmup=1 if dry else 3)
        base = measured["original"][0]
        for arm, (ms, peak) in measured.items():
            results["models"][f"{name}|{arm}"] = {"ms": ms, "ratio": ms / base, "peak_mib": peak}
            print(f"| {name} | {arm} | {_fmt(ms)} | {ms / base:.2f} | {_fmt(peak)} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU through Triton's interpreter")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds per measurement")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument(
        "--sections", default="modules,exactness,deterministic,models", help="comma-separated sections to run"
    )
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --dry-run")
    rounds = 1 if args.dry_run else args.rounds
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter, --dry-run)"
    print(f"# bench_gpu: {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    results: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "modules": {},
        "exactness": {},
        "deterministic": {},
        "models": {},
    }
    sections = {
        "modules": lambda: bench_modules(device, rounds, args.dry_run, results),
        "exactness": lambda: check_exactness(device, args.dry_run, results),
        "deterministic": lambda: bench_deterministic(device, rounds, args.dry_run, results),
        "models": lambda: bench_models(device, rounds, args.dry_run, results),
    }
    for section in args.sections.split(","):
        begin = time.perf_counter()
        sections[section]()
        print(f"\n({section}: {time.perf_counter() - begin:.0f} s)", flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
