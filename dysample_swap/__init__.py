"""dysample_swap: upgrade existing PyTorch dense-prediction networks with DySample.

The public API lives here; nothing else needs importing. The module and the model surgery
load eagerly; the fine-tuning names (datasets, metrics, recipes) load on first use, so that
``import dysample_swap`` does not pay for torchmetrics, pycocotools and matplotlib.

Example:
    >>> import torch
    >>> from dysample_swap import DySample
    >>> DySample.from_variant("dysample+", in_channels=32)(torch.randn(1, 32, 8, 8)).shape
    torch.Size([1, 32, 16, 16])
"""

from __future__ import annotations

import importlib
from typing import Any

from dysample_swap import _moved
from dysample_swap.integrations.pretrained import from_pretrained  # importing integrations registers their hooks
from dysample_swap.surgery.model_spec import build_model
from dysample_swap.surgery.persist import load_swapped, save_swapped
from dysample_swap.surgery.policy import SiteDecision, SwapPolicy
from dysample_swap.surgery.sites import UpsampleSite
from dysample_swap.surgery.swap import SwapReport, find_upsamplers, plan_swap, swap_report, swap_upsamplers, unswap
from dysample_swap.upsamplers import (
    A2U,
    ALL_UPSAMPLERS,
    FADE,
    INITS,
    LDAAQU,
    SAPA,
    UPSAMPLERS,
    CARAFEPack,
    DeconvUpsampler,
    FADELite,
    FreqFusion,
    IndexNet,
    InterpolateUpsampler,
    PixelShuffleUpsampler,
    UpsamplerChain,
    UpsamplerCost,
    carafe,
    create_upsampler,
    exact_at_swap,
    module_cost,
    needs_guide,
    upsampler_cost,
)
from dysample_swap.upsamplers.dysample import (
    ANCHORS,
    VARIANTS,
    DySample,
    compiled_sampler,
    dysample,
    dysample_sample,
    resolve_groups,
)
from dysample_swap.version import __version__

_moved.alias_old_paths()  # 0.1.0's pickles name modules by their old paths
_LAZY = {
    "build_dataset": "dysample_swap.finetune.data",
    "detection_collate": "dysample_swap.finetune.data",
    "DatasetError": "dysample_swap.finetune.data",
    "SegmentationMetrics": "dysample_swap.finetune.metrics",
    "DetectionMetrics": "dysample_swap.finetune.metrics",
    "DepthMetrics": "dysample_swap.finetune.metrics",
    "PanopticMetrics": "dysample_swap.finetune.metrics",
    "load_config": "dysample_swap.finetune.config",
    "ConfigError": "dysample_swap.finetune.config",
    "run_finetune": "dysample_swap.finetune.runner",
    "run_compare": "dysample_swap.finetune.runner",
    "run_evaluate": "dysample_swap.finetune.runner",
    "visualize_offsets": "dysample_swap.finetune.visualize",
}


def __getattr__(name: str) -> Any:
    """Load a fine-tuning name on first access (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dysample_swap' has no attribute {name!r}")


__all__ = [
    "__version__",
    "ANCHORS",
    "VARIANTS",
    "INITS",
    "UPSAMPLERS",
    "ALL_UPSAMPLERS",
    "A2U",
    "CARAFEPack",
    "DeconvUpsampler",
    "DySample",
    "FADE",
    "FADELite",
    "FreqFusion",
    "IndexNet",
    "InterpolateUpsampler",
    "LDAAQU",
    "PixelShuffleUpsampler",
    "SAPA",
    "SiteDecision",
    "SwapPolicy",
    "SwapReport",
    "UpsampleSite",
    "UpsamplerChain",
    "UpsamplerCost",
    "build_model",
    "carafe",
    "compiled_sampler",
    "create_upsampler",
    "dysample",
    "dysample_sample",
    "exact_at_swap",
    "find_upsamplers",
    "from_pretrained",
    "load_swapped",
    "module_cost",
    "needs_guide",
    "plan_swap",
    "resolve_groups",
    "save_swapped",
    "swap_report",
    "swap_upsamplers",
    "upsampler_cost",
    "unswap",
    "build_dataset",
    "detection_collate",
    "DatasetError",
    "SegmentationMetrics",
    "DetectionMetrics",
    "DepthMetrics",
    "PanopticMetrics",
    "load_config",
    "ConfigError",
    "run_finetune",
    "run_compare",
    "run_evaluate",
    "visualize_offsets",
]
