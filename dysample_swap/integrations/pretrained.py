"""``from_pretrained``: reload a swapped model that a framework's own ``save_pretrained`` wrote.

The swap record is in the directory's ``config.json`` (:mod:`dysample_swap.surgery.record`), put
there by the framework's ``write_record`` hook. Reloading builds the plain model the framework's
way, re-applies the recorded swaps (:func:`~dysample_swap.surgery.persist.replay`) and loads every
weight: transformers (its own loader for the plain weights, which renames some keys, then the
DySample ones), smp (the class ``_model_class`` names), and any other huggingface_hub
``PyTorchModelHubMixin`` model (the class the caller passes: a file never names code to import).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from dysample_swap.integrations import hub_mixin as hub_mixin_integration
from dysample_swap.integrations import smp as smp_integration
from dysample_swap.integrations import transformers as transformers_integration
from dysample_swap.surgery.persist import load_weights, replay
from dysample_swap.surgery.record import check_record

_FRAMEWORKS = (transformers_integration, smp_integration, hub_mixin_integration)


def _weight_map(index: Path) -> dict[str, Any]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{index}: not a readable safetensors index ({type(exc).__name__}: {exc}); "
            "save the model again with model.save_pretrained(directory)"
        ) from exc
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index}: its weight_map is not a dict of tensor name -> shard file")
    return weight_map


def _shard(directory: Path, name: Any) -> Path:
    """A shard that the index names: a plain ``*.safetensors`` file name inside ``directory``, nothing else."""
    if not isinstance(name, str) or Path(name).name != name or name in (".", "..") or not name.endswith(".safetensors"):
        raise ValueError(
            f"{directory / 'model.safetensors.index.json'} names the shard {name!r:.120}, which "
            "is not a .safetensors file inside the directory; refusing to read it"
        )
    shard = directory / name
    if shard.resolve().parent != directory.resolve():
        raise ValueError(f"{shard} links outside {directory}; refusing to read it")
    return shard


def _read_safetensors(directory: Path, keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors (all, or those named in ``keys``) of ``model.safetensors`` or its shards."""
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = [_shard(directory, name) for name in dict.fromkeys(_weight_map(index).values())]
    elif (directory / "model.safetensors").exists():
        files = [directory / "model.safetensors"]
    else:
        raise ValueError(
            f"{directory}: no model.safetensors (or model.safetensors.index.json); "
            "save the model with model.save_pretrained(directory)"
        )
    tensors = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys() if keys is None or k in keys})  # noqa: SIM118 - safe_open is no dict
    return tensors


def _load_transformers(directory: Path, config: dict[str, Any], swaps: list[dict[str, Any]]) -> nn.Module:
    """transformers loads the plain weights (with its own key renaming); the DySample ones are loaded here."""
    model, unused = transformers_integration.load_plain(directory, config)
    plain = set(model.state_dict())
    replay(model, swaps, str(directory))
    added = {k for k in model.state_dict() if k not in plain}
    if set(unused) != added:
        raise ValueError(
            f"{directory}: its weights do not fit the model rebuilt from its recipe: checkpoint "
            f"keys the swapped model lacks: {sorted(set(unused) - added)}; swapped-model keys the "
            f"checkpoint lacks: {sorted(added - set(unused))}"
        )
    try:
        model.load_state_dict(_read_safetensors(directory, added), strict=False)  # the plain keys are loaded
    except RuntimeError as exc:
        raise ValueError(
            f"{directory}: its DySample weights do not fit the model rebuilt from its recipe: {exc}"
        ) from exc
    return model


def from_pretrained(directory: str | os.PathLike[str], model_class: type | None = None) -> nn.Module:
    """Reload a swapped model that was saved with its own ``model.save_pretrained(directory)``.

    transformers: its own ``from_pretrained`` loads the plain model (the class in ``architectures``),
    the swaps recorded in ``config.json`` are re-applied, and the DySample weights are loaded; every
    checkpoint key must be used and every DySample weight found. smp: the class ``_model_class``
    names is built from its saved arguments, the swaps are re-applied, and ``model.safetensors`` is
    loaded with ``strict=True``. Any other huggingface_hub ``PyTorchModelHubMixin`` model: as smp,
    with the class given as ``model_class`` (its config does not name it, and a class a file names
    is never imported). Returned in eval mode, as the frameworks' own loaders do.

    Args:
        directory: what ``save_pretrained`` wrote.
        model_class: for a ``PyTorchModelHubMixin`` model other than smp's, its class (e.g.
            ``Detector`` for ``class Detector(FasterRCNN, PyTorchModelHubMixin)``); not needed otherwise.

    Raises:
        ValueError: no ``config.json`` or weights in ``directory``; a config of another framework;
            no swap record (the model was saved unswapped: load it with the framework's own
            ``from_pretrained``); a hub-mixin directory without ``model_class``, or with another
            class; a swap that cannot be re-applied; weights that do not fit.

    Example:
        >>> import tempfile, torch
        >>> import segmentation_models_pytorch as smp
        >>> from dysample_swap import swap_upsamplers
        >>> model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8))
        >>> model = swap_upsamplers(model, "dysample", (torch.rand(1, 3, 64, 64),), verbose=False)
        >>> directory = tempfile.mkdtemp()
        >>> model.save_pretrained(directory)
        >>> reloaded = from_pretrained(directory)
        >>> saved = model.state_dict()
        >>> all(torch.equal(value, saved[key]) for key, value in reloaded.state_dict().items())
        True
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(
            f"{directory}: no config.json; write the directory with model.save_pretrained({str(directory)!r})"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not a readable JSON config ({exc})") from exc
    framework = next((f for f in _FRAMEWORKS if isinstance(config, dict) and f.owns_config(config)), None)
    if framework is None:
        raise ValueError(
            f"{config_path} was not written by the save_pretrained of a swapped transformers, smp "
            "or PyTorchModelHubMixin model; for other models use save_swapped() and "
            "load_swapped(file, model=...)"
        )
    if framework.CONFIG_KEY not in config:
        raise ValueError(
            f"{config_path} has no {framework.CONFIG_KEY!r} swap record: the model was saved "
            "before it was swapped (or by an older dysample_swap). An unswapped model loads with "
            "its framework's own from_pretrained; to save a swapped one, call "
            "model.save_pretrained(directory) after swap_upsamplers(model, ...)"
        )
    swaps = check_record(config[framework.CONFIG_KEY], str(config_path))
    if framework is transformers_integration:
        return _load_transformers(directory, config, swaps).eval()
    if framework is hub_mixin_integration:
        saved = swaps[0].get("class", "").rpartition(".")[2] or "its class"
        if model_class is None:
            raise ValueError(
                f"{directory} was saved by a PyTorchModelHubMixin model ({saved}), whose config does not "
                f"name its class; pass it: dysample_swap.from_pretrained({str(directory)!r}, "
                f"model_class={saved})"
            )
        model = hub_mixin_integration.build(directory, config, model_class)
    else:
        model = smp_integration.build(directory, config)
    replay(model, swaps, str(directory))
    load_weights(model, _read_safetensors(directory), str(directory), rebuilt=True)
    return model.eval()
