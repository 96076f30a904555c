"""Integrations with frameworks that own their models' training loops.

* ``ultralytics``: :func:`dysample_swap.integrations.ultralytics.swap_yolo` swaps the
  upsamplers of a ``YOLO`` object so that its own ``train()``, ``val()``, ``predict()`` and
  ``export()`` keep DySample.
* ``transformers``, ``smp``: :func:`record_swap` (called by every ``swap_upsamplers``) keeps the
  swap record on the model and in its framework config, so ``model.save_pretrained`` saves it
  and :func:`dysample_swap.from_pretrained` reloads the swapped model; :func:`forget_swaps` drops it.

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

from dysample_swap.integrations.record import forget_swaps, is_loaded_instance, record_swap, swap_record


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
