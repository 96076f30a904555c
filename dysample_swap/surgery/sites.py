"""Runtime discovery of upsampling call sites.

One eager forward on the example input runs under a :class:`torch.overrides.TorchFunctionMode`
that sees every ``F.interpolate`` call however it was reached (``F.interpolate``,
``F.upsample``, ``F.upsample_bilinear``, ``F.upsample_nearest``,
``from torch.nn.functional import interpolate as resize``, ``nn.Upsample`` and its subclasses).
Per-module forward hooks (removed afterwards) keep a stack of the modules being run, so each
call is attributed to the innermost module:

* a call made by an ``nn.Upsample``-family module is ``kind="module"`` with that module's path;
* any other call is ``kind="function"`` with the path of the module whose forward makes it.

The root module's path is written ``"<root>"``.  The forward runs once, in eval mode under
``torch.no_grad()``; every module's ``training`` flag is restored afterwards and nothing else is
touched.

Example:
    >>> import torch, torch.nn as nn
    >>> from dysample_swap.surgery.sites import discover
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Upsample(scale_factor=2))
    >>> found = discover(net, torch.rand(1, 3, 8, 8))
    >>> [(s.path, s.kind, s.output_shape) for s in found.sites]
    [('1', 'module', (1, 8, 16, 16))]
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dysample_swap import _torch_compat

ROOT = "<root>"
"""How the path of the model itself is written in sites and reports."""

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # dysample_swap/
_INTERPOLATE_SIG = inspect.signature(F.interpolate)
_POOLING_NAMES = frozenset(
    {"adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}
)
_METADATA_ONLY = frozenset(
    {
        "__get__",
        "size",
        "dim",
        "ndimension",
        "numel",
        "nelement",
        "stride",
        "is_contiguous",
        "data_ptr",
        "element_size",
        "is_floating_point",
        "is_complex",
        "get_device",
        "__len__",
    }
)
"""Tensor methods that read a tensor's metadata, not its values: they do not count as using a result."""
_FUSIONS = {name: "add" for name in ("add", "__add__", "__radd__", "add_", "__iadd__")} | {
    name: "cat" for name in ("cat", "concat", "concatenate")
}
"""Operations (by name, with what the site's ``fusion`` calls them) that fuse an upsampled tensor with another at the output resolution (FPN's lateral sum, U-Net's
skip concatenation): the other operand is the site's *guide*."""
_ALIASES = {
    F.upsample.__code__: "F.upsample",
    F.upsample_bilinear.__code__: "F.upsample_bilinear",
    F.upsample_nearest.__code__: "F.upsample_nearest",
}


@dataclass(frozen=True)
class UpsampleSite:
    """One executed upsampling call, as seen on the example input.

    Attributes:
        path: qualified name of the ``nn.Upsample``-family module (``kind="module"``) or of the
            module whose forward makes the functional call (``kind="function"``); ``"<root>"``
            for the model itself.
        kind: ``"module"`` or ``"function"``.
        mode: interpolation mode (``"nearest"``, ``"bilinear"``, ...).
        align_corners: as passed (``None`` when not given).
        scale: ``scale_factor`` as passed, one float per spatial dim (``None`` when ``size``
            was given).
        size: ``size`` as passed, one int per spatial dim (``None`` when ``scale_factor`` was
            given).  Its value is the one seen on the example input.
        in_channels: channels of the tensor that flowed through the call.
        input_shape / output_shape: full shapes on the example input.
        source: ``file:line in function`` of the calling Python code (for module sites, where the
            module was called).
        function: the API used (``"F.interpolate"``, ``"F.upsample_bilinear"``, ``"nn.Upsample"``...).
        owner: path of the module whose forward contains the call (the site's own path for
            functional calls, the calling module for module sites).  Rewrites happen there.
        owner_call: which execution of ``owner`` (0 for the first) made the call.
        order: position of the call among the calls ``owner`` made in that execution.
        helper: name of the helper function that made the call when it is not code of the
            owner itself (e.g. ``"paste_mask_in_image"``), else ``None``.
        flags: facts used by the policy: ``"final"`` (the result is an output of the model),
            ``"unused"`` (no later operation of the forward reads the result, and it is not an
            output: e.g. an auxiliary head's logits that only a training loss would read),
            ``"pooled"`` (the input comes from adaptive pooling), ``"input"`` (runs before any
            layer with parameters), ``"size_int"`` (``size`` passed as a single int),
            ``"recompute"`` (``recompute_scale_factor=True``), ``"antialias"``, ``"direct"``
            (the calling Python frame is code of ``owner`` itself, so the eager fallback can
            route it), ``"per_item"`` (set by the policy's :func:`~dysample_swap.surgery.policy.mark_per_item`).
        fusion: when the first operation that reads the result fuses it with another tensor at the
            output resolution (``"add"``, ``"cat"``...: an FPN lateral, a U-Net skip), or the first fusion of a
            tensor computed from it at its resolution (``guide_arg``), that operation's name.
        guide_shape: the shape of that other tensor, the *guide* a guided upsampler (FADE, SAPA, ...)
            reads (``None`` without a fusion).
        guide_producer: the path of the module whose output the guide is, ``"<input>"`` for a model
            input, or ``"<computed>"`` when code computed it outside a module.
        guide_arg: when the fusion is not the first operation that reads the result (smp's MAnet
            multiplies it by an attention map first, then concatenates the skip), the fusion is that
            of a tensor computed from the result at its resolution, and this is the name of the owner's
            forward argument that the guide is (``None`` when it is none of them).

    Observations only: what was decided for a site (action, reason, scale, replacement) is a
    :class:`~dysample_swap.surgery.policy.SiteDecision`.

    Example:
        >>> site = UpsampleSite(path="up", kind="module", mode="nearest", align_corners=None,
        ...     scale=(2.0, 2.0), size=None, in_channels=8, input_shape=(1, 8, 4, 4),
        ...     output_shape=(1, 8, 8, 8), source="net.py:12 in forward")
        >>> site.ratio
        (2.0, 2.0)
    """

    path: str
    kind: str
    mode: str
    align_corners: bool | None
    scale: tuple[float, ...] | None
    size: tuple[int, ...] | None
    in_channels: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    source: str
    function: str = "F.interpolate"
    owner: str = ROOT
    owner_call: int = 0
    order: int = 0
    helper: str | None = None
    flags: frozenset[str] = field(default_factory=frozenset)
    fusion: str | None = None
    guide_shape: tuple[int, ...] | None = None
    guide_producer: str | None = None
    guide_arg: str | None = None

    @property
    def ratio(self) -> tuple[float, ...]:
        """Output/input size ratio per spatial dim (empty for tensors without spatial dims).

        Example:
            >>> UpsampleSite("p", "function", "nearest", None, None, (8, 8), 4, (1, 4, 2, 2),
            ...              (1, 4, 8, 8), "x.py:1 in f").ratio
            (4.0, 4.0)
        """
        return tuple(o / i if i else math.inf for i, o in zip(self.input_shape[2:], self.output_shape[2:]))

    def replace(self, **changes: Any) -> UpsampleSite:
        """Return a copy with some fields changed.

        Example:
            >>> s = UpsampleSite("p", "function", "nearest", None, None, (8, 8), 4,
            ...                  (1, 4, 4, 4), (1, 4, 8, 8), "x.py:1 in f")
            >>> s.replace(in_channels=8).in_channels
            8
        """
        return dataclasses.replace(self, **changes)


@dataclass
class Invocation:
    """One execution of a module that made upsampling calls: what it got and what it returned.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2))
        >>> with discovery_context(net):
        ...     inv = discover(net, torch.rand(1, 3, 2, 2)).invocations[("<root>", 0)]
        >>> inv.sites, inv.output.shape
        ([0], torch.Size([1, 4, 4, 4]))
    """

    module: nn.Module
    path: str
    call: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any = None
    sites: list[int] = field(default_factory=list)  # indices into Discovery.sites


@dataclass
class Discovery:
    """The result of one discovery forward.

    Attributes:
        sites: every executed call, in execution order.
        invocations: ``(owner path, execution number) -> Invocation`` for every module
            execution that made at least one call (arguments kept for tracing).
        example_inputs: the inputs the forward ran on.
        outputs: what the model returned.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2))
        >>> with discovery_context(net):
        ...     found = discover(net, torch.rand(1, 3, 2, 2))
        >>> len(found.sites), found.outputs.shape
        (1, torch.Size([1, 4, 4, 4]))
    """

    sites: list[UpsampleSite]
    invocations: dict[tuple[str, int], Invocation]
    example_inputs: tuple[Any, ...]
    outputs: Any


def module_at(model: nn.Module, path: str) -> nn.Module:
    """Return the submodule at ``path`` (``"<root>"`` is the model itself).

    Example:
        >>> net = nn.Sequential(nn.Identity())
        >>> module_at(net, "0") is net[0], module_at(net, "<root>") is net
        (True, True)
    """
    return model if path == ROOT else model.get_submodule(path)


def join_path(parent: str, child: str) -> str:
    """Join a module path and a relative name (``"<root>"`` aware).

    Example:
        >>> join_path("<root>", "up"), join_path("decoder", "up")
        ('up', 'decoder.up')
    """
    return child if parent == ROOT else f"{parent}.{child}"


def is_upsample_module(module: nn.Module) -> bool:
    """True for ``nn.Upsample``, ``nn.UpsamplingBilinear2d``, ``nn.UpsamplingNearest2d``, and
    subclasses that keep ``nn.Upsample``'s forward (one that overrides it may do more than resize,
    so its calls count as functional calls of that module).

    Example:
        >>> is_upsample_module(nn.UpsamplingNearest2d(scale_factor=2))
        True
    """
    return isinstance(module, nn.Upsample) and type(module).forward is nn.Upsample.forward


def _short_file(filename: str) -> str:
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith("..") else rel


def _is_library_frame(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    return filename.startswith((_TORCH_DIR, _PACKAGE_DIR))


def first_user_frame(frame: FrameType | None) -> tuple[FrameType | None, str]:
    """Walk out of torch (and this package) from ``frame``; return the first other frame and the API name.

    The API name is ``"F.upsample"`` & co when one of those wrappers was on the way, else
    ``"F.interpolate"``.

    Example:
        >>> import sys
        >>> frame, api = first_user_frame(sys._getframe())
        >>> api
        'F.interpolate'
    """
    api = "F.interpolate"
    while frame is not None and _is_library_frame(frame):
        api = _ALIASES.get(frame.f_code, api)
        frame = frame.f_back
    return frame, api


def calling_module(frame: FrameType | None) -> nn.Module | None:
    """The innermost module being called at ``frame``, skipping ``nn.Upsample``-family modules.

    This is the module a call is attributed to (the owner): the module whose forward makes a
    functional call, or the caller of an ``nn.Upsample``.

    Example:
        >>> import sys
        >>> class Probe(nn.Module):
        ...     def forward(self, x):
        ...         return calling_module(sys._getframe())
        >>> probe = Probe()
        >>> probe(None) is probe
        True
    """
    call_impl = _torch_compat.call_impl_code()
    while frame is not None:
        if frame.f_code is call_impl:
            module = frame.f_locals.get("self")
            if isinstance(module, nn.Module) and not is_upsample_module(module):
                return module
        frame = frame.f_back
    return None


def _as_tuple(value: Any, ndim: int, kind: type) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, torch.Size)):
        return tuple(kind(v) for v in value)
    return (kind(value),) * ndim


def _tensors(values: Any) -> Iterator[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


class _Recorder(TorchFunctionMode):
    """Records interpolate calls and marks tensors derived from adaptive pooling."""

    def __init__(self, names: dict[int, str], inputs: list[torch.Tensor]) -> None:
        super().__init__()
        self.names = names
        self.inputs = inputs  # the model's example input tensors (a guide may be one)
        self.stack: list[Invocation] = []
        self.counts: dict[str, int] = {}
        self.invocations: dict[tuple[str, int], Invocation] = {}
        self.sites: list[UpsampleSite] = []
        self.outputs: list[torch.Tensor] = []
        self.unread: dict[int, int] = {}  # id of a site's output -> its site index, until an op reads it
        self.pooled: dict[int, torch.Tensor] = {}
        self.learned_layer_ran = False
        self.produced: dict[int, tuple[str, torch.Tensor]] = {}  # id of a module's output -> (path, tensor)
        self.guides: dict[int, dict[str, Any]] = {}  # site index -> its fusion, guide shape and producer
        self.owners: dict[int, Invocation] = {}  # site index -> the execution of its owner
        # tensors computed from a site's result at its resolution, while the site waits for its fusion
        self.following: dict[int, tuple[int, torch.Tensor]] = {}

    # -- module stack ---------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        path = self.names.get(id(module), f"<unnamed {type(module).__name__}>")
        call = self.counts.get(path, 0)
        self.counts[path] = call + 1
        self.stack.append(Invocation(module, path, call, args, dict(kwargs)))
        if not self.learned_layer_ran and next(module.parameters(recurse=False), None) is not None:
            self.learned_layer_ran = True

    def post_hook(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            self.produced[id(output)] = (self.names.get(id(module), type(module).__name__), output)
        while self.stack:
            inv = self.stack.pop()
            if inv.sites:
                inv.output = output
                self.invocations[(inv.path, inv.call)] = inv
            if inv.module is module:
                break

    # -- torch function mode --------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first_reads: list[int] = []  # sites whose result this op reads first, without fusing it
        follows: set[int] = set()  # sites a tensor computed from whose result this op reads
        if (self.unread or self.following) and name not in _METADATA_ONLY:
            operands = _flat_tensors((args, kwargs))
            for t in operands:
                index = self.unread.get(id(t))
                if index is not None and self.outputs[index] is t:
                    del self.unread[id(t)]
                    if name in _FUSIONS:
                        self._note_guide(index, name, [t], operands)
                    else:
                        first_reads.append(index)
                        self.following[id(t)] = (index, t)  # later reads of the result itself count too
                followed = self.following.get(id(t))
                if followed is not None and followed[1] is t and followed[0] not in self.guides:
                    follows.add(followed[0])
            for index in follows:
                if name in _FUSIONS:
                    mine = [t for i, t in self.following.values() if i == index]
                    self._note_guide(index, name, mine, operands, indirect=True)
        if func is F.interpolate:
            return self._interpolate(args, kwargs)
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dim() == 4 and name not in _FUSIONS:
            for index in (*first_reads, *follows):
                if out.shape[0] == self.outputs[index].shape[0] and out.shape[2:] == self.outputs[index].shape[2:]:
                    self.following[id(out)] = (index, out)
        if getattr(func, "__name__", "") in _POOLING_NAMES:
            for t in _tensors(out if isinstance(out, tuple) else (out,)):
                self.pooled[id(t)] = t
        elif self.pooled and isinstance(out, torch.Tensor) and out.dim() >= 3:
            # context stays "pooled" while it keeps the pooled spatial size (conv/BN/ReLU...)
            for t in _tensors((*args, *kwargs.values())):
                if id(t) in self.pooled and t.dim() >= 3 and t.shape[-2:] == out.shape[-2:]:
                    self.pooled[id(out)] = out
                    break
        return out

    def _note_guide(
        self, index: int, fusion: str, mine: list[torch.Tensor], operands: list[torch.Tensor], indirect: bool = False
    ) -> None:
        """``fusion`` reads site ``index``'s result (or, ``indirect``, a tensor computed from it at its resolution,
        ``mine``): the first other operand at that resolution is the guide."""
        out = self.outputs[index]
        for t in operands:
            if (
                not any(t is m for m in mine)
                and t.dim() == 4
                and t.shape[0] == out.shape[0]
                and t.shape[2:] == out.shape[2:]
            ):
                produced = self.produced.get(id(t))
                if produced is not None and produced[1] is t:
                    producer = produced[0]
                elif any(t is x for x in self.inputs):
                    producer = "<input>"
                else:
                    producer = "<computed>"
                self.guides[index] = {
                    "fusion": _FUSIONS[fusion],
                    "guide_shape": tuple(t.shape),
                    "guide_producer": producer,
                    "guide_arg": self._argument_name(index, t) if indirect else None,
                }
                return

    def _argument_name(self, index: int, guide: torch.Tensor) -> str | None:
        """The name of the forward argument of site ``index``'s owner that ``guide`` is (``None``: none is)."""
        inv = self.owners.get(index)
        if inv is None:
            return None
        try:
            bound = inspect.signature(inv.module.forward).bind(*inv.args, **inv.kwargs)
        except TypeError:
            return None
        return next((key for key, value in bound.arguments.items() if value is guide), None)

    def _interpolate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        bound = _INTERPOLATE_SIG.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        x: torch.Tensor = a["input"]
        out = F.interpolate(*bound.args, **bound.kwargs)
        self._record(a, x, out)
        return out

    def _record(self, a: dict[str, Any], x: torch.Tensor, out: torch.Tensor) -> None:
        frame, api = first_user_frame(sys._getframe())
        top = self.stack[-1] if self.stack else None
        owner: Invocation | None
        if top is not None and is_upsample_module(top.module):
            kind, path, api = "module", top.path, f"nn.{type(top.module).__name__}"
            owner = self.stack[-2] if len(self.stack) > 1 else top
            if not type(top.module).__module__.startswith("torch."):
                api = type(top.module).__name__
        else:
            kind = "function"
            owner = top
            path = top.path if top is not None else ROOT
        helper = None
        source = "<unknown>"
        flags = set()
        if frame is not None:
            code = frame.f_code
            source = f"{_short_file(code.co_filename)}:{frame.f_lineno} in {code.co_name}"
            if owner is not None and frame.f_locals.get("self") is owner.module:
                flags.add("direct")
            elif kind == "function":
                helper = code.co_name
        if kind == "module":
            source = f"{api} <- {source}"
        ndim = max(x.dim() - 2, 1)
        if id(x) in self.pooled:
            flags.add("pooled")
        if not self.learned_layer_ran:
            flags.add("input")
        if a["size"] is not None and not isinstance(a["size"], (list, tuple, torch.Size)):
            flags.add("size_int")
        if a["recompute_scale_factor"]:
            flags.add("recompute")
        if a["antialias"]:
            flags.add("antialias")
        site = UpsampleSite(
            path=path,
            kind=kind,
            mode=str(a["mode"]),
            align_corners=a["align_corners"],
            scale=_as_tuple(a["scale_factor"], ndim, float) if a["size"] is None else None,
            size=_as_tuple(a["size"], ndim, int),
            in_channels=int(x.shape[1]) if x.dim() >= 2 else 0,
            input_shape=tuple(x.shape),
            output_shape=tuple(out.shape),
            source=source,
            function=api,
            owner=owner.path if owner is not None else ROOT,
            owner_call=owner.call if owner is not None else 0,
            order=len(owner.sites) if owner is not None else 0,
            helper=helper,
            flags=frozenset(flags),
        )
        if owner is not None:
            owner.sites.append(len(self.sites))
            self.owners[len(self.sites)] = owner
        self.unread[id(out)] = len(self.sites)
        self.sites.append(site)
        self.outputs.append(out)


@contextlib.contextmanager
def discovery_context(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.no_grad()`` for the duration; every ``training`` flag restored after.

    Example:
        >>> net = nn.Sequential(nn.Dropout()).train()
        >>> with discovery_context(net):
        ...     net[0].training
        False
        >>> net[0].training
        True
    """
    modes = [(m, m.training) for m in model.modules()]
    for module, _ in modes:  # not model.eval(): overridden train() methods may do more than set flags
        module.training = False
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _flat_tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor inside ``value``: through tuples, lists, sets, dicts (transformers' ``ModelOutput``
    is one) and dataclasses, a few levels deep.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Out:
        ...     logits: Any
        >>> len(_flat_tensors({"a": [torch.zeros(1)], "b": Out(torch.ones(1))}))
        2
    """
    if isinstance(value, torch.Tensor):
        return [value]
    if depth > 8:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [t for item in value for t in _flat_tensors(item, depth + 1)]
    return []


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.data_ptr() == b.data_ptr() and a.numel() == b.numel() and a.numel() > 0)


def discover(model: nn.Module, example_inputs: tuple[Any, ...] | Any) -> Discovery:
    """Run ``model`` once on ``example_inputs`` and record every upsampling call.

    Must be called inside :func:`discovery_context` when the model should not see gradients or
    train-mode side effects (``find_upsamplers`` does that); ``example_inputs`` is a tuple of
    positional arguments (a single tensor is wrapped).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.UpsamplingBilinear2d(scale_factor=2))
        >>> with discovery_context(net):
        ...     d = discover(net, torch.rand(1, 3, 4, 4))
        >>> d.sites[0].function, d.sites[0].align_corners
        ('nn.UpsamplingBilinear2d', True)
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    names: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name or ROOT)
    recorder = _Recorder(names, _flat_tensors(inputs))
    handles = []
    try:
        for module in {id(m): m for m in model.modules()}.values():
            handles.append(module.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(recorder.post_hook, with_kwargs=True, always_call=True))
        with recorder:
            outputs = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    finals = _flat_tensors(outputs)
    unread = set(recorder.unread.values())
    sites = []
    for index, (site, out) in enumerate(zip(recorder.sites, recorder.outputs)):
        site = site.replace(**recorder.guides.get(index, {}))
        if any(_same_tensor(out, f) for f in finals):
            site = site.replace(flags=site.flags | {"final"})
        elif index in unread:
            site = site.replace(flags=site.flags | {"unused"})
        sites.append(site)
    return Discovery(sites, recorder.invocations, inputs, outputs)
