"""What a recipe builds: its datasets, the original network, and the arms swapped from it.

Every job of :mod:`dysample_swap.finetune.runner` and the offset pictures of
:mod:`dysample_swap.finetune.visualize` build their models here, so a checkpoint's network comes
back the way it was trained.

Example:
    >>> from dysample_swap.finetune.config import Config
    >>> model_spec(Config(), 3)
    'smp:Unet:encoder_name=resnet18,encoder_weights=None,classes=3'
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch

from dysample_swap.finetune.config import ORIGINAL, Config, ConfigError
from dysample_swap.finetune.engine import Arm


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Example:
        >>> seed_everything(0); a = torch.rand(1); seed_everything(0); bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: The tasks each data format serves (``synthetic`` serves every task).
FORMAT_TASKS = {
    "folder": ("segmentation",),
    "voc": ("segmentation",),
    "ade20k": ("segmentation",),
    "coco": ("detection", "instance"),
    "nyu": ("depth",),
    "depth_folder": ("depth",),
    "coco_panoptic": ("panoptic",),
}


def data_config(cfg: Config) -> dict[str, Any]:
    """The ``data:`` mapping for ``build_dataset``; formats that serve several tasks (synthetic,
    coco) get ``task`` from the recipe. A format that cannot serve the recipe's task is an error.

    Example:
        >>> data_config(Config(task="detection"))["task"]
        'detection'
        >>> data_config(Config(task="depth", data={"format": "voc", "root": "x"}))
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.config.ConfigError: data.format 'voc' holds segmentation data, not depth data; for task depth use data.format nyu, depth_folder or synthetic
    """
    data = dict(cfg.data)
    served = FORMAT_TASKS.get(str(data.get("format")))
    if served is not None and cfg.task not in served:
        formats = [f for f, tasks in FORMAT_TASKS.items() if cfg.task in tasks] + ["synthetic"]
        raise ConfigError(
            f"data.format {data['format']!r} holds {' / '.join(served)} data, not {cfg.task} data; for task "
            f"{cfg.task} use data.format {', '.join(formats[:-1])} or {formats[-1]}"
        )
    if data.get("format") in ("synthetic", "coco") and data.setdefault("task", cfg.task) != cfg.task:
        raise ConfigError(
            f"data.task is {data['task']!r} but task is {cfg.task!r}; drop data.task (it follows task) or make them equal"
        )
    return data


def load_datasets(cfg: Config) -> tuple[Any, Any]:
    """The ``train`` and ``val`` splits of the recipe's data.

    Example:
        >>> train, val = load_datasets(Config(data={"format": "synthetic", "num_samples": 4}))
        >>> len(train), train.num_classes
        (4, 6)
    """
    from dysample_swap.finetune.data import build_dataset

    data = data_config(cfg)
    return build_dataset(data, "train"), build_dataset(data, "val")


def model_spec(cfg: Config, num_classes: int, num_stuff: int = 0) -> str:
    """``model.spec`` with ``{num_classes}`` (and a panoptic dataset's ``{num_stuff}``) filled in.

    Example:
        >>> model_spec(Config(), 6)
        'smp:Unet:encoder_name=resnet18,encoder_weights=None,classes=6'
    """
    return cfg.model.spec.replace("{num_classes}", str(num_classes)).replace("{num_stuff}", str(num_stuff))


def build_base_model(cfg: Config, num_classes: int, *, num_stuff: int = 0, trust_spec: bool = False) -> torch.nn.Module:
    """The original network, randomly initialised from ``cfg.seed``.

    ``trust_spec``: build a ``package.module:function`` spec (it runs that module's code); pass
    ``True`` only for a recipe the caller chose, never for a config read back from a file
    (:func:`dysample_swap.surgery.model_spec.build_model`). The jobs below (:func:`run_finetune`,
    :func:`run_compare`, :func:`run_evaluate`) build the spec of the ``cfg`` they are given.

    Example:
        >>> from dysample_swap.finetune.config import build_config
        >>> build_base_model(build_config({}, ["model.spec=os:getcwd"]), 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dysample_swap.surgery.model_spec.UntrustedSpecError: the model spec 'os:getcwd' names code to import and call ...
    """
    from dysample_swap.surgery.model_spec import build_model

    seed_everything(cfg.seed)
    return build_model(model_spec(cfg, num_classes, num_stuff), trust_spec=trust_spec)


def signature(
    cfg: Config, num_classes: int, swapped: bool, variant: str | None = None, num_stuff: int = 0
) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into this recipe's model (``variant``: the
    upsampler swapped in, default ``swap.variant``; ``num_stuff``: a panoptic model's stuff classes).

    Example:
        >>> signature(Config(), 6, swapped=False)["variant"] is None
        True
    """
    found = {
        "task": cfg.task,
        "model": model_spec(cfg, num_classes, num_stuff),
        "num_classes": num_classes,
        "swapped": swapped,
        "variant": (variant or cfg.swap.variant) if swapped else None,
        "policy": dict(cfg.swap.policy) if swapped else None,
    }
    if cfg.task == "panoptic":
        found["num_stuff"] = num_stuff
    return found


def swap_model(
    cfg: Config, model: torch.nn.Module, variant: str, example_inputs: Any, verbose: bool = True
) -> tuple[torch.nn.Module, int]:
    """Swap ``model``'s upsamplers for ``variant`` (in place) with the recipe's ``swap.policy``;
    returns the model and the number of swapped sites (an error if there are none).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Upsample(scale_factor=2),
        ...                           torch.nn.Conv2d(8, 2, 1))
        >>> swap_model(Config(), net, "dysample", torch.rand(1, 3, 8, 8), verbose=False)[1]
        1
    """
    from dysample_swap.surgery.swap import swap_report, swap_upsamplers

    seed_everything(cfg.seed + 1)
    model.eval()
    policy = dict(cfg.swap.policy)
    policy.setdefault("verbose", verbose)
    model = swap_upsamplers(model, variant, example_inputs=example_inputs, **policy)
    sites = len(swap_report(model).swapped)
    if sites == 0:
        raise ConfigError(
            f"swapping {cfg.model.spec} for {variant} replaced no upsampler (see the "
            "table above), so there is nothing new to train; check swap.policy, pick "
            "a model whose decoder/FPN upsamples, or set swap.enabled=false"
        )
    return model, sites


def make_arm(
    cfg: Config,
    base: torch.nn.Module,
    task: Any,
    val_set: Any,
    swapped: bool,
    verbose: bool = True,
    variant: str | None = None,
) -> Arm:
    """A deep copy of ``base``; with ``swapped=True`` its upsamplers are swapped for ``variant``
    (default ``swap.variant``). The arm is named after the upsampler, or ``original``.

    Example:
        >>> # arm = make_arm(cfg, base, task, val_set, swapped=True, variant="dysample")
    """
    model = copy.deepcopy(base)
    sites, added, name = 0, None, ORIGINAL
    if swapped:
        name = variant or cfg.swap.variant
        before = {key for key, _ in model.named_parameters()}
        model, sites = swap_model(cfg, model, name, task.example_inputs(val_set), verbose)
        added = tuple(key for key, _ in model.named_parameters() if key not in before)
    model.train()
    return Arm(
        name,
        model,
        signature(cfg, task.num_classes, swapped, variant, getattr(task, "num_stuff", 0)),
        swapped_sites=sites,
        new_parameters=added,
    )
