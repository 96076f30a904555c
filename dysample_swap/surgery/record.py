"""The swap record: what re-applies a model's swaps to a freshly built copy of it.

The record is a JSON-able dict derived from the model's swap reports (:func:`swap_record`: its
one history, :func:`dysample_swap.surgery.report.history`). ``swap_upsamplers`` calls
:func:`record_swap` at the end of every swap, which mirrors it where a framework saves its own
config, through the framework's ``write_record`` hook (:mod:`.hooks`), so the framework's usual
``save_pretrained`` writes it into ``config.json``:

* transformers: ``model.config.dysample_swap``;
* huggingface_hub ``PyTorchModelHubMixin`` models (smp's included): the ``_dysample_swap`` key of
  the hub-mixin config (the leading underscore keeps smp's own loader and model card from
  treating it as an ``__init__`` argument).

Layout::

    {"format": "dysample_swap.record/1", "version": "0.1.0",
     "swaps": [{"class": "pkg.module.Class", "variant": "dysample+",
                "policy": {...}, "inputs": [{"tensor": [1, 3, 64, 64]}],
                "sites": [["decoder.up", 256], ...]}, ...]}

One entry per ``swap_upsamplers`` call on the model, in order. ``sites`` are the per-site decisions:
the ``(path, channels)`` of every swapped site. Replay swaps exactly those paths (they replace the
recorded ``include``/``exclude``, so a swap selected by a predicate replays too) and checks that it
swapped the same sites (records written before 0.2 have no ``sites``; their policy is replayed as
saved). A swap that cannot be replayed (a predicate in ``include``/``exclude`` of a record without
sites, example inputs that are not tensors) is recorded with a ``"not_replayable"`` reason instead
of ``policy``/``inputs``, so that saving still works and reloading says what to change.

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
import math
from typing import Any

import torch.nn as nn

from dysample_swap.surgery.hooks import hooks_for
from dysample_swap.surgery.policy import INITS
from dysample_swap.surgery.report import history
from dysample_swap.upsamplers.registry import ALL_UPSAMPLERS, SWAP_POSITIONS
from dysample_swap.version import __version__

RECORD_FORMAT = "dysample_swap.record/1"
"""The ``format`` value of a swap record."""

_JSON_SCALARS = (str, bool, int, float, type(None))

MAX_SWAPS = 64
"""The most swap entries a record read from a file may hold."""

MAX_SITES = 10_000
"""The most swapped sites one recorded swap may list."""

MAX_INPUT_VALUES = 2**26
"""The most values (64 Mi: 256 MiB of float32) the example inputs of one recorded swap may describe.

A record read from a file is replayed on example inputs of the recorded shapes; this bound keeps a
tampered shape (1x3x20000x20000) from allocating gigabytes."""

_SELECTOR = "a path or glob, or a list of them"
POLICY_SCHEMA: dict[str, Any] = {
    "include": _SELECTOR,
    "exclude": _SELECTOR,
    "swap_final": bool,
    "groups_fallback": bool,
    "chain": bool,
    "strict": bool,
    "init": INITS,
    "positions": SWAP_POSITIONS,
}
"""What each saveable :class:`~dysample_swap.surgery.policy.SwapPolicy` option may hold in a record:
a type, a tuple of allowed strings, or a selector (``None``, a string or a list of strings)."""


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
            raise ValueError(f"policy option {key}={value!r} cannot be saved; use paths or globs instead of predicates")
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
    if report.inputs is None:
        entry["not_replayable"] = (
            "its example inputs are not tensors or lists of tensors; swap with example_inputs=(tensor, ...)"
        )
        return entry
    selection = {k: v for k, v in report.policy.items() if k not in ("include", "exclude")}  # the sites say it
    try:
        entry["policy"] = saveable_policy(selection)
    except ValueError as exc:
        entry["not_replayable"] = str(exc)
        return entry
    entry["inputs"] = copy.deepcopy(report.inputs)
    entry["sites"] = [[d.path, d.in_channels] for d in report.swapped]
    return entry


class RecordedSites:
    """The ``include`` of a replay: exactly the sites at the recorded paths (a path selector would also take
    the sites under a path, and a glob would read ``*`` or ``[`` in a module name).

    Example:
        >>> from types import SimpleNamespace
        >>> include = RecordedSites(["up", "head.up"])
        >>> include(SimpleNamespace(path="head.up")), include(SimpleNamespace(path="head.up.inner"))
        (True, False)
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = frozenset(paths)

    def __call__(self, site: Any) -> bool:
        return site.path in self.paths

    def __repr__(self) -> str:
        return f"RecordedSites({sorted(self.paths)})"


def replay_policy(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``swap_upsamplers`` options that re-apply a checked record ``entry``: its policy, with ``include``
    the recorded sites (:class:`RecordedSites`) when it lists them.

    Example:
        >>> replay_policy({"policy": {"init": "paper"}, "sites": [["up", 8], ["head.up", 4]]})
        {'init': 'paper', 'include': RecordedSites(['head.up', 'up']), 'verbose': False}
    """
    policy = dict(entry["policy"])
    if "sites" in entry:
        policy["include"] = RecordedSites([path for path, _ in entry["sites"]])
    return {**policy, "verbose": False}


def _write_framework_record(model: nn.Module, record: dict[str, Any] | None) -> None:
    """Mirror ``record`` where ``model``'s framework saves its config (see :mod:`.hooks`)."""
    hooks = hooks_for(model, having="write_record")
    if hooks is not None and hooks.write_record is not None:
        hooks.write_record(model, record)


def swap_record(model: nn.Module) -> dict[str, Any] | None:
    """``model``'s swap record, derived from its swap reports (``None`` when it was not swapped).

    Example:
        >>> import torch
        >>> from dysample_swap import swap_upsamplers
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> swap_record(net) is None
        True
        >>> net = swap_upsamplers(net, "dysample-s", (torch.rand(1, 3, 8, 8),), verbose=False)
        >>> [s["variant"] for s in swap_record(net)["swaps"]]
        ['dysample-s']
    """
    reports = history(model)
    if not reports:
        return None
    return {"format": RECORD_FORMAT, "version": __version__, "swaps": [swap_entry(model, r) for r in reports]}


def record_swap(model: nn.Module) -> None:
    """Mirror ``model``'s swap record where its framework saves its config; ``swap_upsamplers`` calls it last.

    Example:
        >>> record_swap(nn.Identity())  # no framework, nothing to write
    """
    _write_framework_record(model, swap_record(model))


def forget_swaps(model: nn.Module) -> None:
    """Drop the framework-config copy of ``model``'s record: what ``unswap`` calls after removing the reports.

    Example:
        >>> forget_swaps(nn.Identity())
    """
    model.__dict__.pop("dysample_swap_record", None)  # the copy that models pickled by 0.1.0 carry
    _write_framework_record(model, None)


class RecordError(ValueError):
    """A swap record read from a file does not have the layout this version writes.

    Example:
        >>> check_record({"format": RECORD_FORMAT, "swaps": [{"variant": 3}]}, "config.json")
        Traceback (most recent call last):
        dysample_swap.surgery.record.RecordError: config.json: swap 1 of its record: variant 3 is not a string
    """


def _shape_values(shape: Any, what: str) -> int:
    """The number of values of a recorded tensor shape; raises ``RecordError`` for anything else."""
    if not isinstance(shape, list) or not 1 <= len(shape) <= 6 or not all(type(n) is int and n >= 1 for n in shape):
        raise RecordError(f"{what} {shape!r} is not a tensor shape (a list of 1 to 6 positive integers)")
    return math.prod(shape)


def _check_inputs(inputs: Any, what: str) -> None:
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= 16:
        raise RecordError(f"{what}: inputs {inputs!r:.80} is not a list of 1 to 16 example-input descriptions")
    values = 0
    for item in inputs:
        if not isinstance(item, dict) or len(item) != 1 or not {"tensor", "images"} >= item.keys():
            raise RecordError(
                f"{what}: example input {item!r:.80} is not {{'tensor': SHAPE}} or {{'images': [SHAPE, ...]}}"
            )
        if "tensor" in item:
            values += _shape_values(item["tensor"], f"{what}: tensor shape")
        elif isinstance(item["images"], list) and 1 <= len(item["images"]) <= 64:
            values += sum(_shape_values(shape, f"{what}: image shape") for shape in item["images"])
        else:
            raise RecordError(f"{what}: images {item['images']!r:.80} is not a list of 1 to 64 image shapes")
    if values > MAX_INPUT_VALUES:
        raise RecordError(
            f"{what}: its example inputs hold {values:,} values, more than the {MAX_INPUT_VALUES:,} "
            "a recorded swap may replay on (a tampered shape?); swap again on a smaller example input"
        )


def _check_policy(policy: Any, what: str) -> None:
    if not isinstance(policy, dict):
        raise RecordError(f"{what}: policy {policy!r:.80} is not a dict of swap options")
    for key, value in policy.items():
        allowed = POLICY_SCHEMA.get(key)
        if allowed is None:
            raise RecordError(f"{what}: policy option {key!r} is not one of {sorted(POLICY_SCHEMA)}")
        if allowed is _SELECTOR:
            ok = (
                value is None
                or isinstance(value, str)
                or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            )
        elif isinstance(allowed, tuple):
            ok = value in allowed and isinstance(value, str)
        else:
            ok = type(value) is allowed
        if not ok:
            expected = (
                allowed.__name__
                if isinstance(allowed, type)
                else (f"one of {allowed}" if isinstance(allowed, tuple) else allowed)
            )
            raise RecordError(f"{what}: policy option {key}={value!r:.80} is not {expected}")


def check_entry(entry: Any, what: str) -> dict[str, Any]:
    """One swap entry read from a file, checked against the layout :func:`swap_entry` writes.

    Nothing in an entry is imported or called: ``class`` is only compared by name, ``variant``
    must be a registered upsampler, ``policy`` holds only the saveable options with their types,
    and ``inputs`` describe bounded tensor shapes.

    Raises:
        RecordError: naming ``what`` and the first field that is wrong.

    Example:
        >>> check_entry({"variant": "dysample", "policy": {"init": "paper"}, "inputs": [{"tensor": [1, 3, 8, 8]}]},
        ...             "swap 1")["variant"]
        'dysample'
        >>> check_entry({"variant": "dysample", "policy": {}, "inputs": [{"tensor": [1, 3, 20000, 20000]}]},
        ...             "swap 1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dysample_swap.surgery.record.RecordError: swap 1: its example inputs hold 1,200,000,000 values, ...
    """
    if not isinstance(entry, dict):
        raise RecordError(f"{what}: {entry!r:.80} is not a dict")
    unknown = sorted(set(entry) - {"class", "variant", "policy", "inputs", "sites", "not_replayable"})
    if unknown:
        raise RecordError(f"{what}: unknown keys {unknown}")
    if "class" in entry and not (isinstance(entry["class"], str) and len(entry["class"]) <= 500):
        raise RecordError(f"{what}: class {entry['class']!r:.80} is not a class name")
    variant = entry.get("variant")
    if not isinstance(variant, str):
        raise RecordError(f"{what}: variant {variant!r:.80} is not a string")
    if variant.strip().lower() not in ALL_UPSAMPLERS:
        raise RecordError(f"{what}: variant {variant!r:.80} is not one of {', '.join(ALL_UPSAMPLERS)}")
    if "not_replayable" in entry:
        if not isinstance(entry["not_replayable"], str):
            raise RecordError(f"{what}: not_replayable {entry['not_replayable']!r:.80} is not a reason")
        return entry
    for key in ("policy", "inputs"):
        if key not in entry:
            raise RecordError(f"{what}: no {key!r}")
    _check_policy(entry["policy"], what)
    _check_inputs(entry["inputs"], what)
    if "sites" in entry:
        _check_sites(entry["sites"], what)
    return entry


def _check_sites(sites: Any, what: str) -> None:
    if not isinstance(sites, list) or len(sites) > MAX_SITES:
        raise RecordError(f"{what}: sites {sites!r:.80} is not a list of at most {MAX_SITES} [path, channels] pairs")
    for site in sites:
        if not (
            isinstance(site, list)
            and len(site) == 2
            and isinstance(site[0], str)
            and len(site[0]) <= 1000
            and type(site[1]) is int
            and site[1] >= 0
        ):
            raise RecordError(f"{what}: site {site!r:.80} is not a [path, channels] pair")


def check_entries(entries: Any, where: str) -> list[dict[str, Any]]:
    """The swap entries read from ``where``, each checked by :func:`check_entry`, or a clear error.

    Raises:
        RecordError: a malformed entry, or more than :data:`MAX_SWAPS` of them.
        ValueError: a well-formed swap that cannot be replayed (the reason it recorded).

    Example:
        >>> check_entries([{"variant": "carafe", "not_replayable": "a predicate"}], "net.pt")
        Traceback (most recent call last):
        ValueError: net.pt: its carafe swap cannot be re-applied: a predicate
    """
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_SWAPS:
        raise RecordError(f"{where}: the swaps {entries!r:.80} are not a list of 1 to {MAX_SWAPS} swap entries")
    for number, entry in enumerate(entries, 1):
        check_entry(entry, f"{where}: swap {number} of its record")
    for entry in entries:
        if "not_replayable" in entry:
            raise ValueError(f"{where}: its {entry['variant']} swap cannot be re-applied: {entry['not_replayable']}")
    return entries


def check_record(record: Any, where: str) -> list[dict[str, Any]]:
    """The swap entries of a record read from a file, or a clear error about what is wrong with it.

    Raises:
        RecordError: naming ``where``: not a record, another format, or a malformed entry.
        ValueError: a swap that cannot be replayed.

    Example:
        >>> entry = {"class": "m.Net", "variant": "dysample", "policy": {}, "inputs": [{"tensor": [1, 3, 8, 8]}]}
        >>> check_record({"format": RECORD_FORMAT, "version": "0.1.0", "swaps": [entry]}, "x") == [entry]
        True
    """
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise RecordError(
            f"{where}: the swap record is not a {RECORD_FORMAT!r} record (a newer or "
            "foreign dysample_swap version?); re-save the model with this version"
        )
    return check_entries(record.get("swaps"), where)
