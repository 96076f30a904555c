"""Swapped models pickle whole: pickle, torch.save/torch.load, copy.copy, copy.deepcopy, and a fresh
interpreter, with identical outputs; for fx-rewritten owners, in-place replacements and the eager
fallback, on user models, smp and a torchvision detector."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torchvision
from swap_checks import tensors
from test_swap_user_models import ControlFlowOnShapes, DictDecoderModel, SequentialDecoder, X

from dysample_swap import DySample, swap_report, swap_upsamplers

TESTS = Path(__file__).resolve().parent


def _fpn() -> nn.Module:
    return smp.FPN(
        "resnet18", encoder_weights=None, encoder_depth=3, decoder_segmentation_channels=32, upsampling=4, classes=2
    )


def _segformer() -> nn.Module:
    return smp.Segformer("mit_b0", encoder_weights=None, classes=2)


def _detector() -> nn.Module:
    return torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=160, detections_per_img=5
    ).eval()


def _images() -> list[torch.Tensor]:
    return [torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(0))]


CASES: list[tuple[str, Callable[[], nn.Module], Callable[[], Any], set[str]]] = [
    ("user-in-place", SequentialDecoder, lambda: X, {"in place"}),
    ("user-fx-dict", DictDecoderModel, lambda: X, {"fx"}),
    ("user-eager", ControlFlowOnShapes, lambda: X, {"eager fallback"}),
    ("smp-fpn", _fpn, lambda: torch.rand(1, 3, 64, 64), {"fx"}),
    ("smp-segformer", _segformer, lambda: torch.rand(1, 3, 64, 64), {"eager fallback"}),
    ("torchvision-detector", _detector, _images, {"fx"}),
]


def _swapped(build: Callable[[], nn.Module], inputs: Any) -> nn.Module:
    model = swap_upsamplers(build().eval(), "dysample+", (inputs,), verbose=False)
    torch.manual_seed(1)
    with torch.no_grad():  # trained-looking offsets, so a lost DySample would show in the outputs
        for module in model.modules():
            if isinstance(module, DySample):
                module.offset.weight.normal_(0, 0.05)
    return model


def _run(model: nn.Module, inputs: Any, continuous: bool = False) -> list[torch.Tensor]:
    """The model's outputs; for a detector also its FPN features (random-weight detections may be empty).

    ``continuous``: for a detector only the FPN features: its detections pass score thresholds, NMS
    and top-k, so float-rounding differences between processes can change them discontinuously.
    """
    with torch.no_grad():
        detector = isinstance(inputs, list)
        out = [] if detector and continuous else tensors(model(inputs))
        if detector:
            out += tensors(model.backbone(torch.stack(inputs)))
        return out


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize(("name", "build", "inputs", "methods"), CASES, ids=[c[0] for c in CASES])
def test_pickle_copy_and_deepcopy_keep_the_swap(
    name: str, build: Callable[[], nn.Module], inputs: Callable[[], Any], methods: set[str], tmp_path: Path
) -> None:
    x = inputs()
    model = _swapped(build, x)
    assert {s.method for s in swap_report(model).swapped} == methods
    expected = _run(model, x)
    n_dysample = sum(isinstance(m, DySample) for m in model.modules())
    torch.save(model, tmp_path / "whole.pt")
    loaded = torch.load(tmp_path / "whole.pt", weights_only=False)
    copies = [pickle.loads(pickle.dumps(model)), loaded, copy.deepcopy(model), copy.copy(model)]
    for clone in copies:
        assert type(clone).__name__ == type(model).__name__
        assert sum(isinstance(m, DySample) for m in clone.modules()) == n_dysample
        _assert_same(_run(clone, x), expected)
    deep = copies[2]
    with torch.no_grad():  # a deep copy owns its DySample weights
        next(m for m in deep.modules() if isinstance(m, DySample)).offset.bias.add_(0.5)
    assert not all(torch.equal(a, b) for a, b in zip(_run(deep, x), expected))
    assert swap_report(loaded).variant == "dysample+"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "build", "inputs", "methods"), CASES, ids=[c[0] for c in CASES])
def test_a_fresh_interpreter_loads_the_whole_model(
    name: str, build: Callable[[], nn.Module], inputs: Callable[[], Any], methods: set[str], tmp_path: Path
) -> None:
    x = inputs()
    model = _swapped(build, x)
    torch.save({"model": model, "inputs": x, "outputs": _run(model, x, continuous=True)}, tmp_path / "whole.pt")
    script = (
        "import sys, torch\n"
        "torch.set_num_threads(int(sys.argv[2]))  # the parent's thread count\n"
        "saved = torch.load(sys.argv[1], weights_only=False)\n"
        "from test_pickle import _run\n"
        "out = _run(saved['model'], saved['inputs'], continuous=True)\n"
        "assert len(out) == len(saved['outputs'])\n"
        "# another process may pick other CPU kernels (the parent has run compiled and threaded code): equal to\n"
        "# float rounding; a lost or untrained DySample moves outputs by orders of magnitude more\n"
        "for a, b in zip(out, saved['outputs']):\n"
        "    assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item()), 'outputs differ'\n"
        "print('ok', sum(type(m).__name__ == 'DySample' for m in saved['model'].modules()))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "whole.pt"), str(torch.get_num_threads())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", str(sum(isinstance(m, DySample) for m in model.modules()))]
