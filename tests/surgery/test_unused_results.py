"""Upsampling whose result nothing reads is left alone, like final logits; outputs in containers count as outputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.utils import ModelOutput

from dysample_swap import DySample, find_upsamplers, swap_upsamplers

X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


class Resized(nn.Module):
    """A 1x1 convolution, then a bilinear resize to ``size``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return F.interpolate(self.conv(x), size=size, mode="bilinear")


class AuxHeadNet(nn.Module):
    """A segmentation net whose auxiliary head is resized to the input and read only by a training loss."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        self.dec = Resized(16, 8)
        self.head = nn.Conv2d(8, 2, 1)
        self.aux = Resized(16, 5)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        f = self.enc(x)
        size = [s * 2 for s in f.shape[-2:]]
        aux = self.aux(f, list(x.shape[-2:]))
        logits = F.interpolate(self.head(self.dec(f, size).relu()), size=x.shape[-2:], mode="nearest")
        if labels is None:
            return logits
        return logits, F.cross_entropy(logits, labels) + 0.4 * F.cross_entropy(aux, labels)


def test_an_auxiliary_head_read_only_by_a_loss_is_left_alone() -> None:
    decisions = find_upsamplers(AuxHeadNet(), (X,))
    by_channels = {d.in_channels: d for d in decisions}
    assert by_channels[8].action == "swap" and "unused" not in by_channels[8].flags
    aux = by_channels[5]
    assert aux.action == "skip" and "unused" in aux.flags
    assert aux.reason.startswith("result unused: no later operation of the forward reads it")
    assert "swap_final=True" in aux.reason


def test_every_replacement_gets_a_gradient_in_the_training_forward() -> None:
    model = swap_upsamplers(AuxHeadNet(), "dysample+", (X,), verbose=False)
    labels = torch.randint(0, 2, (2, 64, 64))
    _, loss = model.train()(X, labels)
    loss.backward()
    dysamples = [m for m in model.modules() if isinstance(m, DySample)]
    assert dysamples
    for module in dysamples:
        assert module.offset.weight.grad is not None and module.offset.weight.grad.abs().sum() > 0


def test_swap_final_also_swaps_an_unused_result() -> None:
    decisions = find_upsamplers(AuxHeadNet(), (X,), swap_final=True)
    assert [d.action for d in decisions if d.in_channels == 5] == ["swap"]


def test_a_result_used_only_in_training_mode_is_unused_in_discovery() -> None:
    class TrainOnlyAux(AuxHeadNet):
        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
            f = self.enc(x)
            aux = self.aux(f, list(x.shape[-2:]))
            logits = self.head(self.dec(f, list(x.shape[-2:])).relu())
            return (logits, aux) if self.training else logits  # discovery runs in eval mode

    decisions = {d.in_channels: d for d in find_upsamplers(TrainOnlyAux(), (X,))}
    assert decisions[5].action == "skip" and "unused" in decisions[5].flags
    assert decisions[8].action == "swap"


@dataclasses.dataclass
class PlainOutput:
    logits: torch.Tensor
    features: list[torch.Tensor]


@dataclasses.dataclass
class HFOutput(ModelOutput):
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


@pytest.mark.parametrize(
    "wrap",
    [
        lambda logits, feature: PlainOutput(logits, [feature]),
        lambda logits, feature: HFOutput(logits=logits, hidden=feature),
        lambda logits, feature: {"out": {"logits": logits}, "features": (feature,)},
    ],
    ids=["dataclass", "transformers ModelOutput", "nested dict"],
)
def test_outputs_inside_containers_are_final_not_unused(wrap: Any) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> Any:
            f = self.enc(x)
            feature = F.interpolate(f, scale_factor=2, mode="nearest")
            return wrap(F.interpolate(self.head(f), scale_factor=2, mode="bilinear"), feature)

    decisions = find_upsamplers(Net(), (X,))
    assert [("final" in d.flags, "unused" in d.flags, d.action) for d in decisions] == [
        (True, False, "skip"),
        (True, False, "skip"),
    ]
    assert all(d.reason.startswith("final logits") for d in decisions)


def test_reading_only_the_shape_of_a_result_does_not_use_it() -> None:
    class ShapeOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Conv2d(3, 4, 3, stride=2, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.enc(x)
            probe = F.interpolate(f, scale_factor=2, mode="nearest")
            return F.interpolate(f, size=probe.shape[-2:], mode="bilinear").sum(1) * probe.dim()

    decisions = find_upsamplers(ShapeOnly(), (X,))
    assert ["unused" in d.flags for d in decisions] == [True, False]
