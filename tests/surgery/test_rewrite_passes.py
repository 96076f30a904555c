"""The rewrite passes on their own: how an owner is traced (fx or eager fallback), what each pass
installs, and that restore gives the original class back."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dysample_swap import DySample
from dysample_swap.surgery.fx_rewrite import OwnerPlan, apply_fx, plan_owner
from dysample_swap.surgery.install import Replacement, apply_eager, is_rewritten, restore
from dysample_swap.surgery.sites import ROOT, Discovery, discover, discovery_context

X = torch.rand(1, 4, 6, 6, generator=torch.Generator().manual_seed(0))


class TwoCalls(nn.Module):
    """Two functional upsamplings in its own forward, fx-traceable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")
        return F.interpolate(y, size=(17, 15), mode="bilinear") * 1.0


class DataDependent(TwoCalls):
    """The same calls behind a data-dependent branch: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1e9:
            x = self.conv(x)
        y = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.interpolate(y, size=(17, 15), mode="bilinear") * 1.0


def _plan(module: nn.Module) -> tuple[OwnerPlan, Discovery]:
    with discovery_context(module):
        found = discover(module, (X,))
        plan = plan_owner(ROOT, module, list(found.invocations.values()), found.sites, {ROOT})
    return plan, found


def _replacements() -> list[Replacement]:
    return [
        Replacement(0, "dysample_0", DySample(4, anchor="nearest", offset_init_std=0.0, positions="exact")),
        Replacement(1, "dysample_1", DySample(4, anchor="bilinear", offset_init_std=0.0, positions="exact")),
    ]


def _rewrite(module: nn.Module, plan: OwnerPlan) -> None:
    """Apply the pass the plan chose."""
    if plan.method == "fx":
        apply_fx(module, plan, _replacements())
    else:
        apply_eager(module, _replacements())


def test_a_traceable_owner_gets_fx_and_keeps_its_output() -> None:
    module = TwoCalls()
    before = module(X)
    plan, _ = _plan(module)
    assert plan.method == "fx" and plan.positions == [[0, 1]] and plan.graph is not None
    apply_fx(module, plan, _replacements())
    assert is_rewritten(module) and isinstance(module, TwoCalls)
    source = vars(type(module))["_dysample_swap_rewrite"].source  # the generated forward, as it pickles
    assert "self.dysample_0(" in source and "self.dysample_1(" in source and "interpolate" not in source
    assert (module(X) - before).abs().max() <= 2e-7 * before.abs().max()
    assert module(torch.rand(2, 4, 9, 5)).shape == (2, 4, 17, 15)  # size= stays the call's own


def test_an_untraceable_owner_gets_the_eager_fallback_with_the_reason() -> None:
    module = DataDependent()
    before = module(X)
    plan, _ = _plan(module)
    assert plan.method == "eager fallback" and plan.positions == [[0, 1]]
    assert "TraceError" in plan.why_not_fx or "symbolically traced" in plan.why_not_fx
    apply_eager(module, _replacements())
    reached = []
    for name in ("dysample_0", "dysample_1"):
        getattr(module, name).register_forward_hook(lambda m, i, o, name=name: reached.append(name))
    assert (module(X) - before).abs().max() <= 2e-7 * before.abs().max()
    assert reached == ["dysample_0", "dysample_1"]


@pytest.mark.parametrize("make", [TwoCalls, DataDependent], ids=["fx", "eager fallback"])
def test_restore_gives_the_original_class_and_forward_back(make: type[nn.Module]) -> None:
    module = make()
    before = module(X)
    plan, _ = _plan(module)
    _rewrite(module, plan)
    restore(module)
    assert type(module) is make and not is_rewritten(module)
    assert torch.equal(module(X), before)  # the original F.interpolate calls again
    with pytest.raises(ValueError, match="was not rewritten by dysample_swap"):
        restore(module)


@pytest.mark.parametrize("make", [TwoCalls, DataDependent], ids=["fx", "eager fallback"])
def test_a_rewritten_owner_pickles_with_its_forward(make: type[nn.Module]) -> None:
    module = make()
    plan, _ = _plan(module)
    _rewrite(module, plan)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01)
    copy = pickle.loads(pickle.dumps(module))
    assert is_rewritten(copy) and type(copy).__name__ == make.__name__
    assert torch.equal(copy(X), module(X))
