"""unswap restores the original computation bit for bit; honest failure: the DEBUG log of every fx
attempt, the fallback reason in the table, the eager-fallback self-check, clear errors for bad
example inputs."""

from __future__ import annotations

import logging

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_swap_user_models import ControlFlowOnShapes, DictDecoderModel, SequentialDecoder, SharedOwner, X

from dysample_swap import DySample, swap_report, swap_upsamplers, unswap


def _fpn() -> nn.Module:
    return smp.FPN("resnet18", encoder_weights=None, encoder_depth=3, decoder_segmentation_channels=32, classes=2)


CASES = [
    ("in place", SequentialDecoder),
    ("fx", DictDecoderModel),
    ("eager fallback", ControlFlowOnShapes),
    ("fx shared", SharedOwner),
    ("smp", _fpn),
]


@pytest.mark.parametrize(("name", "build"), CASES, ids=[c[0] for c in CASES])
def test_unswap_restores_the_original_outputs_bit_for_bit(name: str, build: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = torch.rand(1, 3, 64, 64) if name == "smp" else X
    with torch.no_grad():
        before = model(x)
    classes = [type(m) for m in model.modules()]
    keys = list(model.state_dict())
    swap_upsamplers(model, "dysample+", x, verbose=False, init="paper")  # random offsets: outputs change
    new = {f"{p}" for p, m in model.named_modules() if isinstance(m, DySample)}
    with torch.no_grad():
        assert not torch.equal(model(x), before)
    removed = unswap(model)
    assert set(removed) == new and all(isinstance(m, DySample) for m in removed.values())
    assert [type(m) for m in model.modules()] == classes
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(model(x), before)
    with pytest.raises(ValueError, match="has no swap report"):
        unswap(model)


def test_unswap_after_two_swaps_undoes_both() -> None:
    model = SequentialDecoder().eval()
    with torch.no_grad():
        before = model(X)
    swap_upsamplers(model, "dysample", X, include="net.3", verbose=False)
    swap_upsamplers(model, "dysample-s", X, verbose=False)
    assert [s.path for s in swap_report(model).swapped] == ["net.5"]
    assert sorted(unswap(model)) == ["net.3", "net.5"]
    assert not any(isinstance(m, DySample) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(X), before)


def test_every_failed_fx_attempt_is_logged_at_debug_and_the_table_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="dysample_swap"):
        model = swap_upsamplers(ControlFlowOnShapes(), "dysample", X, verbose=False)
    attempts = [r for r in caplog.records if r.getMessage().startswith("fx trace of <root> failed")]
    assert len(attempts) >= 1 and all(r.levelno == logging.DEBUG and r.exc_info for r in attempts)
    assert "symbolically traced variables cannot be used as inputs to control flow" in attempts[0].getMessage()
    assert any(r.getMessage().startswith("<root> uses the eager fallback: TraceError") for r in caplog.records)
    line = next(ln for ln in swap_report(model).table().splitlines() if "eager fallback" in ln)
    assert line.endswith(
        "[eager fallback: fx failed: TraceError: symbolically traced variables cannot be "
        "used as inputs to control flow]"
    )


class ChangesItsCallsAfterTheFirstForward(nn.Module):
    """Calls interpolate itself on the first forward, through a helper afterwards (fx cannot trace it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.conv(x)
        if y.shape[-1] > 1:  # control flow on a shape: no fx
            y = F.interpolate(y, scale_factor=2.0) if self.calls == 1 else _helper(y)
        return self.head(y)


def _helper(y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(y, scale_factor=2.0)


def test_eager_fallback_self_check_raises_and_undoes_the_swap() -> None:
    model = ChangesItsCallsAfterTheFirstForward()
    with pytest.raises(RuntimeError, match=r"did not reach them .* the swap was undone"):
        swap_upsamplers(model, "dysample", X, verbose=False)
    assert not any(isinstance(m, DySample) for m in model.modules())
    assert type(model) is ChangesItsCallsAfterTheFirstForward
    assert not hasattr(model, "dysample_swap_report")


def test_bad_example_inputs_say_discovery_ran_the_model_and_what_to_pass() -> None:
    with pytest.raises(
        ValueError,
        match=r"discovery runs SequentialDecoder once on example_inputs.*"
        r"\[\{'tensor': \[1, 5, 32, 32\]\}\].*RuntimeError.*"
        r"torch.rand\(1, 3, 128, 128\).*first convolution takes 3 channels",
    ):
        swap_upsamplers(SequentialDecoder(), "dysample", torch.rand(1, 5, 32, 32), verbose=False)
    with pytest.raises(ValueError, match=r"discovery runs SequentialDecoder .* on str: TypeError"):
        swap_upsamplers(SequentialDecoder(), "dysample", "image.png", verbose=False)
