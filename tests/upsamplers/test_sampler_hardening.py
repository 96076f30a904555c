"""Hostile caches, degenerate tensors and bad size requests: the sampler refuses, rebuilds or raises, never dies.

The process-killing cases (SIGBUS, SIGFPE, SIGSEGV) run in a fresh interpreter that must exit 0, so a
signal death fails the test instead of the test run. The hostile libraries are compiled here from tiny
C files with the same compiler the sampler uses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dysample_swap import DySample
from dysample_swap.upsamplers import UPSAMPLERS, create_upsampler
from dysample_swap.upsamplers.dysample import native
from dysample_swap.upsamplers.dysample.sampling import dysample_sample

COMPILER = native._compiler()
needs_compiler = pytest.mark.skipif(
    COMPILER is None or native.library() is None, reason="the compiled sampler cannot be built here"
)
ROOT = os.name == "posix" and os.geteuid() == 0

# Prints the loaded library and checks a zero-offset DySample against F.interpolate (a look-alike library
# or a foreign one would not reproduce it).
FORWARD = """
import logging, torch, torch.nn.functional as F
logging.basicConfig()
from dysample_swap import DySample
from dysample_swap.upsamplers.dysample import native
x = torch.randn(1, 8, 5, 5)
y = DySample(8, groups=2, offset_init_std=0.0)(x)
assert torch.allclose(y, F.interpolate(x, scale_factor=2, mode="bilinear"), atol=1e-5), y.flatten()[:4]
print("LIB", native.library()._name if native.library() is not None else None)
"""

MARKER_LIBRARY = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {{
    FILE *f = fopen("{marker}", "w");
    if (f) {{ fputs("ran", f); fclose(f); }}
}}
"""

# Exports every symbol the sampler declares; its forward writes -inf.
LOOK_ALIKE_LIBRARY = """
#include <math.h>
#include <stdint.h>
#define FORWARD(name, T) int name(const T *x, const T *o, T *out, const void *a, const void *b, const void *c, \\
    const void *d, const void *e, const void *f, int64_t n, int64_t g, int64_t cg, int64_t h, int64_t w, \\
    int64_t ho, int64_t wo, int64_t s, int mode, int threads) {{ \\
    for (int64_t i = 0; i < n * g * cg * ho * wo; ++i) out[i] = -INFINITY; return 0; }}
FORWARD(dysample_forward_f32, float)
FORWARD(dysample_forward_f64, double)
int dysample_backward_f32(void) {{ return 0; }}
int dysample_backward_f64(void) {{ return 0; }}
int dysample_abi_version(void) {{ return 1; }}
"""


def _run(code: str, cache: Path, native_on: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, native.ENV_CACHE: str(cache), native.ENV_SWITCH: "1" if native_on else "0"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def _compile(source: str, target: Path) -> None:
    c_file = target.with_suffix(".c")
    c_file.write_text(source)
    subprocess.run([COMPILER, "-shared", "-fPIC", str(c_file), "-o", str(target)], check=True, timeout=60)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache built by a fresh process for the whole module (each test gets a copy)."""
    cache = tmp_path_factory.mktemp("pristine") / "cache"
    result = _run(FORWARD, cache)
    assert result.returncode == 0, result.stderr
    return cache


def _built_cache(pristine: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the pristine cache (modes kept): (directory, library)."""
    cache = shutil.copytree(pristine, tmp_path / "cache")
    (library,) = cache.glob("*.so")
    assert _digest_ok(library)
    return cache, library


def _digest_ok(library: Path) -> bool:
    recorded = library.with_name(library.name + ".sha256").read_text().strip()
    return recorded == hashlib.sha256(library.read_bytes()).hexdigest()


# --- item 3: planted, look-alike and badly owned cache entries ---------------------------------------------


@needs_compiler
@pytest.mark.parametrize("keep_digest", [True, False])
def test_a_planted_library_is_never_loaded(pristine: Path, tmp_path: Path, keep_digest: bool) -> None:
    cache, library = _built_cache(pristine, tmp_path)
    marker = tmp_path / "constructor-ran"
    _compile(MARKER_LIBRARY.format(marker=marker), tmp_path / "planted.so")
    shutil.copyfile(tmp_path / "planted.so", library)
    if not keep_digest:
        library.with_name(library.name + ".sha256").unlink()
    result = _run(FORWARD, cache)
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "the planted library's constructor ran"
    assert "not loading the cached compiled sampler" in result.stderr and "rebuilding" in result.stderr
    assert f"LIB {library}" in result.stdout and _digest_ok(library)


@needs_compiler
def test_a_look_alike_library_is_rebuilt_not_used(pristine: Path, tmp_path: Path) -> None:
    cache, library = _built_cache(pristine, tmp_path)
    _compile(LOOK_ALIKE_LIBRARY.format(), library)  # same name, expected symbols, stale digest
    result = _run(FORWARD, cache)  # FORWARD asserts the output is F.interpolate's, not -inf
    assert result.returncode == 0, result.stderr
    assert "does not match the SHA-256" in result.stderr
    assert _digest_ok(library)


@needs_compiler
@pytest.mark.parametrize("what", ["directory", "library", "digest"])
def test_a_group_writable_cache_entry_is_refused(pristine: Path, tmp_path: Path, what: str) -> None:
    cache, library = _built_cache(pristine, tmp_path)
    path = {"directory": cache, "library": library, "digest": library.with_name(library.name + ".sha256")}[what]
    path.chmod(path.stat().st_mode | stat.S_IWGRP | stat.S_IWOTH)
    result = _run(FORWARD, cache)
    assert result.returncode == 0, result.stderr
    assert "group or others can write" in result.stderr
    if what == "directory":  # built elsewhere for this process, the shared directory left alone
        assert "for this process instead" in result.stderr and f"LIB {cache}" not in result.stdout
    else:
        assert "rebuilding" in result.stderr and f"LIB {library}" in result.stdout


@needs_compiler
@pytest.mark.skipif(not ROOT, reason="only root can hand a file to another user")
def test_a_library_another_user_owns_is_refused(pristine: Path, tmp_path: Path) -> None:
    cache, library = _built_cache(pristine, tmp_path)
    os.chown(library, 54321, -1)
    result = _run(FORWARD, cache)
    assert result.returncode == 0, result.stderr
    assert "belongs to uid 54321" in result.stderr and library.stat().st_uid == os.getuid()  # rebuilt


@needs_compiler
@pytest.mark.slow
def test_a_cache_in_a_shared_directory_is_keyed_by_the_user(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    result = _run(FORWARD, shared / "x")
    assert result.returncode == 0, result.stderr
    private = shared / f"x-uid{os.getuid()}"
    assert not (shared / "x").exists() and f"LIB {private}" in result.stdout
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_a_new_cache_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "fresh" / "cache"))
    directory = native._cache_directory()
    assert directory == tmp_path / "fresh" / "cache"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


# --- item 4: a truncated library ---------------------------------------------------------------------------


@needs_compiler
@pytest.mark.parametrize("length", [100, 8000, 40000])
def test_a_truncated_library_is_rebuilt(pristine: Path, tmp_path: Path, length: int) -> None:
    cache, library = _built_cache(pristine, tmp_path)
    size = library.stat().st_size
    library.write_bytes(library.read_bytes()[:length])  # the digest still records the whole file
    result = _run(FORWARD, cache)
    assert result.returncode == 0, result.stderr  # not SIGBUS
    assert "does not match the SHA-256" in result.stderr and "rebuilding" in result.stderr
    assert f"LIB {library}" in result.stdout and library.stat().st_size == size and _digest_ok(library)


# --- item 5: empty batches ---------------------------------------------------------------------------------


@needs_compiler
@pytest.mark.parametrize("positions", ["grid", "exact"])
def test_an_empty_batch_trains_on_the_compiled_sampler(pristine: Path, tmp_path: Path, positions: str) -> None:
    code = (
        f"import torch\nfrom dysample_swap import DySample\n"
        f"x = torch.randn(0, 16, 8, 8, requires_grad=True)\n"
        f"up = DySample(16, positions={positions!r})\ny = up(x)\ny.sum().backward()\n"
        f"assert y.shape == (0, 16, 16, 16) and x.grad.shape == x.shape\n"
        f"assert up.offset.weight.grad.abs().sum().item() == 0\n"
    )
    result = _run(code, _built_cache(pristine, tmp_path)[0])
    assert result.returncode == 0, result.stderr  # not SIGFPE


# --- item 6: the pure-PyTorch samplers ---------------------------------------------------------------------


def test_a_nan_pixel_trains_without_the_compiled_sampler(tmp_path: Path) -> None:
    code = (
        "import torch\nfrom dysample_swap import DySample\n"
        "x = torch.randn(1, 16, 8, 8)\nx[0, 3, 2, 5] = float('nan')\nx.requires_grad_()\n"
        "DySample(16)(x).sum().backward()\nassert x.grad.shape == x.shape\n"
    )
    result = _run(code, tmp_path, native_on=False)
    assert result.returncode == 0, result.stderr  # not SIGSEGV in grid_sample's backward


def test_a_nan_grid_coordinate_reads_what_grid_sample_reads() -> None:
    """The guard changes no value: a NaN offset reads what grid_sample itself reads for it (pixel 0 on that axis)."""
    x = torch.arange(16.0).view(1, 1, 4, 4)
    offset = torch.zeros(1, 8, 4, 4)
    offset[0, 0, 1, 2] = float("nan")  # the x offset of output pixel (2, 4)
    y = dysample_sample(x, offset, 2, 1, sampler="reference")  # grid_sample underneath
    grid_y = (2 + 0.5) / 2 * 2 / 4 - 1  # output row 2 of a x2 upsampling, normalised
    expected = torch.nn.functional.grid_sample(
        x, torch.tensor([[[[float("nan"), grid_y]]]]), padding_mode="border", align_corners=False
    )
    assert y[0, 0, 2, 4] == expected.item() == 3.0  # column 0, row 0.75: 0.25 * 0 + 0.75 * 4


@pytest.mark.parametrize("sampler", ["sparse", "gather", "reference"])
def test_the_exact_samplers_train_on_a_one_pixel_input(sampler: str) -> None:
    """Every tap of a 1x1 input reads its one pixel: out = x, grad x = sum of the upstream, no offset gradient."""
    x = torch.randn(2, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    offset = torch.randn(2, 2 * 2 * 4, 1, 1, dtype=torch.float64, requires_grad=True)
    y = dysample_sample(x, offset, 2, 2, positions="exact", sampler=sampler)
    upstream = torch.randn(y.shape, dtype=torch.float64)
    y.backward(upstream)
    assert torch.equal(y, x.detach().expand(2, 4, 2, 2))
    torch.testing.assert_close(x.grad, upstream.sum((2, 3), keepdim=True))
    assert offset.grad.abs().max().item() == 0


PROBE = """
import os, torch
from dysample_swap.upsamplers.dysample.sampling import dysample_sample
nan, inf = float("nan"), float("inf")
samplers = [("grid", "reference"), ("exact", "reference"), ("exact", "gather"), ("exact", "sparse"),
            ("authors", "reference")]
if os.environ["DYSAMPLE_SWAP_NATIVE"] == "1":
    samplers += [("grid", "native"), ("exact", "native"), ("authors", "native")]
for positions, sampler in samplers:
    for shape in [(0, 4, 5, 5), (2, 4, 1, 1), (1, 4, 1, 6), (1, 4, 6, 1), (2, 4, 3, 4)]:
        for bad in ["x_nan", "x_inf", "offset_nan", "offset_inf", "offset_-inf"]:
            for dtype in (torch.float32, torch.float64):
                x = torch.randn(*shape, dtype=dtype)
                offset = torch.randn(shape[0], 16, *shape[2:], dtype=dtype)
                target = x if bad.startswith("x") else offset
                if target.numel():
                    target.view(-1)[1] = float(bad.split("_")[1])
                x.requires_grad_()
                offset.requires_grad_()
                y = dysample_sample(x, offset, 2, 2, positions=positions, sampler=sampler,
                                    init_pos=torch.zeros(1, 16, 1, 1, dtype=dtype))
                y.sum().backward()
                assert y.shape == (shape[0], 4, 2 * shape[2], 2 * shape[3])
print("done")
"""


@pytest.mark.slow
@pytest.mark.parametrize("native_on", [True, False])
def test_no_tensor_kills_any_sampler(pristine: Path, tmp_path: Path, native_on: bool) -> None:
    """Empty batches, one-pixel sides, NaN/inf inputs and offsets: forward and backward of every sampler."""
    if native_on and native.library() is None:
        pytest.skip(native.unavailable_reason())
    result = _run(PROBE, _built_cache(pristine, tmp_path)[0], native_on=native_on)
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout


@needs_compiler
def test_an_empty_input_plane_is_refused_by_the_kernel(pristine: Path, tmp_path: Path) -> None:
    """The kernel's own guard: output pixels with no input pixel raise instead of reading out of bounds."""
    code = (
        "import torch\nfrom dysample_swap.upsamplers.dysample.native_sampler import axis_tables, native_sample\n"
        "zero = torch.zeros(2, dtype=torch.long)\n"
        "rows = axis_tables(0, 2, 2, 0, 0, zero, torch.zeros(2), rows=True)\n"
        "cols = axis_tables(0, 2, 2, 1, 0, zero, torch.zeros(2), rows=False)\n"
        "try:\n    native_sample(torch.zeros(1, 2, 0, 0), torch.zeros(1, 8, 0, 0), rows, cols, 2, 1, 2, 2, 'grid')\n"
        "except ValueError as error:\n    print(error)\n"
    )
    result = _run(code, _built_cache(pristine, tmp_path)[0])
    assert result.returncode == 0, result.stderr
    assert "zero height or width" in result.stdout


def test_an_empty_input_plane_names_the_problem() -> None:
    with pytest.raises(ValueError, match="zero height or width.*empty batch is fine"):
        DySample(8, groups=2)(torch.randn(1, 8, 0, 5))


# --- unclear errors: every upsampler's forward(size=, scale_factor=) ---------------------------------------

BAD_REQUESTS = [
    ({"size": (0, 5)}, "at least 1 pixel per axis, got 0 for the height"),
    ({"size": (-1, 4)}, "at least 1 pixel per axis, got -1 for the height"),
    ({"size": (5.5, 4)}, "whole numbers of pixels.*got 5.5 for the height"),
    ({"size": (4, 5, 6)}, "one number or a pair"),
    ({"scale_factor": -2}, "finite number > 0, got -2"),
    ({"scale_factor": float("nan")}, "finite number > 0, got nan"),
    ({"scale_factor": (2, float("inf"))}, "finite number > 0, got inf for the width"),
    ({"scale_factor": 0.1}, "leaves no output pixel for the input height 4.*at least 1/4"),
]


@pytest.mark.parametrize(("request_", "message"), BAD_REQUESTS)
@pytest.mark.parametrize("name", UPSAMPLERS)
def test_a_bad_size_request_names_the_problem(name: str, request_: dict, message: str) -> None:
    upsampler = create_upsampler(name, 16, 2)
    with pytest.raises(ValueError, match=message):
        upsampler(torch.randn(1, 16, 4, 4), **request_)


def test_whole_number_sizes_still_work() -> None:
    import numpy as np

    up = DySample(8, groups=2)
    x = torch.randn(1, 8, 4, 4)
    assert up(x, size=(np.int64(7), 9)).shape == (1, 8, 7, 9)
    assert up(x, size=torch.Size([5, 6])).shape == (1, 8, 5, 6)
    assert up(x, scale_factor=0.25).shape == (1, 8, 1, 1)
