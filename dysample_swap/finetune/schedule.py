"""Learning-rate schedules: linear warm-up times a poly, step, cosine or constant decay.

The schedule is a per-step factor applied to every parameter group's base learning rate (so a
DySample group with a learning-rate multiplier keeps its ratio to the rest). Warm-up follows
mmcv's linear rule, as in the paper's codebases: the factor ramps from ``warmup_ratio`` to 1 over
``warmup_steps`` on top of the decay.

Example:
    >>> from dysample_swap.finetune.config import TrainConfig
    >>> cfg = TrainConfig(schedule="step", milestones=[0.5], gamma=0.1, max_steps=10)
    >>> [round(lr_factor(s, 10, cfg), 3) for s in (0, 4, 5, 9)]
    [1.0, 1.0, 0.1, 0.1]
"""

from __future__ import annotations

import bisect
import math

import torch

from dysample_swap.finetune.config import TrainConfig


def decay_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """The schedule's factor at ``step`` (0-based) of ``total`` steps, without warm-up.

    ``poly``: ``(1 - min) * (1 - step/total) ** power + min`` (mmseg's PolyLR with ``min_lr_ratio``);
    ``cosine``: ``min + (1 - min) * (1 + cos(pi * step/total)) / 2``;
    ``step``: ``gamma ** (number of milestones passed)``, milestones as fractions of ``total``.

    Example:
        >>> decay_factor(5, 10, TrainConfig(schedule="poly", poly_power=1.0))
        0.5
    """
    progress = min(step, total) / total
    floor = cfg.min_lr_ratio
    if cfg.schedule == "poly":
        return (1.0 - floor) * (1.0 - progress) ** cfg.poly_power + floor
    if cfg.schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        boundaries = [round(m * total) for m in cfg.milestones]
        return cfg.gamma ** bisect.bisect_right(boundaries, step)
    return 1.0


def warmup_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up: ``warmup_ratio`` at step 0 rising to 1 at ``warmup_steps``.

    Example:
        >>> warmup_factor(0, TrainConfig(warmup_steps=4, warmup_ratio=0.2))
        0.2
        >>> warmup_factor(2, TrainConfig(warmup_steps=4, warmup_ratio=0.5))
        0.75
    """
    if step >= cfg.warmup_steps:
        return 1.0
    return cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * step / cfg.warmup_steps


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate used for optimiser step ``step`` (0-based).

    Example:
        >>> lr_factor(0, 100, TrainConfig(warmup_steps=10, warmup_ratio=0.1, schedule="constant"))
        0.1
    """
    return decay_factor(step, total, cfg) * warmup_factor(step, cfg)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total: int, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`; call ``.step()`` after each optimiser step.

    Its ``state_dict`` holds only numbers, so checkpoints load with ``weights_only=True``.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
        >>> sched = build_scheduler(opt, 12, TrainConfig(schedule="step", milestones=[0.5]))
        >>> for _ in range(6): opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 6)
        0.002
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, cfg))
