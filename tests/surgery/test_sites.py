"""Runtime discovery (dysample_swap.surgery.sites): attribution, shapes, flags, and that nothing changes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from swap_checks import assert_unchanged, snapshot

from dysample_swap.surgery.policy import upsampler_scale
from dysample_swap.surgery.sites import ROOT, discover, discovery_context, module_at
from dysample_swap.surgery.swap import find_upsamplers


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.up = nn.UpsamplingNearest2d(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x))


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.inner = Inner()
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.inner(self.stem(x))
        z = F.interpolate(y, scale_factor=1.5, mode="bilinear")
        return {"out": self.drop(z) * 2, "mid": y}


def _discover(model: nn.Module, x: torch.Tensor):
    with discovery_context(model):
        return discover(model, x)


def test_module_and_function_sites_are_attributed() -> None:
    d = _discover(Outer(), torch.rand(2, 3, 5, 7))
    up, fn = d.sites
    assert (up.path, up.kind, up.function, up.owner, up.order) == (
        "inner.up",
        "module",
        "nn.UpsamplingNearest2d",
        "inner",
        0,
    )
    assert (fn.path, fn.kind, fn.function, fn.owner) == (ROOT, "function", "F.interpolate", ROOT)
    assert up.input_shape == (2, 4, 5, 7) and up.output_shape == (2, 4, 10, 14) and up.in_channels == 4
    assert fn.scale == (1.5, 1.5) and fn.size is None and fn.output_shape == (2, 4, 15, 21)
    assert upsampler_scale(fn) == 2 and fn.ratio == (1.5, 1.5)
    assert fn.source.startswith("tests/surgery/test_sites.py:") and fn.source.endswith("in forward")
    assert up.source.startswith("nn.UpsamplingNearest2d <- tests/surgery/test_sites.py:")
    assert "final" in up.flags  # returned as "mid"
    assert "final" not in fn.flags  # dropout and * 2 come after it
    assert {"direct"} <= fn.flags and fn.helper is None


def test_invocations_keep_the_owner_arguments_and_output() -> None:
    model = Outer()
    d = _discover(model, torch.rand(1, 3, 4, 4))
    inv = d.invocations[("inner", 0)]
    assert inv.module is model.inner and inv.sites == [0]
    assert inv.args[0].shape == (1, 4, 4, 4) and inv.output.shape == (1, 4, 8, 8)


def test_discovery_changes_nothing() -> None:
    model = Outer().train()
    model.inner.eval()
    x = torch.rand(1, 3, 4, 4)
    before, rng = snapshot(model), torch.get_rng_state()
    with pytest.warns(UserWarning, match="no upsampling site is eligible"):  # 4 channels, final
        find_upsamplers(model, x, variant="dysample-s", groups_fallback=False)
    assert_unchanged(before, snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())
    other = Outer()
    rng = torch.get_rng_state()
    find_upsamplers(other, swap_final=True)  # swappable sites, default input
    assert torch.equal(rng, torch.get_rng_state())
    assert model.training and not model.inner.training


def test_discovery_runs_in_eval_mode_without_grad() -> None:
    seen = {}

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen["training"], seen["grad"] = self.training, torch.is_grad_enabled()
            return F.interpolate(x, scale_factor=2.0)

    probe = Probe().train()
    _discover(probe, torch.rand(1, 1, 2, 2))
    assert seen == {"training": False, "grad": False} and probe.training


def test_pooled_context_flag_follows_the_pooled_branch_only() -> None:
    class Pyramid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = self.conv(F.adaptive_avg_pool2d(x, 3))
            se = x * torch.sigmoid(F.adaptive_avg_pool2d(x, 1))  # squeeze-excite: full size, not pooled
            return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear") + F.interpolate(
                F.max_pool2d(se, 2), scale_factor=2.0
            )

    a, b = _discover(Pyramid(), torch.rand(1, 8, 12, 12)).sites
    assert "pooled" in a.flags and "pooled" not in b.flags


def test_flags_for_input_resize_int_size_and_recompute() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.interpolate(x, size=8)
            y = self.conv(x)
            return F.interpolate(y, scale_factor=2.0, recompute_scale_factor=True) * 1

    first, second = _discover(Net(), torch.rand(1, 3, 4, 4)).sites
    assert {"input", "size_int"} <= first.flags and first.size == (8, 8)
    assert "recompute" in second.flags and "input" not in second.flags


def test_module_at_and_unnamed_root() -> None:
    model = Outer()
    assert module_at(model, "<root>") is model and module_at(model, "inner.up") is model.inner.up


def test_upsample_subclass_with_its_own_forward_is_a_functional_site() -> None:
    class UpThenScale(nn.Upsample):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2  # replacing the whole call by DySample would drop the * 2

    model = nn.Sequential(nn.Conv2d(3, 4, 1), UpThenScale(scale_factor=2), nn.Conv2d(4, 4, 1))
    (site,) = _discover(model, torch.rand(1, 3, 4, 4)).sites
    assert (site.kind, site.path, site.owner) == ("function", "1", "1")
