"""The checks every swapped real model must pass (shared by the test_swap_*.py files).

``check_swap`` builds a model twice (original and fresh copy), swaps, and asserts: find_upsamplers
changes nothing; the expected swapped/skipped/fallback counts; outputs equal to the original at
swap time and at another input size (float32, relative tolerance ``RTOL``); original state-dict keys
kept; deepcopy; a state-dict round trip into a freshly swapped copy with ``strict=True``;
train()/eval(); and a short training run in which every new DySample parameter gets a non-zero
gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from dysample_swap.surgery.swap import SwapReport, find_upsamplers, swap_report, swap_upsamplers
from dysample_swap.upsamplers.dysample.module import DySample

RTOL = 1e-4
"""Float32 tolerance, relative to the largest output magnitude: grid_sample positions are good to
about ``W * 2**-24`` px, so a zero-offset DySample differs from F.interpolate by ~1e-6 relative on
these map sizes; the networks then mix those errors (float64 would be exact but runs CPU convs on
a slow path)."""


def tensors(value: Any) -> list[torch.Tensor]:
    """Every floating tensor in a (nested) output."""
    return [t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def assert_close(actual: Any, expected: Any, rtol: float = RTOL) -> None:
    a, b = tensors(actual), tensors(expected)
    assert len(a) == len(b), f"{len(a)} output tensors, expected {len(b)}"
    for x, y in zip(a, b):
        assert x.shape == y.shape, f"shape {tuple(x.shape)} != {tuple(y.shape)}"
        if x.numel():
            diff = (x - y).abs().max().item()
            assert diff <= rtol * max(1.0, y.abs().max().item()), f"max abs diff {diff}"


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything find_upsamplers must leave alone."""
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "training": [m.training for m in model.modules()],
        "classes": [type(m) for m in model.modules()],
        "forwards": [m.__dict__.get("forward") for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "names": [n for n, _ in model.named_modules()],
    }


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key]), f"{key} changed"
    for field in ("training", "classes", "forwards", "hooks", "names"):
        assert before[field] == after[field], f"{field} changed"


def dysample_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {
        f"{path}.{name}": p
        for path, m in model.named_modules()
        if isinstance(m, DySample)
        for name, p in m.named_parameters()
    }


def run(model: nn.Module, inputs: tuple[Any, ...], output: Callable[[nn.Module, tuple[Any, ...]], Any]) -> Any:
    with torch.no_grad():
        return output(model, inputs)


def default_output(model: nn.Module, inputs: tuple[Any, ...]) -> Any:
    return model(*inputs)


def default_loss(model: nn.Module, inputs: tuple[Any, ...]) -> torch.Tensor:
    out = tensors(model(*inputs))
    generator = torch.Generator().manual_seed(1)
    return sum((t * torch.randn(t.shape, generator=generator, dtype=t.dtype)).mean() for t in out)


def check_swap(
    build: Callable[[], nn.Module],
    inputs: tuple[Any, ...],
    *,
    swapped: int,
    skipped: int,
    other_inputs: tuple[Any, ...] | None = None,
    train_inputs: tuple[Any, ...] | None = None,
    fallback: int = 0,
    output: Callable[[nn.Module, tuple[Any, ...]], Any] = default_output,
    loss: Callable[[nn.Module, tuple[Any, ...]], torch.Tensor] = default_loss,
    variant: str = "dysample+",
    **policy: Any,
) -> tuple[nn.Module, SwapReport]:
    """Swap ``build()`` and run every check; returns the swapped model and its report.

    One module per site (``chain=False`` unless given): a chain of bilinear x2 stages does not
    reproduce a bilinear x4/x8 call, and these checks assert identical outputs at swap time.
    """
    policy.setdefault("chain", False)
    torch.manual_seed(0)
    model = build().eval()
    reference = run(model, inputs, output)
    other_reference = run(model, other_inputs, output) if other_inputs is not None else None

    before = snapshot(model)
    sites = find_upsamplers(model, inputs, variant=variant, **policy)
    assert_unchanged(before, snapshot(model))
    original_keys = set(model.state_dict())

    swap_upsamplers(model, variant, inputs, verbose=False, **policy)
    report = swap_report(model)
    assert [(s.path, s.action, s.reason) for s in report.sites] == [(s.path, s.action, s.reason) for s in sites]
    summary = report.table()
    assert (len(report.swapped), len(report.skipped)) == (swapped, skipped), summary
    assert sum(s.method == "eager fallback" for s in report.swapped) == fallback, summary
    new = dysample_parameters(model)
    assert len({s.owner + "." + s.replacement for s in report.swapped}) == len(
        [m for m in model.modules() if isinstance(m, DySample)]
    )
    assert report.parameters_added == sum(p.numel() for p in new.values())

    keys = set(model.state_dict())
    assert original_keys <= keys
    dysample_paths = {path for path, m in model.named_modules() if isinstance(m, DySample)}
    assert all(any(k.startswith(p + ".") for p in dysample_paths) for k in keys - original_keys)
    for site in report.swapped:
        owner = model if site.owner == "<root>" else model.get_submodule(site.owner)
        assert isinstance(owner.get_submodule(site.replacement), DySample)

    model.eval()
    assert_close(run(model, inputs, output), reference)
    if other_inputs is not None:
        assert_close(run(model, other_inputs, output), other_reference)
    assert_close(run(copy.deepcopy(model), inputs, output), reference)

    fresh = build()
    swap_upsamplers(fresh, variant, inputs, verbose=False, **policy)
    trained_like = {k: v + 0.01 if k in new else v for k, v in model.state_dict().items()}
    fresh.load_state_dict(trained_like, strict=True)
    model.load_state_dict(trained_like, strict=True)
    assert_close(run(fresh.eval(), inputs, output), run(model, inputs, output))
    model.load_state_dict({k: v - 0.01 if k in new else v for k, v in model.state_dict().items()})

    if swapped:
        _check_training(model, train_inputs or inputs, loss, new)
    model.eval()
    return model, report


def _check_training(
    model: nn.Module, inputs: tuple[Any, ...], loss: Callable[..., torch.Tensor], new: dict[str, nn.Parameter]
) -> None:
    """Two SGD steps: every DySample parameter must get a non-zero gradient in one of them.

    (With zero-initialised offsets the dynamic-scope weights only see a gradient once the offset
    weights have moved, hence two steps.)
    """
    model.train()
    frozen = [p for p in model.parameters() if all(p is not q for q in new.values()) and p.requires_grad]
    for p in frozen:  # only the DySample parameters need gradients: keeps the backward cheap
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(new.values(), lr=10.0)
    touched = dict.fromkeys(new, False)
    for _ in range(2):
        optimizer.zero_grad()
        loss(model, inputs).backward()
        for name, p in new.items():
            touched[name] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
        optimizer.step()
    for p in frozen:
        p.requires_grad_(True)
    assert all(touched.values()), [n for n, ok in touched.items() if not ok]
