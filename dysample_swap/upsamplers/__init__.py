"""The rival upsamplers of the DySample paper, as standalone modules, and a registry of names.

* :mod:`.carafe`: :func:`carafe` (the reassembly operator) and :class:`CARAFEPack` (mmcv's module);
* :mod:`.deconv`: :class:`DeconvUpsampler`; :mod:`.pixelshuffle`: :class:`PixelShuffleUpsampler`;
* :mod:`.interpolate`: :class:`InterpolateUpsampler`, the no-op arm (``F.interpolate`` as the original);
* :mod:`.lda_aqu`: :class:`LDAAQU` (LDA-AQU, local deformable attention);
* guided upsamplers (they read a high-resolution guide, :mod:`.guided`): :mod:`.indexnet`: :class:`IndexNet`
  (HIN); :mod:`.a2u`: :class:`A2U`; :mod:`.fade`: :class:`FADE`, :class:`FADELite`; :mod:`.sapa`:
  :class:`SAPA` (SAPA-B); :mod:`.freqfusion`: :class:`FreqFusion`;
* :mod:`.chain`: :class:`UpsamplerChain`, x2 stages for a x2**n upsampling;
* :mod:`.registry`: :data:`UPSAMPLERS`, :data:`ALL_UPSAMPLERS`, :func:`create_upsampler`, :func:`exact_at_swap`,
  :func:`needs_guide`;
* :mod:`.cost`: :func:`upsampler_cost`, :func:`module_cost`, :class:`UpsamplerCost`;
* helpers: :mod:`.sizing` (output sizes), :mod:`.stencils` (interpolation as stencils), :mod:`.options`,
  :mod:`.base` and :mod:`.guided` (the shared frames of the unguided and the guided rivals).

Every module's ``forward(x, size=None, scale_factor=None)`` behaves as DySample's; a guided one's is
``forward(x, guide, size=None, scale_factor=None)``.

Example:
    >>> import torch
    >>> from dysample_swap.upsamplers import create_upsampler
    >>> create_upsampler("deconv", 16, 2)(torch.randn(1, 16, 15, 17), size=(45, 51)).shape
    torch.Size([1, 16, 45, 51])
"""

from __future__ import annotations

from dysample_swap.upsamplers.a2u import A2U
from dysample_swap.upsamplers.carafe import CARAFEPack, carafe
from dysample_swap.upsamplers.chain import UpsamplerChain
from dysample_swap.upsamplers.cost import UpsamplerCost, module_cost, upsampler_cost
from dysample_swap.upsamplers.deconv import DeconvUpsampler
from dysample_swap.upsamplers.fade import FADE, FADELite
from dysample_swap.upsamplers.freqfusion import FreqFusion
from dysample_swap.upsamplers.indexnet import IndexNet
from dysample_swap.upsamplers.interpolate import InterpolateUpsampler
from dysample_swap.upsamplers.lda_aqu import LDAAQU
from dysample_swap.upsamplers.options import INITS
from dysample_swap.upsamplers.pixelshuffle import PixelShuffleUpsampler
from dysample_swap.upsamplers.registry import ALL_UPSAMPLERS, UPSAMPLERS, create_upsampler, exact_at_swap, needs_guide
from dysample_swap.upsamplers.sapa import SAPA

__all__ = [
    "ALL_UPSAMPLERS",
    "INITS",
    "UPSAMPLERS",
    "A2U",
    "CARAFEPack",
    "DeconvUpsampler",
    "FADE",
    "FADELite",
    "FreqFusion",
    "IndexNet",
    "InterpolateUpsampler",
    "LDAAQU",
    "PixelShuffleUpsampler",
    "SAPA",
    "UpsamplerChain",
    "UpsamplerCost",
    "carafe",
    "create_upsampler",
    "exact_at_swap",
    "module_cost",
    "needs_guide",
    "upsampler_cost",
]
