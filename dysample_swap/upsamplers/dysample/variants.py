"""The four named members of the DySample family (paper Sec. 3.2) and their settings.

====================  =================================  ============  ==============
name                  offset style                       scope factor  default groups
====================  =================================  ============  ==============
``dysample``          LP (linear, then pixel shuffle)    static 0.25   4
``dysample+``         LP                                 dynamic       4
``dysample-s``        PL (pixel shuffle, then linear)    static 0.25   8
``dysample-s+``       PL                                 dynamic       8
====================  =================================  ============  ==============

Example:
    >>> variant_settings("dysample-s+")
    {'style': 'pl', 'dyscope': True, 'groups': 8}
"""

from __future__ import annotations

import difflib

_SETTINGS: dict[str, dict[str, object]] = {
    "dysample": {"style": "lp", "dyscope": False, "groups": 4},
    "dysample+": {"style": "lp", "dyscope": True, "groups": 4},
    "dysample-s": {"style": "pl", "dyscope": False, "groups": 8},
    "dysample-s+": {"style": "pl", "dyscope": True, "groups": 8},
}

VARIANTS: tuple[str, ...] = tuple(_SETTINGS)
"""The variant names, in the paper's order."""


def variant_settings(variant: str) -> dict[str, object]:
    """Return the constructor settings (``style``, ``dyscope``, ``groups``) of a named variant.

    Raises:
        ValueError: for an unknown name; the message lists the valid names and the closest one.

    Example:
        >>> variant_settings("dysample+")["dyscope"]
        True
    """
    key = variant.strip().lower()
    if key not in _SETTINGS:
        close = difflib.get_close_matches(key, VARIANTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown DySample variant {variant!r}; choose one of {', '.join(VARIANTS)}.{hint}")
    return dict(_SETTINGS[key])


def variant_name(style: str, dyscope: bool) -> str:
    """Name the variant that a (style, dyscope) pair builds.

    Example:
        >>> variant_name("pl", dyscope=False)
        'dysample-s'
    """
    return ("dysample-s" if style == "pl" else "dysample") + ("+" if dyscope else "")


def parameter_count(variant: str, in_channels: int, scale: int, groups: int) -> int:
    """Trainable parameters of a DySample variant, computed without building it.

    LP: a ``C -> 2*groups*scale**2`` 1x1 convolution with bias (plus the same without bias for
    the dynamic scope); PL: ``C/scale**2 -> 2*groups``.

    Example:
        >>> parameter_count("dysample", 256, 2, 4), parameter_count("dysample-s+", 256, 2, 8)
        (8224, 2064)
    """
    settings = variant_settings(variant)
    if settings["style"] == "pl":
        conv_in, conv_out = in_channels // (scale * scale), 2 * groups
    else:
        conv_in, conv_out = in_channels, 2 * groups * scale * scale
    weights = conv_in * conv_out
    return weights + conv_out + (weights if settings["dyscope"] else 0)
