"""The eager fallback's router: where torch.fx cannot trace an owner, its calls are routed at run time.

The installed forward (:func:`eager_forward`) runs the owner's original forward under a
:class:`torch.overrides.TorchFunctionMode` that sends the k-th interpolate call made *directly by
the owner's own code* to the k-th new module. Limits: torch.fx symbolic tracing cannot see it
(``torch.export`` can: the mode is captured), it relies on every forward making its direct calls
in the same order as on the example input, and calls made from helper functions are not routed.

Example:
    >>> import inspect, torch.nn as nn, torch.nn.functional as F
    >>> class Up(nn.Module):
    ...     def forward(self, x, scale=2.0):
    ...         return F.interpolate(x, scale_factor=scale)
    >>> forward = eager_forward(Up.forward, {0: ("dysample_0", False)})
    >>> str(inspect.signature(forward))  # what the installed forward shows: the original's signature
    '(self, x, scale=2.0)'
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dysample_swap.surgery.sites import calling_module, first_user_frame

_INTERPOLATE_SIG = inspect.signature(F.interpolate)


class _EagerRouter(TorchFunctionMode):
    """Routes the k-th interpolate call made directly by ``owner``'s code to a DySample."""

    def __init__(self, owner: nn.Module, routes: dict[int, tuple[str, bool]]) -> None:
        super().__init__()
        self.owner = owner
        self.routes = routes
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.interpolate:
            return func(*args, **kwargs)
        here = sys._getframe()
        frame, _ = first_user_frame(here)
        if frame is None or frame.f_locals.get("self") is not self.owner or calling_module(here) is not self.owner:
            return func(*args, **kwargs)
        position = self.count
        self.count += 1
        if position not in self.routes:
            return func(*args, **kwargs)
        name, size_is_int = self.routes[position]
        a = _INTERPOLATE_SIG.bind(*args, **kwargs).arguments
        size = a.get("size")
        if size is not None:
            return getattr(self.owner, name)(a["input"], size=(size, size) if size_is_int else size)
        return getattr(self.owner, name)(a["input"], scale_factor=a.get("scale_factor"))


def eager_forward(original: Callable[..., Any], routes: dict[int, tuple[str, bool]]) -> Callable[..., Any]:
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with _EagerRouter(self, routes):
            return original(self, *args, **kwargs)

    forward.__doc__ = original.__doc__
    forward.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    return forward
