"""Save a swapped model and reload it: ``save_swapped`` / ``load_swapped``, and ``from_pretrained``.

Reloading always does the same three things: build the model with its plain layers, re-apply
the recorded swaps (the same variant, policy and example-input shapes: discovery is
deterministic, so the structure comes out the same), and load the saved weights with
``strict=True``.

``save_swapped(model, file, model_spec=None)`` writes (``torch.save``; read back with
``torch.load(weights_only=True)``)::

    {"format": "dysample_swap.swapped/2", "version": "0.1.0",
     "recipe": {"model": SPEC or None, "class": "pkg.module.Class", "variant": ..., "policy": {...},
                "inputs": [...], "then": [later swaps of the same model, same keys]},
     "state_dict": {...}}

``load_swapped(file)`` builds the model from the spec; ``load_swapped(file, model=...)`` uses the
freshly built model given (any class: the user's own, a transformers or smp model).

:func:`from_pretrained` reloads a transformers, smp or other hub-mixin model saved with the framework's own
``model.save_pretrained(directory)``: the swap record is in its ``config.json``
(:mod:`dysample_swap.integrations.record`).

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

import errno
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.nn as nn

from dysample_swap.example_inputs import make_inputs
from dysample_swap.integrations import hub_mixin as hub_mixin_integration
from dysample_swap.integrations import smp as smp_integration
from dysample_swap.integrations import transformers as transformers_integration
from dysample_swap.integrations.record import RecordError, check_entries, check_record, class_name, swap_record
from dysample_swap.model_spec import build_model
from dysample_swap.swap import swap_report, swap_upsamplers

FORMAT = "dysample_swap.swapped/2"
"""The ``format`` value :func:`save_swapped` writes."""

_READABLE = ("dysample_swap.swapped/1", FORMAT)  # /1: a spec was required, one swap, no "class"
_ENTRY_KEYS = ("class", "variant", "policy", "inputs", "not_replayable")
_FRAMEWORKS = (transformers_integration, smp_integration, hub_mixin_integration)


def recipe_of(model: nn.Module, model_spec: str | None = None) -> dict[str, Any]:
    """The recipe that rebuilds ``model`` (a ``swap_upsamplers`` result, built from ``model_spec`` if given).

    Raises:
        ValueError: ``model`` was not swapped, or a swap of it cannot be re-applied (a predicate in
            ``include``/``exclude``, example inputs that are not tensors).

    Example:
        >>> from dysample_swap.model_spec import build_model
        >>> from dysample_swap.swap import swap_upsamplers
        >>> spec = "smp:FPN:encoder_name=resnet18,encoder_depth=3,decoder_segmentation_channels=32"
        >>> recipe_of(swap_upsamplers(build_model(spec), verbose=False), spec)["variant"]
        'dysample+'
    """
    record = swap_record(model)
    if record is None:
        raise ValueError(f"this {type(model).__name__} was not swapped (no swap record); "
                         "save the model that swap_upsamplers returned")
    first, *then = check_record(record, f"this {type(model).__name__}")
    return {"model": model_spec, **first, "then": then}


def save_swapped(model: nn.Module, file: str | os.PathLike[str], model_spec: str | None = None) -> None:
    """Write ``model``'s state dict and the recipe to rebuild it.

    Args:
        model: a model that ``swap_upsamplers`` returned (any class).
        file: where to write.
        model_spec: a :func:`~dysample_swap.model_spec.build_model` spec that builds the plain
            model; without one, reload with ``load_swapped(file, model=<a fresh instance>)``.

    Example:
        >>> import os, tempfile
        >>> spec = "torchvision:lraspp_mobilenet_v3_large:num_classes=4"
        >>> model = swap_upsamplers(build_model(spec), "dysample", verbose=False)
        >>> save_swapped(model, os.path.join(tempfile.mkdtemp(), "lraspp.pt"), spec)
    """
    from dysample_swap import __version__

    payload = {"format": FORMAT, "version": __version__, "recipe": recipe_of(model, model_spec),
               "state_dict": model.state_dict()}
    write_atomically(file, lambda stream: torch.save(payload, stream))


def writable_target(file: str | os.PathLike[str]) -> None:
    """Check that ``file`` can be written (its folder exists and takes a new file) before long work.

    Raises:
        ValueError: naming the file and why not.

    Example:
        >>> writable_target("/no/such/folder/net.pt")
        Traceback (most recent call last):
        ValueError: cannot write /no/such/folder/net.pt: its folder /no/such/folder does not exist; create it first
    """
    folder = Path(file).parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {file}: its folder {folder} does not exist; create it first")
    if Path(file).is_dir():
        raise ValueError(f"cannot write {file}: it is a folder; name a file in it")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write {file}: {exc.strerror or exc} in {folder}; choose a writable folder") from exc


def write_atomically(file: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Write ``file`` through a temporary file in its folder: a failed write leaves the old file and no debris.

    Raises:
        ValueError: the write failed (``disk full`` for ENOSPC), naming the file.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "note.bin")
        >>> write_atomically(path, lambda stream: stream.write(b"hello"))
        >>> open(path, "rb").read()
        b'hello'
    """
    folder = Path(file).parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{Path(file).name}.", suffix=".tmp")
    except OSError as exc:
        raise ValueError(f"cannot write {file}: {exc.strerror or exc}") from exc
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as stream:
            write(stream)
        os.replace(tmp, file)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        why = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise ValueError(f"cannot write {file}: {why}; nothing was written (any earlier file is intact)") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_swapped(model: nn.Module) -> bool:
    try:
        swap_report(model)
    except ValueError:
        return False
    return True


def _inputs_for(model: nn.Module, description: list[dict[str, Any]]) -> tuple[Any, ...]:
    """The recorded example inputs, on the device and in the floating dtype of ``model``."""
    first = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    like = {"device": first.device, "dtype": first.dtype} if first is not None else {}
    return tuple([t.to(**like) for t in arg] if isinstance(arg, list) else arg.to(**like)
                 for arg in make_inputs(description))


def _replay(model: nn.Module, swaps: list[dict[str, Any]], where: str) -> None:
    """Re-apply the recorded swaps to a freshly built ``model``."""
    if _is_swapped(model):
        raise ValueError(f"{where}: the model given is already swapped; pass a freshly built, "
                         f"unswapped {type(model).__name__}")
    for entry in swaps:
        saved_class = entry.get("class")  # compared by name: a class saved from __main__ loads elsewhere
        if saved_class is not None and saved_class.rpartition(".")[2] != type(model).__name__:
            raise ValueError(f"{where}: it was saved from a {saved_class}, but the model given is a "
                             f"{class_name(model)}; pass a freshly built {saved_class.rpartition('.')[2]} "
                             "with the same constructor arguments")
        swap_upsamplers(model, entry["variant"], _inputs_for(model, entry["inputs"]),
                        **{**entry["policy"], "verbose": False})


def _load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], where: str, *, rebuilt: bool) -> None:
    """Load strictly; a model rebuilt here first takes the dtype of the saved weights."""
    dtypes = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    if rebuilt and len(dtypes) == 1:
        model.to(dtypes.pop())
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{where}: its weights do not fit the model rebuilt from its recipe (a "
                         f"{type(model).__name__} with the recorded swaps re-applied; it must be built with the "
                         f"constructor arguments it was saved with): {exc}") from exc


def _checked_payload(payload: Any, file: str) -> tuple[str | None, list[dict[str, Any]], dict[str, torch.Tensor]]:
    """The model spec, swap entries and state dict of a swapped-model file, checked before anything runs."""
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE:
        raise ValueError(f"{file}: not a dysample_swap swapped-model file (expected format {FORMAT!r}); "
                         "write one with `dysample-swap swap MODEL --out FILE` or save_swapped()")
    recipe, state_dict = payload.get("recipe"), payload.get("state_dict")
    if not isinstance(recipe, dict):
        raise RecordError(f"{file}: its recipe {recipe!r:.80} is not a dict; re-save the model with save_swapped()")
    spec = recipe.get("model")
    if spec is not None and not isinstance(spec, str):
        raise RecordError(f"{file}: its model spec {spec!r:.80} is not a string")
    then = recipe.get("then", [])
    if not isinstance(then, list):
        raise RecordError(f"{file}: its later swaps {then!r:.80} are not a list")
    swaps = check_entries([{k: recipe[k] for k in _ENTRY_KEYS if k in recipe}, *then], file)
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise RecordError(f"{file}: its state_dict is not a dict of named tensors; re-save the model with save_swapped()")
    return spec, swaps, state_dict


def load_swapped(file: str | os.PathLike[str], model: nn.Module | None = None, *,
                 trust_spec: bool = False) -> nn.Module:
    """Rebuild a swapped model from a file written by :func:`save_swapped` (``dysample-swap swap``).

    Loading never runs code the file names: the file is read with ``torch.load(weights_only=True)``,
    its recipe is checked (types, known upsamplers and options, bounded example-input shapes)
    before anything is built, and its model spec is built only when it names an ``smp:``,
    ``torchvision:`` or ``timm:`` model, unless ``trust_spec=True``.

    Args:
        file: the file.
        model: a freshly built, unswapped instance of the saved model's class, with its constructor
            arguments (required when the file records no model spec, or a ``package.module:function``
            spec you do not trust); the recorded swaps are re-applied to it in place.
        trust_spec: build a recorded ``package.module:function`` spec (imports that module and calls
            that function): only for a file whose author you trust.

    Raises:
        ValueError: the file is missing, corrupt or not a swapped-model file; its recipe is
            malformed (:class:`~dysample_swap.integrations.record.RecordError`); it records no spec
            and no ``model`` is given; its spec is not trusted
            (:class:`~dysample_swap.model_spec.UntrustedSpecError`); ``model`` is of another class
            or already swapped; or the weights do not fit.

    Example:
        >>> import os, tempfile, torch.nn as nn
        >>> def make(): return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> path = os.path.join(tempfile.mkdtemp(), "net.pt")
        >>> save_swapped(swap_upsamplers(make(), "dysample", verbose=False), path)
        >>> type(load_swapped(path, model=make())[1]).__name__
        'DySample'
    """
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{file}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, IndexError) as exc:
        raise ValueError(f"{file}: not a readable swapped-model file ({type(exc).__name__}: {exc})") from exc
    spec, swaps, state_dict = _checked_payload(payload, str(file))
    rebuilt = model is None
    if model is None:
        if spec is None:
            saved = swaps[0].get("class", "model").rpartition(".")[2]
            raise ValueError(f"{file} records no model spec, so it cannot build the model itself; pass a "
                             f"freshly built {saved} (same constructor arguments): load_swapped(file, model=...)")
        model = build_model(spec, trust_spec=trust_spec)
    _replay(model, swaps, str(file))
    _load_weights(model, state_dict, str(file), rebuilt=rebuilt)
    return model


def _weight_map(index: Path) -> dict[str, Any]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{index}: not a readable safetensors index ({type(exc).__name__}: {exc}); "
                         "save the model again with model.save_pretrained(directory)") from exc
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index}: its weight_map is not a dict of tensor name -> shard file")
    return weight_map


def _shard(directory: Path, name: Any) -> Path:
    """A shard that the index names: a plain ``*.safetensors`` file name inside ``directory``, nothing else."""
    if (not isinstance(name, str) or Path(name).name != name or name in (".", "..")
            or not name.endswith(".safetensors")):
        raise ValueError(f"{directory / 'model.safetensors.index.json'} names the shard {name!r:.120}, which "
                         "is not a .safetensors file inside the directory; refusing to read it")
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
        raise ValueError(f"{directory}: no model.safetensors (or model.safetensors.index.json); "
                         "save the model with model.save_pretrained(directory)")
    tensors = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys() if keys is None or k in keys})
    return tensors


def _load_transformers(directory: Path, config: dict[str, Any], swaps: list[dict[str, Any]]) -> nn.Module:
    """transformers loads the plain weights (with its own key renaming); the DySample ones are loaded here."""
    model, unused = transformers_integration.load_plain(directory, config)
    plain = set(model.state_dict())
    _replay(model, swaps, str(directory))
    added = {k for k in model.state_dict() if k not in plain}
    if set(unused) != added:
        raise ValueError(f"{directory}: its weights do not fit the model rebuilt from its recipe: checkpoint "
                         f"keys the swapped model lacks: {sorted(set(unused) - added)}; swapped-model keys the "
                         f"checkpoint lacks: {sorted(added - set(unused))}")
    try:
        model.load_state_dict(_read_safetensors(directory, added), strict=False)  # the plain keys are loaded
    except RuntimeError as exc:
        raise ValueError(f"{directory}: its DySample weights do not fit the model rebuilt from its recipe: {exc}") from exc
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
        raise ValueError(f"{directory}: no config.json; write the directory with model.save_pretrained({str(directory)!r})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not a readable JSON config ({exc})") from exc
    framework = next((f for f in _FRAMEWORKS if isinstance(config, dict) and f.owns_config(config)), None)
    if framework is None:
        raise ValueError(f"{config_path} was not written by the save_pretrained of a swapped transformers, smp "
                         "or PyTorchModelHubMixin model; for other models use save_swapped() and "
                         "load_swapped(file, model=...)")
    if framework.CONFIG_KEY not in config:
        raise ValueError(f"{config_path} has no {framework.CONFIG_KEY!r} swap record: the model was saved "
                         "before it was swapped (or by an older dysample_swap). An unswapped model loads with "
                         "its framework's own from_pretrained; to save a swapped one, call "
                         "model.save_pretrained(directory) after swap_upsamplers(model, ...)")
    swaps = check_record(config[framework.CONFIG_KEY], str(config_path))
    if framework is transformers_integration:
        return _load_transformers(directory, config, swaps).eval()
    if framework is hub_mixin_integration:
        saved = swaps[0].get("class", "").rpartition(".")[2] or "its class"
        if model_class is None:
            raise ValueError(f"{directory} was saved by a PyTorchModelHubMixin model ({saved}), whose config does not "
                             f"name its class; pass it: dysample_swap.from_pretrained({str(directory)!r}, "
                             f"model_class={saved})")
        model = hub_mixin_integration.build(directory, config, model_class)
    else:
        model = smp_integration.build(directory, config)
    _replay(model, swaps, str(directory))
    _load_weights(model, _read_safetensors(directory), str(directory), rebuilt=True)
    return model.eval()
