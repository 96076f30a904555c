"""ultralytics YOLO: swap a ``YOLO`` object's upsamplers so that its own training keeps DySample.

``yolo.train()`` does not train ``yolo.model``. Its trainer builds a new network from the model's
YAML (``trainer.get_model(cfg=..., weights=...)``, with the data set's class count), copies over
the weights whose names and shapes fit, and only then builds the optimizer and the EMA. A swap
made on ``yolo.model`` alone is silently dropped there. :func:`swap_yolo` swaps ``yolo.model``
and adds an ``on_pretrain_routine_start`` callback to the ``YOLO`` object. Every trainer that the
object creates runs that callback before it builds its network; the callback wraps that trainer's
``get_model`` so the network it returns is swapped the same way, and the DySample tensors of
``weights`` are carried over where name and shape match. The optimizer, the EMA, the ``last.pt`` /
``best.pt`` checkpoints (whole pickled networks) and the network that ``train()`` reloads from
them then all hold the DySample modules.

Not carried: multi-GPU DDP training (``device="0,1"``) starts worker processes that rebuild the
network before any callback can act on every rank. It is refused with a ``RuntimeError`` raised
in the workers. ``yolo.tune()`` trains in ``yolo train`` subprocesses that rebuild the network
from YAML and run no callback of this object, so tuning does not keep the swap.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from dysample_swap.integrations import is_ultralytics_model
from dysample_swap.surgery.example_inputs import first_conv_channels
from dysample_swap.surgery.persist import replay
from dysample_swap.surgery.record import check_entries, swap_record
from dysample_swap.surgery.report import history
from dysample_swap.surgery.sites import join_path
from dysample_swap.surgery.swap import REPORT_ATTRIBUTE, SwapReport, framework_swap, swap_upsamplers

DEFAULT_VARIANT = "dysample+"
"""The variant :func:`swap_yolo` uses when none is given and the network is not swapped yet."""

DDP_MESSAGE = (
    "dysample_swap: multi-GPU (DDP) training cannot keep the DySample swap. ultralytics starts one "
    "worker process per GPU, and each worker rebuilds the network from its YAML; only the first worker "
    "runs the callback that swaps it, so the workers would train different networks. Train on one "
    "device (device=0 or device='cpu')."
)


class GuidedLayer(nn.Module):
    """A layer of an ultralytics network that calls a guided upsampler with its guide.

    ultralytics runs its layer list itself: a layer whose ``.f`` is a list gets ``[x if j == -1 else
    y[j] for j in f]``. This layer takes the replaced ``nn.Upsample``'s place with ``.f = [its f,
    index]`` (``index``: the layer whose output the upsampled tensor is concatenated with), keeps its
    ``.i``, ``.type`` and ``.np``, and calls ``upsampler(x, guide)``. The network's ``save`` list
    already keeps that output (the concatenation reads it).

    Example:
        >>> from types import SimpleNamespace
        >>> up = nn.Upsample(scale_factor=2.0)
        >>> up.i, up.f, up.type, up.np = 10, -1, "torch.nn.modules.upsampling.Upsample", 0
        >>> layer = GuidedLayer(nn.Identity(), up, 6)
        >>> layer.f, layer.i
        ([-1, 6], 10)
    """

    def __init__(self, upsampler: nn.Module, layer: nn.Module, index: int) -> None:
        super().__init__()
        self.upsampler = upsampler
        self.f = [getattr(layer, "f", -1), index]
        self.i = getattr(layer, "i", None)
        self.__dict__["type"] = getattr(layer, "type", type(layer).__name__)  # ultralytics' name, over Module.type()
        self.np = sum(p.numel() for p in upsampler.parameters())

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x, guide = inputs
        return self.upsampler(x, guide)


def guide_index(network: nn.Module, producer: str) -> int | None:
    """The index in the layer list of the layer that produced a guide (``"model.6"`` -> 6), if it is one.

    Example:
        >>> guide_index(nn.Identity(), "model.6"), guide_index(nn.Identity(), "model.6.cv1")
        (6, None)
    """
    head, _, index = producer.partition(".")
    return int(index) if head == "model" and index.isdigit() else None


def default_yolo_input(network: nn.Module) -> torch.Tensor:
    """The discovery input for an ultralytics network: ``1 x C x S x S`` seeded noise.

    ``S`` is twice the largest stride (at least 64), so the coarsest feature map is 2x2; ``C`` is the
    input channels of the first convolution. Device and dtype are those of the network.

    Example:
        >>> import torch.nn as nn
        >>> default_yolo_input(nn.Sequential(nn.Conv2d(4, 8, 3))).shape
        torch.Size([1, 4, 64, 64])
    """
    channels = first_conv_channels(network)
    if channels is None:
        raise ValueError(
            f"{type(network).__name__} has no Conv2d to take the input channels from; "
            "pass example_inputs=(torch.zeros(1, C, H, W),)"
        )
    stride = getattr(network, "stride", None)
    largest = int(torch.as_tensor(stride).max()) if stride is not None else 32
    side = max(64, 2 * largest)
    first = next(network.parameters())
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, channels, side, side, generator=generator).to(first.device, first.dtype)


def _swaps(network: nn.Module) -> list[dict[str, Any]]:
    """The swap record's entries of a swapped network, checked as replayable (a clear ``ValueError`` if not)."""
    record = swap_record(network)
    return check_entries(record["swaps"] if record is not None else [], "this YOLO network's swap")


def _weights_module(weights: Any) -> nn.Module | None:
    """The network in a trainer's ``weights`` argument (a module, or a checkpoint dict as ``load`` takes)."""
    if isinstance(weights, dict):
        weights = weights.get("ema") or weights.get("model")
    return weights if isinstance(weights, nn.Module) else None


def _carry_new_module_weights(network: nn.Module, weights: Any, modules: list[str]) -> int:
    """Copy the tensors of the new ``modules`` from ``weights`` where name and shape match; return the count."""
    source = _weights_module(weights)
    if source is None:
        return 0
    state = source.state_dict()
    prefixes = tuple(f"{path}." for path in modules)
    offered = {key for key in state if key.startswith(prefixes)}
    target = {key: value for key, value in network.state_dict().items() if key.startswith(prefixes)}
    carried = {key: state[key] for key, value in target.items() if key in state and state[key].shape == value.shape}
    network.load_state_dict(carried, strict=False)
    left = sorted(offered - carried.keys())
    if left:
        warnings.warn(
            f"dysample_swap: {len(left)} tensors of the weights' upsamplers do not fit the "
            f"trainer's network and were not carried over: {left}",
            stacklevel=3,
        )
    return len(carried)


def _swapping_get_model(get_model: Callable[..., nn.Module], swaps: list[dict[str, Any]]) -> Callable[..., nn.Module]:
    """Wrap a trainer's bound ``get_model``: the network it returns gets the recorded ``swaps`` replayed."""
    signature = inspect.signature(get_model)

    @functools.wraps(get_model)
    def get_model_swapped(*args: Any, **kwargs: Any) -> nn.Module:
        from ultralytics.utils import LOGGER

        network = get_model(*args, **kwargs)
        weights = signature.bind(*args, **kwargs).arguments.get("weights")
        with framework_swap():
            replay(network, swaps, "the trainer's network (rebuilt by ultralytics from its YAML)")
        reports = history(network)
        modules = [join_path(d.owner, d.replacement) for report in reports for d in report.swapped]
        carried = _carry_new_module_weights(network, weights, list(dict.fromkeys(modules)))
        LOGGER.info(
            f"dysample_swap: {sum(len(r.swapped) for r in reports)} upsampling sites of the trainer's network "
            f"swapped for {', '.join(r.variant for r in reports)} (+{sum(r.parameters_added for r in reports):,} "
            f"parameters); {carried} of their tensors carried over from the weights"
        )
        return network

    return get_model_swapped


class KeepSwapInTraining:
    """The ``on_pretrain_routine_start`` callback that :func:`swap_yolo` adds to a ``YOLO`` object.

    Each trainer runs it before building its network. It wraps that trainer's ``get_model`` so the
    network it builds gets the ``YOLO`` object's swap record replayed (the same sites, checked) and
    the swapped layers' weights from ``weights`` where they fit. It refuses multi-GPU DDP runs (see the module docstring).

    Example:
        >>> KeepSwapInTraining([]).swaps
        []
    """

    def __init__(self, swaps: list[dict[str, Any]]) -> None:
        self.swaps = swaps

    def __call__(self, trainer: Any) -> None:
        if trainer.world_size > 1:
            raise RuntimeError(DDP_MESSAGE)
        trainer.get_model = _swapping_get_model(trainer.get_model, self.swaps)


def _check_reattach(report: SwapReport, variant: str | None, example_inputs: Any, policy: dict[str, Any]) -> None:
    extra = {k: v for k, v in policy.items() if k != "verbose"}
    if (variant is not None and variant != report.variant) or example_inputs is not None or extra:
        raise ValueError(
            f"this YOLO network is already swapped (variant {report.variant!r}, options "
            f"{report.policy!r}); call swap_yolo(yolo) with no other variant or options to keep "
            "that swap in training, or start again from the unswapped model"
        )


def swap_yolo(yolo: Any, variant: str | None = None, example_inputs: Any = None, **policy: Any) -> Any:
    """Swap the upsamplers of an ultralytics ``YOLO`` object for DySample so that its training keeps them.

    ``yolo.model`` is swapped in place by :func:`~dysample_swap.surgery.swap.swap_upsamplers`: each
    ``nn.Upsample`` layer of the network's layer list becomes a DySample that keeps ultralytics'
    ``.i``, ``.f``, ``.type`` and ``.np``. The object also gets a training callback
    (:class:`KeepSwapInTraining`), so ``yolo.train(...)`` trains the swapped network: the DySample
    parameters are in its optimizer and its EMA, in ``last.pt`` / ``best.pt``, and in the network that
    ``train()`` reloads at the end. ``val``, ``predict`` and ``export`` run ``yolo.model`` as it is.
    ``swap_upsamplers(yolo, ...)`` calls this function.

    A network that is already swapped, such as ``YOLO("best.pt")`` of a swapped run, is not swapped
    again: only the callback is attached, with the recorded swap. Training such a checkpoint needs it.

    Args:
        yolo: an ultralytics ``Model`` (``YOLO``, ``RTDETR``, ...) holding a PyTorch network.
        variant: the DySample variant; default ``"dysample+"`` (the recorded one when already swapped).
        example_inputs: discovery inputs; default :func:`default_yolo_input` (``1x3x64x64`` for YOLOv8).
        **policy: :class:`~dysample_swap.surgery.policy.SwapPolicy` options, as for ``swap_upsamplers``.

    Returns:
        ``yolo`` itself.

    Raises:
        TypeError: ``yolo`` is not an ultralytics model, or holds an exported (non-PyTorch) model.
        ValueError: an already swapped network is given another variant or options.

    Example:
        >>> from ultralytics import YOLO  # doctest: +SKIP
        >>> yolo = swap_yolo(YOLO("yolov8n.yaml"), "dysample+")  # doctest: +SKIP
        >>> yolo.train(data="data.yaml", epochs=1, imgsz=64, device="cpu")  # doctest: +SKIP
        >>> type(YOLO(yolo.trainer.best).model.model[10]).__name__  # doctest: +SKIP
        'DySample'
    """
    if not is_ultralytics_model(yolo):
        raise TypeError(f"swap_yolo takes an ultralytics Model such as YOLO(...), got {type(yolo).__name__}")
    network = yolo.model
    if not isinstance(network, nn.Module):
        raise TypeError(
            f"this {type(yolo).__name__} holds {network!r}, not a PyTorch network; only "
            "PyTorch models (.yaml or .pt) can be swapped"
        )
    report = getattr(network, REPORT_ATTRIBUTE, None)
    if isinstance(report, SwapReport):
        _check_reattach(report, variant, example_inputs, policy)
    else:
        inputs = example_inputs if example_inputs is not None else (default_yolo_input(network),)
        with framework_swap():
            swap_upsamplers(network, variant or DEFAULT_VARIANT, inputs, **policy)
    event = "on_pretrain_routine_start"
    yolo.callbacks[event] = [c for c in yolo.callbacks[event] if not isinstance(c, KeepSwapInTraining)]
    yolo.add_callback(event, KeepSwapInTraining(_swaps(network)))
    yolo.predictor = None  # predict() sets its network up again (ultralytics does the same after load())
    return yolo
