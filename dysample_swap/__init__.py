"""dysample_swap: upgrade existing PyTorch dense-prediction networks with DySample.

The public API lives here; nothing else needs importing.

Example:
    >>> import torch
    >>> from dysample_swap import DySample
    >>> DySample.from_variant("dysample+", in_channels=32)(torch.randn(1, 32, 8, 8)).shape
    torch.Size([1, 32, 16, 16])
"""

from dysample_swap.dysample import DySample, resolve_groups
from dysample_swap.sampling import ANCHORS, dysample, dysample_sample
from dysample_swap.variants import VARIANTS

__all__ = [
    "ANCHORS",
    "VARIANTS",
    "DySample",
    "dysample",
    "dysample_sample",
    "resolve_groups",
]
__version__ = "0.1.0"
