"""Framework hooks: how the surgery reaches framework integrations without importing them.

The surgery knows no framework. :mod:`dysample_swap.integrations` registers one
:class:`FrameworkHooks` per framework when the package is imported; the surgery asks
:func:`hooks_for` about the object in hand and calls what the framework provides:

* ``swap``: the object is not a network but a framework's model object (ultralytics' ``YOLO``),
  swapped by the framework's own entry point instead of the pipeline;
* ``alone``: a warning to give when the framework's network is swapped on its own;
* ``write_record``: mirror the swap record where the framework saves its config;
* ``guide_index`` / ``guide_layer``: route a guided upsampler's guide through the framework's own
  layer wiring (ultralytics' ``.f`` indices), where a layer is replaced in place.

Example:
    >>> import torch.nn as nn
    >>> hooks_for(nn.Identity()) is None
    True
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn


@dataclass(frozen=True)
class FrameworkHooks:
    """What one framework lets the surgery do to its objects.

    Attributes:
        name: the framework, for messages.
        owns: whether an object belongs to it (never imports the framework).
        swap: ``swap(obj, variant, example_inputs, **policy)`` for framework model objects.
        alone: the warning to give when one of its networks is swapped on its own.
        write_record: ``write_record(model, record_or_None)`` keeps the record in its config.
        guide_index: ``guide_index(network, producer_path)``: how the framework's wiring addresses the
            module that produced a guide (``None``: it cannot feed it to another layer).
        guide_layer: ``guide_layer(upsampler, layer, index)``: the layer to put in place of ``layer``
            that calls ``upsampler(x, guide)`` with the guide at ``index`` of the wiring.

    Example:
        >>> FrameworkHooks("toy", owns=lambda obj: False).name
        'toy'
    """

    name: str
    owns: Callable[[Any], bool]
    swap: Callable[..., Any] | None = None
    alone: str | None = None
    write_record: Callable[[nn.Module, dict[str, Any] | None], None] | None = None
    guide_index: Callable[[nn.Module, str], int | None] | None = None
    guide_layer: Callable[[nn.Module, nn.Module, int], nn.Module] | None = None


_REGISTRY: list[FrameworkHooks] = []


def register(hooks: FrameworkHooks) -> None:
    """Add (or replace, by name) a framework's hooks; earlier registrations are asked first.

    Example:
        >>> register(FrameworkHooks("toy", owns=lambda obj: obj == "toy"))  # owns only the string "toy"
        >>> hooks_for("toy").name, hooks_for("toy", having="swap") is None
        ('toy', True)
    """
    for i, known in enumerate(_REGISTRY):
        if known.name == hooks.name:
            _REGISTRY[i] = hooks
            return
    _REGISTRY.append(hooks)


def hooks_for(obj: Any, *, having: str | None = None) -> FrameworkHooks | None:
    """The hooks of the first framework that owns ``obj`` (and, with ``having``, provides that hook).

    Example:
        >>> hooks_for(object(), having="swap") is None
        True
    """
    for hooks in _REGISTRY:
        if (having is None or getattr(hooks, having) is not None) and hooks.owns(obj):
            return hooks
    return None


def is_loaded_instance(obj: Any, module: str, name: str) -> bool:
    """Whether ``obj`` is an instance of class ``name`` of ``module``, without importing ``module``.

    An object can only come from a module that is already imported, so this looks in ``sys.modules``.

    Example:
        >>> is_loaded_instance(nn.Identity(), "torch.nn", "Module"), is_loaded_instance(1, "not_imported", "X")
        (True, False)
    """
    base = getattr(sys.modules.get(module), name, None)
    return isinstance(base, type) and isinstance(obj, base)
