"""Helpers of the tests of the upsamplers ported from their authors' code (FADE, SAPA, A2U, IndexNet, FreqFusion, LDA-AQU).

``reference_data/<method>[/<case>]`` holds, per case, a ``meta.json`` and raw little-endian float32 files
(C order, no header; shapes in ``meta.json``): ``input.<name>.bin``, ``output[.<name>].bin``,
``grad_output[.<name>].bin`` (the upstream gradient of ``output[.<name>]``), ``grad_input.<name>.bin``,
``state_dict/<key>.bin`` and ``param_grad/<name>.bin``. The data were computed in float64 from the
stored float32 weights and inputs, with ``loss = sum(output * grad_output)`` over every output that has a
``grad_output`` file (see each folder's README). :class:`Reference` reads a case, runs a module on it
and compares; the rest are checks every ported upsampler's tests make.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

DATA = Path(__file__).resolve().parent / "reference_data"
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]

FREQFUSION_FLAGS: list[dict[str, Any]] = [
    {"feature_resample": True},
    {"comp_feat_upsample": False},
    {"semi_conv": False},
    {"semi_conv": False, "upsample_mode": "bilinear"},
    {"hamming_window": False, "hr_residual": False},
    {"up_group": 2, "lowpass_kernel": 3},
]
"""FreqFusion constructor flags other than the defaults: each branch of its forward."""

M = TypeVar("M", bound=nn.Module)
Forward = Callable[[Any, Mapping[str, Tensor]], Mapping[str, Tensor]]
"""``forward(module, inputs) -> outputs``: inputs by the data's names (``"en"``, ``"x"``...), outputs by file stem
(``"output"``, ``"output.out"``...)."""


class Reference:
    """One case folder of ``reference_data``: its ``meta.json`` and its files.

    Args:
        method: the folder (``"fade"``, ``"sapa"``...).
        case: a sub-folder for another configuration (``"gated"``...), ``"."`` for the main one.
    """

    def __init__(self, method: str, case: str = ".") -> None:
        self.folder = DATA / method / case
        self.meta: dict[str, Any] = json.loads((self.folder / "meta.json").read_text())

    @property
    def args(self) -> dict[str, Any]:
        """The constructor arguments the data were made with."""
        return self.meta["config"]["args"]

    def __call__(self, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
        """The tensor stored in the file ``name`` (e.g. ``"output.bin"``, ``"state_dict/q.weight.bin"``)."""
        shape = self.meta["files"][name]["shape"]
        return torch.from_numpy(np.fromfile(self.folder / name, dtype="<f4").reshape(shape)).to(dtype)

    def names(self, sub: str) -> set[str]:
        """The names of the files in ``state_dict/`` or ``param_grad/`` (state-dict keys, parameter names)."""
        return {p.name.removesuffix(".bin") for p in (self.folder / sub).iterdir()}

    def files(self, prefix: str) -> list[str]:
        """The file stems (``meta.json``'s names without ``.bin``) that start with ``prefix``."""
        return sorted(name.removesuffix(".bin") for name in self.meta["files"] if name.startswith(prefix))

    def load_state(self, module: M) -> M:
        """``module`` with the data's state dict (``strict=True``), each entry cast to the module's dtype."""
        state = {k: self(f"state_dict/{k}.bin", v.dtype) for k, v in module.state_dict().items()}
        module.load_state_dict(state, strict=True)
        return module

    def module(self, build: Callable[..., M], dtype: torch.dtype = torch.float32) -> M:
        """``build(**args)`` with the data's weights, in ``dtype`` and ``eval()`` mode."""
        return self.load_state(build(**self.args)).to(dtype).eval()

    def inputs(self, dtype: torch.dtype, device: str = "cpu") -> dict[str, Tensor]:
        """The forward inputs by their name in the data (``input.<name>.bin``), as leaves that require grad."""
        return {
            stem.removeprefix("input."): self(f"{stem}.bin").to(device, dtype).requires_grad_()
            for stem in self.files("input.")
        }

    def run(self, module: nn.Module, forward: Forward, dtype: torch.dtype, device: str = "cpu") -> dict[str, Tensor]:
        """Forward and backward on the data's inputs: outputs and gradients on the CPU, by file stem.

        The loss is ``sum(output * grad_output)`` over the data's ``grad_output`` files.
        """
        module = module.to(device)
        inputs = self.inputs(dtype, device)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # full float32 convolutions on a GPU
            outputs = dict(forward(module, inputs))
            loss = sum(
                (outputs[stem.replace("grad_output", "output", 1)] * self(f"{stem}.bin").to(device, dtype)).sum()
                for stem in self.files("grad_output")
            )
            assert isinstance(loss, Tensor)
            loss.backward()
        results = outputs | {f"grad_input.{name}": t.grad for name, t in inputs.items()}
        results |= {f"param_grad/{name}": p.grad for name, p in module.named_parameters()}
        assert all(t is not None for t in results.values()), [k for k, t in results.items() if t is None]
        return {k: t.detach().cpu() for k, t in results.items()}

    def assert_matches(self, results: Mapping[str, Tensor], dtype: torch.dtype) -> None:
        """Every output and gradient the data hold, and only those, within the tolerance for ``dtype``.

        float64: ``atol = rtol = 1e-5``; float32: the data's README tolerance for a float32
        re-implementation, ``1e-4`` of the largest reference entry.
        """
        assert set(results) == set(self.files("output") + self.files("grad_input.") + self.files("param_grad/"))
        for name, actual in results.items():
            expected = self(f"{name}.bin", dtype)
            if dtype == torch.float64:
                torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5, msg=name)
            else:
                torch.testing.assert_close(actual, expected, atol=1e-4 * expected.abs().max().item(), rtol=0, msg=name)

    def assert_initialisation(self, build: Callable[..., nn.Module]) -> None:
        """The data's weights are the authors' init under ``manual_seed(seed)`` plus ``0.1 * randn`` from a seeded generator."""
        seed = self.meta["seed"]
        torch.manual_seed(seed)
        module = build(**self.args)
        noise = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in module.named_parameters():
                perturbed = param + 0.1 * torch.randn(param.shape, generator=noise)
                torch.testing.assert_close(perturbed, self(f"state_dict/{name}.bin"), atol=0, rtol=0, msg=name)


def call(*names: str) -> Forward:
    """The forward ``module(*inputs[name] for name in names)`` with one output, ``"output"`` (the data's ``output.bin``)."""

    def forward(module: Any, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"output": module(*(inputs[name] for name in names))}

    return forward


def assert_reproduced(
    method: str,
    build: Callable[..., nn.Module],
    forward: Forward,
    dtype: torch.dtype,
    case: str = ".",
    device: str = "cpu",
) -> None:
    """``build(**args)`` with the data's weights gives the data's outputs and every gradient (:meth:`Reference.assert_matches`)."""
    ref = Reference(method, case)
    ref.assert_matches(ref.run(ref.module(build, dtype), forward, dtype, device), dtype)


def perturb(module: M, std: float = 0.3) -> M:
    """``module`` with ``std * randn`` added to every parameter (so that zero or constant initialisations are exercised)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))
    return module


def assert_every_parameter_learns(module: nn.Module, loss: Tensor) -> None:
    """``loss.backward()`` gives every parameter of ``module`` a finite, non-zero gradient."""
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def assert_round_trips(module: nn.Module, fresh: nn.Module, call: Callable[[nn.Module], Tensor]) -> None:
    """``call`` gives the same tensor on ``module``, on ``fresh`` with its state dict, its pickle and its deep copy."""
    expected = call(module)
    fresh.load_state_dict(module.state_dict(), strict=True)
    for other in (fresh.train(module.training), pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        assert torch.equal(call(other), expected)


def assert_any_output_size(
    build: Callable[..., nn.Module],
    x_channels: int,
    guide_channels: int | None,
    factor_arg: str = "scale_factor",
    device: str = "cpu",
) -> None:
    """``build(**defaults)`` upsamples 13x13 to a requested 25x25, by 1.5 to 19x19, else to 26x26, also by its defaults.

    A guided upsampler gets a 25x25 guide (resized to the native 26x26); ``guide_channels=None``: an
    unguided one. ``factor_arg``: the constructor argument of the default ``scale_factor``.
    """
    x = torch.randn(2, x_channels, 13, 13, device=device)
    guide = () if guide_channels is None else (torch.randn(2, guide_channels, 25, 25, device=device),)
    up = build().to(device)
    for request, default, hw in (
        ({"size": (25, 25)}, {"size": (25, 25)}, (25, 25)),
        ({"scale_factor": 1.5}, {factor_arg: 1.5}, (19, 19)),
        ({}, {}, (26, 26)),
    ):
        for out in (up(x, *guide, **request), build(**default).to(device)(x, *guide)):
            assert out.shape == (2, x_channels, *hw) and torch.isfinite(out).all(), request


def assert_guided_input_errors(up: nn.Module, x: Tensor, guide: Tensor, x_channels_checked: bool = True) -> None:
    """The errors of :meth:`GuidedUpsampler.check_inputs <dysample_swap.upsamplers.guided.GuidedUpsampler.check_inputs>`
    and of a bad request, for inputs ``x``, ``guide`` that ``up`` reads (at least 2 channels, batch 2)."""
    up(x, guide)
    with pytest.raises(ValueError, match="x must be the low-resolution feature"):
        up(x[0], guide)
    with pytest.raises(ValueError, match="guide must be the high-resolution feature"):
        up(x, guide[0])
    arg = up.guide_channels_arg
    with pytest.raises(ValueError, match=f"guide has 1 channels .* {arg}={guide.shape[1]}.*x first"):
        up(x, guide[:, :1])
    if x_channels_checked:
        with pytest.raises(ValueError, match=f"x has 1 channels .* {up.x_channels_arg}={x.shape[1]}"):
            up(x[:, :1], guide)
    else:
        assert up(x[:, :1], guide).shape[1] == 1  # the kernels are shared by all of x's channels
    with pytest.raises(ValueError, match="batch size 1 but x has 2; pass one guide per sample"):
        up(x, guide[:1])
    with pytest.raises(ValueError, match="empty plane"):
        up(x[..., :0], guide)
    with pytest.raises(ValueError, match="not both"):
        up(x, guide, size=(8, 8), scale_factor=2)
    with pytest.raises(ValueError, match="size must be at least 1 pixel"):
        up(x, guide, size=(0, 4))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces (``largest``, in elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, Tensor):
                self.largest = max(self.largest, t.numel())
        return out
