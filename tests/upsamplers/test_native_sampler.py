"""The compiled CPU sampler against the pure-PyTorch samplers: same forward, same gradients."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dysample_swap import DySample
from dysample_swap.upsamplers.dysample import native
from dysample_swap.upsamplers.dysample.sampling import dysample, dysample_sample

# (input size, output size or None for the native x2, scale): power-of-two, odd, non-integer ratios
SIZES = [
    ((8, 8), None, 2),
    ((13, 11), None, 2),
    ((15, 17), (45, 51), 3),
    ((10, 10), (25, 19), 2),
    ((7, 9), (13, 17), 2),
    ((13, 13), (26, 26), 2),
]
ANCHORS = ["bilinear", "nearest", "bilinear_align_corners"]
AVX2 = torch.backends.cpu.get_cpu_capability() == "AVX2"  # where grid_sample's fused arithmetic was matched


def test_the_kernel_builds_where_a_c_compiler_exists() -> None:
    """CI has a compiler, so a silent fallback there would hide a broken kernel."""
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert native.library() is not None, native.unavailable_reason()
    assert native.library().dysample_abi_version() == native.ABI_VERSION


def _inputs(
    n: int, channels: int, size: tuple[int, int], scale: int, groups: int, dtype: torch.dtype, spread: float = 0.7
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(sum(size) * scale)
    x = torch.randn(n, channels, *size, generator=generator, dtype=dtype)
    offset = torch.randn(n, 2 * groups * scale * scale, *size, generator=generator, dtype=dtype) * spread
    return x, offset


def _run(sampler: str, x: torch.Tensor, offset: torch.Tensor, grad: torch.Tensor | None, **call: object):
    x, offset = x.clone().requires_grad_(True), offset.clone().requires_grad_(True)
    out = dysample_sample(x, offset, sampler=sampler, **call)
    if grad is None:
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    out.backward(grad)
    return out.detach(), x.grad, offset.grad, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize(("size", "out", "scale"), SIZES)
@pytest.mark.parametrize("positions", ["grid", "exact"])
def test_native_equals_the_pure_pytorch_sampler(
    positions: str, size: tuple[int, int], out: tuple[int, int] | None, scale: int, anchor: str, dtype: torch.dtype
) -> None:
    groups = 2
    x, offset = _inputs(2, 6, size, scale, groups, dtype)  # offsets of up to ~2 px: border clamps included
    call = dict(scale=scale, groups=groups, size=out, anchor=anchor, positions=positions)
    ref_out, ref_gx, ref_goff, grad = _run("reference", x, offset, None, **call)
    out_, gx, goff, _ = _run("native", x, offset, grad, **call)
    if positions == "exact" or AVX2:
        assert torch.equal(out_, ref_out)  # the same arithmetic, rounding included
    torch.testing.assert_close(out_, ref_out, rtol=0, atol=4 * torch.finfo(dtype).eps)
    if positions == "exact":
        assert torch.equal(gx, ref_gx)  # the scatter runs in the reference's order
    scale_g = grad.abs().max().item() * 4
    torch.testing.assert_close(gx, ref_gx, rtol=0, atol=scale_g * 8 * torch.finfo(dtype).eps)
    torch.testing.assert_close(
        goff,
        ref_goff,
        rtol=1e-5 if dtype == torch.float32 else 1e-12,
        atol=(1e-5 if dtype == torch.float32 else 1e-12) * goff.abs().max().item(),
    )


@pytest.mark.parametrize("positions", ["grid", "exact"])
def test_native_results_do_not_depend_on_the_thread_count(positions: str) -> None:
    before = torch.get_num_threads()
    results = []
    try:
        for threads, n in ((1, 1), (2, 1), (3, 1), (1, 3), (3, 3)):
            torch.set_num_threads(threads)
            x, offset = _inputs(n, 8, (9, 12), 2, 4, torch.float32)
            results.append((n, _run("native", x, offset, None, scale=2, groups=4, positions=positions)))
    finally:
        torch.set_num_threads(before)
    for n, result in results[1:]:
        reference = next(r for m, r in results if m == n)
        for a, b in zip(result, reference):
            assert torch.equal(a, b)


def test_zero_offsets_reproduce_interpolate_through_the_kernel() -> None:
    """positions="exact": nearest bit for bit and bilinear to float rounding at odd sizes and ratios."""
    for size, out, scale in SIZES:
        x = torch.randn(1, 4, *size)
        offset = torch.zeros(1, 2 * 2 * scale * scale, *size)
        target = out or (scale * size[0], scale * size[1])
        nearest = dysample_sample(
            x, offset, scale, 2, size=target, anchor="nearest", positions="exact", sampler="native"
        )
        assert torch.equal(nearest, F.interpolate(x, size=target, mode="nearest"))
        bilinear = dysample_sample(x, offset, scale, 2, size=target, positions="exact", sampler="native")
        expected = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        assert (bilinear - expected).abs().max().item() <= 2e-7 * x.abs().max().item()


def test_gradcheck_float64_through_the_kernel() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = (torch.randn(2 * 2 * 4, 4, 1, 1, dtype=torch.float64, generator=generator) * 0.3).requires_grad_(True)
    for positions in ("grid", "exact"):

        def fn(x: torch.Tensor, weight: torch.Tensor, positions: str = positions) -> torch.Tensor:
            return dysample(x, weight, None, None, 2, "lp", 2, size=(9, 11), sampler="native", positions=positions)

        assert torch.autograd.gradcheck(fn, (x, weight))


def test_module_outputs_are_the_same_with_and_without_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DySample (channels_last input, batch 2, off-native size) gives what the pure path gives."""
    torch.manual_seed(0)
    module = DySample.from_variant("dysample+", 32, scale=2, offset_init_std=0.3)
    x = torch.randn(2, 32, 11, 14).to(memory_format=torch.channels_last)
    outs = {}
    for switch in ("1", "0"):
        monkeypatch.setenv(native.ENV_SWITCH, switch)
        native.reset()
        xg = x.clone().requires_grad_(True)
        module.zero_grad()
        y = module(xg, size=(21, 29))
        y.backward(torch.ones_like(y))
        outs[switch] = (y.detach(), xg.grad, module.offset.weight.grad.clone())
    native.reset()
    assert torch.equal(outs["1"][0], outs["0"][0]) or not AVX2
    for a, b in zip(outs["1"], outs["0"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bad_sampler_requests_name_the_problem() -> None:
    x, offset = torch.randn(1, 4, 3, 3, dtype=torch.bfloat16), torch.zeros(1, 32, 3, 3)
    with pytest.raises(ValueError, match="float32/float64 CPU tensors"):
        dysample_sample(x, offset, 2, 2, sampler="native")
    with pytest.raises(ValueError, match="positions='exact'"):
        dysample_sample(x.float(), offset, 2, 2, sampler="sparse")


def _fresh_interpreter(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_a_failed_build_warns_and_falls_back(tmp_path) -> None:
    code = (
        "import torch, logging\nlogging.basicConfig()\n"
        "from dysample_swap import DySample, native\n"
        "y = DySample(8, groups=2)(torch.randn(1, 8, 4, 4))\n"
        "print('shape', tuple(y.shape), 'lib', native.library())\n"
    )
    result = _fresh_interpreter({"CC": str(tmp_path / "no-such-compiler"), native.ENV_CACHE: str(tmp_path)}, code)
    assert result.returncode == 0, result.stderr
    assert "shape (1, 8, 8, 8) lib None" in result.stdout
    assert "compiled CPU sampler is unavailable" in result.stderr and "no-such-compiler" in result.stderr
    switched_off = _fresh_interpreter({native.ENV_SWITCH: "0", native.ENV_CACHE: str(tmp_path)}, code)
    assert "lib None" in switched_off.stdout and "DYSAMPLE_SWAP_NATIVE=0" in switched_off.stderr


def test_the_build_is_cached_and_shared(tmp_path) -> None:
    if native.library() is None:
        pytest.skip(native.unavailable_reason())
    code = "from dysample_swap import native\nprint(native.library() is not None)\n"
    first = _fresh_interpreter({native.ENV_CACHE: str(tmp_path)}, code)
    assert first.stdout.strip() == "True", first.stderr
    built = sorted(p.name for p in tmp_path.iterdir())
    assert len(built) == 2 and built[0].endswith(".so")  # no temporary files left behind
    assert built[1] == built[0] + ".sha256"  # the digest checked before every load
    mtime = (tmp_path / built[0]).stat().st_mtime_ns
    second = _fresh_interpreter({native.ENV_CACHE: str(tmp_path)}, code)
    assert second.stdout.strip() == "True"
    assert (tmp_path / built[0]).stat().st_mtime_ns == mtime  # loaded, not rebuilt


def test_non_finite_offsets_read_what_the_reference_reads() -> None:
    """NaN and huge offsets clamp to the border in both samplers (no undefined integer conversion)."""
    x = torch.randn(1, 4, 5, 6)
    offset = torch.zeros(1, 2 * 2 * 4, 5, 6)
    offset[0, 0, 1, 2], offset[0, 13, 3, 3], offset[0, 5, 0, 0] = float("nan"), 1e30, -1e30
    for positions in ("exact", "grid"):
        native = dysample_sample(x, offset, 2, 2, positions=positions, sampler="native")
        reference = dysample_sample(x, offset, 2, 2, positions=positions, sampler="reference")
        assert torch.equal(native.isnan(), reference.isnan())
        torch.testing.assert_close(native, reference, equal_nan=True)
