"""Optimiser construction: which parameters are the swapped-in upsampler's, and their
learning-rate multiplier.

The upsampler parameters are those the swap added (``compare`` knows them by name, for DySample
and rival upsamplers alike), or by default the parameters of
:class:`dysample_swap.upsamplers.dysample.module.DySample` modules. As in the paper they share the learning rate and
weight decay of the rest; ``train.dysample_lr_mult`` scales their learning rate.

Example:
    >>> import torch
    >>> from dysample_swap.finetune.config import TrainConfig
    >>> opt = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="sgd", lr=0.1))
    >>> [g["name"] for g in opt.param_groups]
    ['base']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dysample_swap.finetune.config import TrainConfig
from dysample_swap.upsamplers.dysample.module import DySample


def dysample_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Trainable parameters that belong to DySample modules (each listed once).

    Example:
        >>> len(dysample_parameters(torch.nn.Linear(2, 2)))
        0
    """
    seen: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, DySample):
            for param in module.parameters():
                if param.requires_grad:
                    seen.setdefault(id(param), param)
    return list(seen.values())


def upsampler_parameters(model: torch.nn.Module, names: Sequence[str] | None = None) -> list[torch.nn.Parameter]:
    """The swapped-in upsampler's trainable parameters: those called ``names`` (the parameters a
    swap added, whatever upsampler it put in), or without ``names`` the DySample parameters.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(1, 1, 1))
        >>> [p.shape for p in upsampler_parameters(net, ["1.bias"])]
        [torch.Size([1])]
    """
    if names is None:
        return dysample_parameters(model)
    wanted = set(names)
    return [p for name, p in model.named_parameters() if name in wanted and p.requires_grad]


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, upsampler: Sequence[torch.nn.Parameter] | None = None
) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters: group ``base`` at ``lr`` and group
    ``dysample`` at ``lr * dysample_lr_mult`` holding ``upsampler`` (default: the model's DySample
    parameters; the group is only present when there are any).

    Example:
        >>> opt = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(lr=1e-3))
        >>> type(opt).__name__, opt.param_groups[0]["lr"]
        ('AdamW', 0.001)
    """
    special = {id(p) for p in (dysample_parameters(model) if upsampler is None else upsampler)}
    base = [p for p in model.parameters() if p.requires_grad and id(p) not in special]
    extra = [p for p in model.parameters() if id(p) in special]
    groups = [{"name": "base", "params": base, "lr": cfg.lr}]
    if extra:
        groups.append({"name": "dysample", "params": extra, "lr": cfg.lr * cfg.dysample_lr_mult})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
