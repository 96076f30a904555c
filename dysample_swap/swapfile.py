"""Save a swapped model as state dict + recipe, and rebuild it: ``save_swapped`` / ``load_swapped``.

The file (written with ``torch.save``, read with ``torch.load(weights_only=True)``) holds::

    {"format": "dysample_swap.swapped/1",
     "recipe": {"model": SPEC, "variant": ..., "policy": {...}, "inputs": [...]},
     "state_dict": {...}}

Rebuilding runs :func:`~dysample_swap.model_spec.build_model` on the spec, swaps again with
the same variant, policy and example-input shapes (discovery is deterministic), and loads the
state dict with ``strict=True``.

Example:
    >>> import tempfile, os, torch
    >>> from dysample_swap.model_spec import build_model
    >>> from dysample_swap.swap import swap_upsamplers
    >>> spec = "smp:FPN:encoder_name=resnet18,encoder_depth=3,decoder_segmentation_channels=32"
    >>> model = swap_upsamplers(build_model(spec), "dysample", verbose=False)
    >>> path = os.path.join(tempfile.mkdtemp(), "fpn.pt")
    >>> save_swapped(model, path, spec)
    >>> type(load_swapped(path)).__name__
    'FPN'
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch
import torch.nn as nn

from dysample_swap.example_inputs import make_inputs
from dysample_swap.model_spec import build_model
from dysample_swap.swap import swap_report, swap_upsamplers

FORMAT = "dysample_swap.swapped/1"


def _saveable_policy(policy: dict[str, Any]) -> dict[str, Any]:
    saved = {}
    for key, value in policy.items():
        if key == "verbose":
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (str, bool, int, float, type(None))) for v in items):
            raise ValueError(f"policy option {key}={value!r} cannot be saved in a recipe; "
                             "use paths or globs instead of predicates")
        saved[key] = list(value) if isinstance(value, tuple) else value
    return saved


def recipe_of(model: nn.Module, model_spec: str) -> dict[str, Any]:
    """The recipe that rebuilds ``model`` (a ``swap_upsamplers`` result built from ``model_spec``).

    Example:
        >>> from dysample_swap.model_spec import build_model
        >>> from dysample_swap.swap import swap_upsamplers
        >>> spec = "smp:FPN:encoder_name=resnet18,encoder_depth=3,decoder_segmentation_channels=32"
        >>> recipe_of(swap_upsamplers(build_model(spec), verbose=False), spec)["variant"]
        'dysample+'
    """
    report = swap_report(model)
    if report.inputs is None:
        raise ValueError("the example inputs of this swap are not tensors or lists of tensors, "
                         "so the recipe cannot record them")
    return {"model": model_spec, "variant": report.variant, "policy": _saveable_policy(report.policy),
            "inputs": report.inputs}


def save_swapped(model: nn.Module, file: str | os.PathLike[str], model_spec: str) -> None:
    """Write ``model``'s state dict and the recipe to rebuild it.

    Example:
        >>> import os, tempfile
        >>> spec = "torchvision:lraspp_mobilenet_v3_large:num_classes=4"
        >>> model = swap_upsamplers(build_model(spec), "dysample", verbose=False)
        >>> save_swapped(model, os.path.join(tempfile.mkdtemp(), "lraspp.pt"), spec)
    """
    torch.save({"format": FORMAT, "recipe": recipe_of(model, model_spec),
                "state_dict": model.state_dict()}, file)


def load_swapped(file: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a swapped model from a file written by :func:`save_swapped` (``dysample-swap swap``).

    Raises:
        ValueError: the file is missing, corrupt, not a swapped-model file, or its weights do
            not fit the rebuilt model.

    Example:
        >>> import os, tempfile
        >>> spec = "torchvision:lraspp_mobilenet_v3_large:num_classes=4"
        >>> path = os.path.join(tempfile.mkdtemp(), "lraspp.pt")
        >>> save_swapped(swap_upsamplers(build_model(spec), "dysample", verbose=False), path, spec)
        >>> type(load_swapped(path).classifier.dysample_0).__name__
        'DySample'
    """
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{file}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{file}: not a readable swapped-model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{file}: not a dysample_swap swapped-model file (expected format {FORMAT!r}); "
                         "write one with `dysample-swap swap MODEL --out FILE` or save_swapped()")
    recipe = payload["recipe"]
    model = build_model(recipe["model"])
    policy = {**recipe["policy"], "verbose": False}
    swap_upsamplers(model, recipe["variant"], make_inputs(recipe["inputs"]), **policy)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{file}: its weights do not fit the model rebuilt from its recipe "
                         f"{recipe['model']!r} ({exc})") from exc
    return model
