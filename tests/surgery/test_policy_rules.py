"""Every swap/skip rule of the policy, each on a small real model that triggers it, through ``find_upsamplers``.

Each case names the site it is about by its input channels (every model gives them distinct channel
counts) and checks the decision and the start of the reason the report shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dysample_swap import find_upsamplers

pytestmark = pytest.mark.filterwarnings("ignore:no upsampling site is eligible")

X = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class Net(nn.Module):
    """``stem`` (3 -> 6 channels, /4), then ``body(self, features)``, then a 1x1 head whose output is returned."""

    def __init__(self, body: Callable[[nn.Module, torch.Tensor], torch.Tensor], width: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=4, padding=1)
        self.body = body
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self, self.stem(x))
        return self.head(y) * 1.0


def _paste(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A helper called per item to arbitrary sizes, as mask pasting is."""
    return F.interpolate(x, size=size, mode="bilinear")


def _per_item(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    crops = [_paste(f[:, :, :2, :2], size) for size in ((5, 7), (3, 11), (9, 4))]
    return f + sum(c.sum() for c in crops)


def _pooled(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    context = F.adaptive_avg_pool2d(f, 2)
    return f + F.interpolate(context, size=f.shape[-2:], mode="bilinear")


def _down_then_up(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    down = F.interpolate(f, size=(4, 4))
    return F.interpolate(down, size=(8, 8), mode="bilinear")


def _recompute(net: nn.Module, f: torch.Tensor) -> torch.Tensor:
    up = F.interpolate(f, scale_factor=2.5, mode="nearest", recompute_scale_factor=True)
    return F.adaptive_avg_pool2d(up, f.shape[-2:])


CASES: dict[str, tuple[Callable[[nn.Module, torch.Tensor], torch.Tensor], dict[str, Any], str]] = {
    "not 4-D": (lambda n, f: F.interpolate(f.flatten(2), scale_factor=2.0)[..., ::2].view_as(f), {}, "3-D input"),
    "per item": (_per_item, {}, "post-processing helper _paste() called per item"),
    "mode": (
        lambda n, f: F.adaptive_avg_pool2d(F.interpolate(f, scale_factor=2.0, mode="bicubic"), 8),
        {},
        "bicubic not supported",
    ),
    "antialias": (
        lambda n, f: F.adaptive_avg_pool2d(F.interpolate(f, scale_factor=2.0, mode="bilinear", antialias=True), 8),
        {},
        "antialias=True",
    ),
    "broadcast": (
        lambda n, f: f + F.interpolate(f.mean((2, 3), keepdim=True), size=f.shape[-2:]),
        {},
        "1x1 -> 8x8 broadcast",
    ),
    "pooled": (_pooled, {}, "adaptive-pooled context 2x2 -> 8x8"),
    "downsamples": (_down_then_up, {}, "downsamples 8x8->4x4"),
    "same size": (lambda n, f: F.interpolate(f, size=f.shape[-2:], mode="bilinear"), {}, "same-size no-op"),
    "recompute": (_recompute, {}, "recompute_scale_factor=True with a non-integer scale_factor"),
    "excluded": (
        lambda n, f: F.adaptive_avg_pool2d(F.interpolate(f, scale_factor=2.0), 8),
        {"exclude": "<root>"},
        "excluded by exclude=",
    ),
    "not included": (
        lambda n, f: F.adaptive_avg_pool2d(F.interpolate(f, scale_factor=2.0), 8),
        {"include": "stem"},
        "not selected by include=",
    ),
    "groups": (
        lambda n, f: F.adaptive_avg_pool2d(F.interpolate(f, scale_factor=2.0), 8),
        {"groups_fallback": False, "variant": "dysample"},
        "6 channels are not divisible by groups=4",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_skip_rule_names_its_reason(case: str) -> None:
    body, policy, reason = CASES[case]
    decisions = find_upsamplers(Net(body), (X,), **policy)
    skipped = [d for d in decisions if d.action == "skip" and d.reason.startswith(reason)]
    assert skipped, [(d.path, d.action, d.reason) for d in decisions]
    assert all(d.parameters == 0 and d.groups is None for d in skipped)


def test_a_resize_of_the_network_input_is_left_alone() -> None:
    class Resizing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear")) * 1.0

    (decision,) = find_upsamplers(Resizing(), (X,))
    assert decision.action == "skip" and decision.reason.startswith("resizes the network input (32x32 -> 64x64)")


def test_final_logits_are_left_alone_unless_swap_final() -> None:
    class Logits(Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(self.head(self.stem(x)), scale_factor=4.0, mode="bilinear")

    net = Logits(lambda n, f: f)
    (decision,) = find_upsamplers(net, (X,))
    assert decision.action == "skip" and decision.reason.startswith("final logits of the network")
    assert find_upsamplers(net, (X,), swap_final=True)[0].action == "swap"


class _Helper(nn.Module):
    """Upsamples through a helper function, and cannot be traced by fx (a data-dependent branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if f.sum() > -1e9:  # data-dependent: torch.fx cannot trace it
            f = self.conv(f)
        return _double(f)


def _double(f: torch.Tensor) -> torch.Tensor:
    return F.interpolate(f, scale_factor=2.0, mode="nearest")


def test_a_helper_call_in_an_untraceable_owner_is_left_alone() -> None:
    net = Net(lambda n, f: F.adaptive_avg_pool2d(n.helper(f), 8))
    net.helper = _Helper()
    decisions = [d for d in find_upsamplers(net, (X,)) if d.path == "helper"]
    assert [d.action for d in decisions] == ["skip"]
    assert decisions[0].reason.startswith("called from helper function _double(), and torch.fx cannot trace helper")


class _Double(nn.Module):
    """Its one interpolate call runs once per call of the module: here at two channel counts."""

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.interpolate(f, scale_factor=2.0) * 1.0


def test_one_call_position_with_two_channel_counts_is_left_alone() -> None:
    def body(n: nn.Module, f: torch.Tensor) -> torch.Tensor:
        wide = n.two(n.widen(f)).sum(1, keepdim=True)
        return F.adaptive_avg_pool2d(n.two(f) + wide, 8)

    net = Net(body)
    net.two, net.widen = _Double(), nn.Conv2d(6, 10, 1)
    decisions = [d for d in find_upsamplers(net, (X,)) if d.path == "two"]
    assert len(decisions) == 2 and all(d.action == "skip" for d in decisions)
    assert all(
        d.reason == "the same call of two also runs where it is skipped or has other channels" for d in decisions
    )


def test_a_result_nothing_reads_is_left_alone() -> None:
    def body(n: nn.Module, f: torch.Tensor) -> torch.Tensor:
        F.interpolate(f, scale_factor=2.0)  # computed, never read
        return f

    (decision,) = find_upsamplers(Net(body), (X,))
    assert decision.action == "skip" and decision.reason.startswith("result unused")


def test_an_eligible_site_is_swapped_with_its_reason() -> None:
    (decision,) = find_upsamplers(Net(lambda n, f: F.adaptive_avg_pool2d(F.interpolate(f, scale_factor=2.0), 8)), (X,))
    assert decision.action == "swap" and decision.reason.startswith("x2 dysample+, anchor nearest")
    assert decision.parameters > 0
