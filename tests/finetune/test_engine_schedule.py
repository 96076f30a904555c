"""Learning-rate schedules: values at known steps, warm-up, and the optimiser groups."""

from __future__ import annotations

import math

import pytest
import torch

from dysample_swap import DySample
from dysample_swap.finetune.config import TrainConfig
from dysample_swap.finetune.optim import build_optimizer, dysample_parameters
from dysample_swap.finetune.schedule import build_scheduler, lr_factor


def _lrs(cfg: TrainConfig, total: int, lr: float = 1.0) -> list[float]:
    """The lr actually used by each optimiser step of a LambdaLR-driven run."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, total, cfg)
    used = []
    for _ in range(total):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return used


def test_poly_values() -> None:
    cfg = TrainConfig(schedule="poly", poly_power=1.0)
    assert _lrs(cfg, 4, lr=6e-5) == pytest.approx([6e-5, 4.5e-5, 3e-5, 1.5e-5])
    cfg = TrainConfig(schedule="poly", poly_power=2.0, min_lr_ratio=0.1)
    assert lr_factor(5, 10, cfg) == pytest.approx(0.9 * 0.25 + 0.1)
    assert lr_factor(10, 10, cfg) == pytest.approx(0.1)


def test_cosine_values() -> None:
    cfg = TrainConfig(schedule="cosine")
    assert [lr_factor(s, 8, cfg) for s in (0, 2, 4, 6, 8)] == pytest.approx(
        [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0.0]
    )


def test_step_schedule_is_the_detection_1x_schedule() -> None:
    # 12 "epochs" of 10 steps, lr x0.1 at epochs 8 and 11 (fractions 8/12 and 11/12).
    cfg = TrainConfig(schedule="step", milestones=[8 / 12, 11 / 12], gamma=0.1, optimizer="sgd")
    lrs = _lrs(cfg, 120, lr=0.02)
    assert lrs[79] == pytest.approx(0.02) and lrs[80] == pytest.approx(0.002)
    assert lrs[109] == pytest.approx(0.002) and lrs[110] == pytest.approx(0.0002)


def test_linear_warmup_multiplies_the_schedule() -> None:
    cfg = TrainConfig(schedule="step", milestones=[0.5], warmup_steps=500, warmup_ratio=0.001)
    assert lr_factor(0, 10000, cfg) == pytest.approx(0.001)
    assert lr_factor(250, 10000, cfg) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(500, 10000, cfg) == pytest.approx(1.0)
    poly = TrainConfig(schedule="poly", warmup_steps=10, warmup_ratio=0.0)
    assert lr_factor(5, 100, poly) == pytest.approx(0.5 * 0.95)


def test_constant() -> None:
    assert _lrs(TrainConfig(schedule="constant"), 3) == [1.0, 1.0, 1.0]


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 1)
        self.up = DySample(8, scale=2)


def test_dysample_group_gets_the_multiplier_and_follows_the_schedule() -> None:
    net = _Net()
    cfg = TrainConfig(lr=0.1, dysample_lr_mult=10.0, schedule="poly", optimizer="sgd")
    opt = build_optimizer(net, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert {id(p) for p in groups["dysample"]["params"]} == {id(p) for p in net.up.parameters()}
    assert {id(p) for p in groups["base"]["params"]} == {id(p) for p in net.conv.parameters()}
    sched = build_scheduler(opt, 4, cfg)
    opt.step()
    sched.step()
    assert groups["base"]["lr"] == pytest.approx(0.075)
    assert groups["dysample"]["lr"] == pytest.approx(0.75)
    assert len(dysample_parameters(net)) == len(list(net.up.parameters()))
