"""Upsamplers by name: ``create_upsampler("carafe", channels, scale)``, and which ones change the function at swap time.

================  ============================================================  ==================================================
name              module                                                        exact at swap (``init="match"``)
================  ============================================================  ==================================================
``dysample``      :class:`~dysample_swap.DySample` LP, static scope             every anchor, any size
``dysample+``     DySample LP, dynamic scope                                    every anchor, any size
``dysample-s``    DySample PL, static scope                                     every anchor, any size
``dysample-s+``   DySample PL, dynamic scope                                    every anchor, any size
``carafe``        :class:`~dysample_swap.CARAFEPack` (mmcv defaults)            never (softmax kernels, zero pad)
``deconv``        :class:`~dysample_swap.DeconvUpsampler`                       bilinear at ``scale`` x input; nearest at any size
``pixelshuffle``  :class:`~dysample_swap.PixelShuffleUpsampler`                 bilinear at ``scale`` x input; nearest at any size
``bilinear``      :class:`~dysample_swap.InterpolateUpsampler`                  always: the replaced call itself
``lda_aqu``       :class:`~dysample_swap.LDAAQU` (Faster R-CNN config)          never (attention over deformed points)
``indexnet``      :class:`~dysample_swap.IndexNet` HIN; guided, x2 only         never (sigmoid index maps)
``a2u``           :class:`~dysample_swap.A2U` dynamic-cs; guided, x2 only       never (softmax of sigmoid kernels)
``fade``          :class:`~dysample_swap.FADE` without gate; guided             never (softmax kernels, zero pad)
``sapa``          :class:`~dysample_swap.SAPA` SAPA-B; guided                   never (softmax attention, zero pad)
``freqfusion``    :class:`~dysample_swap.FreqFusion` defaults; guided, x2 only  never (windowed softmax kernels)
================  ============================================================  ==================================================

The last six are each paper's configuration (the settings of ``tests/upsamplers/reference_data``):
LDA-AQU ``reduction_factor=4, k_e=3, k_u=3, n_groups=2, range_factor=11`` (their Faster R-CNN config);
IndexNet's holistic index block, nonlinear with context (HIN); A2U ``up_kernel=3`` ("dynamic-cs-d†");
FADE ``up_kernel_size=5`` without the gate; SAPA-B (``up_kernel_size=5, embedding_dim=32``); FreqFusion with
all the authors' defaults (``compressed_channels=64``, low-pass 5, high-pass 3). Their initialisation is
the authors' whatever ``init`` (there is no ``init="match"``), and ``anchor`` changes nothing.

**Guided upsamplers** (:func:`needs_guide`) read a high-resolution guide, e.g. the encoder feature of the
skip connection: ``forward(x, guide, size=None, scale_factor=None)``, the guide ``(B, guide_channels, H,
W)`` (resized to ``scale`` times ``x`` when it has another size; ``create_upsampler(...,
guide_channels=...)``, default ``channels``). Only :data:`UPSAMPLERS` replace an interpolation call by
themselves (the surgery swaps those); :data:`ALL_UPSAMPLERS` is every name. LDA-AQU reads no guide but is
not in :data:`UPSAMPLERS` either: it needs ``channels`` to be a multiple of 8, which an arbitrary
interpolation site does not promise.

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
call), nor are the six upsamplers above it: LDA-AQU, FADE and SAPA compute at any integer scale in one
module; IndexNet, A2U and FreqFusion are x2 only (a stride-2 encoder or an ``up=2`` reassembly), and
since each x2 stage of a chain would need its own guide, ``create_upsampler`` refuses another scale for
them with a ``ValueError``. At swap time a chain of nearest x2 stages equals one nearest interpolation; a chain of
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
    >>> sapa = create_upsampler("sapa", 64, 2, guide_channels=32)
    >>> needs_guide("sapa"), sapa(torch.randn(1, 64, 13, 13), torch.randn(1, 32, 26, 26), size=(25, 25)).shape
    (True, torch.Size([1, 64, 25, 25]))
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from dysample_swap.upsamplers.a2u import A2U
from dysample_swap.upsamplers.carafe import CARAFEPack
from dysample_swap.upsamplers.chain import UpsamplerChain
from dysample_swap.upsamplers.deconv import DeconvUpsampler
from dysample_swap.upsamplers.dysample.module import DySample
from dysample_swap.upsamplers.dysample.sampling import ANCHORS, check_anchor
from dysample_swap.upsamplers.dysample.variants import VARIANTS
from dysample_swap.upsamplers.fade import FADE
from dysample_swap.upsamplers.freqfusion import FreqFusion
from dysample_swap.upsamplers.indexnet import IndexNet
from dysample_swap.upsamplers.interpolate import InterpolateUpsampler
from dysample_swap.upsamplers.lda_aqu import LDAAQU
from dysample_swap.upsamplers.options import check_defaults, check_init, check_scale
from dysample_swap.upsamplers.pixelshuffle import PixelShuffleUpsampler
from dysample_swap.upsamplers.sapa import SAPA
from dysample_swap.upsamplers.sizing import Factor, Size

Builder = Callable[..., nn.Module]
"""``build(channels, scale, *, anchor, init, groups_fallback, size, scale_factor, positions, guide_channels) -> module``."""


Counter = Callable[[int, int, str, int], int]
"""``count(channels, scale, init, guide_channels) -> trainable parameters`` of one module (one stage) of a rival."""


@dataclass(frozen=True)
class _Entry:
    build: Builder
    count: Counter | None  # None: a DySample variant, counted from its groups (variants.parameter_count)
    learned: bool  # False: the no-op arm, exact whatever the init
    chainable: bool
    exact_native: frozenset[str]  # anchors reproduced at scale x input, one stage, init="match"
    exact_resized: frozenset[str]  # anchors reproduced at every other output size too
    guided: bool = False  # forward(x, guide, ...): reads a high-resolution guide
    x2_only: bool = False  # computes at scale 2 only (and is not chained)


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
        **_: object,
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


def _lda_aqu(channels: int, scale: int, *, size: Size | None, scale_factor: Factor | None, **_: object) -> nn.Module:
    return LDAAQU(channels, scale_factor=float(scale), size=size, output_scale_factor=scale_factor)


def _indexnet(
    channels: int, scale: int, *, guide_channels: int, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return IndexNet(guide_channels, use_nonlinear=True, use_context=True, size=size, scale_factor=scale_factor)


def _a2u(
    channels: int, scale: int, *, guide_channels: int, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return A2U(guide_channels, up_kernel=3, scale=scale, size=size, scale_factor=scale_factor)


def _fade(
    channels: int, scale: int, *, guide_channels: int, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return FADE(
        guide_channels, channels, scale, up_kernel_size=5, gating=False, size=size, output_scale_factor=scale_factor
    )


def _sapa(
    channels: int, scale: int, *, guide_channels: int, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return SAPA(
        guide_channels, channels, scale, up_kernel_size=5, embedding_dim=32, size=size, scale_factor=scale_factor
    )


def _freqfusion(
    channels: int, scale: int, *, guide_channels: int, size: Size | None, scale_factor: Factor | None, **_: object
) -> nn.Module:
    return FreqFusion(guide_channels, channels, size=size, output_scale_factor=scale_factor)


def _carafe_count(c: int, s: int, init: str, g: int) -> int:
    compressed, kernels = 64, 5 * 5 * s * s  # CARAFEPack's defaults: 64 channels, 5x5 kernels, a 3x3 encoder
    return c * compressed + compressed + compressed * kernels * 9 + kernels


def _deconv_count(c: int, s: int, init: str, g: int) -> int:
    k = 2 * s - s % 2 if init == "match" else 2 * s - 1
    return c * c * k * k + c


def _pixelshuffle_count(c: int, s: int, init: str, g: int) -> int:
    return c * c * s * s * 9 + c * s * s


def _lda_aqu_count(c: int, s: int, init: str, g: int) -> int:
    hidden, group = c // 4, c // 8  # reduction_factor 4; 2 offset groups
    offsets = group * 9 + 2 * group + group * 2 * 9 * 9 + 2 * 9  # depthwise 3x3, LayerNorm, 3x3 to 2 * 3**2 offsets
    return 2 * c * hidden + offsets + 2 * c + 9 * hidden  # q, k projections; offsets; LayerNorm(C); key bias table


def _indexnet_count(c: int, s: int, init: str, g: int) -> int:
    return 2 * g * g * 16 + 2 * (2 * g) + 2 * g * 4  # 4x4 conv g -> 2g, BatchNorm(2g), 1x1 conv 2g -> 4 (no biases)


def _a2u_count(c: int, s: int, init: str, g: int) -> int:
    return 2 * 2 * g + (g * 36 + 36) + 2 * (g + 1)  # 2 GroupNorm(g), 1x1 conv g -> 4*3*3, two 1x1 convs g -> 1


def _fade_count(c: int, s: int, init: str, g: int) -> int:
    return (g * 64 + 64) + c * 64 + (64 * 25 * 9 + 25)  # compressors g -> 64 (bias), c -> 64; 3x3 encoder 64 -> 5*5


def _sapa_count(c: int, s: int, init: str, g: int) -> int:
    return 2 * g + 2 * c + (g * 32 + 32) + (c * 32 + 32)  # GroupNorms, query g -> 32, key c -> 32


def _freqfusion_count(c: int, s: int, init: str, g: int) -> int:
    encoders = (64 * 25 * 9 + 25) + (64 * 9 * 9 + 9)  # 3x3 low-pass (5*5 taps) and high-pass (3*3 taps) encoders
    return (g * 64 + 64) + (c * 64 + 64) + encoders  # compressors g -> 64, c -> 64


_EVERY = frozenset(ANCHORS)
_STENCIL = frozenset({"bilinear", "nearest"})
_NEAREST = frozenset({"nearest"})
_NONE: frozenset[str] = frozenset()
_SWAPPABLE: dict[str, _Entry] = {  # replace an interpolation call by themselves
    **{v: _Entry(_dysample_builder(v), None, True, True, _EVERY, _EVERY) for v in VARIANTS},
    "carafe": _Entry(_carafe, _carafe_count, True, True, _NONE, _NONE),
    "deconv": _Entry(_deconv, _deconv_count, True, True, _STENCIL, _NEAREST),
    "pixelshuffle": _Entry(_pixelshuffle, _pixelshuffle_count, True, True, _STENCIL, _NEAREST),
    "bilinear": _Entry(_interpolate, lambda c, s, init, g: 0, False, False, _EVERY, _EVERY),
}
_PORTED: dict[str, _Entry] = {  # each paper's configuration; not exact, not chained (see the module docstring)
    "lda_aqu": _Entry(_lda_aqu, _lda_aqu_count, True, False, _NONE, _NONE),
    "indexnet": _Entry(_indexnet, _indexnet_count, True, False, _NONE, _NONE, guided=True, x2_only=True),
    "a2u": _Entry(_a2u, _a2u_count, True, False, _NONE, _NONE, guided=True, x2_only=True),
    "fade": _Entry(_fade, _fade_count, True, False, _NONE, _NONE, guided=True),
    "sapa": _Entry(_sapa, _sapa_count, True, False, _NONE, _NONE, guided=True),
    "freqfusion": _Entry(_freqfusion, _freqfusion_count, True, False, _NONE, _NONE, guided=True, x2_only=True),
}
_ENTRIES: dict[str, _Entry] = {**_SWAPPABLE, **_PORTED}

SWAP_POSITIONS: tuple[str, ...] = ("exact", "grid")
"""How a replacement DySample carries its sampling positions (``DySample(positions=...)``)."""

UPSAMPLERS: tuple[str, ...] = tuple(_SWAPPABLE)
"""The upsamplers that replace an interpolation call by themselves (what the surgery swaps in), DySample's four
variants first."""

ALL_UPSAMPLERS: tuple[str, ...] = tuple(_ENTRIES)
"""Every name :func:`create_upsampler` knows: :data:`UPSAMPLERS`, then LDA-AQU and the guided upsamplers."""


def _entry(name: str) -> _Entry:
    if not isinstance(name, str):
        raise TypeError(
            f"the upsampler name must be a string such as 'dysample+', not {name!r} "
            f"({type(name).__name__}); choose one of {', '.join(ALL_UPSAMPLERS)}"
        )
    key = name.strip().lower()
    if key not in _ENTRIES:
        close = difflib.get_close_matches(key, ALL_UPSAMPLERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown upsampler {name!r}; choose one of {', '.join(ALL_UPSAMPLERS)}.{hint}")
    return _ENTRIES[key]


def _check_supported_scale(name: str, entry: _Entry, scale: int) -> None:
    if entry.x2_only and scale != 2:
        raise ValueError(
            f"upsampler {name!r} upsamples by 2 only, got scale={scale}; and a guided upsampler is not chained "
            f"(each x2 stage would need its own guide): use scale=2 at each of the network's x2 steps, or choose "
            f"one that computes at any scale (fade, sapa, lda_aqu, carafe, dysample, ...)"
        )


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


def rival_parameters(
    name: str,
    channels: int,
    scale: int,
    *,
    init: str = "match",
    chain: bool = True,
    guide_channels: int | None = None,
) -> int:
    """Trainable parameters of ``create_upsampler(name, channels, scale, init=init, chain=chain,
    guide_channels=guide_channels)`` for a rival, counted without building it (DySample variants are
    counted from their groups: :func:`~dysample_swap.upsamplers.dysample.variants.parameter_count`).

    ``guide_channels`` (default ``channels``) counts for the guided upsamplers only (:func:`needs_guide`).

    Raises:
        ValueError: for an unknown name, a DySample variant, or a scale an x2-only upsampler does not take.

    Example:
        >>> rival_parameters("carafe", 256, 2), rival_parameters("deconv", 8, 4), rival_parameters("bilinear", 8, 2)  # x4: 2 stages
        (74148, 2064, 0)
        >>> rival_parameters("fade", 256, 2), rival_parameters("indexnet", 256, 2), rival_parameters("sapa", 64, 2, guide_channels=32)
        (47257, 2100224, 3328)
    """
    entry = _entry(name)
    if entry.count is None:
        raise ValueError(
            f"{name} is a DySample variant: count it with parameter_count(variant, channels, scale, groups)"
        )
    _check_supported_scale(name, entry, scale)
    stages = _stages(entry, scale, chain)
    guide = channels if guide_channels is None else guide_channels
    return stages * entry.count(channels, 2 if stages > 1 else scale, init, guide)


def chain_stages(name: str, scale: int, chain: bool = True) -> int:
    """How many modules ``create_upsampler(name, C, scale, chain=chain)`` chains (1: a single module).

    Example:
        >>> chain_stages("dysample", 8), chain_stages("dysample", 8, chain=False), chain_stages("bilinear", 8)
        (3, 1, 1)
    """
    return _stages(_entry(name), scale, chain)


_X2_ONLY = frozenset({"a2u", "indexnet", "freqfusion"})
_MULTIPLE_OF = {  # name -> (what, divisor): the constructor checks these (GroupNorm groups, head splits)
    "sapa": (("channels", 32), ("guide_channels", 32)),
    "a2u": (("guide_channels", 32),),
    "lda_aqu": (("channels", 8),),
}


def channel_problem(name: str, channels: int, scale: int, guide_channels: int | None = None) -> str | None:
    """Why ``create_upsampler(name, channels, scale, guide_channels=...)`` cannot be built, in words (``None``: it can),
    decided from the numbers alone, as the surgery's policy needs it (it builds nothing).

    Example:
        >>> channel_problem("sapa", 48, 2, guide_channels=64), channel_problem("a2u", 64, 4, guide_channels=64)
        ('sapa needs channels that are a multiple of 32 (its GroupNorm), not 48', 'a2u is x2 only, not x4')
        >>> channel_problem("fade", 48, 2) is None
        True
    """
    key = upsampler_name(name)
    if key in _X2_ONLY and scale != 2:
        return f"{key} is x2 only, not x{scale}"
    values = {"channels": channels, "guide_channels": channels if guide_channels is None else guide_channels}
    for what, divisor in _MULTIPLE_OF.get(key, ()):
        if values[what] % divisor:
            why = "its GroupNorm" if key != "lda_aqu" else "its attention heads and groups"
            return f"{key} needs {what.replace('_', ' ')} that are a multiple of {divisor} ({why}), not {values[what]}"
    return None


def needs_guide(name: str) -> bool:
    """Whether ``create_upsampler(name, ...)`` reads a guide: ``forward(x, guide, size=None, scale_factor=None)``.

    Example:
        >>> needs_guide("fade"), needs_guide(" SAPA "), needs_guide("lda_aqu"), needs_guide("dysample")
        (True, True, False, False)
    """
    return _entry(name).guided


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
    guide_channels: int | None = None,
) -> nn.Module:
    """Build the upsampler ``name`` for ``channels`` channels and integer ``scale`` (see the module docstring).

    The module's ``forward(x, size=None, scale_factor=None)`` works as DySample's: explicit arguments
    win, else the ``size`` / ``scale_factor`` given here, else ``scale`` times the input. A guided
    upsampler's (:func:`needs_guide`) is ``forward(x, guide, size=None, scale_factor=None)``.

    Args:
        name: one of :data:`ALL_UPSAMPLERS` (case and surrounding spaces ignored).
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
        guide_channels: guided upsamplers only (ignored by the others): the guide's channels; default
            ``channels``.

    Raises:
        ValueError: for an unknown name (the message lists the valid names and the closest one), an
            unknown anchor or init, a bad scale (any but 2 for IndexNet, A2U and FreqFusion), or channels
            the upsampler cannot take (SAPA: multiples of 32, A2U: a guide with a multiple of 32, LDA-AQU:
            multiples of 8).

    Example:
        >>> import torch
        >>> create_upsampler("pixelshuffle", 8, 2, size=(25, 25))(torch.randn(1, 8, 13, 13)).shape
        torch.Size([1, 8, 25, 25])
        >>> create_upsampler("dysample+", 256, 4)[0].offset.weight.abs().max().item()   # zero offsets
        0.0
        >>> create_upsampler("dysampel", 8, 2)
        Traceback (most recent call last):
        ...
        ValueError: unknown upsampler 'dysampel'; choose one of dysample, dysample+, dysample-s, dysample-s+, carafe, deconv, pixelshuffle, bilinear, lda_aqu, indexnet, a2u, fade, sapa, freqfusion. Did you mean 'dysample'?
        >>> create_upsampler("indexnet", 64, 4)
        Traceback (most recent call last):
        ...
        ValueError: upsampler 'indexnet' upsamples by 2 only, got scale=4; and a guided upsampler is not chained (each x2 stage would need its own guide): use scale=2 at each of the network's x2 steps, or choose one that computes at any scale (fade, sapa, lda_aqu, carafe, dysample, ...)
    """
    entry = _entry(name)
    check_anchor(anchor)
    check_init(init)
    check_scale(scale, f"upsampler {name!r}")
    _check_supported_scale(name, entry, scale)
    check_defaults(size, scale_factor, "create_upsampler")
    if positions not in SWAP_POSITIONS:
        raise ValueError(f"positions={positions!r} is not one of {SWAP_POSITIONS}")
    options = {
        "anchor": anchor,
        "init": init,
        "groups_fallback": groups_fallback,
        "positions": positions,
        "guide_channels": channels if guide_channels is None else guide_channels,
    }
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
