"""Swap/skip decisions for discovered upsampling sites, each with a reason in words.

The default rules follow the DySample paper and a survey of real models: swap feature
upsampling in decoders and FPNs; leave alone, with a reason, everything DySample cannot
reproduce or should not replace (see :func:`decide`).

Example:
    >>> from dysample_swap.surgery.policy import SwapPolicy
    >>> SwapPolicy.from_kwargs(exclude="decoder.p4*").swap_final
    False
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch.nn as nn

from dysample_swap.surgery.fx_rewrite import OwnerPlan, guided_positions
from dysample_swap.surgery.hooks import hooks_for
from dysample_swap.surgery.sites import ROOT, UpsampleSite, module_at
from dysample_swap.upsamplers.dysample.module import resolve_groups
from dysample_swap.upsamplers.dysample.variants import VARIANTS, parameter_count, variant_settings
from dysample_swap.upsamplers.registry import (
    SWAP_POSITIONS,
    chain_stages,
    channel_problem,
    exact_at_swap,
    needs_guide,
    rival_parameters,
)

Selector = str | Callable[[UpsampleSite], bool] | Iterable[str | Callable[[UpsampleSite], bool]]
"""A path (``"decoder.p4"`` also selects everything under it), an ``fnmatch`` glob
(``"decoder.seg_blocks.*"``), a predicate over :class:`UpsampleSite`, or a list of those."""

INITS = ("match", "paper")

NO_GUIDE = (
    "no guide: the result is not added to or concatenated with a tensor at its resolution (a guided upsampler "
    "reads that tensor); choose an unguided variant for this site"
)
"""Why a guided variant skips a site that discovery found no guide for."""


@dataclass(frozen=True)
class SwapPolicy:
    """Options of ``find_upsamplers`` / ``swap_upsamplers`` (all keyword arguments).

    Attributes:
        include: only sites selected here may be swapped (default: all).  A path selects the
            site with that path and every site below it; globs and predicates work too.
        exclude: sites selected here are never swapped.
        swap_final: also swap upsampling whose result is an output of the model (final
            logits), or that no later operation reads (an auxiliary head's logits that only a
            training loss reads).  Default ``False``, as in the paper.
        groups_fallback: when the variant's ``groups`` do not divide a site's channels, use the
            largest valid group count (the default; the table says which) instead of skipping
            the site.
        init: ``"match"`` (default): each DySample anchors on exactly the interpolation it
            replaces (nearest, bilinear, or bilinear with ``align_corners=True``) with zero
            initial offsets, so the swapped model computes what the original did until trained.
            ``"paper"``: the paper's bilinear anchor with ``offset.weight ~ N(0, 0.001)``.
        chain: replace a power-of-two upsampling above x2 by a chain of x2 stages (the default,
            as the paper does for SegFormer: x8 -> 3 stages); ``False`` keeps one module per site.
            A chained bilinear site does not reproduce one bilinear x4/x8 at swap time (the
            report says so); a chained nearest site does.
        positions: how each DySample carries its sampling positions: ``"exact"`` (default): index
            plus fraction, so zero offsets reproduce the replaced interpolation at every size (an
            argmax, NMS or top-k after it sees the same values); ``"grid"``: the authors'
            ``grid_sample`` arithmetic, within ~1e-6 of it off power-of-two sizes.
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
    groups_fallback: bool = True
    init: str = "match"
    chain: bool = True
    positions: str = "exact"
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
        if policy.positions not in SWAP_POSITIONS:
            raise ValueError(f"positions={policy.positions!r} is not one of {SWAP_POSITIONS}")
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
        return fnmatch.fnmatchcase(site.path, selector) or site.path.startswith(selector + ".") or site.path == selector
    if callable(selector):
        return bool(selector(site))
    return any(selects(item, site) for item in selector)


@dataclass(frozen=True)
class SiteDecision:
    """What the surgery decided for one observed :class:`~dysample_swap.surgery.sites.UpsampleSite`.

    The observation's fields (``path``, ``kind``, ``mode``, ``in_channels``, shapes, ``source``
    ...) read through: ``decision.path is decision.site.path``.

    Attributes:
        site: what discovery observed.
        action: ``"swap"`` or ``"skip"``.
        reason: why, in words.
        upsampler_scale: the integer scale of the replacement: ``ceil`` of the largest
            output/input ratio, at least 2.
        groups: channel groups of the replacement (``None`` when skipped).
        groups_note: set when ``groups_fallback`` changed the variant's groups (e.g. ``"groups 4 -> 3"``).
        method: how a swapped site is rewritten: ``"in place"`` (an ``nn.Upsample`` layer replaced
            by the new module under its own name), ``"fx"``, ``"eager fallback"``, or ``""``.
        replacement: name of the new module relative to ``site.owner`` (``""`` when skipped).
        fx_error: for the eager fallback, why torch.fx was not used.
        parameters: trainable parameters the replacement adds (computed, nothing is built); for
            calls that share one replacement, counted on the first of them only.
        stages: x2 stages the replacement chains (1: one module).
        exact: whether the replacement computes what the call did at swap time (CARAFE, chained
            bilinear and ``init="paper"`` do not).

    Example:
        >>> site = UpsampleSite("up", "module", "nearest", None, (2.0, 2.0), None, 8,
        ...                     (1, 8, 4, 4), (1, 8, 8, 8), "net.py:3 in forward")
        >>> d = SiteDecision(site, "swap", "x2 DySample, anchor nearest", 2, groups=4)
        >>> d.path, d.action, d.replace(action="skip").action
        ('up', 'swap', 'skip')
    """

    site: UpsampleSite
    action: str = "skip"
    reason: str = ""
    upsampler_scale: int = 2
    groups: int | None = None
    groups_note: str = ""
    method: str = ""
    replacement: str = ""
    fx_error: str = ""
    parameters: int = 0
    stages: int = 1
    exact: bool = True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "site":
            raise AttributeError(name)
        return getattr(self.site, name)

    def replace(self, **changes: Any) -> SiteDecision:
        """A copy with some decided fields changed.

        Example:
            >>> site = UpsampleSite("up", "module", "nearest", None, (2.0, 2.0), None, 8,
            ...                     (1, 8, 4, 4), (1, 8, 8, 8), "net.py:3 in forward")
            >>> SiteDecision(site).replace(reason="excluded").reason
            'excluded'
        """
        return dataclasses.replace(self, **changes)

    def skip(self, reason: str) -> SiteDecision:
        """This decision turned into a skip with ``reason`` (nothing built, nothing counted).

        Example:
            >>> site = UpsampleSite("up", "module", "nearest", None, (2.0, 2.0), None, 8,
            ...                     (1, 8, 4, 4), (1, 8, 8, 8), "net.py:3 in forward")
            >>> SiteDecision(site, "swap", groups=4).skip("shared").groups is None
            True
        """
        return self.replace(
            action="skip", reason=reason, groups=None, groups_note="", method="", replacement="", parameters=0
        )


def upsampler_scale(site: UpsampleSite) -> int:
    """The integer scale a replacement needs: ``ceil`` of the largest output/input ratio, at least 2.

    Example:
        >>> upsampler_scale(UpsampleSite("p", "function", "bilinear", None, None, (20, 20), 4,
        ...                              (1, 4, 13, 13), (1, 4, 20, 20), "x.py:1 in f"))
        2
    """
    ratio = [r for r in site.ratio if math.isfinite(r)]
    return max(2, math.ceil(max(ratio, default=2.0) - 1e-9))


def fit_groups(variant: str, in_channels: int, scale: int, fallback: bool) -> tuple[int | None, str, str]:
    """The groups a DySample variant gets at ``in_channels``: ``(groups, note, error)``.

    ``note`` says when ``fallback`` reduced the variant's groups; ``error`` (with ``groups``
    ``None``) says why no group count works or, without ``fallback``, what to pass.

    Example:
        >>> fit_groups("dysample+", 30, 2, fallback=True)
        (3, 'groups 4 -> 3 (30 channels)', '')
        >>> fit_groups("dysample+", 30, 2, fallback=False)[2].startswith("30 channels are not divisible")
        True
        >>> fit_groups("carafe", 30, 2, fallback=False)
        (None, '', '')
    """
    if variant not in VARIANTS:
        return None, "", ""  # the rivals have no channel groups
    settings = variant_settings(variant)
    style, groups = str(settings["style"]), int(settings["groups"])  # type: ignore[call-overload]
    try:
        fitted = resolve_groups(in_channels, scale, style, groups)
    except ValueError as exc:
        return None, "", str(exc)
    if fitted == groups:
        return groups, "", ""
    divided = in_channels // (scale * scale) if style == "pl" else in_channels
    what = f"{in_channels} channels" if style == "lp" else f"{in_channels} channels / scale**2 = {divided}"
    if not fallback:
        return (
            None,
            "",
            (
                f"{what} are not divisible by groups={groups} of {variant}; groups_fallback=True "
                f"(the default) would use groups={fitted}"
            ),
        )
    return fitted, f"groups {groups} -> {fitted} ({in_channels} channels)", ""


def mark_per_item(sites: list[UpsampleSite]) -> list[UpsampleSite]:
    """Flag helper-function calls that one source line makes repeatedly to arbitrary sizes.

    A helper (not the owner's own code) whose calls from one line reach several different
    output sizes, not all of them whole-number upsamplings, is per-item post-processing (mask
    pasting, keypoint decoding); a helper called once per pyramid level (x2 each time) is not.

    Example:
        >>> mark_per_item([])
        []
    """
    groups: dict[tuple[str, str], list[UpsampleSite]] = {}
    for s in sites:
        if s.helper is not None:
            groups.setdefault((s.owner, s.source), []).append(s)
    per_item = set()
    for key, members in groups.items():
        whole = all(r >= 1 and r == int(r) for m in members for r in m.ratio)
        if len({m.output_shape for m in members}) > 1 and not whole:
            per_item.add(key)
    return [s.replace(flags=s.flags | {"per_item"}) if (s.owner, s.source) in per_item else s for s in sites]


def _hw(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape[2:])


def _skip_reason(site: UpsampleSite, policy: SwapPolicy) -> str | None:
    if len(site.input_shape) != 4:
        return f"{len(site.input_shape)}-D input (DySample needs N, C, H, W)"
    if "per_item" in site.flags:
        return (
            f"post-processing helper {site.helper}() called per item to arbitrary sizes "
            "(e.g. per-detection mask pasting, keypoint decoding)"
        )
    if site.mode not in ("nearest", "bilinear"):
        return f"{site.mode} not supported (DySample reproduces nearest and bilinear)"
    if "antialias" in site.flags:
        return "antialias=True is not reproduced by DySample"
    if "input" in site.flags:
        return (
            f"resizes the network input ({_hw(site.input_shape)} -> {_hw(site.output_shape)}) before any learned layer"
        )
    if site.input_shape[2:] == (1, 1) and site.output_shape[2:] != (1, 1):
        return f"1x1 -> {_hw(site.output_shape)} broadcast of pooled context"
    if "pooled" in site.flags:
        return f"adaptive-pooled context {_hw(site.input_shape)} -> {_hw(site.output_shape)} (pyramid pooling)"
    ratio = site.ratio
    if any(r < 1 for r in ratio):
        return f"downsamples {_hw(site.input_shape)}->{_hw(site.output_shape)}"
    if all(r == 1 for r in ratio):
        return f"same-size no-op ({_hw(site.input_shape)} -> {_hw(site.output_shape)})"
    if "recompute" in site.flags and site.scale is not None and any(s != int(s) for s in site.scale):
        return "recompute_scale_factor=True with a non-integer scale_factor"
    if "final" in site.flags and not policy.swap_final:
        return "final logits of the network (pass swap_final=True to swap)"
    if "unused" in site.flags and not policy.swap_final:
        return (
            "result unused: no later operation of the forward reads it (e.g. an auxiliary head's "
            "logits that only a training loss reads), so a replacement would get no gradient; "
            "pass swap_final=True to swap"
        )
    if selects(policy.exclude, site):
        return "excluded by exclude="
    if policy.include is not None and not selects(policy.include, site):
        return "not selected by include="
    return None


def replacement_parameters(
    variant: str,
    in_channels: int,
    scale: int,
    groups: int | None,
    policy: SwapPolicy,
    guide_channels: int | None = None,
) -> int:
    """Trainable parameters of the module that replaces a call, counted by formula: nothing is built.

    Example:
        >>> replacement_parameters("dysample", 256, 8, 4, SwapPolicy()), replacement_parameters("carafe", 256, 2, None, SwapPolicy())
        (24672, 74148)
    """
    if variant not in VARIANTS:
        return rival_parameters(
            variant, in_channels, scale, init=policy.init, chain=policy.chain, guide_channels=guide_channels
        )
    if groups is None:
        raise ValueError(f"{variant} at {in_channels} channels: no group count fits, so there is no module to count")
    stages = chain_stages(variant, scale, policy.chain)
    return stages * parameter_count(variant, in_channels, 2 if stages > 1 else scale, groups)


def replacement(site: UpsampleSite, variant: str, scale: int, policy: SwapPolicy) -> dict[str, Any] | str:
    """The decided fields of a replacement at ``scale`` (groups, note, parameters, stages, exact, reason), or why none fits.

    Example:
        >>> s = UpsampleSite("up", "module", "bilinear", None, (4.0, 4.0), None, 30,
        ...                  (1, 30, 4, 4), (1, 30, 16, 16), "f.py:1 in forward")
        >>> r = replacement(s, "dysample", 4, SwapPolicy())
        >>> r["stages"], r["groups"], r["exact"], r["reason"]
        (2, 3, False, 'x4 dysample as 2 x2 stages, anchor bilinear, groups 4 -> 3 (30 channels); changes the function at swap time')
    """
    stages = chain_stages(variant, scale, policy.chain)
    if variant not in VARIANTS:
        problem = channel_problem(variant, site.in_channels, 2 if stages > 1 else scale, guide_channels(site))
        if problem is not None:
            return problem
    groups, note, error = fit_groups(variant, site.in_channels, 2 if stages > 1 else scale, policy.groups_fallback)
    if error:
        return error
    anchor = anchor_for(site, policy)
    native = all(r == scale for r in site.ratio)
    exact = exact_at_swap(variant, anchor, scale=scale, init=policy.init, chain=policy.chain, native=native)
    reason = (
        f"x{scale} {variant}"
        + (f" as {stages} x2 stages" if stages > 1 else "")
        + f", anchor {anchor}"
        + (f", {note}" if note else "")
        + ("" if exact else "; changes the function at swap time")
    )
    return {
        "groups": groups,
        "groups_note": note,
        "stages": stages,
        "exact": exact,
        "reason": reason,
        "parameters": replacement_parameters(variant, site.in_channels, scale, groups, policy, guide_channels(site)),
    }


def guide_channels(site: UpsampleSite) -> int | None:
    """The channels of the site's guide (``None`` without one).

    Example:
        >>> s = UpsampleSite("up", "function", "nearest", None, (2.0, 2.0), None, 8, (1, 8, 4, 4), (1, 8, 8, 8),
        ...                  "f.py:1 in forward", fusion="cat", guide_shape=(1, 4, 8, 8))
        >>> guide_channels(s)
        4
    """
    return site.guide_shape[1] if site.guide_shape is not None else None


def decide(site: UpsampleSite, policy: SwapPolicy, variant: str = "dysample+") -> SiteDecision:
    """Decide one site; the rules are checked in this order (the first that applies skips it).

    1. not a 4-D (N, C, H, W) input;  1b. a helper function (not a module's forward) that one
    line calls repeatedly to arbitrary sizes, flag ``"per_item"`` (:func:`mark_per_item`: mask
    pasting, keypoint decoding);  2. mode other than nearest/bilinear;  3. ``antialias``;
    4. resize of the network input before any learned layer (e.g. torchvision's
    ``GeneralizedRCNNTransform``);  5. 1x1 broadcast or adaptive-pooled context (PSP, ASPP,
    PAN);  6. downsampling in any dim;  7. same-size no-op;
    8. ``recompute_scale_factor=True`` with a non-integer factor;  9. final logits, or a result
    that nothing reads (flag ``"unused"``: a replacement would get no gradient), unless
    ``swap_final``;  10. ``exclude`` / ``include``;  11. a guided variant (:func:`needs_guide`) at a
    site whose result is not fused with a tensor at its resolution (no guide, :data:`NO_GUIDE`);
    12. channels the variant's groups cannot divide (:func:`fit_groups`; with ``groups_fallback``,
    the default, only PL sites whose channels ``scale**2`` does not divide).

    Example:
        >>> s = UpsampleSite("up", "module", "bicubic", False, (2.0, 2.0), None, 8,
        ...                  (1, 8, 4, 4), (1, 8, 8, 8), "f.py:1 in forward")
        >>> decide(s, SwapPolicy()).reason
        'bicubic not supported (DySample reproduces nearest and bilinear)'
    """
    scale = upsampler_scale(site)
    reason = _skip_reason(site, policy)
    if reason is None and needs_guide(variant) and site.guide_shape is None:
        reason = NO_GUIDE
    if reason is not None:
        return SiteDecision(site, "skip", reason, scale)
    fields = replacement(site, variant, scale, policy)
    if isinstance(fields, str):
        return SiteDecision(site, "skip", fields, scale)
    return SiteDecision(site, "swap", upsampler_scale=scale, **fields)


def decide_all(sites: list[UpsampleSite], policy: SwapPolicy, variant: str) -> list[SiteDecision]:
    """Decide every site of one discovery (marks per-item helpers first).

    Example:
        >>> s = UpsampleSite("up", "module", "nearest", None, (2.0, 2.0), None, 30,
        ...                  (1, 30, 4, 4), (1, 30, 8, 8), "f.py:1 in forward")
        >>> [d.groups_note for d in decide_all([s], SwapPolicy(), "dysample")]
        ['groups 4 -> 3 (30 channels)']
    """
    return [decide(site, policy, variant) for site in mark_per_item(sites)]


def unroutable_reason(decision: SiteDecision, owner: str, why_not_fx: str, varying_calls: bool) -> str:
    """Why a swappable call cannot be rewritten where it is (the rewrite found no place for it).

    Example:
        >>> s = UpsampleSite("<root>", "function", "nearest", None, (2.0, 2.0), None, 8,
        ...                  (1, 8, 4, 4), (1, 8, 8, 8), "f.py:1 in up", helper="up")
        >>> unroutable_reason(SiteDecision(s, "swap"), "<root>", "TraceError: x", False)
        'called from helper function up(), and torch.fx cannot trace <root> (TraceError: x); left alone'
    """
    if varying_calls:
        return f"{owner} makes a different number of calls each time it runs"
    where = f"helper function {decision.helper}()" if decision.helper else "code outside its forward"
    return f"called from {where}, and torch.fx cannot trace {owner} ({why_not_fx}); left alone"


def shared_call_reason(owner: str) -> str:
    """Why one call position of ``owner`` that runs with differing channels or decisions is left alone.

    Example:
        >>> shared_call_reason("decoder")[:31]
        'the same call of decoder also r'
    """
    return f"the same call of {owner} also runs where it is skipped or has other channels"


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


# -- decisions that need the traces: where each new module goes, and the scale it shares ----------


@dataclass(frozen=True)
class InPlace:
    """An ``nn.Upsample`` layer that one new module replaces under its own name.

    Example:
        >>> InPlace("decoder.up", [0, 2]).members
        [0, 2]
    """

    path: str
    members: list[int]  # decision indices


@dataclass(frozen=True)
class NewModule:
    """One new module the rewrite puts into ``owner``: at call ``position`` of its code, as child ``name``.

    ``decision`` is the index of the decision it is built from (the largest scale among the calls
    it serves); ``size_is_int``: the replaced call passed ``size`` as one int.

    Example:
        >>> NewModule("decoder", 0, "dysample_0", False, 3).name
        'dysample_0'
    """

    owner: str
    position: int
    name: str
    size_is_int: bool
    decision: int


def free_name(owner: nn.Module, position: int, taken: Iterable[str] = ()) -> str:
    """A child name ``dysample_<position>`` not yet used on ``owner`` (nor in ``taken``).

    Example:
        >>> free_name(nn.Module(), 3), free_name(nn.Module(), 3, taken=["dysample_3"])
        ('dysample_3', 'dysample_3_')
    """
    taken = set(taken)
    name = f"dysample_{position}"
    while hasattr(owner, name) or name in taken:
        name += "_"
    return name


def in_place_groups(model: nn.Module, decisions: list[SiteDecision], guided: bool = False) -> list[InPlace]:
    """``nn.Upsample`` layers one new module can replace under their own name.

    A layer qualifies when every call of it is swapped, with one channel count, from one source
    line, at most once per execution of its caller, and it is registered once, below its caller:
    the caller's code (``self.up(x)``, or a framework's own loop over its layers) then runs the
    new module without being rewritten. For a ``guided`` variant a layer qualifies only where its
    framework routes the guide to it (:func:`routed_guide`); otherwise the caller's code is rewritten.

    Example:
        >>> import torch
        >>> from dysample_swap.surgery.sites import discover, discovery_context
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2), nn.Conv2d(4, 2, 1))
        >>> with discovery_context(net):
        ...     found = discover(net, torch.rand(1, 3, 4, 4))
        >>> in_place_groups(net, decide_all(found.sites, SwapPolicy(), "dysample"))
        [InPlace(path='1', members=[0])]
    """
    by_path: dict[str, list[int]] = {}
    for i, d in enumerate(decisions):
        if d.kind == "module":
            by_path.setdefault(d.path, []).append(i)
    registered: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        registered[id(module)] = registered.get(id(module), 0) + 1
    groups = []
    for path, members in by_path.items():
        ds = [decisions[i] for i in members]
        owners = {d.owner for d in ds}
        owner = next(iter(owners))
        under = owner == ROOT or path.startswith(owner + ".")
        if (
            all(d.action == "swap" for d in ds)
            and (not guided or routed_guide(model, ds) is not None)
            and len({d.in_channels for d in ds}) == 1
            and len({d.source for d in ds}) == 1
            and len(owners) == 1
            and under
            and path != ROOT
            and len({d.owner_call for d in ds}) == len(ds)
            and registered.get(id(module_at(model, path)), 0) == 1
        ):
            groups.append(InPlace(path, members))
    return groups


def routed_guide(model: nn.Module, decisions: list[SiteDecision]) -> int | None:
    """Where ``model``'s framework wiring addresses the guide of every call of one layer (ultralytics: the
    producing layer's index), or ``None`` when it cannot route it (no framework hook, calls with other guides).

    Example:
        >>> routed_guide(nn.Identity(), []) is None
        True
    """
    hooks = hooks_for(model, having="guide_index")
    producers = {d.guide_producer for d in decisions}
    if hooks is None or hooks.guide_index is None or len(producers) != 1 or None in producers:
        return None
    return hooks.guide_index(model, str(producers.pop()))


def mark_in_place(decisions: list[SiteDecision], groups: list[InPlace]) -> None:
    """Record on each member decision that its layer is replaced in place, under the layer's own name.

    Example:
        >>> mark_in_place([], [])
    """
    for group in groups:
        owner = decisions[group.members[0]].owner
        name = group.path if owner == ROOT else group.path[len(owner) + 1 :]
        for i in group.members:
            decisions[i] = decisions[i].replace(method="in place", replacement=name)


def owners_to_rewrite(decisions: list[SiteDecision]) -> list[str]:
    """The owners whose code must be rewritten: those with a swapped call not replaced in place.

    Example:
        >>> owners_to_rewrite([])
        []
    """
    return list(dict.fromkeys(d.owner for d in decisions if d.action == "swap" and d.method == ""))


def _group_positions(plan: OwnerPlan) -> list[list[int]] | None:
    """Per call position in the owner's code, the sites it made in every execution (or None)."""
    lengths = {len(p) for p in plan.positions}
    if len(lengths) != 1:
        return None
    return [list(group) for group in zip(*plan.positions)]


def _assign(owner: nn.Module, plan: OwnerPlan, decisions: list[SiteDecision], guided: bool) -> list[NewModule]:
    """One new module per call position of the owner; updates ``decisions`` (method, name, skips)."""
    groups = _group_positions(plan)
    routed = {i for group in groups or [] for i in group}
    for i, d in enumerate(decisions):
        if d.owner == plan.path and d.action == "swap" and d.method == "" and i not in routed:
            decisions[i] = d.skip(unroutable_reason(d, plan.path, plan.why_not_fx, groups is None))
    guide_args = [decisions[group[0]].guide_arg for group in groups or []]
    fusions = guided_positions(owner, plan, guide_args) if guided else []
    new: list[NewModule] = []
    for position, group in enumerate(groups or []):
        members = [decisions[i] for i in group]
        if not any(m.action == "swap" for m in members):
            continue
        if guided and not (position < len(fusions) and fusions[position]):
            for i in group:
                if decisions[i].action == "swap":
                    decisions[i] = decisions[i].skip(unguided_reason(plan))
            continue
        if len({m.in_channels for m in members}) > 1 or any(m.action == "skip" for m in members):
            for i in group:
                if decisions[i].action == "swap":
                    decisions[i] = decisions[i].skip(shared_call_reason(plan.path))
            continue
        first = max(group, key=lambda i: decisions[i].upsampler_scale)
        name = free_name(owner, position, taken=(m.name for m in new))
        new.append(NewModule(plan.path, position, name, "size_int" in decisions[first].flags, first))
        for i in group:
            decisions[i] = decisions[i].replace(method=plan.method, replacement=name, fx_error=plan.why_not_fx)
    return new


def unguided_reason(plan: OwnerPlan) -> str:
    """Why a guided variant skips a site with a guide that the rewrite of its owner cannot pass to the module.

    Example:
        >>> unguided_reason(OwnerPlan("decoder", "eager fallback", [[0]], why_not_fx="TraceError: x"))
        'guided upsamplers are called with their guide by an fx rewrite; decoder runs the eager fallback (TraceError: x)'
    """
    if plan.method != "fx":
        return f"guided upsamplers are called with their guide by an fx rewrite; {plan.path} runs the eager fallback ({plan.why_not_fx})"
    return (
        f"the fusion with the guide is not the first use of the result in {plan.path}'s forward (it happens in "
        "a caller, or something reads the result first and the guide is not one of its arguments), so the guide "
        "cannot be passed"
    )


def _share(decisions: list[SiteDecision], members: list[int], variant: str, policy: SwapPolicy) -> None:
    """Give every call that one new module serves that module's scale and groups; count it once."""
    first = max(members, key=lambda i: decisions[i].upsampler_scale)
    scale = decisions[first].upsampler_scale
    for k, i in enumerate(members):
        d = decisions[i]
        fields = replacement(d.site, variant, scale, policy)
        if isinstance(fields, str):
            decisions[i] = d.skip(fields)
            continue
        decisions[i] = d.replace(
            upsampler_scale=scale, **{**fields, "parameters": fields["parameters"] if k == 0 else 0}
        )


def decide_rewrites(
    model: nn.Module,
    decisions: list[SiteDecision],
    owners: dict[str, OwnerPlan],
    in_place: list[InPlace],
    variant: str,
    policy: SwapPolicy,
) -> dict[str, list[NewModule]]:
    """The rules that need the owners' traces; updates ``decisions`` and returns the new modules per owner.

    A swapped call the trace found no place for is skipped (:func:`unroutable_reason`); a call
    position that runs with differing channels or decisions is skipped (:func:`shared_call_reason`);
    every call that one new module serves gets that module's scale (the largest among them), its
    groups, and its parameters counted once.

    Example:
        >>> decide_rewrites(nn.Identity(), [], {}, [], "dysample", SwapPolicy())
        {}
    """
    guided = needs_guide(variant)
    new = {
        path: found
        for path, plan in owners.items()
        if (found := _assign(module_at(model, path), plan, decisions, guided))
    }
    for group in in_place:
        _share(decisions, group.members, variant, policy)
    for path, modules in new.items():
        for module in modules:
            members = [
                i
                for i, d in enumerate(decisions)
                if d.owner == path and d.replacement == module.name and d.method == owners[path].method
            ]
            _share(decisions, members, variant, policy)
    return new
