"""Example inputs for discovery: defaults for common model families, and a saveable description.

Example:
    >>> import torch
    >>> describe_inputs((torch.zeros(1, 3, 8, 8),))
    [{'tensor': [1, 3, 8, 8]}]
    >>> make_inputs([{'images': [[3, 16, 20]]}])[0][0].shape
    torch.Size([3, 16, 20])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

DEFAULT_IMAGE_SIZES = ((128, 128), (224, 224), (256, 256), (512, 512))
"""Spatial sizes tried, in order, when ``example_inputs`` is omitted for an image model."""

DEFAULT_DETECTION_IMAGE = (3, 128, 160)
"""The single image used when ``example_inputs`` is omitted for a torchvision detector."""


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the first ``nn.Conv2d`` in ``model`` (``None`` without one).

    Example:
        >>> first_conv_channels(nn.Sequential(nn.ReLU(), nn.Conv2d(5, 2, 1)))
        5
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def detection_transform(model: nn.Module) -> Any:
    """The ``GeneralizedRCNNTransform`` of a torchvision detector, else ``None``.

    Example:
        >>> detection_transform(nn.Identity()) is None
        True
    """
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    transform = getattr(model, "transform", None)
    return transform if isinstance(transform, GeneralizedRCNNTransform) else None


@contextlib.contextmanager
def native_size(model: nn.Module, inputs: tuple[Any, ...]) -> Iterator[None]:
    """For torchvision detectors: skip the resize to ``min_size`` while inside (restored after).

    Discovery then runs at the example image's own size (fast), and the detector's input-resize
    call shows up as a same-size call.

    Example:
        >>> with native_size(nn.Identity(), (torch.zeros(1),)):
        ...     pass
    """
    transform = detection_transform(model)
    images = inputs[0] if inputs and isinstance(inputs[0], (list, tuple)) else None
    if transform is None or not images or not all(isinstance(i, torch.Tensor) for i in images):
        yield
        return
    saved = transform.min_size, transform.max_size
    transform.min_size = (min(min(i.shape[-2:]) for i in images),)
    transform.max_size = max(max(i.shape[-2:]) for i in images)
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


def default_inputs(model: nn.Module) -> list[tuple[Any, ...]]:
    """Candidate example inputs, in the order to try them.

    A torchvision detector gets a list of one ``3x128x160`` image; a model with a ``Conv2d`` gets
    ``1xCxHxW`` tensors for the sizes in :data:`DEFAULT_IMAGE_SIZES`: seeded uniform noise on the
    device and in the dtype of the model's first parameter.

    Raises:
        ValueError: for other models (the message asks for ``example_inputs``).

    Example:
        >>> default_inputs(nn.Conv2d(3, 4, 1))[0][0].shape
        torch.Size([1, 3, 128, 128])
    """
    first = next(model.parameters(), None)
    like: dict[str, Any] = (
        {"device": first.device, "dtype": first.dtype} if first is not None and first.is_floating_point() else {}
    )
    generator = torch.Generator().manual_seed(0)  # deterministic, and the global RNG is left alone

    def noise(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(**like)

    if detection_transform(model) is not None:
        return [([noise(*DEFAULT_DETECTION_IMAGE)],)]
    channels = first_conv_channels(model)
    if channels is None:
        raise ValueError(
            f"cannot guess an example input for {type(model).__name__} (it has no Conv2d); "
            "pass example_inputs=(tensor, ...) with what its forward expects"
        )
    return [(noise(1, channels, h, w),) for h, w in DEFAULT_IMAGE_SIZES]


def describe_inputs(inputs: tuple[Any, ...]) -> list[dict[str, Any]] | None:
    """A saveable description (shapes only) of example inputs, or ``None`` when not describable.

    Supported arguments: tensors, and lists of tensors (detector images).

    Example:
        >>> describe_inputs(([torch.zeros(3, 4, 5)],))
        [{'images': [[3, 4, 5]]}]
    """
    described: list[dict[str, Any]] = []
    for arg in inputs:
        if isinstance(arg, torch.Tensor):
            described.append({"tensor": list(arg.shape)})
        elif isinstance(arg, (list, tuple)) and arg and all(isinstance(t, torch.Tensor) for t in arg):
            described.append({"images": [list(t.shape) for t in arg]})
        else:
            return None
    return described


def make_inputs(description: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Rebuild example inputs (seeded uniform noise) from :func:`describe_inputs` output.

    Example:
        >>> make_inputs([{'tensor': [1, 3, 4, 4]}])[0].shape
        torch.Size([1, 3, 4, 4])
    """
    generator = torch.Generator().manual_seed(0)
    inputs: list[Any] = []
    for item in description:
        if "tensor" in item:
            inputs.append(torch.rand(*item["tensor"], generator=generator))
        elif "images" in item:
            inputs.append([torch.rand(*shape, generator=generator) for shape in item["images"]])
        else:
            raise ValueError(f"unknown example-input description {item!r}")
    return tuple(inputs)
