"""Models this package ships, by builder name (a model spec ``dysample_swap:NAME:k=v,...`` builds ``MODELS[NAME](**kwargs)``).

* ``panoptic_fpn_resnet50_fpn``: Panoptic FPN (Kirillov et al., CVPR 2019) on torchvision's
  Mask R-CNN, :func:`~dysample_swap.models.panoptic_fpn.panoptic_fpn_resnet50_fpn`.

This layer imports torch and torchvision only (nothing else of the package).

Example:
    >>> sorted(MODELS)
    ['panoptic_fpn_resnet50_fpn']
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from dysample_swap.models.panoptic_fpn import (
    PanopticFPN,
    SemanticFPNHead,
    merge_panoptic,
    panoptic_fpn_resnet50_fpn,
    semantic_loss,
)

MODELS: dict[str, Callable[..., nn.Module]] = {
    "panoptic_fpn_resnet50_fpn": panoptic_fpn_resnet50_fpn,
}
"""Builder name -> function returning the ``nn.Module``."""

__all__ = [
    "MODELS",
    "PanopticFPN",
    "SemanticFPNHead",
    "merge_panoptic",
    "panoptic_fpn_resnet50_fpn",
    "semantic_loss",
]
