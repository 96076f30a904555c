"""The Triton sampler against the reference sampler: forward and both gradients, every anchor, both position modes,
power-of-two, odd and non-integer ratios, groups 1 and 4, float32 and float16, the deterministic input gradient.

Without a GPU the kernels run through Triton's interpreter (tests/conftest.py sets ``TRITON_INTERPRET=1`` before
triton is imported). The interpreter runs the programs one after another, so it shows what the kernels compute
but not how they behave under real concurrency: the bit-identity of two deterministic runs is only a real check
on a GPU (``pytest tests/upsamplers/test_triton_sampler.py`` there, without the variable).
"""

from __future__ import annotations

import os

import pytest
import torch

from dysample_swap import DySample
from dysample_swap.upsamplers.dysample.sampling import ANCHORS, dysample_sample
from dysample_swap.upsamplers.dysample.triton_sampler import supports

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
    reason="no GPU and TRITON_INTERPRET is not 1 (tests/conftest.py sets it before triton is imported)",
)

# (input height, width), the output request, the DySample scale
CASES = {
    "x2": ((4, 4), {}, 2),
    "odd_size": ((5, 7), {"size": (9, 13)}, 2),
    "factor_1.5": ((6, 5), {"scale_factor": 1.5}, 2),
    "factor_3_shared_cells": ((5, 6), {"scale_factor": 3}, 2),
    "scale_3_odd": ((3, 4), {"size": (10, 11)}, 3),
}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])


def _inputs(shape: tuple[int, int], scale: int, groups: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 8, *shape, generator=generator).to(DEVICE, dtype)
    offset = (torch.randn(2, 2 * groups * scale * scale, *shape, generator=generator) * 0.7).to(DEVICE)
    return x.requires_grad_(), offset.requires_grad_()


def _run(x, offset, scale, groups, sampler, **kwargs):
    out = dysample_sample(x, offset, scale, groups, sampler=sampler, **kwargs)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, out.dtype)
    grad_x, grad_offset = torch.autograd.grad(out, (x, offset), upstream)
    return out, grad_x, grad_offset


@pytest.mark.parametrize("positions", ["exact", "grid"])
@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("groups", [1, 4])
def test_forward_and_gradients_equal_the_reference(case: str, anchor: str, positions: str, groups: int) -> None:
    shape, request, scale = CASES[case]
    x, offset = _inputs(shape, scale, groups, torch.float32)
    kwargs = {"anchor": anchor, "positions": positions, **request}
    got = _run(x, offset, scale, groups, "triton", **kwargs)
    want = _run(x, offset, scale, groups, "reference", **kwargs)
    for name, g, w in zip(("output", "grad_x", "grad_offset"), got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != torch.float32])
@pytest.mark.parametrize("positions", ["exact", "grid"])
@pytest.mark.parametrize("case", ["x2", "odd_size"])
def test_low_precision_features_are_weighted_in_float32(case: str, positions: str, dtype: torch.dtype) -> None:
    """Half features: positions and sums in float32, so the output is the float32 reference rounded once."""
    shape, request, scale = CASES[case]
    x, offset = _inputs(shape, scale, 4, dtype)
    got = _run(x, offset, scale, 4, "triton", positions=positions, **request)
    x32 = x.detach().float().requires_grad_()
    want = _run(x32, offset, scale, 4, "reference", positions=positions, **request)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == torch.float32
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(got[0].float(), want[0], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(got[1].float(), want[1], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(got[2], want[2], atol=5e-2, rtol=5e-2)  # upstream gradient rounded to half


def test_float64_features_keep_float64_positions() -> None:
    x, offset = _inputs((5, 7), 2, 4, torch.float64)
    offset = offset.detach().double().requires_grad_()
    got = _run(x, offset, 2, 4, "triton", positions="exact", size=(9, 13))
    want = _run(x, offset, 2, 4, "reference", positions="exact", size=(9, 13))
    for g, w in zip(got, want):
        assert g.dtype == torch.float64
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("shape, size", [((5, 7), (9, 13)), ((61, 47), (122, 94))])
def test_zero_offsets_read_what_interpolate_reads(shape: tuple[int, int], size: tuple[int, int]) -> None:
    """Also at 61 -> 122, where a step divided through CUDA's reciprocal (61 * (1/122) != 0.5) reads other pixels."""
    x = torch.randn(1, 4, *shape, device=DEVICE)
    offset = torch.zeros(1, 2 * 2 * 4, *shape, device=DEVICE)
    for anchor, mode in (("bilinear", "bilinear"), ("nearest", "nearest")):
        got = dysample_sample(x, offset, 2, 2, size=size, anchor=anchor, positions="exact", sampler="triton")
        want = torch.nn.functional.interpolate(x, size=size, mode=mode)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def _crowded_offsets(shape: tuple[int, int], scale: int, groups: int) -> torch.Tensor:
    """Offsets that send every output pixel near input pixel (1, 1), so each of its gradient sums has many terms."""
    height, width = shape
    generator = torch.Generator().manual_seed(3)
    ys = torch.arange(height, dtype=torch.float32).view(1, 1, -1, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, 1, -1)
    jitter = torch.rand(2, 2 * groups * scale * scale, height, width, generator=generator)
    half = groups * scale * scale
    offset = jitter.clone()
    offset[:, :half] += 1.0 - xs  # x displacements
    offset[:, half:] += 1.0 - ys
    return offset.to(DEVICE).requires_grad_()


def test_the_deterministic_input_gradient_equals_the_atomic_one_and_repeats_bit_for_bit() -> None:
    x, _ = _inputs((6, 6), 2, 4, torch.float32)
    offset = _crowded_offsets((6, 6), 2, 4)
    atomic = _run(x, offset, 2, 4, "triton", positions="exact")
    with _deterministic_algorithms():
        first = _run(x, offset, 2, 4, "triton", positions="exact")[1:]
        second = _run(x, offset, 2, 4, "triton", positions="exact")[1:]
    torch.testing.assert_close(first[0], atomic[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first[1], atomic[2], atol=1e-5, rtol=1e-5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # the deterministic path really ran: its summation order differs from the atomic scatter's
    assert not torch.equal(first[0], atomic[1])


def test_the_deterministic_flag_of_the_function_equals_the_global_switch() -> None:
    from dysample_swap.upsamplers.dysample.sampling import _kernel_tables
    from dysample_swap.upsamplers.dysample.triton_sampler import triton_sample

    x, _ = _inputs((6, 6), 2, 4, torch.float32)
    offset = _crowded_offsets((6, 6), 2, 4)
    rows, cols = _kernel_tables(x, (6, 6), (12, 12), 2, None, "bilinear", "exact", torch.float32)
    upstream = torch.randn(2, 8, 12, 12, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    out = triton_sample(x, offset, rows, cols, 2, 4, 12, 12, "exact", deterministic=True)
    flagged = torch.autograd.grad(out, x, upstream)[0]
    with _deterministic_algorithms():
        out = triton_sample(x, offset, rows, cols, 2, 4, 12, 12, "exact")
        switched = torch.autograd.grad(out, x, upstream)[0]
    assert torch.equal(flagged, switched)


class _deterministic_algorithms:
    def __enter__(self) -> None:
        self.before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.before)


def test_nan_and_infinite_offsets_read_as_the_reference_reads() -> None:
    x, offset = _inputs((4, 5), 2, 2, torch.float32)
    offset = offset.detach().clone()
    offset[0, 0, 1, 1], offset[0, 9, 2, 2], offset[1, 3, 0, 0] = float("nan"), float("inf"), -float("inf")
    for positions in ("exact", "grid"):
        got = dysample_sample(x, offset, 2, 2, positions=positions, sampler="triton")
        want = dysample_sample(x, offset, 2, 2, positions=positions, sampler="reference")
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_an_empty_batch_runs_forward_and_backward() -> None:
    x = torch.randn(0, 8, 4, 4, device=DEVICE, requires_grad=True)
    offset = torch.randn(0, 32, 4, 4, device=DEVICE, requires_grad=True)
    out = dysample_sample(x, offset, 2, 4, positions="exact", sampler="triton")
    assert out.shape == (0, 8, 8, 8)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("variant", ["dysample", "dysample+", "dysample-s+"])
@pytest.mark.parametrize("positions", ["grid", "exact"])
def test_a_dysample_module_with_the_triton_sampler_equals_the_reference_one(variant: str, positions: str) -> None:
    torch.manual_seed(0)
    module = DySample.from_variant(variant, 32, offset_init_std=0.3, positions=positions, sampler="triton").to(DEVICE)
    reference = DySample.from_variant(variant, 32, positions=positions, sampler="reference").to(DEVICE)
    reference.load_state_dict(module.state_dict())
    assert "sampler=triton" in repr(module)
    x = torch.randn(2, 32, 5, 6, device=DEVICE)
    for size in (None, (9, 11)):
        got, want = module(x, size=size), reference(x, size=size)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        got.square().sum().backward()
        want.square().sum().backward()
        for (name, p), q in zip(module.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
            p.grad, q.grad = None, None


def test_the_operator_passes_opcheck() -> None:
    """Schema, fake implementation, autograd registration and dispatch of ``dysample_swap::triton_sample``."""
    from dysample_swap.upsamplers.dysample import sampling

    x, offset = _inputs((4, 5), 2, 2, torch.float32)
    rows, cols = sampling._kernel_tables(x, (4, 5), (9, 11), 2, None, "bilinear", "exact", torch.float32)
    args = (x, offset, *vars(rows).values(), *vars(cols).values(), 2, 2, 9, 11, 0, False)
    torch.library.opcheck(torch.ops.dysample_swap.triton_sample.default, args)


def test_torch_compile_keeps_the_operator_as_one_call() -> None:
    module = DySample(16, sampler="triton", positions="exact", offset_init_std=0.3).to(DEVICE)
    x = torch.randn(1, 16, 5, 6, device=DEVICE)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), module(x), atol=0, rtol=0)
    graphs = []

    def keep(gm: torch.fx.GraphModule, example_inputs: list) -> torch.fx.GraphModule:
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    torch.compile(module, backend=keep, fullgraph=True)(x)
    calls = [n for gm in graphs for n in gm.graph.nodes if n.op == "call_function" and "triton_sample" in str(n.target)]
    assert len(calls) == 1


def test_the_sampler_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    x, offset = torch.randn(1, 4, 3, 3), torch.zeros(1, 32, 3, 3)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert supports(x, offset) == "cpu tensors without TRITON_INTERPRET=1"
    with pytest.raises(ValueError, match="sampler='triton' runs CUDA tensors.*TRITON_INTERPRET=1"):
        dysample_sample(x, offset, 2, 2, sampler="triton")
    with pytest.raises(ValueError, match="unknown sampler 'cuda'"):
        DySample(4, groups=1, sampler="cuda")


@pytest.mark.slow
def test_the_gpu_benchmark_runs_dry(tmp_path) -> None:
    """``benchmarks/bench_gpu.py --dry-run``: every section at tiny sizes through the interpreter, figures written."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
    out = tmp_path / "bench.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "--dry-run", "--json", str(out)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results["modules"]) == 2 * 2 * 2 * 5  # workloads x precisions x passes x arms (eager)
    assert max(results["exactness"].values()) < 1e-5
    assert all(entry["bit_identical"] for entry in results["deterministic"].values())
    arms = {"original", "swapped grid_sample", "swapped gather", "swapped auto"}
    assert {key.split("|")[1] for key in results["models"]} == arms
    assert "| triton exact |" in done.stdout
