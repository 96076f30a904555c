"""transformers: the swap record rides in ``model.config``, so ``model.save_pretrained`` saves it.

``PretrainedConfig`` serialises any attribute it does not know into ``config.json`` and sets it
back on load, so ``model.config.dysample_swap`` (see :mod:`dysample_swap.surgery.record`)
survives ``save_pretrained`` / ``AutoConfig.from_pretrained``. transformers' own
``from_pretrained`` still builds the plain model and drops every DySample weight (it reports
them as UNEXPECTED); :func:`dysample_swap.from_pretrained` loads that plain model, re-applies
the recorded swaps and loads the DySample weights.

Nothing here imports transformers until a transformers model or config is in hand.

Example:
    >>> import torch.nn as nn
    >>> owns(nn.Conv2d(3, 3, 1)), owns_config({"_model_class": "FPN"})
    (False, False)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch.nn as nn

from dysample_swap.surgery.hooks import is_loaded_instance

CONFIG_KEY = "dysample_swap"
"""The ``config.json`` key (and ``model.config`` attribute) that holds the swap record."""


def owns(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (without importing transformers).

    Example:
        >>> owns(nn.Identity())
        False
    """
    return is_loaded_instance(model, "transformers.modeling_utils", "PreTrainedModel")


def write_record(model: nn.Module, record: dict[str, Any] | None) -> None:
    """Put the swap record on ``model.config`` (``None``: remove it).

    Example:
        >>> from transformers import DPTConfig, DPTForDepthEstimation
        >>> model = DPTForDepthEstimation(DPTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
        ...                                         intermediate_size=8, neck_hidden_sizes=[4, 4, 4, 4],
        ...                                         fusion_hidden_size=8, head_hidden_size=4))
        >>> write_record(model, {"swaps": []})
        >>> model.config.to_dict()["dysample_swap"]
        {'swaps': []}
        >>> write_record(model, None)
        >>> hasattr(model.config, "dysample_swap")
        False
    """
    if record is not None:
        setattr(model.config, CONFIG_KEY, record)
    elif hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)


def owns_config(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` (as a dict) was written by transformers.

    Example:
        >>> owns_config({"model_type": "dpt", "transformers_version": "5.0.0"})
        True
    """
    return "transformers_version" in config and "model_type" in config


def load_plain(directory: str | os.PathLike[str], config: dict[str, Any]) -> tuple[nn.Module, list[str]]:
    """The plain model, loaded by transformers' own ``from_pretrained``; also the checkpoint keys it did not use.

    transformers renames weights between its checkpoint and module names for some models
    (Segformer saves ``encoder.block.0.0...`` for ``stages.0.blocks...``), so its own loader
    loads the plain weights. Its load report is silenced: the unused keys are the DySample
    weights, returned for the caller to check against the re-applied swap.

    Raises:
        ValueError: ``architectures`` is missing or names no transformers model class (custom
            code), the weights are missing, or the plain weights do not fit (missing or mismatched keys).

    Example:
        >>> import tempfile
        >>> from transformers import DPTConfig, DPTForDepthEstimation
        >>> directory = tempfile.mkdtemp()
        >>> DPTForDepthEstimation(DPTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
        ...     intermediate_size=8, neck_hidden_sizes=[4, 4, 4, 4], fusion_hidden_size=8,
        ...     head_hidden_size=4)).save_pretrained(directory)
        >>> model, unused = load_plain(directory, {"architectures": ["DPTForDepthEstimation"]})
        >>> type(model).__name__, unused, model.training
        ('DPTForDepthEstimation', [], False)
    """
    import transformers

    names = config.get("architectures") or []
    if len(names) != 1:
        raise ValueError(
            f"{directory}: config.json names {len(names)} architectures ({names}), not one; "
            "save the model with model.save_pretrained(directory)"
        )
    model_class = getattr(transformers, names[0], None)
    if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
        raise ValueError(
            f"{directory}: config.json's architecture {names[0]!r} is not a transformers model "
            "class (custom code?); build and swap the model yourself, then load "
            "model.safetensors into it with load_state_dict"
        )
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        loaded: Any = model_class.from_pretrained(directory, output_loading_info=True)  # (model, info) with the flag
        model, info = loaded
    except OSError as exc:  # no or unreadable weights
        raise ValueError(
            f"{directory}: transformers could not load it ({exc}); save the model with model.save_pretrained(directory)"
        ) from exc
    finally:
        logger.setLevel(level)
    problems = {what: info[what] for what in ("missing_keys", "mismatched_keys", "error_msgs") if info[what]}
    if problems:
        raise ValueError(
            f"{directory}: transformers could not load the plain {names[0]} weights "
            f"({problems}); the checkpoint and config.json do not belong together"
        )
    return model, sorted(info["unexpected_keys"])


def _apply_config_values(config: Any, values: dict[str, Any], spec_name: str) -> Any:
    """``config`` with ``values`` set; ``sub.key`` keys rebuild the sub-config ``sub`` (e.g.
    ``backbone_config``) from its own values plus theirs, so it re-derives what depends on them."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        sub, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(sub, {})[rest] = value
            continue
        if not hasattr(config, key):
            raise ValueError(
                f"{spec_name}: {type(config).__name__} has no setting {key!r}; see its documentation for the keys"
            )
        setattr(config, key, value)
    for sub, sub_values in nested.items():
        current = getattr(config, sub, None)
        if current is None or not hasattr(current, "to_dict"):
            raise ValueError(
                f"{spec_name}: {type(config).__name__} has no sub-config {sub!r} to set {sorted(sub_values)} in"
            )
        base = {k: v for k, v in current.to_dict().items() if k not in ("transformers_version", "model_type")}
        if {"out_indices", "out_features", "depths", "num_layers", "num_hidden_layers"} & set(sub_values):
            base.pop("out_features", None)  # re-derived from out_indices and the new depth
            base.pop("stage_names", None)
        base.update(sub_values)
        setattr(config, sub, type(current)(**base))
    return config


def build_from_spec(name: str, values: dict[str, Any]) -> nn.Module:
    """The model a ``transformers:CLASS:key=value,...`` spec names, with random weights.

    ``CLASS`` is a transformers model class (``DPTForDepthEstimation``, ``MaskFormerForInstanceSegmentation``,
    ...); the values set its config class's defaults (``backbone_config.depths=[1,1,1,1]`` sets a
    sub-config's). ``weights=FOLDER`` loads a local ``save_pretrained`` folder instead, with its own
    ``config.json`` plus these values: only ``model.safetensors`` is read (no pickle, no download, no
    custom code).

    Example:
        >>> model = build_from_spec("GLPNForDepthEstimation", {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1],
        ...     "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 8})
        >>> type(model).__name__, model.config.decoder_hidden_size
        ('GLPNForDepthEstimation', 8)
        >>> build_from_spec("DPTForDepthEstimaton", {})
        Traceback (most recent call last):
        ...
        ValueError: transformers has no model class 'DPTForDepthEstimaton' (did you mean DPTForDepthEstimation?)
    """
    import difflib

    import transformers

    values = dict(values)
    model_class = getattr(transformers, name, None)
    if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
        close = difflib.get_close_matches(name, [n for n in dir(transformers) if "For" in n], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"transformers has no model class {name!r}{hint}")
    weights = values.pop("weights", None)
    spec_name = f"transformers:{name}"
    config_class: Any = model_class.config_class
    if weights is None:
        config = _apply_config_values(config_class(), values, spec_name)
        return model_class(config)
    folder = os.fspath(weights)
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        raise ValueError(
            f"{spec_name}: weights={folder!r} is not a local folder holding model.safetensors (and config.json); "
            "save the weights with model.save_pretrained(folder) (nothing is downloaded, and pickled .bin "
            "weights are not read)"
        )
    config = _apply_config_values(config_class.from_pretrained(folder), values, spec_name)
    return model_class.from_pretrained(
        folder, config=config, local_files_only=True, use_safetensors=True, trust_remote_code=False
    )
