"""Install new modules into a model: rewritten forwards, routed calls and in-place layers, and undo it.

A rewritten owner gets its own subclass of its class whose ``forward`` is the rewritten one
(:func:`install`): ``isinstance``, attributes, state-dict keys and ``copy.deepcopy`` keep
working, and ``torch.fx.symbolic_trace`` of the patched model sees the new calls. As with fx's own
``GraphModule``, the generated code travels in ``__reduce_ex__`` (a :class:`Rewrite`: source text
plus the modules and objects it refers to, by name) and the subclass is rebuilt on load, so
``pickle``, ``torch.save`` of the whole model, ``copy.copy`` and a fresh interpreter all work.
:func:`restore` undoes it.

Example:
    >>> import torch, torch.nn as nn, torch.nn.functional as F
    >>> from dysample_swap import DySample
    >>> class Up(nn.Module):
    ...     def forward(self, x):
    ...         return F.interpolate(x, scale_factor=2.0)
    >>> up = Up()
    >>> apply_eager(up, [Replacement(0, "dysample_0", DySample(4, anchor="nearest"))])
    >>> is_rewritten(up), isinstance(up, Up), up(torch.rand(1, 4, 3, 3)).shape
    (True, True, torch.Size([1, 4, 6, 6]))
    >>> restore(up)
    >>> type(up) is Up
    True
"""

from __future__ import annotations

import importlib
import itertools
import linecache
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch.nn as nn

from dysample_swap import _torch_compat
from dysample_swap.surgery.eager import eager_forward

pytree = _torch_compat.pytree()

_SOURCE_IDS = itertools.count()


@dataclass
class Replacement:
    """One DySample that replaces one call (graph node, or k-th routed eager call) of an owner.

    Example:
        >>> from dysample_swap.upsamplers.dysample.module import DySample
        >>> Replacement(0, "dysample_0", DySample(8)).name
        'dysample_0'
    """

    position: int
    name: str
    module: nn.Module
    size_is_int: bool = False
    guided: bool = False  # called as module(x, guide): the guide is the tensor the result is fused with
    guide_arg: str | None = None  # the owner's argument that is the guide, when the fusion is not the first use


def _exec_forward(source: str, namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    filename = f"<dysample_swap generated forward of {name} #{next(_SOURCE_IDS)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    return namespace["forward"]


def portable_globals(namespace: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """The generated code's globals, modules by name (objects pickle by reference themselves)."""
    return {
        name: ("module", value.__name__) if isinstance(value, ModuleType) else ("object", value)
        for name, value in namespace.items()
        if name != "__builtins__"
    }


def _resolve_globals(portable: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    return {
        name: importlib.import_module(value) if kind == "module" else value for name, (kind, value) in portable.items()
    }


@dataclass
class Rewrite:
    """How an owner's forward was replaced; enough to rebuild it in a fresh interpreter.

    ``kind`` is ``"fx"`` (``source`` and ``globals`` of the generated forward, the pytree
    signature as ``treespec_dumps`` strings) or ``"eager fallback"`` (``routes``: the k-th direct
    interpolate call -> ``(DySample child name, size passed as one int)``, and the ``inner``
    rewrite whose forward it wraps when the owner was already rewritten by an earlier swap).

    Example:
        >>> Rewrite("eager fallback", routes={0: ("dysample_0", False)}).kind
        'eager fallback'
    """

    kind: str
    source: str = ""
    globals: dict[str, tuple[str, Any]] = field(default_factory=dict)
    specs: dict[str, str] = field(default_factory=dict)
    routes: dict[int, tuple[str, bool]] = field(default_factory=dict)
    inner: Rewrite | None = None

    def forward(self, base: type[nn.Module]) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The forward function this rewrite installs on a subclass of ``base``, and extra class attributes.

        Example:
            >>> fn, extra = Rewrite("eager fallback", routes={}).forward(nn.Identity)
            >>> fn.__name__, extra
            ('forward', {})
        """
        if self.kind == "eager fallback":
            original, extra = self.inner.forward(base) if self.inner is not None else (base.forward, {})
            return eager_forward(original, self.routes), extra
        forward = _exec_forward(self.source, _resolve_globals(self.globals), base.__name__)
        return forward, {name: pytree.treespec_loads(spec) for name, spec in self.specs.items()}


def _rebuild(base: type[nn.Module], rewrite: Rewrite) -> nn.Module:
    """Unpickling: a bare instance of ``base`` with the rewrite installed (its state is set after)."""
    module = base.__new__(base)
    install(module, rewrite)
    return module


def _reduce_ex(self: nn.Module, protocol: int) -> Any:
    cls: Any = type(self)  # a rewritten class: install() gave it these attributes
    return _rebuild, (cls._dysample_swap_base, cls._dysample_swap_rewrite), self.__getstate__()


def install(owner: nn.Module, rewrite: Rewrite) -> None:
    """Give ``owner`` its own subclass of its class whose ``forward`` is the rewritten one.

    The subclass keeps the class name, module and docstring (``isinstance`` holds), pickles
    through :class:`Rewrite`, and remembers its base for :func:`restore`.
    """
    cls = type(owner)
    if is_rewritten(owner):  # swapped before: build on the original class (fx code already holds the old rewrite)
        if rewrite.kind == "eager fallback":
            rewrite.inner = vars(cls)["_dysample_swap_rewrite"]
        cls = vars(cls)["_dysample_swap_base"]
    forward, extra = rewrite.forward(cls)
    namespace = {
        "forward": forward,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "__reduce_ex__": _reduce_ex,
        "_dysample_swap_base": cls,
        "_dysample_swap_rewrite": rewrite,
        **extra,
    }
    owner.__class__ = type(cls.__name__, (cls,), namespace)


def is_rewritten(module: nn.Module) -> bool:
    """True when ``module``'s forward was replaced by :func:`apply_fx` or :func:`apply_eager`.

    Example:
        >>> is_rewritten(nn.ReLU())
        False
    """
    return "_dysample_swap_base" in type(module).__dict__


def restore(owner: nn.Module) -> None:
    """Give a rewritten ``owner`` its original class (and so its original forward) back.

    Example:
        >>> import torch.nn.functional as F
        >>> class Up(nn.Module):
        ...     def forward(self, x):
        ...         return F.interpolate(x, scale_factor=2.0)
        >>> up = Up()
        >>> apply_eager(up, [])
        >>> restore(up)
        >>> type(up) is Up
        True
    """
    if not is_rewritten(owner):
        raise ValueError(f"{type(owner).__name__} was not rewritten by dysample_swap")
    owner.__class__ = type(owner).__dict__["_dysample_swap_base"]


def apply_eager(owner: nn.Module, replacements: list[Replacement]) -> None:
    """Install the eager fallback: the k-th direct interpolate call goes to the k-th replacement.

    Example:
        >>> import torch, torch.nn as nn, torch.nn.functional as F
        >>> from dysample_swap.upsamplers.dysample.module import DySample
        >>> class Up(nn.Module):
        ...     def forward(self, x):
        ...         return F.interpolate(x, scale_factor=2.0)
        >>> up = Up()
        >>> apply_eager(up, [Replacement(0, "dysample_0", DySample(4, anchor="nearest"))])
        >>> isinstance(up, Up), up(torch.rand(1, 4, 3, 3)).shape
        (True, torch.Size([1, 4, 6, 6]))
    """
    routes = {}
    for rep in replacements:
        owner.add_module(rep.name, rep.module)
        routes[rep.position] = (rep.name, rep.size_is_int)
    install(owner, Rewrite("eager fallback", routes=routes))
