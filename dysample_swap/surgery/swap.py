"""``find_upsamplers`` and ``swap_upsamplers``: discovery -> policy -> rewrite -> report.

Example:
    >>> import torch, torch.nn as nn
    >>> from dysample_swap.surgery.swap import find_upsamplers, swap_upsamplers, swap_report
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Upsample(scale_factor=2),
    ...                     nn.Conv2d(16, 2, 1))
    >>> [(s.path, s.action) for s in find_upsamplers(net)]
    [('1', 'swap')]
    >>> net = swap_upsamplers(net, "dysample", verbose=False)
    >>> swap_report(net).parameters_added
    544
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn as nn

from dysample_swap import _torch_compat
from dysample_swap.surgery.example_inputs import default_inputs, describe_inputs, native_size
from dysample_swap.surgery.fx_rewrite import OwnerPlan, apply_fx, plan_owner
from dysample_swap.surgery.hooks import hooks_for
from dysample_swap.surgery.install import Replacement, apply_eager, is_rewritten, restore
from dysample_swap.surgery.policy import (
    InPlace,
    NewModule,
    SiteDecision,
    SwapPolicy,
    decide_all,
    decide_rewrites,
    in_place_groups,
    mark_in_place,
    owners_to_rewrite,
    selects,
)
from dysample_swap.surgery.record import forget_swaps, record_swap
from dysample_swap.surgery.replacements import build_replacement, replace_in_place
from dysample_swap.surgery.report import REPORT_ATTRIBUTE, SwapReport, swap_report
from dysample_swap.surgery.sites import Discovery, discover, discovery_context, join_path, module_at
from dysample_swap.upsamplers.registry import needs_guide, upsampler_name

logger = logging.getLogger("dysample_swap")
pytree = _torch_compat.pytree()

_FRAMEWORK_SWAP: contextvars.ContextVar[bool] = contextvars.ContextVar("dysample_swap_framework", default=False)


@contextlib.contextmanager
def framework_swap() -> Iterator[None]:
    """Marks swaps that a framework integration makes on a framework's own network (no warning then).

    Example:
        >>> with framework_swap():
        ...     _FRAMEWORK_SWAP.get()
        True
    """
    token = _FRAMEWORK_SWAP.set(True)
    try:
        yield
    finally:
        _FRAMEWORK_SWAP.reset(token)


@dataclass
class _Plan:
    """Internal: the decided report plus where each new module goes (nothing built yet)."""

    report: SwapReport
    policy: SwapPolicy
    discovery: Discovery
    in_place: list[InPlace]
    owners: dict[str, OwnerPlan]
    new_modules: dict[str, list[NewModule]]  # by owner


def _bad_inputs(model: nn.Module, example_inputs: Any, exc: Exception) -> ValueError:
    from dysample_swap.surgery.example_inputs import first_conv_channels

    described = describe_inputs(example_inputs if isinstance(example_inputs, tuple) else (example_inputs,))
    shown = described if described is not None else type(example_inputs).__name__
    channels = first_conv_channels(model)
    hint = (
        f"a tuple of the positional arguments of one forward, e.g. (torch.rand(1, {channels}, 128, 128),) "
        f"(its first convolution takes {channels} channels)"
        if channels
        else "a tuple of the positional arguments of one forward"
    )
    return ValueError(
        f"discovery runs {type(model).__name__} once on example_inputs to find its upsampling "
        f"calls, and it raised on {shown}: {type(exc).__name__}: {exc}. Pass {hint}, or omit "
        "example_inputs to try the defaults."
    )


def _discover(model: nn.Module, example_inputs: Any) -> Discovery:
    if example_inputs is not None:
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        try:
            with native_size(model, inputs):
                return discover(model, inputs)
        except Exception as exc:
            raise _bad_inputs(model, example_inputs, exc) from exc
    errors = []
    for inputs in default_inputs(model):
        try:
            with native_size(model, inputs):
                return discover(model, inputs)
        except Exception as exc:
            shapes = [list(t.shape) for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)]
            errors.append(f"{shapes}: {type(exc).__name__}: {exc}")
    raise ValueError(
        f"{type(model).__name__} rejected every default example input; pass "
        "example_inputs=(...) with what its forward expects. Tried:\n  " + "\n  ".join(errors)
    )


def _plan(model: nn.Module, variant: str, example_inputs: Any, policy_kwargs: dict[str, Any]) -> _Plan:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected the network as an nn.Module (or an ultralytics YOLO object), got "
            f"{type(model).__name__} {model!r:.80}; build it first, e.g. "
            "dysample_swap.build_model('smp:FPN'), and pass the module"
        )
    variant = upsampler_name(variant)
    policy = SwapPolicy.from_kwargs(**policy_kwargs)
    _torch_compat.require()
    with discovery_context(model):
        discovery = _discover(model, example_inputs)  # observe
        decisions = decide_all(discovery.sites, policy, variant)  # decide what the observations allow
        in_place = in_place_groups(model, decisions, guided=needs_guide(variant))
        mark_in_place(decisions, in_place)
        in_place_paths = frozenset(g.path for g in in_place)
        site_paths = {s.path for s in discovery.sites} | {s.owner for s in discovery.sites}
        owners: dict[str, OwnerPlan] = {}
        for owner in owners_to_rewrite(decisions):  # observe how each owner's code can be rewritten
            calls = sorted(c for (path, c) in discovery.invocations if path == owner)
            invocations = [discovery.invocations[(owner, c)] for c in calls]
            owners[owner] = plan_owner(
                owner, module_at(model, owner), invocations, discovery.sites, site_paths, in_place_paths
            )
    new_modules = decide_rewrites(model, decisions, owners, in_place, variant, policy)  # decide the rest
    added = sum(d.parameters for d in decisions if d.action == "swap")
    report = SwapReport(variant, decisions, added, describe_inputs(discovery.example_inputs), dict(policy_kwargs))
    _warn(report, policy)
    return _Plan(report, policy, discovery, in_place, owners, new_modules)


def plan_swap(
    model: nn.Module, variant: str = "dysample+", example_inputs: Any = None, **policy_kwargs: Any
) -> SwapReport:
    """Discover and decide a swap without changing ``model`` or building any module.

    Arguments as :func:`swap_upsamplers`. The report holds every decided site (with the method
    and name each new module would get) and the parameter count the swap would add, computed.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> report = plan_swap(net, "dysample+")
        >>> report.parameters_added, report.swapped[0].method
        (544, 'in place')
    """
    return _plan(model, variant, example_inputs, policy_kwargs).report


def _warn(report: SwapReport, policy: SwapPolicy) -> None:
    problems = []
    if not report.swapped:
        problems.append(f"no upsampling site is eligible for {report.variant} ({len(report.sites)} found, all skipped)")
    if policy.include is not None and not any(selects(policy.include, s.site) for s in report.sites):
        paths = ", ".join(dict.fromkeys(s.path for s in report.sites)) or "none"
        problems.append(f"include={policy.include!r} selects none of the sites (their paths: {paths})")
    if policy.include is not None:
        for d in report.skipped:
            if selects(policy.include, d.site):
                problems.append(f"{d.path} was requested by include= but is skipped: {d.reason}")
    if not problems:
        return
    if policy.strict:
        raise ValueError("; ".join(problems) + "\n" + report.table())
    for problem in problems:
        warnings.warn(problem, stacklevel=3)


def find_upsamplers(model: nn.Module, example_inputs: Any = None, **policy: Any) -> list[SiteDecision]:
    """List every upsampling call ``model`` makes on ``example_inputs``, with the swap decision.

    Changes nothing and builds nothing: parameters, buffers, ``training`` flags, ``forward`` and
    the random number generators are untouched.

    Args:
        model: any ``nn.Module``.
        example_inputs: positional arguments of one forward (a tuple; a single tensor or a list
            of images is wrapped).  Omitted: ``1x3xHxW`` for image models (H = W = 128, else
            224, 256, 512), a list of one ``3x128x160`` image for torchvision detectors.
        **policy: ``variant`` (default ``"dysample+"``: which upsampler, so which channel counts
            fit) and the :class:`~dysample_swap.surgery.policy.SwapPolicy` options.

    Returns:
        One :class:`~dysample_swap.surgery.policy.SiteDecision` per executed call; what discovery
        observed is its ``.site`` (whose fields it also reads through: ``.path``, ``.mode``...).

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> sites = find_upsamplers(net)
        >>> sites[0].path, sites[0].kind, sites[0].action
        ('1', 'module', 'swap')
    """
    variant = policy.pop("variant", "dysample+")
    policy.setdefault("verbose", False)
    return plan_swap(model, variant, example_inputs, **policy).sites


def _self_check(model: nn.Module, plan: _Plan) -> None:
    """Re-run the example input and raise if an eager-fallback DySample was not reached."""
    routed = {join_path(d.owner, d.replacement) for d in plan.report.swapped if d.method == "eager fallback"}
    if not routed:
        return
    reached: set[str] = set()
    handles = [module_at(model, path).register_forward_hook(lambda m, i, o, p=path: reached.add(p)) for path in routed]
    try:
        with discovery_context(model), native_size(model, plan.discovery.example_inputs):
            model(*plan.discovery.example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(routed - reached)
    if missing:
        unswap(model)
        raise RuntimeError(
            f"the eager fallback routed calls to {', '.join(missing)}, but re-running the example "
            "input did not reach them (the owner's calls changed order?); the swap was undone. "
            "Exclude those sites (exclude=...) or report the model.\n" + plan.report.table()
        )


def swap_upsamplers(
    model: nn.Module, variant: str = "dysample+", example_inputs: Any = None, **policy: Any
) -> nn.Module:
    """Replace ``model``'s eligible upsampling calls by DySample, in place; returns ``model``.

    ``model`` may also be an ultralytics ``YOLO`` object: its network is swapped and its own
    ``train()`` keeps the swap (:func:`~dysample_swap.integrations.ultralytics.swap_yolo`).

    The table of what happened is printed (``verbose=True``, the default) and logged; it stays on
    the model: ``swap_report(model)`` (also ``model.dysample_swap_report``). :func:`unswap`
    undoes it.

    Args:
        model: the network (rewritten in place).
        variant: ``"dysample"``, ``"dysample+"``, ``"dysample-s"``, ``"dysample-s+"``, or a rival
            for ablations: ``"carafe"``, ``"deconv"``, ``"pixelshuffle"``, ``"bilinear"`` (a no-op
            arm); see :data:`~dysample_swap.upsamplers.UPSAMPLERS`.
        example_inputs: as in :func:`find_upsamplers`.
        **policy: :class:`~dysample_swap.surgery.policy.SwapPolicy` options (``include``, ``exclude``,
            ``swap_final``, ``groups_fallback``, ``init``, ``chain``, ``strict``, ``verbose``).

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> x = torch.rand(1, 3, 8, 8)
        >>> before = net(x)
        >>> net = swap_upsamplers(net, verbose=False)
        >>> torch.allclose(net(x), before, atol=1e-6)
        True
    """
    framework = hooks_for(model, having="swap")
    if framework is not None and framework.swap is not None:
        return framework.swap(model, variant, example_inputs, **policy)
    framework = hooks_for(model, having="alone")
    if framework is not None and not _FRAMEWORK_SWAP.get():
        warnings.warn(f"swapping the {framework.name} {type(model).__name__} alone: {framework.alone}", stacklevel=2)
    plan = _plan(model, variant, example_inputs, policy)
    report = plan.report
    previous = getattr(model, REPORT_ATTRIBUTE, None)
    report.previous = previous if isinstance(previous, SwapReport) else None
    decisions = plan.report.sites
    for group in plan.in_place:  # rewrite: nothing is decided from here on
        report.originals[group.path] = replace_in_place(
            model, group.path, decisions[group.members[0]], variant, plan.policy
        )
    for owner, new in plan.new_modules.items():
        module = module_at(model, owner)
        built = [
            Replacement(
                n.position,
                n.name,
                build_replacement(model, module, decisions[n.decision], variant, plan.policy),
                n.size_is_int,
                guided=needs_guide(variant),
                guide_arg=decisions[n.decision].guide_arg,
            )
            for n in new
        ]
        if plan.owners[owner].method == "fx":
            apply_fx(module, plan.owners[owner], built)
        else:
            apply_eager(module, built)
    setattr(model, REPORT_ATTRIBUTE, report)
    _self_check(model, plan)
    record_swap(model)
    logger.info("swap_upsamplers(%s):\n%s", type(model).__name__, report.table())
    if plan.policy.verbose:
        print(report.table())
    return model


def unswap(model: nn.Module) -> dict[str, nn.Module]:
    """Undo :func:`swap_upsamplers`: the original layers and forwards come back; returns what was removed.

    ``nn.Upsample`` layers replaced in place are put back, rewritten modules get their original
    class (so their original forward) back, and the new modules are deleted. The returned dict
    maps each removed module's path to it (its trained weights stay usable).

    Raises:
        ValueError: when ``model`` was not swapped (nothing to undo).

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> x = torch.rand(1, 3, 8, 8)
        >>> before = net(x)
        >>> removed = unswap(swap_upsamplers(net, verbose=False))
        >>> list(removed), type(net[1]).__name__, torch.equal(net(x), before)
        (['1'], 'Upsample', True)
    """
    report: SwapReport | None = swap_report(model)
    removed: dict[str, nn.Module] = {}
    while report is not None:  # the latest swap first
        for path, original in report.originals.items():
            parent_path, _, child = path.rpartition(".")
            parent = model if not parent_path else model.get_submodule(parent_path)
            removed[path] = getattr(parent, child)
            setattr(parent, child, original)
        for d in report.swapped:
            if d.method in ("fx", "eager fallback"):
                owner = module_at(model, d.owner)
                if is_rewritten(owner):
                    restore(owner)
                if d.replacement in owner._modules:
                    removed[join_path(d.owner, d.replacement)] = cast(nn.Module, owner._modules.pop(d.replacement))
        report = report.previous
    delattr(model, REPORT_ATTRIBUTE)
    forget_swaps(model)
    return removed
