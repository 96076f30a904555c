"""The rival upsamplers of the DySample paper, as standalone modules, and a registry of names.

* :mod:`.carafe`: :func:`carafe` (the reassembly operator) and :class:`CARAFEPack` (mmcv's module);
* :mod:`.deconv`: :class:`DeconvUpsampler`; :mod:`.pixelshuffle`: :class:`PixelShuffleUpsampler`;
* :mod:`.interpolate`: :class:`InterpolateUpsampler`, the no-op arm (``F.interpolate`` as the original);
* :mod:`.chain`: :class:`UpsamplerChain`, x2 stages for a x2**n upsampling;
* :mod:`.registry`: :data:`UPSAMPLERS`, :func:`create_upsampler`, :func:`exact_at_swap`;
* :mod:`.cost`: :func:`upsampler_cost`, :func:`module_cost`, :class:`UpsamplerCost`;
* helpers: :mod:`.sizing` (output sizes), :mod:`.stencils` (interpolation as stencils), :mod:`.options`.

Every module's ``forward(x, size=None, scale_factor=None)`` behaves as DySample's.

Example:
    >>> import torch
    >>> from dysample_swap.upsamplers import create_upsampler
    >>> create_upsampler("deconv", 16, 2)(torch.randn(1, 16, 15, 17), size=(45, 51)).shape
    torch.Size([1, 16, 45, 51])
"""

from __future__ import annotations

from dysample_swap.upsamplers.carafe import CARAFEPack, carafe
from dysample_swap.upsamplers.chain import UpsamplerChain
from dysample_swap.upsamplers.cost import UpsamplerCost, module_cost, upsampler_cost
from dysample_swap.upsamplers.deconv import DeconvUpsampler
from dysample_swap.upsamplers.interpolate import InterpolateUpsampler
from dysample_swap.upsamplers.options import INITS
from dysample_swap.upsamplers.pixelshuffle import PixelShuffleUpsampler
from dysample_swap.upsamplers.registry import UPSAMPLERS, create_upsampler, exact_at_swap

__all__ = [
    "INITS",
    "UPSAMPLERS",
    "CARAFEPack",
    "DeconvUpsampler",
    "InterpolateUpsampler",
    "PixelShuffleUpsampler",
    "UpsamplerChain",
    "UpsamplerCost",
    "carafe",
    "create_upsampler",
    "exact_at_swap",
    "module_cost",
    "upsampler_cost",
]
