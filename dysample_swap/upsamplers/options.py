"""Argument checks shared by the rival upsamplers: ``init``, the integer scale, default output sizes.

Example:
    >>> check_init("match"), check_scale(2, "deconv")
    ('match', 2)
"""

from __future__ import annotations

from dysample_swap.upsamplers.sizing import Factor, Size

INITS: tuple[str, ...] = ("match", "paper")
"""``"match"``: start as close to the replaced interpolation as the upsampler can (exactly where
:func:`dysample_swap.exact_at_swap` says so); ``"paper"``: the paper's layer and initialisation."""


def check_init(init: str) -> str:
    """Validate an ``init`` name and return it.

    Example:
        >>> check_init("paper")
        'paper'
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    return init


def check_scale(scale: int, who: str) -> int:
    """Validate an integer upsampling scale ``>= 2`` and return it.

    Example:
        >>> check_scale(4, "deconv")
        4
    """
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
        raise ValueError(f"{who} scale must be an integer >= 2, got {scale!r}")
    return scale


def check_defaults(size: Size | None, scale_factor: Factor | None, who: str) -> None:
    """A module's default output is a ``size`` or a ``scale_factor`` (or neither), never both.

    Example:
        >>> check_defaults((25, 25), None, "deconv")
    """
    if size is not None and scale_factor is not None:
        raise ValueError(f"{who} takes a default size or a default scale_factor, not both")
