"""torch.compile of swapped models at three input sizes matches eager within 1e-4 (fullgraph=True
wherever the original compiles with it).

Most models compile with the ``aot_eager`` backend (dynamo's graph capture and AOT autograd with
dynamic shapes, which is where a swap can break compilation); smp FPN and Unet, whose swapped
versions failed in Inductor on main (``cannot determine truth value of Relational`` at the second
size), also compile with Inductor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
from swap_checks import tensors
from torchvision.models import detection

from dysample_swap import swap_report, swap_upsamplers

SIZES = ((64, 64), (96, 64), (128, 96))


def _smp(arch: str, encoder: str = "resnet18", **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: getattr(smp, arch)(encoder, encoder_weights=None, classes=2, **kwargs)


class Backbone(nn.Module):
    """A torchvision detector's backbone with its FPN (what runs on the image batch)."""

    def __init__(self) -> None:
        super().__init__()
        model = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        self.body = model.backbone

    def forward(self, x: torch.Tensor) -> Any:
        return self.body(x)


MODELS: list[tuple[str, Callable[[], nn.Module], str, bool]] = [
    # (name, build, backend, fullgraph)
    ("smp-fpn", _smp("FPN"), "inductor", True),
    ("smp-unet", _smp("Unet"), "inductor", True),
    ("smp-upernet", _smp("UPerNet"), "aot_eager", True),
    # The eager fallback (SegformerDecoder) finds the owner's own calls by walking Python frames
    # (sys._getframe), which dynamo cannot trace: it compiles with graph breaks, not fullgraph.
    ("smp-segformer", _smp("Segformer", "mit_b0"), "aot_eager", False),
    ("smp-dpt", _smp("DPT", "tu-vit_tiny_patch16_224", dynamic_img_size=True), "aot_eager", True),
    ("torchvision-fpn-backbone", Backbone, "aot_eager", True),
]


def _compiles(model: nn.Module, backend: str, fullgraph: bool, x: torch.Tensor) -> bool:
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            torch.compile(model, backend=backend, fullgraph=fullgraph)(x)
    except Exception:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize(("name", "build", "backend", "fullgraph"), MODELS, ids=[m[0] for m in MODELS])
def test_compiled_swapped_model_matches_eager_at_three_sizes(
    name: str, build: Callable[[], nn.Module], backend: str, fullgraph: bool
) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x0 = torch.rand(1, 3, *SIZES[0])
    fullgraph = fullgraph and _compiles(model, backend, True, x0)
    swap_upsamplers(model, "dysample+", x0, verbose=False)
    assert swap_report(model).swapped
    with torch.no_grad():
        for module in model.modules():  # trained-looking offsets
            if type(module).__name__ == "DySample":
                module.offset.weight.normal_(0, 0.05)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=fullgraph)
    for size in SIZES:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            out, expected = tensors(compiled(x)), tensors(model(x))
        assert len(out) == len(expected)
        for a, b in zip(out, expected):
            assert a.shape == b.shape
            assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item()), (name, size)
