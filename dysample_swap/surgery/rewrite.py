"""Rewrite the modules that own upsampling calls: torch.fx graph passes, or an eager fallback.

Only the module whose own forward makes the calls (the *owner*) is traced, never the whole
model, so models that fx cannot trace as a whole (detectors, smp models with input-shape checks,
``torchvision.ops.FeaturePyramidNetwork`` with its dict input) still get rewritten.  Per owner,
these traces are tried in order until one reproduces the owner's recorded output exactly on every
recorded execution, in both train and eval mode:

1. every child module a leaf; ``None``, bool and string arguments and tensors nested in
   lists/dicts made concrete (``torch.fx.PH`` placeholders), numbers left symbolic so run-time
   sizes stay dynamic;
2. like 1, but child modules without upsampling calls are traced through (needed when a child
   returns a tuple that the owner unpacks, as FPN's ``extra_blocks``);
3. and 4. like 1 and 2 with number arguments fixed to their recorded values (guarded by an
   assert), tried only when the eager fallback could not route every call: a fixed
   ``patch_height`` would make the model fail at every other input size, the eager fallback runs
   the original code at any size.

The matched ``F.interpolate`` call_function nodes / ``nn.Upsample`` call_module nodes are
replaced by call_module nodes to new ``DySample`` children of the owner (``dysample_<k>``, or the
``nn.Upsample``'s own name when that module runs at one call only and is replaced in place),
passing the graph's own ``size`` (so run-time sizes stay dynamic) or ``scale_factor`` as the
original call did.
The generated forward is installed as the ``forward`` of a per-instance subclass of the owner's
class: ``isinstance``, attributes, state-dict keys and ``copy.deepcopy`` keep working, and
``torch.fx.symbolic_trace`` of the patched model sees the DySample calls.  As with fx's own
``GraphModule``, the generated code travels in ``__reduce_ex__`` (source text plus the modules and
objects it refers to, by name) and the subclass is rebuilt on load, so ``pickle``, ``torch.save``
of the whole model, ``copy.copy`` and a fresh interpreter all work.  :func:`restore` undoes it.

When no trace works (smp's ``SegformerDecoder``), the **eager fallback** installs a forward that
runs the original one under a :class:`torch.overrides.TorchFunctionMode` routing the k-th
interpolate call made *directly by the owner's code* to the k-th DySample.  Limits: torch.fx
symbolic tracing cannot see it (``torch.export`` can: the mode is captured), it relies on every
forward making its direct calls in the same order as on the example input, and calls made from
helper functions are not routed.

Example:
    >>> import torch, torch.nn as nn
    >>> from dysample_swap.surgery.rewrite import compile_forward
    >>> callable(compile_forward)
    True
"""

from __future__ import annotations

import collections
import importlib
import inspect
import itertools
import linecache
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dysample_swap import _torch_compat
from dysample_swap.surgery.sites import (Invocation, UpsampleSite, calling_module, first_user_frame,
                                 is_upsample_module, join_path)

logger = logging.getLogger("dysample_swap")
pytree = _torch_compat.pytree()

_INTERPOLATE_SIG = inspect.signature(F.interpolate)
_SCALARS = (int, float, bool, str)
_MAX_VALIDATED_CALLS = 4
_SOURCE_IDS = itertools.count()


@dataclass
class Replacement:
    """One DySample that replaces one call (graph node, or k-th routed eager call) of an owner.

    Example:
        >>> from dysample_swap.upsamplers.dysample.module import DySample
        >>> Replacement(0, "dysample_0", DySample(8)).name
        'dysample_0'
    """

    position: int
    name: str
    module: nn.Module
    size_is_int: bool = False


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
        if value is None or isinstance(value, bool) or isinstance(value, str):
            concrete[name] = value
        elif isinstance(value, (list, tuple, dict)):
            concrete[name] = pytree.tree_map(
                lambda v: fx.PH if isinstance(v, torch.Tensor) else v, value)
        elif isinstance(value, _SCALARS):
            if fix_scalars:
                concrete[name] = value
        else:
            return None
    return concrete


def _site_nodes(graph: fx.Graph, owner: nn.Module, owner_path: str,
                exclude: frozenset[str] = frozenset()) -> list[fx.Node]:
    """The graph's upsampling calls, leaving out ``nn.Upsample`` layers replaced in place (``exclude``)."""
    nodes = []
    for node in graph.nodes:
        if node.op == "call_function" and node.target is F.interpolate:
            nodes.append(node)
        elif (node.op == "call_module" and is_upsample_module(owner.get_submodule(node.target))
              and join_path(owner_path, str(node.target)) not in exclude):
            nodes.append(node)
    return nodes


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


def _check_positions(owner_path: str, owner: nn.Module, nodes: list[fx.Node],
                     sites: list[UpsampleSite]) -> None:
    if len(nodes) != len(sites):
        raise RuntimeError(f"the graph has {len(nodes)} upsampling calls, the execution {len(sites)}")
    for node, site in zip(nodes, sites):
        if site.kind == "module":
            ok = node.op == "call_module" and join_path(owner_path, str(node.target)) == site.path
        else:
            ok = node.op == "call_function"
        if not ok:
            raise RuntimeError(f"graph node {node.name} does not match the call at {site.source}")


def plan_owner(owner_path: str, owner: nn.Module, invocations: list[Invocation],
               sites: list[UpsampleSite], site_paths: set[str],
               in_place: frozenset[str] = frozenset()) -> OwnerPlan:
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
        id(m) for name, m in owner.named_modules(remove_duplicate=False)
        if name and not default_leaf(m, name)
        and not any(p == prefix + name or p.startswith(prefix + name + ".") for p in site_paths))
    error = "no recorded execution"
    first_error = ""  # the simplest trace's error names the owner's own code: the one the report shows
    every_call_direct = all("direct" in sites[i].flags for inv in invocations for i in routed(inv))
    attempts = [(frozenset(), False), *([(inline, False)] if inline else []),
                (frozenset(), True), *([(inline, True)] if inline else [])]
    tried = []
    for inline_ids, fix in attempts:
        concrete = _concrete_args(owner, invocations[0], fix)
        if concrete is None:
            error = "its forward arguments cannot be made concrete (*args/**kwargs or opaque values)"
            break
        if (inline_ids, concrete.keys()) in tried:
            continue  # no scalar arguments: fixing them changes nothing
        if fix and every_call_direct:
            frozen = ", ".join(f"{k}={v!r}" for k, v in concrete.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool))
            first_error += (f"; fixing its number arguments ({frozen}) would freeze them at the example's values, "
                      "so the eager fallback keeps them dynamic")
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
        except Exception as exc:  # noqa: BLE001 - any tracing failure means "try the next way"
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            first_error = first_error or error
            logger.debug("fx trace of %s failed (children traced through: %d, scalars fixed: %s): %s",
                         owner_path, len(inline_ids), fix, error, exc_info=True)
            continue
        if fix:
            logger.warning("%s: traced with its number arguments fixed at the example's values (%s); other "
                           "values fail an assert in the rewritten forward", owner_path, concrete)
        return OwnerPlan(owner_path, "fx", positions, graph=graph, in_place=in_place)
    error = first_error or error
    logger.debug("%s uses the eager fallback: %s", owner_path, error)
    direct = [[i for i in routed(inv) if "direct" in sites[i].flags] for inv in invocations]
    return OwnerPlan(owner_path, "eager fallback", direct, why_not_fx=error, in_place=in_place)


def compile_forward(graph: fx.Graph, name: str) -> Callable[..., Any]:
    """Compile ``graph`` into a plain ``forward(self, ...)`` function (source kept in linecache).

    Example:
        >>> import torch.fx as fx, torch.nn as nn
        >>> g = fx.symbolic_trace(nn.ReLU()).graph
        >>> fn = compile_forward(g, "ReLU")
        >>> fn.__name__
        'forward'
    """
    code = graph.python_code(root_module="self")
    return _exec_forward(code.src, dict(code.globals), name)


def _exec_forward(source: str, namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    filename = f"<dysample_swap generated forward of {name} #{next(_SOURCE_IDS)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - fx-generated code
    return namespace["forward"]


def _portable_globals(namespace: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """The generated code's globals, modules by name (objects pickle by reference themselves)."""
    return {name: ("module", value.__name__) if isinstance(value, ModuleType) else ("object", value)
            for name, value in namespace.items() if name != "__builtins__"}


def _resolve_globals(portable: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    return {name: importlib.import_module(value) if kind == "module" else value
            for name, (kind, value) in portable.items()}


@dataclass
class Rewrite:
    """How an owner's forward was replaced; enough to rebuild it in a fresh interpreter.

    ``kind`` is ``"fx"`` (``source`` and ``globals`` of the generated forward, the pytree
    signature as ``treespec_dumps`` strings) or ``"eager fallback"`` (``routes``: the k-th direct
    interpolate call -> ``(DySample child name, size passed as one int)``, and the ``inner``
    rewrite whose forward it wraps when the owner was already rewritten by an earlier swap).

    Example:
        >>> Rewrite("eager fallback", routes={0: ("dysample_0", False)}).kind
        'eager fallback'
    """

    kind: str
    source: str = ""
    globals: dict[str, tuple[str, Any]] = field(default_factory=dict)
    specs: dict[str, str] = field(default_factory=dict)
    routes: dict[int, tuple[str, bool]] = field(default_factory=dict)
    inner: Rewrite | None = None

    def forward(self, base: type) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The forward function this rewrite installs on a subclass of ``base``, and extra class attributes.

        Example:
            >>> fn, extra = Rewrite("eager fallback", routes={}).forward(nn.Identity)
            >>> fn.__name__, extra
            ('forward', {})
        """
        if self.kind == "eager fallback":
            original, extra = self.inner.forward(base) if self.inner is not None else (base.forward, {})
            return _eager_forward(original, self.routes), extra
        forward = _exec_forward(self.source, _resolve_globals(self.globals), base.__name__)
        return forward, {name: pytree.treespec_loads(spec) for name, spec in self.specs.items()}


def _rebuild(base: type, rewrite: Rewrite) -> nn.Module:
    """Unpickling: a bare instance of ``base`` with the rewrite installed (its state is set after)."""
    module = base.__new__(base)
    _install(module, rewrite)
    return module


def _reduce_ex(self: nn.Module, protocol: int) -> Any:
    cls = type(self)
    return _rebuild, (cls._dysample_swap_base, cls._dysample_swap_rewrite), self.__getstate__()


def _install(owner: nn.Module, rewrite: Rewrite) -> None:
    """Give ``owner`` its own subclass of its class whose ``forward`` is the rewritten one.

    The subclass keeps the class name, module and docstring (``isinstance`` holds), pickles
    through :class:`Rewrite`, and remembers its base for :func:`restore`.
    """
    cls = type(owner)
    if is_rewritten(owner):  # swapped before: build on the original class (fx code already holds the old rewrite)
        if rewrite.kind == "eager fallback":
            rewrite.inner = cls._dysample_swap_rewrite
        cls = cls._dysample_swap_base
    forward, extra = rewrite.forward(cls)
    namespace = {"forward": forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                 "__doc__": cls.__doc__, "__reduce_ex__": _reduce_ex, "_dysample_swap_base": cls,
                 "_dysample_swap_rewrite": rewrite, **extra}
    owner.__class__ = type(cls.__name__, (cls,), namespace)


def is_rewritten(module: nn.Module) -> bool:
    """True when ``module``'s forward was replaced by :func:`apply_fx` or :func:`apply_eager`.

    Example:
        >>> is_rewritten(nn.ReLU())
        False
    """
    return "_dysample_swap_base" in type(module).__dict__


def restore(owner: nn.Module) -> None:
    """Give a rewritten ``owner`` its original class (and so its original forward) back.

    Example:
        >>> import torch.nn.functional as F
        >>> class Up(nn.Module):
        ...     def forward(self, x):
        ...         return F.interpolate(x, scale_factor=2.0)
        >>> up = Up()
        >>> apply_eager(up, [])
        >>> restore(up)
        >>> type(up) is Up
        True
    """
    if not is_rewritten(owner):
        raise ValueError(f"{type(owner).__name__} was not rewritten by dysample_swap")
    owner.__class__ = type(owner).__dict__["_dysample_swap_base"]


def free_name(owner: nn.Module, position: int) -> str:
    """A child name ``dysample_<position>`` not yet used on ``owner``.

    Example:
        >>> free_name(nn.Module(), 3)
        'dysample_3'
    """
    name = f"dysample_{position}"
    while hasattr(owner, name):
        name += "_"
    return name


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
    graph.owning_module = owner  # validation had attached a temporary GraphModule
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
    _install(owner, Rewrite("fx", code.src, _portable_globals(code.globals), specs))


class _EagerRouter(TorchFunctionMode):
    """Routes the k-th interpolate call made directly by ``owner``'s code to a DySample."""

    def __init__(self, owner: nn.Module, routes: dict[int, tuple[str, bool]]) -> None:
        super().__init__()
        self.owner = owner
        self.routes = routes
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is not F.interpolate:
            return func(*args, **kwargs)
        here = sys._getframe()
        frame, _ = first_user_frame(here)
        if (frame is None or frame.f_locals.get("self") is not self.owner
                or calling_module(here) is not self.owner):
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


def _eager_forward(original: Callable[..., Any], routes: dict[int, tuple[str, bool]]) -> Callable[..., Any]:
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with _EagerRouter(self, routes):
            return original(self, *args, **kwargs)

    forward.__doc__ = original.__doc__
    forward.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    return forward


def apply_eager(owner: nn.Module, replacements: list[Replacement]) -> None:
    """Install the eager fallback: the k-th direct interpolate call goes to the k-th replacement.

    Example:
        >>> import torch, torch.nn as nn, torch.nn.functional as F
        >>> from dysample_swap.upsamplers.dysample.module import DySample
        >>> class Up(nn.Module):
        ...     def forward(self, x):
        ...         return F.interpolate(x, scale_factor=2.0)
        >>> up = Up()
        >>> apply_eager(up, [Replacement(0, "dysample_0", DySample(4, anchor="nearest"))])
        >>> isinstance(up, Up), up(torch.rand(1, 4, 3, 3)).shape
        (True, torch.Size([1, 4, 6, 6]))
    """
    routes = {}
    for rep in replacements:
        owner.add_module(rep.name, rep.module)
        routes[rep.position] = (rep.name, rep.size_is_int)
    _install(owner, Rewrite("eager fallback", routes=routes))
