"""huggingface_hub's ``PyTorchModelHubMixin``: the swap record rides in the config its ``save_pretrained`` writes.

Many vision libraries build their networks on the mixin (``class Detector(FasterRCNN,
PyTorchModelHubMixin)``). Its ``save_pretrained(directory)`` writes ``model.safetensors`` and, from the
model's ``_hub_mixin_config`` (the ``__init__`` arguments it captured), ``config.json``. The swap
record goes into that dict under ``_dysample_swap``. smp models are mixin models too: their record
is written here, and :mod:`.smp` rebuilds them from the class their config names.

The config does not say which class wrote it, and a class named by a file is never imported, so
reloading takes the class from the caller: ``dysample_swap.from_pretrained(directory,
model_class=Detector)``. The mixin's own ``Detector.from_pretrained(directory)`` loads with
``strict=False``: it returns the plain network and drops every DySample weight without a word.
Nothing here can change that loader; reload with :func:`dysample_swap.from_pretrained`.

Nothing here imports huggingface_hub until a mixin model is in hand.

Example:
    >>> import torch.nn as nn
    >>> owns(nn.Conv2d(3, 3, 1)), owns_config({"_dysample_swap": {}}), owns_config({"_model_class": "FPN"})
    (False, True, False)
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, cast

import torch.nn as nn

from dysample_swap.surgery.hooks import is_loaded_instance

logger = logging.getLogger("dysample_swap")

CONFIG_KEY = "_dysample_swap"
"""The ``config.json`` key (and ``_hub_mixin_config`` key) that holds the swap record."""


def owns(model: nn.Module) -> bool:
    """Whether ``model`` is a ``PyTorchModelHubMixin`` model (smp's subclass included), without importing it.

    Example:
        >>> owns(nn.Identity())
        False
    """
    return is_loaded_instance(model, "huggingface_hub.hub_mixin", "ModelHubMixin")


def write_record(model: nn.Module, record: dict[str, Any] | None) -> None:
    """Put the swap record into ``model``'s hub-mixin config (``None``: remove it).

    Example:
        >>> from huggingface_hub import PyTorchModelHubMixin
        >>> class Net(nn.Module, PyTorchModelHubMixin):
        ...     def __init__(self, width: int = 4) -> None:
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(3, width, 1)
        >>> net = Net(width=8)
        >>> write_record(net, {"swaps": []})
        >>> net._hub_mixin_config
        {'width': 8, '_dysample_swap': {'swaps': []}}
    """
    config = getattr(model, "_hub_mixin_config", None)
    if config is None:
        if record is None:
            return
        config = cast(Any, model)._hub_mixin_config = {}  # nn.Module's stubs allow only tensors and modules
    if not isinstance(config, dict):  # a dataclass config: the mixin writes its fields only
        logger.warning(
            "%s keeps its hub-mixin config as a %s, where the swap record cannot be added: its "
            "save_pretrained will not record the swap; save it with dysample_swap.save_swapped(model, "
            "file) instead",
            type(model).__name__,
            type(config).__name__,
        )
        return
    if record is not None:
        config[CONFIG_KEY] = record
    else:
        config.pop(CONFIG_KEY, None)


def owns_config(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` (as a dict) is a hub-mixin config with a swap record (smp's excepted).

    Example:
        >>> owns_config({"width": 8})
        False
    """
    return CONFIG_KEY in config and "_model_class" not in config


def build(directory: str | os.PathLike[str], config: dict[str, Any], model_class: type) -> nn.Module:
    """``model_class`` built from the ``__init__`` arguments its ``save_pretrained`` wrote.

    As the mixin's own loader does, a config key becomes an argument when ``__init__`` takes it
    (or takes ``**kwargs``), decoded with the class's own coders; keys with a leading underscore
    (the swap record) never do.

    Raises:
        ValueError: ``model_class`` is not a ``PyTorchModelHubMixin`` ``nn.Module``.

    Example:
        >>> from huggingface_hub import PyTorchModelHubMixin
        >>> class Net(nn.Module, PyTorchModelHubMixin):
        ...     def __init__(self, width: int = 4) -> None:
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(3, width, 1)
        >>> build("dir", {"width": 8, "_dysample_swap": {}}, Net).conv.out_channels
        8
    """
    from huggingface_hub import ModelHubMixin

    if not (
        isinstance(model_class, type) and issubclass(model_class, ModelHubMixin) and issubclass(model_class, nn.Module)
    ):
        raise ValueError(
            f"{directory}: model_class={model_class!r} is not an nn.Module class built on "
            "huggingface_hub's PyTorchModelHubMixin; pass the class whose save_pretrained wrote it"
        )
    params = inspect.signature(model_class.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {}
    for key, value in config.items():
        if key.startswith("_") or not (key in params or takes_any):
            continue
        annotation = params[key].annotation if key in params else inspect.Parameter.empty
        kwargs[key] = model_class._decode_arg(annotation, value)
    return model_class(**kwargs)
