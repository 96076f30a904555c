"""Integrations with frameworks that own their models' training loops and save formats.

Each framework plugs into the surgery through :mod:`dysample_swap.surgery.hooks`, registered here
when the package is imported; the surgery itself never imports a framework.

* ``ultralytics``: :func:`dysample_swap.integrations.ultralytics.swap_yolo` swaps the upsamplers
  of a ``YOLO`` object so that its own ``train()``, ``val()``, ``predict()`` and ``export()`` keep
  DySample (``swap_upsamplers(yolo)`` dispatches to it).
* ``transformers``, huggingface_hub ``PyTorchModelHubMixin`` (smp's models included): every swap's
  record is mirrored in the framework's config, so ``model.save_pretrained`` saves it, and
  :func:`dysample_swap.from_pretrained` (:mod:`.pretrained`) reloads the swapped model.

The predicates here never import a framework: an object can only come from a framework that
is already imported, so they look in ``sys.modules`` (``import dysample_swap`` stays free of
ultralytics).

Example:
    >>> import torch.nn as nn
    >>> is_ultralytics_model(nn.Conv2d(3, 3, 1)), is_ultralytics_network(nn.Conv2d(3, 3, 1))
    (False, False)
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from dysample_swap.integrations import hub_mixin, transformers
from dysample_swap.surgery.hooks import FrameworkHooks, is_loaded_instance, register
from dysample_swap.surgery.model_spec import register_source


def is_ultralytics_model(obj: Any) -> bool:
    """Whether ``obj`` is an ultralytics ``Model`` (``YOLO``, ``RTDETR``, ...), the object with ``.train()``.

    Example:
        >>> is_ultralytics_model(object())
        False
    """
    return is_loaded_instance(obj, "ultralytics.engine.model", "Model")


def is_ultralytics_network(obj: Any) -> bool:
    """Whether ``obj`` is the ``nn.Module`` inside an ultralytics model (``yolo.model``, a ``BaseModel``).

    Swapping such a network alone is not carried into ``yolo.train()``, which rebuilds the network
    from its YAML: swap the ``YOLO`` object with
    :func:`~dysample_swap.integrations.ultralytics.swap_yolo` instead.

    Example:
        >>> is_ultralytics_network(object())
        False
    """
    return is_loaded_instance(obj, "ultralytics.nn.tasks", "BaseModel")


def _swap_yolo(model: Any, variant: str, example_inputs: Any, **policy: Any) -> Any:
    from dysample_swap.integrations.ultralytics import swap_yolo  # imports ultralytics: only for its objects

    return swap_yolo(model, variant, example_inputs, **policy)


def _guide_index(network: nn.Module, producer: str) -> int | None:
    from dysample_swap.integrations.ultralytics import guide_index

    return guide_index(network, producer)


def _guide_layer(upsampler: nn.Module, layer: nn.Module, index: int) -> nn.Module:
    from dysample_swap.integrations.ultralytics import GuidedLayer

    return GuidedLayer(upsampler, layer, index)


register(FrameworkHooks("ultralytics", owns=is_ultralytics_model, swap=_swap_yolo))
register(
    FrameworkHooks(
        "ultralytics network",
        owns=is_ultralytics_network,
        guide_index=_guide_index,
        guide_layer=_guide_layer,
        alone="YOLO.train() rebuilds the network from its YAML and would drop the swap; pass the YOLO object "
        "itself (swap_upsamplers(yolo, ...)) so that training keeps it",
    )
)
register(FrameworkHooks("transformers", owns=transformers.owns, write_record=transformers.write_record))
register_source("transformers", transformers.build_from_spec)
register(FrameworkHooks("huggingface_hub", owns=hub_mixin.owns, write_record=hub_mixin.write_record))
