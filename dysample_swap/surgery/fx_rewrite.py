"""torch.fx on the module that owns upsampling calls: find a trace (:func:`plan_owner`), then rewrite it (:func:`apply_fx`).

Only the module whose own forward makes the calls (the *owner*) is traced, never the whole
model, so models that fx cannot trace as a whole (detectors, smp models with input-shape checks,
``torchvision.ops.FeaturePyramidNetwork`` with its dict input) still get rewritten. Per owner,
these traces are tried in order until one is accepted:

1. every child module a leaf; ``None``, bool and string arguments and tensors nested in
   lists/dicts made concrete (``torch.fx.PH`` placeholders), numbers left symbolic so run-time
   sizes stay dynamic;
2. like 1, but child modules without upsampling calls are traced through (needed when a child
   returns a tuple that the owner unpacks, as FPN's ``extra_blocks``);
3. and 4. like 1 and 2 with number arguments fixed to their recorded values (guarded by an
   assert), tried only when the eager fallback could not route every call: a fixed
   ``patch_height`` would make the model fail at every other input size, the eager fallback runs
   the original code at any size.

A trace is accepted when the graph traced with every ``training`` flag off and the one traced
with them on generate the same code (so the graph does not depend on ``self.training``), its
upsampling calls match the recorded calls in order, and the traced module reproduces the
recorded output (within ``rtol=1e-5, atol=1e-6``) on the first four recorded executions, which
ran in eval mode. When none is accepted the owner gets the eager fallback
(:mod:`dysample_swap.surgery.eager`).

:func:`apply_fx` replaces the matched ``F.interpolate`` call_function nodes / ``nn.Upsample``
call_module nodes by call_module nodes to new children of the owner (``dysample_<k>``), passing
the graph's own ``size`` (so run-time sizes stay dynamic) or ``scale_factor`` as the original call
did, and installs the generated forward (:mod:`dysample_swap.surgery.install`).
"""

from __future__ import annotations

import collections
import inspect
import logging
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from dysample_swap import _torch_compat
from dysample_swap.surgery.install import Replacement, Rewrite, install, portable_globals
from dysample_swap.surgery.sites import Invocation, UpsampleSite, is_upsample_module, join_path

logger = logging.getLogger("dysample_swap")
pytree = _torch_compat.pytree()

_INTERPOLATE_SIG = inspect.signature(F.interpolate)
_SCALARS = (int, float, bool, str)
_MAX_VALIDATED_CALLS = 4


@dataclass
class OwnerPlan:
    """How one owner module will be rewritten.

    Attributes:
        path: the owner's path.
        method: ``"fx"`` or ``"eager fallback"``.
        positions: for each recorded execution, site indices in the order the rewrite sees
            them (graph order for fx; direct calls only for the eager fallback).
        graph: the validated graph (fx only).
        why_not_fx: the error of the last fx attempt (eager fallback only).
        in_place: paths of ``nn.Upsample`` layers replaced in place (not rewritten here).

    Example:
        >>> OwnerPlan("decoder", "eager fallback", [[0, 1]], why_not_fx="TraceError: ...").method
        'eager fallback'
    """

    path: str
    method: str
    positions: list[list[int]]
    graph: fx.Graph | None = None
    why_not_fx: str = ""
    in_place: frozenset[str] = frozenset()


class _OwnerTracer(fx.Tracer):
    """Traces one owner: children are leaves except those listed in ``inline``."""

    def __init__(self, inline: frozenset[int]) -> None:
        super().__init__()
        self.inline = inline

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) not in self.inline


def _concrete_args(module: nn.Module, inv: Invocation, fix_scalars: bool) -> dict[str, Any] | None:
    """Concrete arguments for tracing ``module`` like the recorded execution ``inv``."""
    sig = inspect.signature(type(module).forward)
    try:
        bound = sig.bind(module, *inv.args, **inv.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    concrete: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        kind = sig.parameters[name].kind
        if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            if value:
                return None
            continue
        if isinstance(value, torch.Tensor):
            continue
        if value is None or isinstance(value, (bool, str)):
            concrete[name] = value
        elif isinstance(value, (list, tuple, dict)):
            concrete[name] = pytree.tree_map(lambda v: fx.PH if isinstance(v, torch.Tensor) else v, value)
        elif isinstance(value, _SCALARS):
            if fix_scalars:
                concrete[name] = value
        else:
            return None
    return concrete


def _site_nodes(
    graph: fx.Graph, owner: nn.Module, owner_path: str, exclude: frozenset[str] = frozenset()
) -> list[fx.Node]:
    """The graph's upsampling calls, leaving out ``nn.Upsample`` layers replaced in place (``exclude``)."""
    nodes = []
    for node in graph.nodes:
        if (
            node.op == "call_function"
            and node.target is F.interpolate
            or (
                node.op == "call_module"
                and is_upsample_module(owner.get_submodule(node.target))
                and join_path(owner_path, str(node.target)) not in exclude
            )
        ):
            nodes.append(node)
    return nodes


_ADDS = (operator.add, operator.iadd, torch.add)
_CATS = (torch.cat, torch.concat, torch.concatenate)


def fusion_and_guide(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """The operation that fuses an upsampling call's result with another tensor, and that other tensor.

    The fusion must be the first node that reads ``node`` (as discovery saw it): an add
    (``a + b``, ``torch.add``, ``a.add(b)``) or a concatenation (``torch.cat``); the guide is its
    first other tensor operand. ``None`` when the graph has no such fusion (the owner returns the
    upsampled tensor and a caller fuses it, or something reads it first).

    Example:
        >>> import torch.nn as nn, torch.nn.functional as F
        >>> class Lateral(nn.Module):
        ...     def forward(self, x, skip):
        ...         return F.interpolate(x, scale_factor=2.0) + skip
        >>> graph = fx.symbolic_trace(Lateral()).graph
        >>> up = next(n for n in graph.nodes if n.target is F.interpolate)
        >>> [n.name for n in fusion_and_guide(up)]
        ['add', 'skip']
    """
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    users = sorted(node.users, key=order.__getitem__)
    if not users:
        return None
    fusion = users[0]
    if (
        fusion.op == "call_function"
        and fusion.target in _ADDS
        or (fusion.op == "call_method" and fusion.target in ("add", "add_", "__add__", "__radd__"))
    ):
        operands = list(fusion.args[:2])
    elif fusion.op == "call_function" and fusion.target in _CATS:
        tensors = fusion.args[0] if fusion.args else fusion.kwargs.get("tensors", ())
        operands = list(tensors) if isinstance(tensors, (list, tuple)) else []
    else:
        return None
    guide = next((a for a in operands if isinstance(a, fx.Node) and a is not node), None)
    return None if guide is None else (fusion, guide)


def _same(a: Any, b: Any) -> bool:
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    for x, y in zip(leaves_a, leaves_b):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            if x.is_floating_point():
                if not torch.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True):
                    return False
            elif not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


def _restore_argument_names(graph: fx.Graph, owner: nn.Module) -> None:
    """fx names the placeholder of a concrete argument ``name_1``; keep ``name`` so keywords work."""
    if _torch_compat.pytree_info(graph) is not None:
        return  # the pytree codegen's signature already uses the original names
    params = inspect.signature(type(owner).forward).parameters
    taken = {n.target for n in graph.nodes if n.op == "placeholder"}
    for node in graph.nodes:
        if node.op == "placeholder" and node.target not in params:
            original = str(node.target).rsplit("_", 1)[0]
            if original in params and original not in taken:
                node.target = original


def _trace(owner: nn.Module, inline: frozenset[int], concrete: dict[str, Any]) -> fx.Graph:
    """Trace in train and in eval mode; the two graphs must agree."""
    modes = [(m, m.training) for m in owner.modules()]
    codes, graphs = [], []
    try:
        for training in (False, True):
            for module, _ in modes:  # flags only: an overridden train() may do more
                module.training = training
            graph = _OwnerTracer(inline).trace(owner, concrete_args=dict(concrete))
            _restore_argument_names(graph, owner)
            graphs.append(graph)
            codes.append(graph.python_code(root_module="self").src)
    finally:
        for module, mode in modes:
            module.training = mode
    if codes[0] != codes[1]:
        raise RuntimeError("the traced forward depends on self.training")
    return graphs[0]


def _keep_ordered_dict_output(graph: fx.Graph, sample: Any) -> None:
    """fx writes a returned ``OrderedDict`` as a dict literal; rebuild the OrderedDict (torchvision segmenters)."""
    output = next(n for n in graph.nodes if n.op == "output")
    value = output.args[0]
    if type(sample) is collections.OrderedDict and isinstance(value, dict):  # fx: immutable_dict
        with graph.inserting_before(output):
            ordered = graph.call_function(collections.OrderedDict, (value,))
        output.args = (ordered,)


def _check_positions(owner_path: str, owner: nn.Module, nodes: list[fx.Node], sites: list[UpsampleSite]) -> None:
    if len(nodes) != len(sites):
        raise RuntimeError(f"the graph has {len(nodes)} upsampling calls, the execution {len(sites)}")
    for node, site in zip(nodes, sites):
        if site.kind == "module":
            ok = node.op == "call_module" and join_path(owner_path, str(node.target)) == site.path
        else:
            ok = node.op == "call_function"
        if not ok:
            raise RuntimeError(f"graph node {node.name} does not match the call at {site.source}")


def plan_owner(
    owner_path: str,
    owner: nn.Module,
    invocations: list[Invocation],
    sites: list[UpsampleSite],
    site_paths: set[str],
    in_place: frozenset[str] = frozenset(),
) -> OwnerPlan:
    """Find how to rewrite ``owner``; changes nothing.

    ``invocations`` are the owner's recorded executions (their ``sites`` index into ``sites``);
    ``site_paths`` holds the path and owner of every discovered site in the model (children
    containing one are never traced through); ``in_place`` holds the paths of ``nn.Upsample``
    layers that are replaced in place (their calls need no rewrite, so they are not positions).
    Every failed fx attempt is logged at DEBUG level with its error.

    Example:
        >>> import torch, torch.nn as nn
        >>> from dysample_swap.surgery.sites import discover, discovery_context
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2))
        >>> with discovery_context(net):
        ...     d = discover(net, torch.rand(1, 3, 4, 4))
        ...     plan = plan_owner("<root>", net, list(d.invocations.values()), d.sites, {"1"})
        >>> plan.method, plan.positions
        ('fx', [[0]])
    """

    def routed(inv: Invocation) -> list[int]:
        return [i for i in inv.sites if not (sites[i].kind == "module" and sites[i].path in in_place)]

    positions = [routed(inv) for inv in invocations]
    prefix = "" if owner_path == "<root>" else owner_path + "."
    default_leaf = fx.Tracer().is_leaf_module
    inline = frozenset(
        id(m)
        for name, m in owner.named_modules(remove_duplicate=False)
        if name
        and not default_leaf(m, name)
        and not any(p == prefix + name or p.startswith(prefix + name + ".") for p in site_paths)
    )
    error = "no recorded execution"
    first_error = ""  # the simplest trace's error names the owner's own code: the one the report shows
    every_call_direct = all("direct" in sites[i].flags for inv in invocations for i in routed(inv))
    attempts = [
        (frozenset(), False),
        *([(inline, False)] if inline else []),
        (frozenset(), True),
        *([(inline, True)] if inline else []),
    ]
    tried = []
    for inline_ids, fix in attempts:
        concrete = _concrete_args(owner, invocations[0], fix)
        if concrete is None:
            error = "its forward arguments cannot be made concrete (*args/**kwargs or opaque values)"
            break
        if (inline_ids, concrete.keys()) in tried:
            continue  # no scalar arguments: fixing them changes nothing
        if fix and every_call_direct:
            frozen = ", ".join(
                f"{k}={v!r}" for k, v in concrete.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            )
            first_error += (
                f"; fixing its number arguments ({frozen}) would freeze them at the example's values, "
                "so the eager fallback keeps them dynamic"
            )
            break
        tried.append((inline_ids, concrete.keys()))
        try:
            graph = _trace(owner, inline_ids, concrete)
            _keep_ordered_dict_output(graph, invocations[0].output)
            nodes = _site_nodes(graph, owner, owner_path, in_place)
            for inv in invocations:
                _check_positions(owner_path, owner, nodes, [sites[i] for i in routed(inv)])
            module = fx.GraphModule(owner, graph)
            for inv in invocations[:_MAX_VALIDATED_CALLS]:
                if not _same(module(*inv.args, **inv.kwargs), inv.output):
                    raise RuntimeError("the traced graph does not reproduce the recorded output")
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            first_error = first_error or error
            logger.debug(
                "fx trace of %s failed (children traced through: %d, scalars fixed: %s): %s",
                owner_path,
                len(inline_ids),
                fix,
                error,
                exc_info=True,
            )
            continue
        if fix:
            logger.warning(
                "%s: traced with its number arguments fixed at the example's values (%s); other "
                "values fail an assert in the rewritten forward",
                owner_path,
                concrete,
            )
        return OwnerPlan(owner_path, "fx", positions, graph=graph, in_place=in_place)
    error = first_error or error
    logger.debug("%s uses the eager fallback: %s", owner_path, error)
    direct = [[i for i in routed(inv) if "direct" in sites[i].flags] for inv in invocations]
    return OwnerPlan(owner_path, "eager fallback", direct, why_not_fx=error, in_place=in_place)


def guide_route(node: fx.Node, guide_arg: str | None) -> tuple[fx.Node, fx.Node | None] | None:
    """Where a guided upsampler replacing ``node`` gets its guide: ``(guide, fusion)`` when the fusion is the first
    use of the result (the call goes just before it), ``(guide, None)`` when the guide is the owner's argument
    ``guide_arg`` (the call goes where ``node`` is), else ``None``.

    Example:
        >>> import torch.nn as nn, torch.nn.functional as F
        >>> class Gated(nn.Module):
        ...     def forward(self, x, skip):
        ...         up = F.interpolate(x, scale_factor=2.0)
        ...         return torch.cat([up * up.sigmoid(), skip], 1)
        >>> graph = fx.symbolic_trace(Gated()).graph
        >>> up = next(n for n in graph.nodes if n.target is F.interpolate)
        >>> guide_route(up, None) is None, [n.name for n in guide_route(up, "skip") if n is not None]
        (True, ['skip'])
    """
    found = fusion_and_guide(node)
    if found is not None:
        return found[1], found[0]
    if guide_arg is None:
        return None
    guide = next((n for n in node.graph.nodes if n.op == "placeholder" and n.name == guide_arg), None)
    return None if guide is None else (guide, None)


def guided_positions(owner: nn.Module, plan: OwnerPlan, guide_args: list[str | None]) -> list[bool]:
    """For each call position of an fx plan, whether a guided upsampler can be called there with its guide
    (``guide_args``: each position's :attr:`~dysample_swap.surgery.sites.UpsampleSite.guide_arg`).

    Example:
        >>> guided_positions(nn.Identity(), OwnerPlan("x", "eager fallback", [[0]]), [None])
        [False]
    """
    if plan.graph is None:
        return [False] * len(guide_args)
    nodes = _site_nodes(plan.graph, owner, plan.path, plan.in_place)
    return [guide_route(node, arg) is not None for node, arg in zip(nodes, guide_args)]


def apply_fx(owner: nn.Module, plan: OwnerPlan, replacements: list[Replacement]) -> None:
    """Replace the planned graph nodes by DySample calls and install the new forward.

    Example:
        >>> import torch, torch.nn as nn
        >>> from dysample_swap.upsamplers.dysample.module import DySample
        >>> from dysample_swap.surgery.sites import discover, discovery_context
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2))
        >>> with discovery_context(net):
        ...     d = discover(net, torch.rand(1, 3, 4, 4))
        ...     plan = plan_owner("<root>", net, list(d.invocations.values()), d.sites, {"1"})
        >>> apply_fx(net, plan, [Replacement(0, "dysample_0", DySample(4, anchor="nearest"))])
        >>> isinstance(net, nn.Sequential), net(torch.rand(1, 3, 4, 4)).shape
        (True, torch.Size([1, 4, 8, 8]))
    """
    graph = plan.graph
    if graph is None:
        raise ValueError(f"{plan.path}: plan has no graph (method {plan.method!r})")
    graph.owning_module = owner  # type: ignore[assignment]  # fx only reads its attributes; a GraphModule was attached for validation
    nodes = _site_nodes(graph, owner, plan.path, plan.in_place)
    for rep in replacements:
        node = nodes[rep.position]
        if node.op == "call_function":
            bound = _INTERPOLATE_SIG.bind(*node.args, **node.kwargs)
            x = bound.arguments["input"]
            size = bound.arguments.get("size")
            scale_factor = bound.arguments.get("scale_factor")
        else:
            upsample = owner.get_submodule(str(node.target))
            x = node.args[0] if node.args else node.kwargs["input"]
            size, scale_factor = upsample.size, upsample.scale_factor
        owner.add_module(rep.name, rep.module)  # may replace that nn.Upsample in place
        kwargs: dict[str, Any] = {}
        if size is not None:
            kwargs["size"] = (size, size) if rep.size_is_int else size
        elif scale_factor is not None:
            kwargs["scale_factor"] = scale_factor
        if rep.guided:  # called where the guide exists: before the fusion (the guide may be computed after x)
            route = guide_route(node, rep.guide_arg)
            if route is None:
                raise RuntimeError(f"dysample_swap bug: {plan.path}: a guided site without a route to its guide")
            guide, fusion = route
            with graph.inserting_before(fusion) if fusion is not None else graph.inserting_after(node):
                new = graph.create_node("call_module", rep.name, (x, guide), kwargs)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            continue
        with graph.inserting_after(node):
            new = graph.create_node("call_module", rep.name, (x,), kwargs)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.lint()
    code = graph.python_code(root_module="self")
    info = _torch_compat.pytree_info(graph)
    specs = {}
    if info is not None:
        specs = {"_in_spec": pytree.treespec_dumps(info.in_spec), "_out_spec": pytree.treespec_dumps(info.out_spec)}
    install(owner, Rewrite("fx", code.src, portable_globals(code.globals), specs))
