"""Upsamplers by name: ``create_upsampler("carafe", channels, scale)``, and which ones change the function at swap time.

=================  ==================================================  ================================
name               module                                              exact at swap (``init="match"``)
=================  ==================================================  ================================
``dysample``       :class:`~dysample_swap.DySample` LP, static scope   every anchor, any size
``dysample+``      DySample LP, dynamic scope                          every anchor, any size
``dysample-s``     DySample PL, static scope                           every anchor, any size
``dysample-s+``    DySample PL, dynamic scope                          every anchor, any size
``carafe``         :class:`~dysample_swap.CARAFEPack` (mmcv defaults)  never (softmax kernels, zero pad)
``deconv``         :class:`~dysample_swap.DeconvUpsampler`             bilinear at ``scale`` x input; nearest at any size
``pixelshuffle``   :class:`~dysample_swap.PixelShuffleUpsampler`       bilinear at ``scale`` x input; nearest at any size
``bilinear``       :class:`~dysample_swap.InterpolateUpsampler`        always: the replaced call itself
=================  ==================================================  ================================

``anchor`` is the interpolation being replaced (``"bilinear"``, ``"bilinear_align_corners"``,
``"nearest"``). ``init="match"`` starts each upsampler as close to it as it can (DySample: zero
offsets, ``offset_init_std=0.0``); ``init="paper"`` is the paper's initialisation (DySample: the
bilinear anchor and ``N(0, 0.001)`` offsets; deconv and pixel shuffle: the paper's layers with
PyTorch's default init; CARAFE has only mmcv's). "Exact" means equal to the replaced
``F.interpolate`` call up to float rounding (float64: ``<= 1e-10``). ``bilinear_align_corners`` is
not a fixed stencil at an integer scale, so only DySample and the no-op arm reproduce it.

**Chains.** With ``chain=True`` a power-of-two ``scale`` above 2 becomes an
:class:`~dysample_swap.UpsamplerChain` of ``log2(scale)`` x2 stages, as the paper does for
SegFormer-B1 (x8, x4, x2 -> 3 + 2 + 1 stages); ``chain=False`` builds one module at that scale.
Other scales (3, 6, ...) are always one module; the no-op arm is never chained (it is the original
call). At swap time a chain of nearest x2 stages equals one nearest interpolation; a chain of
bilinear x2 stages does not equal one bilinear x4 / x8, so a chained bilinear site changes the
function even for DySample at zero offsets.

Example:
    >>> import torch
    >>> up = create_upsampler("carafe", 64, 2)
    >>> up(torch.randn(1, 64, 13, 13), size=(25, 25)).shape
    torch.Size([1, 64, 25, 25])
    >>> type(create_upsampler("dysample", 64, 8)).__name__, len(create_upsampler("dysample", 64, 8))
    ('UpsamplerChain', 3)
    >>> exact_at_swap("carafe", "bilinear"), exact_at_swap("deconv", "nearest"), exact_at_swap("dysample", "bilinear", scale=8)
    (False, True, False)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from dysample_swap.upsamplers.carafe import CARAFEPack
from dysample_swap.upsamplers.chain import UpsamplerChain
from dysample_swap.upsamplers.deconv import DeconvUpsampler
from dysample_swap.upsamplers.dysample.module import DySample
from dysample_swap.upsamplers.dysample.sampling import ANCHORS, check_anchor
from dysample_swap.upsamplers.dysample.variants import VARIANTS
from dysample_swap.upsamplers.interpolate import InterpolateUpsampler
from dysample_swap.upsamplers.options import check_defaults, check_init, check_scale
from dysample_swap.upsamplers.pixelshuffle import PixelShuffleUpsampler
from dysample_swap.upsamplers.sizing import Factor, Size

Builder = Callable[..., nn.Module]
"""``build(channels, scale, *, anchor, init, groups_fallback, size, scale_factor) -> module``."""


Counter = Callable[[int, int, str], int]
"""``count(channels, scale, init) -> trainable parameters`` of one module (one stage) of a rival."""


@dataclass(frozen=True)
class _Entry:
    build: Builder
    count: Counter | None  # None: a DySample variant, counted from its groups (variants.parameter_count)
    learned: bool  # False: the no-op arm, exact whatever the init
    chainable: bool
    exact_native: frozenset[str]  # anchors reproduced at scale x input, one stage, init="match"
    exact_resized: frozenset[str]  # anchors reproduced at every other output size too


def _dysample_builder(variant: str) -> Builder:
    def build(
        channels: int,
        scale: int,
        *,
        anchor: str,
        init: str,
        groups_fallback: bool,
        size: Size | None,
        scale_factor: Factor | None,
        positions: str,
    ) -> nn.Module:
        match = init == "match"
        return DySample.from_variant(
            variant,
            channels,
            scale,
            anchor=anchor if match else "bilinear",
            offset_init_std=0.0 if match else 0.001,
            groups_fallback=groups_fallback,
            size=size,
            scale_factor=scale_factor,
            positions=positions,
        )

    return build


def _carafe(channels: int, scale: int, *, size: Size | None, scale_factor: Factor | None, **_: object) -> nn.Module:
    return CARAFEPack(channels, scale, size=size, output_scale_factor=scale_factor)


def _deconv(
    channels: int, scale: int, *, anchor: str, init: str, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return DeconvUpsampler(channels, scale, anchor=anchor, init=init, size=size, scale_factor=scale_factor)


def _pixelshuffle(
    channels: int, scale: int, *, anchor: str, init: str, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return PixelShuffleUpsampler(channels, scale, anchor=anchor, init=init, size=size, scale_factor=scale_factor)


def _interpolate(
    channels: int, scale: int, *, anchor: str, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return InterpolateUpsampler(scale, anchor=anchor, size=size, scale_factor=scale_factor)


def _carafe_count(c: int, s: int, init: str) -> int:
    compressed, kernels = 64, 5 * 5 * s * s  # CARAFEPack's defaults: 64 channels, 5x5 kernels, a 3x3 encoder
    return c * compressed + compressed + compressed * kernels * 9 + kernels


def _deconv_count(c: int, s: int, init: str) -> int:
    k = 2 * s - s % 2 if init == "match" else 2 * s - 1
    return c * c * k * k + c


def _pixelshuffle_count(c: int, s: int, init: str) -> int:
    return c * c * s * s * 9 + c * s * s


_EVERY = frozenset(ANCHORS)
_STENCIL = frozenset({"bilinear", "nearest"})
_NEAREST = frozenset({"nearest"})
_ENTRIES: dict[str, _Entry] = {
    **{v: _Entry(_dysample_builder(v), None, True, True, _EVERY, _EVERY) for v in VARIANTS},
    "carafe": _Entry(_carafe, _carafe_count, True, True, frozenset(), frozenset()),
    "deconv": _Entry(_deconv, _deconv_count, True, True, _STENCIL, _NEAREST),
    "pixelshuffle": _Entry(_pixelshuffle, _pixelshuffle_count, True, True, _STENCIL, _NEAREST),
    "bilinear": _Entry(_interpolate, lambda c, s, init: 0, False, False, _EVERY, _EVERY),
}

SWAP_POSITIONS: tuple[str, ...] = ("exact", "grid")
"""How a replacement DySample carries its sampling positions (``DySample(positions=...)``)."""

UPSAMPLERS: tuple[str, ...] = tuple(_ENTRIES)
"""The names :func:`create_upsampler` knows, DySample's four variants first."""


def _entry(name: str) -> _Entry:
    if not isinstance(name, str):
        raise TypeError(
            f"the upsampler name must be a string such as 'dysample+', not {name!r} "
            f"({type(name).__name__}); choose one of {', '.join(UPSAMPLERS)}"
        )
    key = name.strip().lower()
    if key not in _ENTRIES:
        close = difflib.get_close_matches(key, UPSAMPLERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown upsampler {name!r}; choose one of {', '.join(UPSAMPLERS)}.{hint}")
    return _ENTRIES[key]


def _stages(entry: _Entry, scale: int, chain: bool) -> int:
    if chain and entry.chainable and scale > 2 and scale & (scale - 1) == 0:
        return scale.bit_length() - 1
    return 1


def upsampler_name(name: str) -> str:
    """The registry's spelling of ``name`` (case and spaces ignored); ``ValueError`` for an unknown one.

    Example:
        >>> upsampler_name(" CARAFE ")
        'carafe'
    """
    _entry(name)
    return name.strip().lower()


def rival_parameters(name: str, channels: int, scale: int, *, init: str = "match", chain: bool = True) -> int:
    """Trainable parameters of ``create_upsampler(name, channels, scale, init=init, chain=chain)`` for a rival,
    counted without building it (DySample variants are counted from their groups:
    :func:`~dysample_swap.upsamplers.dysample.variants.parameter_count`).

    Example:
        >>> rival_parameters("carafe", 256, 2), rival_parameters("deconv", 8, 4), rival_parameters("bilinear", 8, 2)  # x4: 2 stages
        (74148, 2064, 0)
    """
    entry = _entry(name)
    if entry.count is None:
        raise ValueError(
            f"{name} is a DySample variant: count it with parameter_count(variant, channels, scale, groups)"
        )
    stages = _stages(entry, scale, chain)
    return stages * entry.count(channels, 2 if stages > 1 else scale, init)


def chain_stages(name: str, scale: int, chain: bool = True) -> int:
    """How many modules ``create_upsampler(name, C, scale, chain=chain)`` chains (1: a single module).

    Example:
        >>> chain_stages("dysample", 8), chain_stages("dysample", 8, chain=False), chain_stages("bilinear", 8)
        (3, 1, 1)
    """
    return _stages(_entry(name), scale, chain)


def create_upsampler(
    name: str,
    channels: int,
    scale: int,
    *,
    size: Size | None = None,
    scale_factor: Factor | None = None,
    anchor: str = "bilinear",
    init: str = "match",
    groups_fallback: bool = True,
    chain: bool = True,
    positions: str = "exact",
) -> nn.Module:
    """Build the upsampler ``name`` for ``channels`` channels and integer ``scale`` (see the module docstring).

    The module's ``forward(x, size=None, scale_factor=None)`` works as DySample's: explicit arguments
    win, else the ``size`` / ``scale_factor`` given here, else ``scale`` times the input.

    Args:
        name: one of :data:`UPSAMPLERS` (case and surrounding spaces ignored).
        channels: channels of the input (and output).
        scale: integer factor ``>= 2`` of the native output.
        size, scale_factor: the module's default output (at most one).
        anchor: the interpolation being replaced.
        init: ``"match"`` or ``"paper"``.
        groups_fallback: DySample only: use the largest valid group count for channel counts the
            variant's groups do not divide (:func:`dysample_swap.resolve_groups`).
        chain: build a power-of-two ``scale > 2`` as x2 stages.
        positions: DySample only: ``"exact"`` (default: zero offsets reproduce ``anchor``'s
            ``F.interpolate`` at every size, so a swap changes nothing before training) or ``"grid"``
            (the authors' ``grid_sample`` arithmetic; see :class:`dysample_swap.DySample`).

    Raises:
        ValueError: for an unknown name (the message lists the valid names and the closest one), an
            unknown anchor or init, a bad scale, or channels the upsampler cannot take.

    Example:
        >>> import torch
        >>> create_upsampler("pixelshuffle", 8, 2, size=(25, 25))(torch.randn(1, 8, 13, 13)).shape
        torch.Size([1, 8, 25, 25])
        >>> create_upsampler("dysample+", 256, 4)[0].offset.weight.abs().max().item()   # zero offsets
        0.0
        >>> create_upsampler("dysampel", 8, 2)
        Traceback (most recent call last):
        ...
        ValueError: unknown upsampler 'dysampel'; choose one of dysample, dysample+, dysample-s, dysample-s+, carafe, deconv, pixelshuffle, bilinear. Did you mean 'dysample'?
    """
    entry = _entry(name)
    check_anchor(anchor)
    check_init(init)
    check_scale(scale, f"upsampler {name!r}")
    check_defaults(size, scale_factor, "create_upsampler")
    if positions not in SWAP_POSITIONS:
        raise ValueError(f"positions={positions!r} is not one of {SWAP_POSITIONS}")
    options = {"anchor": anchor, "init": init, "groups_fallback": groups_fallback, "positions": positions}
    stages = _stages(entry, scale, chain)
    if stages == 1:
        return entry.build(channels, scale, size=size, scale_factor=scale_factor, **options)
    return UpsamplerChain(
        [entry.build(channels, 2, size=None, scale_factor=None, **options) for _ in range(stages)],
        size=size,
        scale_factor=scale_factor,
    )


def exact_at_swap(
    name: str,
    anchor: str = "bilinear",
    *,
    scale: int = 2,
    init: str = "match",
    chain: bool = True,
    native: bool = True,
) -> bool:
    """Whether ``create_upsampler(name, C, scale, anchor=anchor, init=init, chain=chain)`` starts as the replaced call.

    ``native``: the call's output is exactly ``scale`` times its input (``False``: any other size,
    e.g. an odd FPN lateral 13 -> 25). ``True`` means equal up to float rounding; ``False`` means the
    swap changes what the network computes before any training (CARAFE always does).

    Example:
        >>> exact_at_swap("pixelshuffle", "bilinear"), exact_at_swap("pixelshuffle", "bilinear", native=False)
        (True, False)
        >>> exact_at_swap("dysample", "nearest", scale=8), exact_at_swap("dysample", "bilinear", scale=8, chain=False)
        (True, True)
        >>> exact_at_swap("dysample", init="paper"), exact_at_swap("bilinear", init="paper")
        (False, True)
    """
    entry = _entry(name)
    check_anchor(anchor)
    check_init(init)
    if not entry.learned:
        return True
    if init == "paper":
        return False
    exact = entry.exact_native if native else entry.exact_resized
    if _stages(entry, scale, chain) > 1:
        return anchor == "nearest" and anchor in exact
    return anchor in exact
