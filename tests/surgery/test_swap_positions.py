"""Swapped DySamples carry exact positions by default: a model's output does not move at swap time."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dysample_swap import DySample, SwapPolicy, swap_upsamplers


class OddSizeNet(nn.Module):
    """Nearest x2, then bilinear to an odd size (ratios 2.04 and 2.14), then an argmax: a discontinuous step."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = self.mix(F.interpolate(y, scale_factor=2, mode="nearest"))
        y = F.interpolate(y, size=(2 * y.shape[2] + 1, 2 * y.shape[3] + 3), mode="bilinear", align_corners=False)
        return self.head(y).argmax(1)


def _pair(**policy: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    original = OddSizeNet().eval()
    swapped = OddSizeNet().eval()
    swapped.load_state_dict(original.state_dict())
    swap_upsamplers(swapped, "dysample+", torch.randn(1, 3, 13, 11), verbose=False, swap_final=True, **policy)
    return original, swapped


def test_swapped_modules_carry_exact_positions_and_keep_the_argmax() -> None:
    original, swapped = _pair()
    modules = [m for m in swapped.modules() if isinstance(m, DySample)]
    assert len(modules) == 2 and {m.positions for m in modules} == {"exact"}
    with torch.no_grad():
        for shape in ((1, 3, 13, 11), (2, 3, 15, 17), (1, 3, 25, 13)):
            x = torch.randn(*shape)
            assert torch.equal(swapped(x), original(x))


def test_grid_positions_on_request() -> None:
    _, swapped = _pair(positions="grid")
    assert {m.positions for m in swapped.modules() if isinstance(m, DySample)} == {"grid"}


def test_bad_positions_name_the_choices() -> None:
    with pytest.raises(ValueError, match=r"positions='authors' is not one of \('exact', 'grid'\)"):
        SwapPolicy.from_kwargs(positions="authors")


def test_cli_takes_positions() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dysample_swap.cli", "inspect", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--positions {exact,grid}" in result.stdout
