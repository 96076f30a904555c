"""Training checkpoints: atomic writes, safe loads, and errors that say what is wrong.

A checkpoint is a plain dict of tensors and Python numbers/strings, so it loads with
``torch.load(weights_only=True)``: model, optimiser, scheduler and GradScaler state, the step and
data position, the RNG states (Python, NumPy, torch CPU and CUDA) and a ``signature`` describing
the model it belongs to (task, model spec, swap settings, class count). Loading checks the
signature first, so a checkpoint from another recipe fails with a message naming both.

Example:
    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "last.pt")
    >>> _ = save_checkpoint(path, {"step": 3, "signature": {"model": "m"}})
    >>> load_checkpoint(path, {"model": "m"})["step"]
    3
"""

from __future__ import annotations

import errno
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from dysample_swap.surgery.persist import write_atomically

#: Bumped when the checkpoint layout changes.
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, truncated, or from another model/recipe.

    Example:
        >>> str(CheckpointError("x.pt: truncated"))
        'x.pt: truncated'
    """


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (a temporary file, then ``os.replace``).

    An interruption or a failed write never leaves a half-written ``path`` behind: a write that
    fails (disk full, no permission) removes its temporary file, keeps ``path`` as it was and
    raises :class:`CheckpointError` saying what failed.

    Example:
        >>> import tempfile, os
        >>> save_checkpoint(os.path.join(tempfile.mkdtemp(), "a.pt"), {"step": 1}).name
        'a.pt'
        >>> not_a_dir = tempfile.mkstemp()[1]
        >>> save_checkpoint(os.path.join(not_a_dir, "a.pt"), {"step": 1})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.checkpoint.CheckpointError: ...a.pt: cannot write the checkpoint: File exists (the partial file was removed; ...
    """
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, **state}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda handle: torch.save(payload, handle))
    except OSError as err:
        raise CheckpointError(_write_failure(path, err)) from err
    return path


def _write_failure(path: Path, err: OSError) -> str:
    """One line: which write failed, why (``disk full`` for ENOSPC), what was kept, what to do.

    Example:
        >>> _write_failure(Path("run/last.pt"), OSError(errno.ENOSPC, "No space left on device"))
        'run/last.pt: disk full while writing the checkpoint (the partial file was removed; run/last.pt was not written); free disk space, then run again'
    """
    kept = "the previous checkpoint is kept" if path.is_file() else f"{path} was not written"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        what, fix = "disk full while writing the checkpoint", "free disk space, then"
    else:
        what = f"cannot write the checkpoint: {err.strerror or err}"
        fix = "check that the run directory can be written, then"
    resume = " continue with --resume" if path.is_file() else " run again"
    return f"{path}: {what} (the partial file was removed; {kept}); {fix}{resume}"


def load_checkpoint(path: str | Path, signature: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it belongs to ``signature``.

    Raises :class:`CheckpointError` for a missing, truncated or corrupt file, a file that is not a
    dysample-swap checkpoint, or one written for a different model (signature mismatch).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "bad.pt")
        >>> _ = open(p, "wb").write(b"not a checkpoint")
        >>> load_checkpoint(p)
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.checkpoint.CheckpointError: ...bad.pt: cannot read checkpoint ...
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint file not found; pass the path of a checkpoint "
            "written by `dysample-swap finetune` (RUN_DIR/checkpoints/last.pt)"
        )
    cut_off = (
        "it was probably cut off while being written (a crash, a full disk): delete it and "
        "train again, or resume from a copy of an earlier checkpoint"
    )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: cannot read checkpoint (the file is empty, 0 bytes); {cut_off}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its index comes last
        raise CheckpointError(
            f"{path}: cannot read checkpoint (truncated or corrupt: not a complete torch.save archive); {cut_off}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: cannot read checkpoint (it holds Python objects that weights_only loading "
            f"refuses, so it was not written by dysample-swap: {_first_line(err)})"
        ) from err
    except Exception as err:  # torch.load fails on damaged archives in many ways
        raise CheckpointError(
            f"{path}: cannot read checkpoint (truncated or corrupt: {_first_line(err)}); {cut_off}"
        ) from err
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(
            f"{path}: not a dysample-swap training checkpoint (no format_version "
            "key); a bare state dict cannot be resumed or evaluated here"
        )
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} but this "
            f"version of dysample-swap reads format {FORMAT_VERSION}"
        )
    if signature is not None:
        check_signature(path, state.get("signature", {}), signature)
    return state


def _first_line(err: BaseException) -> str:
    """The first line of ``err``'s message, or its type name when it has none.

    Example:
        >>> _first_line(EOFError()), _first_line(ValueError("bad\\nmore"))
        ('EOFError', 'bad')
    """
    lines = str(err).splitlines()
    return lines[0] if lines and lines[0].strip() else type(err).__name__


def check_signature(path: str | Path, found: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` listing every field where ``found`` differs from ``expected``.

    Example:
        >>> check_signature("a.pt", {"model": "smp:Unet"}, {"model": "smp:FPN"})
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.checkpoint.CheckpointError: a.pt: checkpoint does not match this recipe: model is 'smp:Unet' in the checkpoint but 'smp:FPN' here; use the recipe (and --set overrides) the checkpoint was trained with
    """
    diffs = [
        f"{key} is {found.get(key)!r} in the checkpoint but {value!r} here"
        for key, value in expected.items()
        if found.get(key) != value
    ]
    if diffs:
        raise CheckpointError(
            f"{path}: checkpoint does not match this recipe: {'; '.join(diffs)}; "
            "use the recipe (and --set overrides) the checkpoint was trained with"
        )


def load_model_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(strict=True)`` with a readable error on missing/unexpected keys.

    Example:
        >>> m = torch.nn.Linear(2, 2)
        >>> load_model_state(m, {"weight": torch.zeros(2, 2)}, "x.pt")
        Traceback (most recent call last):
        ...
        dysample_swap.finetune.checkpoint.CheckpointError: x.pt: model weights do not fit this model: missing keys ['bias']; the checkpoint was trained with a different model or swap setting
    """
    result = model.state_dict()
    problems = []
    missing = [k for k in result if k not in state_dict]
    unexpected = [k for k in state_dict if k not in result]
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in result.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shape mismatch {shapes[:5]}")
    if problems:
        raise CheckpointError(
            f"{path}: model weights do not fit this model: {'; '.join(problems)}; "
            "the checkpoint was trained with a different model or swap setting"
        )
    model.load_state_dict(state_dict, strict=True)


def rng_state() -> dict[str, Any]:
    """Every RNG state a training step may draw from, as tensors (``weights_only``-loadable).

    Example:
        >>> sorted(rng_state())
        ['cuda', 'numpy', 'python', 'torch']
    """
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    return {
        "python": list(random.getstate()[1]) + [random.getstate()[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured.

    Example:
        >>> s = rng_state(); a = torch.rand(1); set_rng_state(s); bool(torch.rand(1) == a)
        True
    """
    py = state["python"]
    random.setstate((3, tuple(py[:-1]), py[-1]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
