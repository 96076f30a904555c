"""Build a model from a one-line spec (used by the CLI and by fine-tuning recipes).

Spec syntax, keyword arguments separated by ``,`` (values are Python literals, else strings):

* ``smp:ARCH[:k=v,...]`` - ``segmentation_models_pytorch.ARCH(**kwargs)``, with
  ``encoder_weights=None`` unless given (e.g. ``smp:FPN:encoder_name=resnet34``);
* ``torchvision:NAME[:k=v,...]`` - ``torchvision.models.get_model(NAME, **kwargs)`` with
  ``weights=None`` and ``weights_backbone=None`` unless given
  (e.g. ``torchvision:fasterrcnn_resnet50_fpn:min_size=320``);
* ``timm:NAME[:k=v,...]`` - ``timm.create_model(NAME, pretrained=False, **kwargs)``;
* ``dysample_swap:NAME[:k=v,...]`` - a model this package ships (:data:`dysample_swap.models.MODELS`,
  e.g. ``dysample_swap:panoptic_fpn_resnet50_fpn:num_classes=81,num_stuff=53``);
* ``transformers:CLASS[:k=v,...]`` - a transformers model class built from its config class with
  these config values (random weights; ``weights=FOLDER`` loads a local ``save_pretrained`` folder's
  safetensors), registered by :mod:`dysample_swap.integrations.transformers`;
* ``package.module:function[:k=v,...]`` - any importable function returning an ``nn.Module``,
  built only when the caller trusts the spec (``trust_spec=True``): importing a module and calling
  a function that a string names runs code, so a spec read from a shared file (a swap file, a
  checkpoint's config) must never do it unasked. The three library sources above resolve only to
  those libraries' own model constructors and are always allowed, and so do the two sources above.

A value may be a list or tuple (``neck_hidden_sizes=[16,32,64,64]``): commas inside brackets do not
separate keys.

Example:
    >>> model = build_model("torchvision:lraspp_mobilenet_v3_large:num_classes=3")
    >>> type(model).__name__
    'LRASPP'
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch.nn as nn

OWNED_SOURCES = ("smp", "torchvision", "timm", "dysample_swap", "transformers")
"""Spec sources that resolve only to those libraries' own model constructors (always trusted)."""

SourceBuilder = Callable[[str, dict[str, Any]], nn.Module]

_SOURCES: dict[str, SourceBuilder] = {}


def register_source(source: str, builder: SourceBuilder) -> None:
    """Let a layer above the surgery build the specs of one of :data:`OWNED_SOURCES`
    (:mod:`dysample_swap.integrations.transformers` registers ``transformers``).

    Example:
        >>> register_source("mine", lambda name, kwargs: nn.Identity())
        Traceback (most recent call last):
        ...
        ValueError: 'mine' is not an owned spec source (smp, torchvision, timm, dysample_swap, transformers)
    """
    if source not in OWNED_SOURCES:
        raise ValueError(f"{source!r} is not an owned spec source ({', '.join(OWNED_SOURCES)})")
    _SOURCES[source] = builder


class UntrustedSpecError(ValueError):
    """A ``package.module:function`` spec was to be built without the caller's consent.

    Example:
        >>> build_model("os:system:command='touch pwned'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dysample_swap.surgery.model_spec.UntrustedSpecError: the model spec "os:system:command='touch pwned'" names code ...
    """


def is_owned(spec: str) -> bool:
    """Whether ``spec`` names one of the library builders in :data:`OWNED_SOURCES`.

    Example:
        >>> is_owned("smp:FPN"), is_owned("my_models:build")
        (True, False)
    """
    return spec.strip().split(":", 1)[0].strip() in OWNED_SOURCES


def parse_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """Split a spec into ``(source, name, kwargs)``.

    Example:
        >>> parse_spec("smp:FPN:encoder_name=resnet18,classes=3")
        ('smp', 'FPN', {'encoder_name': 'resnet18', 'classes': 3})
        >>> parse_spec("transformers:DPTForDepthEstimation:neck_hidden_sizes=[16,32],hidden_size=64")[2]
        {'neck_hidden_sizes': [16, 32], 'hidden_size': 64}
    """
    parts = spec.strip().split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(
            f"model spec {spec!r} is not SOURCE:NAME[:key=value,...]; e.g. "
            "'smp:FPN:encoder_name=resnet34', 'torchvision:fasterrcnn_resnet50_fpn' "
            "or 'my_package.models:build'"
        )
    kwargs: dict[str, Any] = {}
    if len(parts) == 3 and parts[2].strip():
        for item in _split_items(parts[2]):
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"model spec {spec!r}: {item!r} is not key=value")
            try:
                value: Any = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError):
                value = raw.strip()
            kwargs[key.strip()] = value
    return parts[0].strip(), parts[1].strip(), kwargs


def _split_items(text: str) -> list[str]:
    """Split ``key=value`` items on the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _build_smp(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import segmentation_models_pytorch as smp

    archs = [a for a in dir(smp) if isinstance(getattr(smp, a), type) and issubclass(getattr(smp, a), nn.Module)]
    if name not in archs:
        raise ValueError(f"smp has no architecture {name!r}.{_suggest(name, archs)}")
    kwargs.setdefault("encoder_weights", None)
    return getattr(smp, name)(**kwargs)


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    names = list(torchvision.models.list_models())
    if name not in names:
        raise ValueError(f"torchvision has no model {name!r}.{_suggest(name, names)}")
    params = inspect.signature(torchvision.models.get_model_builder(name)).parameters
    kwargs.setdefault("weights", None)
    if "weights_backbone" in params:
        kwargs.setdefault("weights_backbone", None)
    return torchvision.models.get_model(name, **kwargs)


def _build_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):  # also refuses hub names ("hf-hub:...") that would fetch a config
        raise ValueError(f"timm has no model {name!r}.{_suggest(name, list(timm.list_models()))}")
    kwargs.setdefault("pretrained", False)
    return timm.create_model(name, **kwargs)


def _build_packaged(name: str, kwargs: dict[str, Any]) -> nn.Module:
    from dysample_swap.models import MODELS

    if name not in MODELS:
        raise ValueError(
            f"dysample_swap ships no model {name!r}; it ships {', '.join(MODELS)}.{_suggest(name, list(MODELS))}"
        )
    return MODELS[name](**kwargs)


def _build_function(module_name: str, function: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for the model spec: {exc}") from exc
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ValueError(f"{module_name!r} has no callable {function!r}")
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{module_name}:{function} returned {type(model).__name__}, not an nn.Module")
    return model


def build_model(spec: str, *, trust_spec: bool = False) -> nn.Module:
    """Build the model a spec names, with random weights for smp/torchvision/timm models.

    Args:
        spec: the spec (see the module docstring).
        trust_spec: allow a ``package.module:function`` spec: its module is imported and its
            function called, which runs whatever code they hold. Pass ``True`` only for a spec you
            wrote or checked yourself, never for one read from a file someone else can edit.

    Raises:
        UntrustedSpecError: a ``package.module:function`` spec without ``trust_spec=True``.
        ValueError: a malformed spec, an unknown architecture, or a builder that fails.

    Example:
        >>> build_model("smp:Unet:encoder_name=resnet18,classes=2").segmentation_head[0].out_channels
        2
        >>> type(build_model("torch.nn:Identity", trust_spec=True)).__name__
        'Identity'
    """
    source, name, kwargs = parse_spec(spec)
    if source == "smp":
        return _build_smp(name, kwargs)
    if source == "torchvision":
        return _build_torchvision(name, kwargs)
    if source == "timm":
        return _build_timm(name, kwargs)
    if source == "dysample_swap":
        return _build_packaged(name, kwargs)
    if source in _SOURCES:
        return _SOURCES[source](name, kwargs)
    if source in OWNED_SOURCES:  # registered when dysample_swap is imported; never imported as code
        raise ValueError(f"no builder is registered for {source!r} specs; import dysample_swap first")
    if not trust_spec:
        raise UntrustedSpecError(
            f"the model spec {spec!r} names code to import and call ({source}:{name}), and it is not "
            f"trusted: only {', '.join(s + ':' for s in OWNED_SOURCES)} specs are built unasked. If you "
            "wrote this spec or checked that module, pass trust_spec=True (--trust-spec on the command "
            "line); otherwise build the model yourself and pass it (model=...)"
        )
    return _build_function(source, name, kwargs)
