"""Any huggingface_hub PyTorchModelHubMixin model: its own save_pretrained records the swap, and
dysample_swap.from_pretrained(directory, model_class=...) rebuilds it with every trained DySample weight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

import dysample_swap
from dysample_swap import DySample, swap_upsamplers

IMAGES = ([torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))],)


class Detector(FasterRCNN, PyTorchModelHubMixin):
    """The typical shape: a torchvision detector that a library publishes through the hub mixin."""

    def __init__(self, num_classes: int = 3, min_size: int = 96, trainable_layers: int = 3) -> None:
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=trainable_layers)
        super().__init__(backbone, num_classes=num_classes, min_size=min_size, max_size=128)


def _perturbed(model: nn.Module) -> nn.Module:
    """Every DySample weight moved off its swap-time value, as training would."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DySample):
                for p in module.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    return model


@pytest.mark.slow
def test_detector_save_pretrained_then_from_pretrained(tmp_path: Path) -> None:
    model = _perturbed(swap_upsamplers(Detector(num_classes=4), "dysample+", IMAGES, verbose=False))
    assert sum(isinstance(m, DySample) for m in model.modules()) >= 3
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_classes"] == 4 and config["_dysample_swap"]["swaps"][0]["variant"] == "dysample+"

    reloaded = dysample_swap.from_pretrained(tmp_path, model_class=Detector)
    saved = model.state_dict()
    assert reloaded.state_dict().keys() == saved.keys()
    assert all(torch.equal(value, saved[key]) for key, value in reloaded.state_dict().items())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = model.eval().backbone(x), reloaded.backbone(x)  # the FPN, where the DySamples are
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)

    with pytest.raises(ValueError, match=r"saved by a PyTorchModelHubMixin model \(Detector\).*model_class=Detector"):
        dysample_swap.from_pretrained(tmp_path)


@pytest.mark.slow
def test_the_mixins_own_loader_drops_the_dysample_weights(tmp_path: Path) -> None:
    """Documented, not fixable here: the mixin loads with strict=False and builds the plain network."""
    swap_upsamplers(Detector(), "dysample", IMAGES, verbose=False).save_pretrained(tmp_path)
    plain = Detector.from_pretrained(tmp_path)
    assert not any(isinstance(m, DySample) for m in plain.modules())


def test_another_mixin_class_is_refused(tmp_path: Path) -> None:
    class Net(nn.Module, PyTorchModelHubMixin):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, width, 1), nn.Upsample(scale_factor=2), nn.Conv2d(width, 2, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    class Other(Net):
        pass

    model = swap_upsamplers(Net(width=6), "dysample", (torch.rand(1, 3, 8, 8),), verbose=False)
    model.save_pretrained(tmp_path)
    reloaded = dysample_swap.from_pretrained(tmp_path, model_class=Net)
    assert isinstance(reloaded.body[1], DySample) and reloaded.body[0].out_channels == 6
    with pytest.raises(ValueError, match="saved from a .*Net, but the model given is a .*Other"):
        dysample_swap.from_pretrained(tmp_path, model_class=Other)
    with pytest.raises(ValueError, match="is not an nn.Module class built on huggingface_hub's PyTorchModelHubMixin"):
        dysample_swap.from_pretrained(tmp_path, model_class=nn.Conv2d)
