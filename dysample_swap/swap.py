"""``find_upsamplers`` and ``swap_upsamplers``: discovery -> policy -> rewrite -> report.

Example:
    >>> import torch, torch.nn as nn
    >>> from dysample_swap.swap import find_upsamplers, swap_upsamplers, swap_report
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Upsample(scale_factor=2),
    ...                     nn.Conv2d(16, 2, 1))
    >>> [(s.path, s.action) for s in find_upsamplers(net)]
    [('1', 'swap')]
    >>> net = swap_upsamplers(net, "dysample", verbose=False)
    >>> swap_report(net).parameters_added
    544
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from dysample_swap.dysample import DySample
from dysample_swap.example_inputs import default_inputs, describe_inputs, native_size
from dysample_swap.policy import SwapPolicy, anchor_for, decide, offset_init_std, selects
from dysample_swap.rewrite import OwnerPlan, Replacement, apply_eager, apply_fx, free_name, plan_owner
from dysample_swap.sites import ROOT, Discovery, UpsampleSite, discover, discovery_context, module_at
from dysample_swap.variants import variant_settings

logger = logging.getLogger("dysample_swap")

REPORT_ATTRIBUTE = "dysample_swap_report"
"""Name of the attribute under which ``swap_upsamplers`` stores its :class:`SwapReport` on the model."""


@dataclass
class SwapReport:
    """What ``swap_upsamplers`` did (or, from :func:`plan_swap`, would do).

    Attributes:
        variant: the DySample variant.
        sites: every executed upsampling call with its action and reason.
        parameters_added: trainable parameters the new DySample modules add.
        inputs: shapes of the example inputs (:func:`~dysample_swap.example_inputs.describe_inputs`),
            ``None`` when they are not plain tensors or lists of tensors.
        policy: the policy keyword arguments as given.

    Example:
        >>> SwapReport("dysample+", [], 0).swapped
        []
    """

    variant: str
    sites: list[UpsampleSite]
    parameters_added: int
    inputs: list[dict[str, Any]] | None = None
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def swapped(self) -> list[UpsampleSite]:
        """Sites replaced by a DySample.

        Example:
            >>> SwapReport("dysample", [], 0).swapped
            []
        """
        return [s for s in self.sites if s.action == "swap"]

    @property
    def skipped(self) -> list[UpsampleSite]:
        """Sites left alone.

        Example:
            >>> SwapReport("dysample", [], 0).skipped
            []
        """
        return [s for s in self.sites if s.action == "skip"]

    def table(self) -> str:
        """The site table: path, kind, mode, channels, in -> out, scale/size, action, reason.

        Example:
            >>> print(SwapReport("dysample", [], 0).table().splitlines()[-1])
            0 swapped, 0 skipped; variant dysample adds 0 parameters
        """
        header = ("path", "kind", "mode", "channels", "in -> out", "scale/size", "action", "reason")
        rows = [header]
        for s in self.sites:
            mode = s.mode + (" ac" if s.align_corners else "")
            spatial = "x".join(map(str, s.input_shape[2:])) + " -> " + "x".join(map(str, s.output_shape[2:]))
            if s.size is not None:
                how = "size=" + "x".join(map(str, s.size))
            else:
                how = "scale=" + "x".join(f"{v:g}" for v in s.scale or ())
            reason = s.reason + (" [eager fallback]" if s.method == "eager fallback" else "")
            rows.append((s.path, s.kind, mode, str(s.in_channels), spatial, how, s.action, reason))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
        lines.append(f"{len(self.swapped)} swapped, {len(self.skipped)} skipped; variant "
                     f"{self.variant} adds {self.parameters_added:,} parameters")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@dataclass
class SwapPlan:
    """Everything needed to perform a swap: decided sites, owner plans and the new modules.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> plan = plan_swap(net, "dysample", verbose=False)
        >>> [r.name for reps in plan.replacements.values() for r in reps]  # replaces net[1] in place
        ['1']
    """

    report: SwapReport
    owners: dict[str, OwnerPlan]
    replacements: dict[str, list[Replacement]]
    policy: SwapPolicy


def swap_report(model: nn.Module) -> SwapReport:
    """The :class:`SwapReport` that ``swap_upsamplers`` attached to ``model``.

    Raises:
        ValueError: when ``model`` did not come out of ``swap_upsamplers``.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2), nn.Conv2d(4, 2, 1))
        >>> net = swap_upsamplers(net, "dysample", verbose=False)
        >>> len(swap_report(net).swapped)
        1
    """
    report = getattr(model, REPORT_ATTRIBUTE, None)
    if not isinstance(report, SwapReport):
        raise ValueError(f"{type(model).__name__} has no swap report; it was not returned by swap_upsamplers")
    return report


def _discover(model: nn.Module, example_inputs: Any) -> Discovery:
    if example_inputs is not None:
        candidates = [example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)]
    else:
        candidates = default_inputs(model)
    errors = []
    for inputs in candidates:
        try:
            with native_size(model, inputs):
                return discover(model, inputs)
        except Exception as exc:  # noqa: BLE001 - a default input may not fit; try the next one
            if example_inputs is not None:
                raise
            shapes = [list(t.shape) for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
            errors.append(f"{shapes}: {type(exc).__name__}: {exc}")
    raise ValueError(f"{type(model).__name__} rejected every default example input; pass "
                     "example_inputs=(...) with what its forward expects. Tried:\n  " + "\n  ".join(errors))


def _like(model: nn.Module, owner: nn.Module) -> dict[str, Any]:
    for tensor in (*owner.parameters(), *owner.buffers(), *model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return {"device": tensor.device, "dtype": tensor.dtype}
    return {}


def _build(variant: str, site: UpsampleSite, policy: SwapPolicy) -> DySample:
    return DySample.from_variant(
        variant, site.in_channels, site.dysample_scale, anchor=anchor_for(site, policy),
        offset_init_std=offset_init_std(policy), groups_fallback=policy.groups_fallback)


def _groups_checker(variant: str, policy: SwapPolicy):  # noqa: ANN202
    cache: dict[tuple[int, int], str | None] = {}

    def check(site: UpsampleSite) -> str | None:
        key = (site.in_channels, site.dysample_scale)
        if key not in cache:
            try:
                _build(variant, site, policy)
                cache[key] = None
            except ValueError as exc:
                hint = "" if policy.groups_fallback else " (pass groups_fallback=True)"
                cache[key] = f"{exc}{hint}"
        return cache[key]

    return check


def _group_positions(plan: OwnerPlan) -> list[list[int]] | None:
    """Per call position in the owner's code, the sites it made in every execution (or None)."""
    lengths = {len(p) for p in plan.positions}
    if len(lengths) != 1:
        return None
    return [list(group) for group in zip(*plan.positions)]


def _skip(site: UpsampleSite, reason: str) -> UpsampleSite:
    return site.replace(action="skip", reason=reason, method="", replacement="")


def _mark_per_item(sites: list[UpsampleSite]) -> list[UpsampleSite]:
    """Flag helper-function calls that one source line makes repeatedly to arbitrary sizes.

    A helper (not the owner's own code) whose calls from one line reach several different
    output sizes, not all of them whole-number upsamplings, is per-item post-processing (mask
    pasting, keypoint decoding); a helper called once per pyramid level (x2 each time) is not.
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


def _in_place_name(owner: str, plan: OwnerPlan, members: list[UpsampleSite],
                   sites: list[UpsampleSite]) -> str | None:
    """The child name of an ``nn.Upsample`` that a DySample can replace in place, else ``None``.

    Possible when the owner is rewritten with fx, the Upsample is the owner's direct child, and
    it runs only at this one call position: the DySample then takes its name (state-dict keys
    like ``decoder.up.offset.weight``; an ``nn.Sequential`` keeps its length and order).
    """
    path = members[0].path
    prefix = "" if owner == ROOT else owner + "."
    child = path[len(prefix):]
    if (plan.method != "fx" or any(m.kind != "module" or m.path != path for m in members)
            or not path.startswith(prefix) or "." in child
            or sum(s.path == path for s in sites) != len(members)):
        return None
    return child


def _plan_owner(model: nn.Module, discovery: Discovery, owner: str, sites: list[UpsampleSite],
                site_paths: set[str]) -> OwnerPlan:
    calls = sorted(c for (path, c) in discovery.invocations if path == owner)
    invocations = [discovery.invocations[(owner, c)] for c in calls]
    return plan_owner(owner, module_at(model, owner), invocations, sites, site_paths)


def _assign(model: nn.Module, owner: str, plan: OwnerPlan, sites: list[UpsampleSite], variant: str,
            policy: SwapPolicy) -> list[Replacement]:
    """Build one DySample per call position of ``owner``; update ``sites`` (method, name, skips)."""
    module = module_at(model, owner)
    groups = _group_positions(plan)
    routed = {i for group in groups or [] for i in group}
    for i, site in enumerate(sites):
        if site.owner != owner or site.action != "swap" or i in routed:
            continue
        if groups is None:
            sites[i] = _skip(site, f"{owner} makes a different number of calls each time it runs")
        else:
            where = f"helper function {site.helper}()" if site.helper else "code outside its forward"
            sites[i] = _skip(site, f"called from {where}, and torch.fx cannot trace {owner} "
                                   f"({plan.why_not_fx}); left alone")
    reps = []
    for position, group in enumerate(groups or []):
        members = [sites[i] for i in group]
        if not any(m.action == "swap" for m in members):
            continue
        if len({m.in_channels for m in members}) > 1 or any(m.action == "skip" for m in members):
            for i in group:
                if sites[i].action == "swap":
                    sites[i] = _skip(sites[i], f"the same call of {owner} also runs where it is "
                                               "skipped or has other channels")
            continue
        biggest = max(members, key=lambda m: m.dysample_scale)
        name = _in_place_name(owner, plan, members, sites) or free_name(module, position)
        dysample = _build(variant, biggest, policy).to(**_like(model, module)).train(module.training)
        reps.append(Replacement(position, name, dysample, "size_int" in biggest.flags))
        for i in group:
            sites[i] = sites[i].replace(method=plan.method, replacement=name,
                                        dysample_scale=biggest.dysample_scale)
    return reps


def plan_swap(model: nn.Module, variant: str = "dysample+", example_inputs: Any = None,
              **policy_kwargs: Any) -> SwapPlan:
    """Discover, decide and plan a swap without changing ``model``.

    Arguments as :func:`swap_upsamplers`.  The returned plan's ``report`` holds the decided sites
    and the parameter count the swap would add.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> plan_swap(net, "dysample+").report.parameters_added
        544
    """
    variant_settings(variant)
    policy = SwapPolicy.from_kwargs(**policy_kwargs)
    with discovery_context(model):
        discovery = _discover(model, example_inputs)
        check = _groups_checker(variant, policy)
        sites = []
        for site in _mark_per_item(discovery.sites):
            action, reason = decide(site, policy, check)
            sites.append(site.replace(action=action, reason=reason))
        site_paths = {s.path for s in sites} | {s.owner for s in sites}
        owners: dict[str, OwnerPlan] = {}
        for owner in dict.fromkeys(s.owner for s in sites if s.action == "swap"):
            owners[owner] = _plan_owner(model, discovery, owner, sites, site_paths)
    replacements: dict[str, list[Replacement]] = {}
    for owner, plan in owners.items():
        reps = _assign(model, owner, plan, sites, variant, policy)
        if reps:
            replacements[owner] = reps
    added = sum(p.numel() for reps in replacements.values() for r in reps for p in r.module.parameters())
    report = SwapReport(variant, sites, added, describe_inputs(discovery.example_inputs),
                        dict(policy_kwargs))
    _warn(report, policy)
    return SwapPlan(report, owners, replacements, policy)


def _warn(report: SwapReport, policy: SwapPolicy) -> None:
    problems = []
    if not report.swapped:
        problems.append("no upsampling site is eligible for DySample "
                        f"({len(report.sites)} found, all skipped)")
    if policy.include is not None and not any(selects(policy.include, s) for s in report.sites):
        paths = ", ".join(dict.fromkeys(s.path for s in report.sites)) or "none"
        problems.append(f"include={policy.include!r} selects none of the sites (their paths: {paths})")
    if policy.include is not None:
        for site in report.skipped:
            if selects(policy.include, site):
                problems.append(f"{site.path} was requested by include= but is skipped: {site.reason}")
    if not problems:
        return
    if policy.strict:
        raise ValueError("; ".join(problems) + "\n" + report.table())
    for problem in problems:
        warnings.warn(problem, stacklevel=3)


def find_upsamplers(model: nn.Module, example_inputs: Any = None, **policy: Any) -> list[UpsampleSite]:
    """List every upsampling call ``model`` makes on ``example_inputs``, with the swap decision.

    Changes nothing: parameters, buffers, ``training`` flags, ``forward`` and the CPU random
    number generator are untouched.

    Args:
        model: any ``nn.Module``.
        example_inputs: positional arguments of one forward (a tuple; a single tensor or a list
            of images is wrapped).  Omitted: ``1x3xHxW`` for image models (H = W = 128, else
            224, 256, 512), a list of one ``3x128x160`` image for torchvision detectors.
        **policy: ``variant`` (default ``"dysample+"``, decides which channel counts fit) and
            the :class:`~dysample_swap.policy.SwapPolicy` options.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> sites = find_upsamplers(net)
        >>> sites[0].path, sites[0].kind, sites[0].action
        ('1', 'module', 'swap')
    """
    variant = policy.pop("variant", "dysample+")
    policy.setdefault("verbose", False)
    with torch.random.fork_rng(devices=[]):  # planning builds DySample modules: keep the CPU RNG as it was
        return plan_swap(model, variant, example_inputs, **policy).report.sites


def swap_upsamplers(model: nn.Module, variant: str = "dysample+", example_inputs: Any = None,
                    **policy: Any) -> nn.Module:
    """Replace ``model``'s eligible upsampling calls by DySample, in place; returns ``model``.

    The table of what happened is printed (``verbose=True``, the default) and logged; it stays on
    the model: ``swap_report(model)`` (also ``model.dysample_swap_report``).

    Args:
        model: the network (rewritten in place).
        variant: ``"dysample"``, ``"dysample+"``, ``"dysample-s"`` or ``"dysample-s+"``.
        example_inputs: as in :func:`find_upsamplers`.
        **policy: :class:`~dysample_swap.policy.SwapPolicy` options (``include``, ``exclude``,
            ``swap_final``, ``groups_fallback``, ``init``, ``strict``, ``verbose``).

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> x = torch.rand(1, 3, 8, 8)
        >>> before = net(x)
        >>> net = swap_upsamplers(net, verbose=False)
        >>> torch.allclose(net(x), before, atol=1e-6)
        True
    """
    plan = plan_swap(model, variant, example_inputs, **policy)
    for owner, reps in plan.replacements.items():
        module = module_at(model, owner)
        if plan.owners[owner].method == "fx":
            apply_fx(module, plan.owners[owner], reps)
        else:
            apply_eager(module, reps)
    setattr(model, REPORT_ATTRIBUTE, plan.report)
    logger.info("swap_upsamplers(%s):\n%s", type(model).__name__, plan.report.table())
    if plan.policy.verbose:
        print(plan.report.table())
    return model
