"""The swap record: what re-applies a model's swaps to a freshly built copy of it.

``swap_upsamplers`` calls :func:`record_swap` at the end of every swap. The record is a
JSON-able dict kept on the model (``model.dysample_swap_record``) and, for frameworks that save
their own config, mirrored where that config lives, so the framework's usual ``save_pretrained``
writes it into ``config.json``:

* transformers: ``model.config.dysample_swap``;
* segmentation_models_pytorch: the ``_dysample_swap`` key of the hub-mixin config (the leading
  underscore keeps smp's own loader and model card from treating it as an ``__init__`` argument).

Layout::

    {"format": "dysample_swap.record/1", "version": "0.1.0",
     "swaps": [{"class": "pkg.module.Class", "variant": "dysample+",
                "policy": {...}, "inputs": [{"tensor": [1, 3, 64, 64]}]}, ...]}

One entry per ``swap_upsamplers`` call on the model, in order. A swap that cannot be replayed
(a predicate in ``include``/``exclude``, example inputs that are not tensors) is recorded with a
``"not_replayable"`` reason instead of ``policy``/``inputs``, so that saving still works and
reloading says what to change.

Example:
    >>> import torch, torch.nn as nn
    >>> from dysample_swap import swap_upsamplers
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
    >>> net = swap_upsamplers(net, "dysample", (torch.rand(1, 3, 8, 8),), verbose=False)
    >>> swap_record(net)["swaps"][0]["inputs"]
    [{'tensor': [1, 3, 8, 8]}]
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch.nn as nn

RECORD_FORMAT = "dysample_swap.record/1"
"""The ``format`` value of a swap record."""

RECORD_ATTRIBUTE = "dysample_swap_record"
"""Name of the model attribute that holds the swap record."""

_JSON_SCALARS = (str, bool, int, float, type(None))


def is_loaded_instance(obj: Any, module: str, name: str) -> bool:
    """Whether ``obj`` is an instance of class ``name`` of ``module``, without importing ``module``.

    An object can only come from a module that is already imported, so this looks in ``sys.modules``.

    Example:
        >>> is_loaded_instance(nn.Identity(), "torch.nn", "Module"), is_loaded_instance(1, "not_imported", "X")
        (True, False)
    """
    base = getattr(sys.modules.get(module), name, None)
    return isinstance(base, type) and isinstance(obj, base)


def class_name(model: nn.Module) -> str:
    """The importable name of ``model``'s class, as a record stores it.

    Example:
        >>> class_name(nn.Conv2d(1, 1, 1))
        'torch.nn.modules.conv.Conv2d'
    """
    return f"{type(model).__module__}.{type(model).__qualname__}"


def saveable_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` as JSON values (``verbose`` dropped, tuples as lists).

    Raises:
        ValueError: a value is not a string, number, bool or ``None`` (or a list of them), such
            as a predicate in ``include``.

    Example:
        >>> saveable_policy({"include": ("decoder", "head.*"), "verbose": True})
        {'include': ['decoder', 'head.*']}
    """
    saved = {}
    for key, value in policy.items():
        if key == "verbose":
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, _JSON_SCALARS) for v in items):
            raise ValueError(f"policy option {key}={value!r} cannot be saved; "
                             "use paths or globs instead of predicates")
        saved[key] = list(value) if isinstance(value, (list, tuple)) else value
    return saved


def swap_entry(model: nn.Module, report: Any) -> dict[str, Any]:
    """The record entry of one swap of ``model`` (``report``: its ``SwapReport``).

    Example:
        >>> from types import SimpleNamespace
        >>> swap_entry(nn.Identity(), SimpleNamespace(variant="dysample", policy={}, inputs=None))["not_replayable"]
        'its example inputs are not tensors or lists of tensors; swap with example_inputs=(tensor, ...)'
    """
    entry: dict[str, Any] = {"class": class_name(model), "variant": report.variant}
    try:
        entry["policy"] = saveable_policy(report.policy)
    except ValueError as exc:
        entry["not_replayable"] = str(exc)
        return entry
    if report.inputs is None:
        entry["not_replayable"] = ("its example inputs are not tensors or lists of tensors; "
                                   "swap with example_inputs=(tensor, ...)")
        return entry
    entry["inputs"] = copy.deepcopy(report.inputs)
    return entry


def _frameworks() -> list[Any]:
    from dysample_swap.integrations import smp, transformers

    return [transformers, smp]


def record_swap(model: nn.Module, report: Any) -> None:
    """Append the swap that ``report`` describes to ``model``'s record (and its framework config).

    ``swap_upsamplers`` calls this at the end of every swap; frameworks are never imported here.

    Example:
        >>> import torch, torch.nn as nn
        >>> from dysample_swap import swap_upsamplers
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> net = swap_upsamplers(net, "dysample-s", (torch.rand(1, 3, 8, 8),), verbose=False)
        >>> [s["variant"] for s in swap_record(net)["swaps"]]
        ['dysample-s']
    """
    from dysample_swap import __version__

    previous = getattr(model, RECORD_ATTRIBUTE, None)
    swaps = list(previous["swaps"]) if isinstance(previous, dict) else []
    record = {"format": RECORD_FORMAT, "version": __version__, "swaps": [*swaps, swap_entry(model, report)]}
    setattr(model, RECORD_ATTRIBUTE, record)
    for framework in _frameworks():
        if framework.owns(model):
            framework.write_record(model, copy.deepcopy(record))


def forget_swaps(model: nn.Module) -> None:
    """Drop ``model``'s swap record (and its framework-config copy): what ``unswap`` calls.

    Example:
        >>> net = nn.Identity()
        >>> net.dysample_swap_record = {"format": RECORD_FORMAT, "version": "0.1.0", "swaps": []}
        >>> forget_swaps(net)
        >>> swap_record(net) is None
        True
    """
    if hasattr(model, RECORD_ATTRIBUTE):
        delattr(model, RECORD_ATTRIBUTE)
    for framework in _frameworks():
        if framework.owns(model):
            framework.write_record(model, None)


def swap_record(model: nn.Module) -> dict[str, Any] | None:
    """``model``'s swap record, ``None`` when ``swap_upsamplers`` has not swapped it.

    Example:
        >>> swap_record(nn.Identity()) is None
        True
    """
    record = getattr(model, RECORD_ATTRIBUTE, None)
    return record if isinstance(record, dict) else None


def check_record(record: Any, where: str) -> list[dict[str, Any]]:
    """The swap entries of a record read from a file, or a clear error about what is wrong with it.

    Raises:
        ValueError: naming ``where``: not a record, another format, or a swap that cannot be replayed.

    Example:
        >>> entry = {"class": "m.Net", "variant": "dysample", "policy": {}, "inputs": [{"tensor": [1, 3, 8, 8]}]}
        >>> check_record({"format": RECORD_FORMAT, "version": "0.1.0", "swaps": [entry]}, "x") == [entry]
        True
    """
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not isinstance(
            record.get("swaps"), list):
        raise ValueError(f"{where}: the swap record is not a {RECORD_FORMAT!r} record (a newer or "
                         "foreign dysample_swap version?); re-save the model with this version")
    for entry in record["swaps"]:
        if "not_replayable" in entry:
            raise ValueError(f"{where}: its {entry['variant']} swap cannot be re-applied: "
                             f"{entry['not_replayable']}")
    return record["swaps"]
