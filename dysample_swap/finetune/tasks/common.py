"""What every task adapter shares: class colours and turning images back into pictures.

Example:
    >>> len(PALETTE) >= 16
    True
"""

from __future__ import annotations

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
