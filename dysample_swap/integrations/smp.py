"""segmentation_models_pytorch: the swap record rides in the hub-mixin config that ``save_pretrained`` writes.

smp models are huggingface_hub ``PyTorchModelHubMixin`` classes: ``model.save_pretrained(directory)``
writes ``model.safetensors`` and ``config.json`` from the model's ``_hub_mixin_config`` (its
``__init__`` arguments) plus ``_model_class``. The swap record goes into that dict under
``_dysample_swap`` (written by :mod:`.hub_mixin`, as for every mixin model): smp drops underscore keys before calling ``__init__`` and leaves them out of
the model card. ``smp.from_pretrained`` still builds the plain model and then refuses the
DySample weights (unexpected keys); :func:`dysample_swap.from_pretrained` rebuilds the swapped one.

Nothing here imports smp until an smp model or config is in hand.

Example:
    >>> owns_config({"_model_class": "FPN", "classes": 2})
    True
"""

from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from dysample_swap.integrations.hub_mixin import CONFIG_KEY

__all__ = ["CONFIG_KEY", "build", "owns_config"]


def owns_config(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` (as a dict) was written by an smp model's ``save_pretrained``.

    Example:
        >>> owns_config({"model_type": "dpt"})
        False
    """
    return "_model_class" in config


def build(directory: str | os.PathLike[str], config: dict[str, Any]) -> nn.Module:
    """The smp class ``_model_class`` names, built from the saved ``__init__`` arguments.

    As smp's own loader does, underscore keys are not arguments; ``encoder_weights`` becomes
    ``None`` (the saved weights replace them anyway, so nothing is downloaded).

    Raises:
        ValueError: ``_model_class`` is not an smp architecture.

    Example:
        >>> type(build("dir", {"_model_class": "Linknet", "encoder_name": "resnet18",
        ...                    "encoder_depth": 3, "encoder_weights": "imagenet"})).__name__
        'Linknet'
    """
    import segmentation_models_pytorch as smp

    name = config["_model_class"]
    model_class = getattr(smp, str(name), None)
    if not (isinstance(model_class, type) and issubclass(model_class, smp.base.SegmentationModel)):
        raise ValueError(
            f"{directory}: config.json's _model_class {name!r} is not an smp architecture "
            "(another smp version?); build and swap the model yourself, then load "
            "model.safetensors into it with load_state_dict"
        )
    kwargs = {key: value for key, value in config.items() if not key.startswith("_")}
    if "encoder_weights" in kwargs:
        kwargs["encoder_weights"] = None
    return model_class(**kwargs)
