"""DySample: the module, its functional core, its samplers and its variants.

* :mod:`.module`: :class:`DySample`, the ``nn.Module`` (the authors' arguments and state dict),
  :func:`resolve_groups`;
* :mod:`.sampling`: :func:`dysample` and :func:`dysample_sample`, the functional core (offsets,
  anchors, positions) and the pure-PyTorch samplers;
* :mod:`.native` and :mod:`.native_sampler`: the compiled CPU sampler (``csrc/``), built on first
  use, and its custom operator; :func:`compiled_sampler` says which sampler runs;
* :mod:`.variants`: ``dysample``, ``dysample+``, ``dysample-s``, ``dysample-s+`` and their
  parameter counts.

Example:
    >>> import torch
    >>> DySample.from_variant("dysample-s", in_channels=32)(torch.randn(1, 32, 5, 7)).shape
    torch.Size([1, 32, 10, 14])
"""

from __future__ import annotations

from dysample_swap.upsamplers.dysample.module import DySample, resolve_groups
from dysample_swap.upsamplers.dysample.native import compiled_sampler
from dysample_swap.upsamplers.dysample.sampling import ANCHORS, dysample, dysample_sample
from dysample_swap.upsamplers.dysample.variants import VARIANTS

__all__ = ["ANCHORS", "VARIANTS", "DySample", "compiled_sampler", "dysample", "dysample_sample", "resolve_groups"]
