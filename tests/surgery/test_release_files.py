"""Files written by release 0.1.0 (``tests/fixtures/release_0_1_0/``, made by ``fixtures/make_release_0_1_0.py``)
still load: a swap file, a transformers ``save_pretrained`` directory and a fine-tuning run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_persist import UserNet

import dysample_swap
from dysample_swap.cli import main

RELEASE = Path(__file__).resolve().parent / "fixtures" / "release_0_1_0"
X = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),)


def _same(output: torch.Tensor, recorded: torch.Tensor) -> None:
    """Equal to the recorded output up to float32 rounding: the convolutions' last bit depends on
    the CPU that runs them (oneDNN picks kernels by instruction set), not on the loaded file."""
    torch.testing.assert_close(output, recorded, rtol=0.0, atol=1e-6)


def test_a_swap_file_loads_and_computes_what_it_did() -> None:
    model = dysample_swap.load_swapped(RELEASE / "usernet.pt", model=UserNet(width=4))
    assert isinstance(model.up, dysample_swap.DySample)
    with torch.no_grad():
        _same(model(*X), torch.load(RELEASE / "usernet_output.pt"))


def test_a_pickled_swapped_model_loads_and_computes_what_it_did() -> None:
    model = torch.load(RELEASE / "usernet_pickled.pt", weights_only=False)  # a pickle: trusted, our own file
    with torch.no_grad():
        _same(model(*X), torch.load(RELEASE / "usernet_output.pt"))
    assert dysample_swap.swap_report(model).swapped


def test_a_save_pretrained_directory_loads_and_computes_what_it_did() -> None:
    model = dysample_swap.from_pretrained(RELEASE / "dpt")
    assert any(isinstance(m, dysample_swap.DySample) for m in model.modules())
    with torch.no_grad():
        _same(model(*X).predicted_depth, torch.load(RELEASE / "dpt_output.pt"))


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_a_finetuning_run_evaluates_and_resumes(command: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(RELEASE / "run", run)
    recipe = str(run / "config.yaml")  # the run's resolved recipe, as a user would pass it
    if command == "evaluate":
        argv = ["evaluate", recipe, "--checkpoint", str(run / "checkpoints" / "last.pt")]
    else:
        argv = ["finetune", recipe, "--out", str(run), "--resume", "--set", "train.max_steps=3"]
    assert main(argv) == 0
