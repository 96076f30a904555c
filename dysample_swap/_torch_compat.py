"""Every private torch API the surgery touches, looked up in one place.

``import dysample_swap`` never fails on a torch that lacks one of them: each is looked up
lazily, and :func:`require` (called at the start of every swap) raises one clear error that
names what is missing and the torch version, instead of an ``AttributeError`` deep inside a
rewrite.

========================================  ==================================================
what                                      used for
========================================  ==================================================
``torch.utils._pytree``                   flattening nested inputs/outputs; pickling the
                                          pytree signature of a generated forward
``torch.fx._symbolic_trace``              ``is_fx_symbolic_tracing`` (DySample skips its
                                          shape checks while fx traces it)
``nn.Module._call_impl.__code__``         attributing a call to the module being run
                                          (frame walk in discovery and the eager fallback)
``fx.Graph._codegen.pytree_info``         the pytree codegen of a graph traced with nested
                                          concrete arguments
========================================  ==================================================

Example:
    >>> from dysample_swap import _torch_compat
    >>> _torch_compat.require()  # passes on a supported torch
    >>> _torch_compat.pytree().tree_leaves([1, (2, 3)])
    [1, 2, 3]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import CodeType, ModuleType
from typing import Any

import torch
import torch.nn as nn

_fx_tracing: Callable[[], bool] | None
try:  # looked up once, at import, without failing: require() reports what is missing at swap time
    from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _fx_tracing
except ImportError:  # pragma: no cover - torch versions without it
    _fx_tracing = None


def pytree() -> ModuleType:
    """``torch.utils._pytree``.

    Example:
        >>> pytree().tree_flatten({"a": 1})[0]
        [1]
    """
    return importlib.import_module("torch.utils._pytree")


def is_fx_symbolic_tracing() -> bool:
    """True while ``torch.fx`` symbolically traces (``torch.fx._symbolic_trace.is_fx_symbolic_tracing``).

    Example:
        >>> is_fx_symbolic_tracing()
        False
    """
    return _fx_tracing is not None and bool(_fx_tracing())


def call_impl_code() -> CodeType:
    """The code object of ``nn.Module._call_impl``: frames running it belong to a module call.

    Example:
        >>> call_impl_code().co_name
        '_call_impl'
    """
    return nn.Module._call_impl.__code__


def pytree_info(graph: Any) -> Any:
    """The ``_PyTreeInfo`` of a graph traced with nested concrete arguments, else ``None``.

    Example:
        >>> import torch.fx as fx
        >>> pytree_info(fx.symbolic_trace(nn.ReLU()).graph) is None
        True
    """
    return getattr(getattr(graph, "_codegen", None), "pytree_info", None)


def _missing() -> list[str]:
    missing = []
    try:
        tree = pytree()
        for name in ("tree_flatten", "tree_leaves", "tree_map", "treespec_dumps", "treespec_loads"):
            if not hasattr(tree, name):
                missing.append(f"torch.utils._pytree.{name}")
    except ImportError:
        missing.append("torch.utils._pytree")
    try:
        if not hasattr(importlib.import_module("torch.fx._symbolic_trace"), "is_fx_symbolic_tracing"):
            missing.append("torch.fx._symbolic_trace.is_fx_symbolic_tracing")
    except ImportError:
        missing.append("torch.fx._symbolic_trace")
    call_impl = getattr(nn.Module, "_call_impl", None)
    if getattr(call_impl, "__code__", None) is None:
        missing.append("nn.Module._call_impl (a Python function)")
    graph = torch.fx.Graph()
    if not hasattr(graph, "_codegen"):
        missing.append("torch.fx.Graph._codegen")
    return missing


def require() -> None:
    """Raise a ``RuntimeError`` naming every private torch API the surgery needs that is missing.

    Example:
        >>> require()
    """
    missing = _missing()
    if missing:
        raise RuntimeError(
            f"dysample_swap's surgery needs torch internals that torch {torch.__version__} does not "
            f"have: {', '.join(missing)}. Install a supported torch (2.4 to 2.14 are tested) or "
            "build DySample modules by hand with dysample_swap.DySample."
        )
