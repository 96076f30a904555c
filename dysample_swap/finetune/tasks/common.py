"""What every task adapter shares: class colours and turning images back into pictures.

Example:
    >>> len(PALETTE) >= 16
    True
"""

from __future__ import annotations

from typing import Any

import torch

from dysample_swap.finetune.data.common import IMAGENET_MEAN, IMAGENET_STD

#: Colours for classes in pictures (class k uses entry k modulo the length).
PALETTE = [
    (40, 40, 40),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
]


def normalized_to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation: ``uint8 [3, H, W]``.

    Example:
        >>> normalized_to_uint8(torch.zeros(3, 1, 1)).flatten().tolist()
        [124, 116, 104]
    """
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image.float().cpu() * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


def unit_to_uint8(image: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` float image -> ``uint8 [3, H, W]``.

    Example:
        >>> unit_to_uint8(torch.ones(3, 1, 1)).flatten().tolist()
        [255, 255, 255]
    """
    return (image.float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8)


class ImageListBatches:
    """What tasks whose models take lists of images share (torchvision detectors, Panoptic FPN):
    batches ``(list of images [3, H, W] in [0, 1], list of target dicts)``.

    Example:
        >>> ImageListBatches().batch_size(([torch.zeros(3, 2, 2)] * 3, [{}] * 3))
        3
    """

    def example_inputs(self, dataset: Any) -> list[torch.Tensor]:
        """One image of ``dataset`` as the list the model takes.

        Example:
            >>> len(ImageListBatches().example_inputs([(torch.zeros(3, 4, 4), {})]))
            1
        """
        return [dataset[0][0]]

    def to_device(self, batch: Any, device: torch.device) -> tuple[list, list]:
        """Move images and every tensor of the targets to ``device``.

        Example:
            >>> images, targets = ImageListBatches().to_device(([torch.zeros(1)], [{"boxes": torch.zeros(0, 4), "image_id": 3}]), torch.device("cpu"))
            >>> targets[0]["image_id"]
            3
        """
        images, targets = batch
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
        return images, targets

    def batch_size(self, batch: Any) -> int:
        """Number of images in a batch.

        Example:
            >>> ImageListBatches().batch_size(([1, 2], [{}, {}]))
            2
        """
        return len(batch[0])

    #: The models the task takes, for the error a wrong model gets.
    model_hint = "a model that returns a loss dict in train mode"

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Sum of the model's loss dict (float32; the model must be in train mode).

        Example:
            >>> class Toy(torch.nn.Module):
            ...     def forward(self, images, targets): return {"a": torch.tensor(1.0), "b": torch.tensor(2.0)}
            >>> float(ImageListBatches().loss(Toy(), ([], [])))
            3.0
        """
        images, targets = batch
        losses = model(images, targets)
        if not isinstance(losses, dict):
            raise TypeError(
                f"the model in train mode returned {type(losses).__name__}, not a loss dict; use {self.model_hint}"
            )
        return sum(v.float() for v in losses.values())

    def image_uint8(self, image: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` float image -> ``uint8 [3, H, W]``.

        Example:
            >>> ImageListBatches().image_uint8(torch.ones(3, 1, 1)).flatten().tolist()
            [255, 255, 255]
        """
        return unit_to_uint8(image)
