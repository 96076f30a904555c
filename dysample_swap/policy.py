"""Swap/skip decisions for discovered upsampling sites, each with a reason in words.

The default rules follow the DySample paper and a survey of real models: swap feature
upsampling in decoders and FPNs; leave alone, with a reason, everything DySample cannot
reproduce or should not replace (see :func:`decide`).

Example:
    >>> from dysample_swap.policy import SwapPolicy
    >>> SwapPolicy.from_kwargs(exclude="decoder.p4*").swap_final
    False
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any, Union

from dysample_swap.sites import UpsampleSite

Selector = Union[str, Callable[[UpsampleSite], bool], Iterable[Union[str, Callable[[UpsampleSite], bool]]]]
"""A path (``"decoder.p4"`` also selects everything under it), an ``fnmatch`` glob
(``"decoder.seg_blocks.*"``), a predicate over :class:`UpsampleSite`, or a list of those."""

INITS = ("match", "paper")


@dataclass(frozen=True)
class SwapPolicy:
    """Options of ``find_upsamplers`` / ``swap_upsamplers`` (all keyword arguments).

    Attributes:
        include: only sites selected here may be swapped (default: all).  A path selects the
            site with that path and every site below it; globs and predicates work too.
        exclude: sites selected here are never swapped.
        swap_final: also swap upsampling whose result is an output of the model (final
            logits).  Default ``False``, as in the paper.
        groups_fallback: when the variant's ``groups`` do not divide a site's channels, use the
            largest valid group count instead of skipping the site.
        init: ``"match"`` (default): each DySample anchors on exactly the interpolation it
            replaces (nearest, bilinear, or bilinear with ``align_corners=True``) with zero
            initial offsets, so the swapped model computes what the original did until trained.
            ``"paper"``: the paper's bilinear anchor with ``offset.weight ~ N(0, 0.001)``.
        strict: raise instead of warning when nothing is eligible, or when a site selected by
            ``include`` cannot be swapped.
        verbose: print the site table after swapping (it is logged at INFO level either way).

    Example:
        >>> p = SwapPolicy.from_kwargs(include=["decoder"], swap_final=True)
        >>> p.include, p.swap_final
        (['decoder'], True)
    """

    include: Selector | None = None
    exclude: Selector | None = None
    swap_final: bool = False
    groups_fallback: bool = False
    init: str = "match"
    strict: bool = False
    verbose: bool = True

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SwapPolicy:
        """Build a policy from keyword arguments, rejecting unknown names and bad values.

        Example:
            >>> SwapPolicy.from_kwargs(init="paper").init
            'paper'
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown policy option(s) {unknown}; valid options: {sorted(known)}")
        policy = cls(**kwargs)
        if policy.init not in INITS:
            raise ValueError(f"init={policy.init!r} is not one of {INITS}")
        return policy


def selects(selector: Selector | None, site: UpsampleSite) -> bool:
    """True when ``selector`` (path, glob, predicate or list of them) selects ``site``.

    Example:
        >>> s = UpsampleSite("decoder.p4", "function", "nearest", None, (2.0, 2.0), None, 8,
        ...                  (1, 8, 4, 4), (1, 8, 8, 8), "f.py:1 in forward")
        >>> selects("decoder", s), selects("*.p4", s), selects(lambda x: x.in_channels > 8, s)
        (True, True, False)
    """
    if selector is None:
        return False
    if isinstance(selector, str):
        return (fnmatch.fnmatchcase(site.path, selector)
                or site.path.startswith(selector + ".") or site.path == selector)
    if callable(selector):
        return bool(selector(site))
    return any(selects(item, site) for item in selector)


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape[2:])


def decide(site: UpsampleSite, policy: SwapPolicy,
           groups_error: Callable[[UpsampleSite], str | None]) -> tuple[str, str]:
    """Return ``(action, reason)`` for one site; rules are checked in this order.

    1. not a 4-D (N, C, H, W) input;  1b. a helper function (not a module's forward) that one
    line calls repeatedly to arbitrary sizes, flag ``"per_item"`` (mask pasting, keypoint
    decoding);  2. mode other than nearest/bilinear;  3. ``antialias``;
    4. resize of the network input before any learned layer (e.g. torchvision's
    ``GeneralizedRCNNTransform``);  5. 1x1 broadcast or adaptive-pooled context (PSP, ASPP,
    PAN);  6. downsampling in any dim;  7. same-size no-op;
    8. ``recompute_scale_factor=True`` with a non-integer factor;  9. final logits (unless
    ``swap_final``);  10. ``exclude`` / ``include``;  11. channels the variant's groups cannot
    divide (``groups_error`` returns the message, or ``None`` when fine).

    Example:
        >>> s = UpsampleSite("up", "module", "bicubic", False, (2.0, 2.0), None, 8,
        ...                  (1, 8, 4, 4), (1, 8, 8, 8), "f.py:1 in forward")
        >>> decide(s, SwapPolicy(), lambda site: None)
        ('skip', 'bicubic not supported (DySample reproduces nearest and bilinear)')
    """
    skip = "skip"
    if len(site.input_shape) != 4:
        return skip, f"{len(site.input_shape)}-D input (DySample needs N, C, H, W)"
    if "per_item" in site.flags:
        return skip, (f"post-processing helper {site.helper}() called per item to arbitrary sizes "
                      "(e.g. per-detection mask pasting, keypoint decoding)")
    if site.mode not in ("nearest", "bilinear"):
        return skip, f"{site.mode} not supported (DySample reproduces nearest and bilinear)"
    if "antialias" in site.flags:
        return skip, "antialias=True is not reproduced by DySample"
    if "input" in site.flags:
        return skip, (f"resizes the network input ({_hw(site.input_shape)} -> "
                      f"{_hw(site.output_shape)}) before any learned layer")
    if site.input_shape[2:] == (1, 1) and site.output_shape[2:] != (1, 1):
        return skip, f"1x1 -> {_hw(site.output_shape)} broadcast of pooled context"
    if "pooled" in site.flags:
        return skip, (f"adaptive-pooled context {_hw(site.input_shape)} -> "
                      f"{_hw(site.output_shape)} (pyramid pooling)")
    ratio = site.ratio
    if any(r < 1 for r in ratio):
        return skip, f"downsamples {_hw(site.input_shape)}->{_hw(site.output_shape)}"
    if all(r == 1 for r in ratio):
        return skip, f"same-size no-op ({_hw(site.input_shape)} -> {_hw(site.output_shape)})"
    if "recompute" in site.flags and site.scale is not None and any(s != int(s) for s in site.scale):
        return skip, "recompute_scale_factor=True with a non-integer scale_factor"
    if "final" in site.flags and not policy.swap_final:
        return skip, "final logits of the network (pass swap_final=True to swap)"
    if selects(policy.exclude, site):
        return skip, "excluded by exclude="
    if policy.include is not None and not selects(policy.include, site):
        return skip, "not selected by include="
    message = groups_error(site)
    if message:
        return skip, message
    return "swap", f"x{site.dysample_scale} DySample, anchor {anchor_for(site, policy)}"


def anchor_for(site: UpsampleSite, policy: SwapPolicy) -> str:
    """The DySample anchor for a site: the replaced interpolation, or ``"bilinear"`` for ``init="paper"``.

    Example:
        >>> s = UpsampleSite("up", "module", "bilinear", True, (2.0, 2.0), None, 8,
        ...                  (1, 8, 4, 4), (1, 8, 8, 8), "f.py:1 in forward")
        >>> anchor_for(s, SwapPolicy()), anchor_for(s, SwapPolicy(init="paper"))
        ('bilinear_align_corners', 'bilinear')
    """
    if policy.init == "paper" or site.mode == "bilinear" and not site.align_corners:
        return "bilinear"
    return "nearest" if site.mode == "nearest" else "bilinear_align_corners"


def offset_init_std(policy: SwapPolicy) -> float:
    """Initial std of ``offset.weight``: 0 for ``init="match"``, the paper's 0.001 otherwise.

    Example:
        >>> offset_init_std(SwapPolicy()), offset_init_std(SwapPolicy(init="paper"))
        (0.0, 0.001)
    """
    return 0.0 if policy.init == "match" else 0.001
