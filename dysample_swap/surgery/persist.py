"""Save a swapped model and reload it: ``save_swapped`` / ``load_swapped``, and the replay they share.

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

:func:`replay` and :func:`load_weights` are the two steps every reload shares, also
:func:`dysample_swap.from_pretrained` (:mod:`dysample_swap.integrations.pretrained`) for a
framework's ``save_pretrained`` directory.

Example:
    >>> import tempfile, os, torch
    >>> from dysample_swap.surgery.model_spec import build_model
    >>> from dysample_swap.surgery.swap import swap_upsamplers
    >>> spec = "smp:FPN:encoder_name=resnet18,encoder_depth=3,decoder_segmentation_channels=32"
    >>> model = swap_upsamplers(build_model(spec), "dysample", verbose=False)
    >>> path = os.path.join(tempfile.mkdtemp(), "fpn.pt")
    >>> save_swapped(model, path, spec)
    >>> type(load_swapped(path)).__name__
    'FPN'
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.nn as nn

from dysample_swap.surgery.example_inputs import make_inputs
from dysample_swap.surgery.model_spec import build_model
from dysample_swap.surgery.record import (
    RecordError,
    check_entries,
    check_record,
    class_name,
    replay_policy,
    swap_record,
)
from dysample_swap.surgery.swap import swap_report, swap_upsamplers
from dysample_swap.version import __version__

FORMAT = "dysample_swap.swapped/2"
"""The ``format`` value :func:`save_swapped` writes."""

_READABLE = ("dysample_swap.swapped/1", FORMAT)  # /1: a spec was required, one swap, no "class"
_ENTRY_KEYS = ("class", "variant", "policy", "inputs", "sites", "not_replayable")


def recipe_of(model: nn.Module, model_spec: str | None = None) -> dict[str, Any]:
    """The recipe that rebuilds ``model`` (a ``swap_upsamplers`` result, built from ``model_spec`` if given).

    Raises:
        ValueError: ``model`` was not swapped, or a swap of it cannot be re-applied (example inputs that
            are not tensors).

    Example:
        >>> from dysample_swap.surgery.model_spec import build_model
        >>> from dysample_swap.surgery.swap import swap_upsamplers
        >>> spec = "smp:FPN:encoder_name=resnet18,encoder_depth=3,decoder_segmentation_channels=32"
        >>> recipe_of(swap_upsamplers(build_model(spec), verbose=False), spec)["variant"]
        'dysample+'
    """
    record = swap_record(model)
    if record is None:
        raise ValueError(
            f"this {type(model).__name__} was not swapped (no swap record); "
            "save the model that swap_upsamplers returned"
        )
    first, *then = check_record(record, f"this {type(model).__name__}")
    return {"model": model_spec, **first, "then": then}


def save_swapped(model: nn.Module, file: str | os.PathLike[str], model_spec: str | None = None) -> None:
    """Write ``model``'s state dict and the recipe to rebuild it.

    Args:
        model: a model that ``swap_upsamplers`` returned (any class).
        file: where to write.
        model_spec: a :func:`~dysample_swap.surgery.model_spec.build_model` spec that builds the plain
            model; without one, reload with ``load_swapped(file, model=<a fresh instance>)``.

    Example:
        >>> import os, tempfile
        >>> spec = "torchvision:lraspp_mobilenet_v3_large:num_classes=4"
        >>> model = swap_upsamplers(build_model(spec), "dysample", verbose=False)
        >>> save_swapped(model, os.path.join(tempfile.mkdtemp(), "lraspp.pt"), spec)
    """
    payload = {
        "format": FORMAT,
        "version": __version__,
        "recipe": recipe_of(model, model_spec),
        "state_dict": model.state_dict(),
    }
    try:
        write_atomically(file, lambda stream: torch.save(payload, stream))
    except OSError as exc:
        why = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        raise ValueError(f"cannot write {file}: {why}; nothing was written (any earlier file is intact)") from exc


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


def write_atomically(file: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Write ``file`` through a temporary file in its folder, flushed to disk, then renamed over it.

    A write that fails (disk full, no permission, an interruption) leaves ``file`` as it was and
    removes the temporary file. ``save_swapped`` and the fine-tuning checkpoints both write this way.

    Raises:
        OSError: what failed, also when a library wrapped it (``torch.save`` reports a full disk as
            a ``RuntimeError`` around the ``OSError``).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "note.bin")
        >>> write_atomically(path, lambda stream: stream.write(b"hello"))
        >>> open(path, "rb").read(), os.listdir(os.path.dirname(path))
        (b'hello', ['note.bin'])
    """
    fd, tmp = tempfile.mkstemp(dir=Path(file).parent, prefix=f".{Path(file).name}.", suffix=".tmp")
    os.close(fd)
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        with open(tmp, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, file)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(err)
        if cause is None or cause is err:
            raise
        raise cause from err


def _os_error(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err``: itself, or one a library wrapped (through ``__cause__``/``__context__``)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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
    return tuple(
        [t.to(**like) for t in arg] if isinstance(arg, list) else arg.to(**like) for arg in make_inputs(description)
    )


def replay(model: nn.Module, swaps: list[dict[str, Any]], where: str) -> None:
    """Re-apply the recorded swaps to a freshly built ``model``."""
    if _is_swapped(model):
        raise ValueError(
            f"{where}: the model given is already swapped; pass a freshly built, unswapped {type(model).__name__}"
        )
    for entry in swaps:
        saved_class = entry.get("class")  # compared by name: a class saved from __main__ loads elsewhere
        if saved_class is not None and saved_class.rpartition(".")[2] != type(model).__name__:
            raise ValueError(
                f"{where}: it was saved from a {saved_class}, but the model given is a "
                f"{class_name(model)}; pass a freshly built {saved_class.rpartition('.')[2]} "
                "with the same constructor arguments"
            )
        swap_upsamplers(model, entry["variant"], _inputs_for(model, entry["inputs"]), **replay_policy(entry))
        swapped = [[d.path, d.in_channels] for d in swap_report(model).swapped]
        if "sites" in entry and swapped != entry["sites"]:
            raise ValueError(
                f"{where}: re-applying its {entry['variant']} swap swapped {swapped} (path, channels), but it "
                f"records {entry['sites']}: the model given differs from the one that was swapped; build it with "
                "the constructor arguments it was saved with"
            )


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], where: str, *, rebuilt: bool) -> None:
    """Load strictly; a model rebuilt here first takes the dtype of the saved weights."""
    dtypes = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    if rebuilt and len(dtypes) == 1:
        model.to(dtypes.pop())
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{where}: its weights do not fit the model rebuilt from its recipe (a "
            f"{type(model).__name__} with the recorded swaps re-applied; it must be built with the "
            f"constructor arguments it was saved with): {exc}"
        ) from exc


def _checked_payload(payload: Any, file: str) -> tuple[str | None, list[dict[str, Any]], dict[str, torch.Tensor]]:
    """The model spec, swap entries and state dict of a swapped-model file, checked before anything runs."""
    if not isinstance(payload, dict) or payload.get("format") not in _READABLE:
        raise ValueError(
            f"{file}: not a dysample_swap swapped-model file (expected format {FORMAT!r}); "
            "write one with `dysample-swap swap MODEL --out FILE` or save_swapped()"
        )
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
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise RecordError(
            f"{file}: its state_dict is not a dict of named tensors; re-save the model with save_swapped()"
        )
    return spec, swaps, state_dict


def load_swapped(
    file: str | os.PathLike[str], model: nn.Module | None = None, *, trust_spec: bool = False
) -> nn.Module:
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
            malformed (:class:`~dysample_swap.surgery.record.RecordError`); it records no spec
            and no ``model`` is given; its spec is not trusted
            (:class:`~dysample_swap.surgery.model_spec.UntrustedSpecError`); ``model`` is of another class
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
            raise ValueError(
                f"{file} records no model spec, so it cannot build the model itself; pass a "
                f"freshly built {saved} (same constructor arguments): load_swapped(file, model=...)"
            )
        model = build_model(spec, trust_spec=trust_spec)
    replay(model, swaps, str(file))
    load_weights(model, state_dict, str(file), rebuilt=rebuilt)
    return model
