"""The public surface: everything a user needs is importable from ``dysample_swap`` itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dysample_swap


@pytest.mark.parametrize("name", dysample_swap.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(dysample_swap, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'swap_everything'"):
        dysample_swap.swap_everything


def test_importing_the_package_does_not_load_the_training_stack() -> None:
    code = "import sys, dysample_swap; print(sorted(m for m in ('torchmetrics', 'pycocotools', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, dysample_swap; dysample_swap.SegmentationMetrics; print('torchmetrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_the_ported_upsamplers_and_the_registry_names_are_public() -> None:
    from dysample_swap import upsamplers
    from dysample_swap.upsamplers import a2u, fade, freqfusion, indexnet, lda_aqu, sapa

    classes = {
        "FADE": fade.FADE,
        "FADELite": fade.FADELite,
        "SAPA": sapa.SAPA,
        "A2U": a2u.A2U,
        "IndexNet": indexnet.IndexNet,
        "FreqFusion": freqfusion.FreqFusion,
        "LDAAQU": lda_aqu.LDAAQU,
    }
    for name, cls in classes.items():
        assert getattr(dysample_swap, name) is getattr(upsamplers, name) is cls
        assert name in dysample_swap.__all__ and name in upsamplers.__all__
    for name in ("needs_guide", "ALL_UPSAMPLERS"):
        assert name in dysample_swap.__all__ and name in upsamplers.__all__
    assert dysample_swap.needs_guide("fade") and not dysample_swap.needs_guide("lda_aqu")
    assert set(dysample_swap.ALL_UPSAMPLERS) - set(dysample_swap.UPSAMPLERS) == {
        "lda_aqu",
        "indexnet",
        "a2u",
        "fade",
        "sapa",
        "freqfusion",
    }
