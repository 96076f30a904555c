"""Training engine: exact resume, Ctrl-C checkpoints, DySample-only warm phase, bad checkpoints."""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dysample_swap import DySample
from dysample_swap.finetune.builders import load_datasets, make_arm
from dysample_swap.finetune.checkpoint import CheckpointError, load_checkpoint
from dysample_swap.finetune.config import Config, build_config
from dysample_swap.finetune.distributed import DistContext
from dysample_swap.finetune.engine import Trainer, TrainingInterrupted
from dysample_swap.finetune.runlog import read_log
from dysample_swap.finetune.tasks import make_task

CPU = DistContext(0, 1, 0, torch.device("cpu"))


class TinySeg(nn.Module):
    """Conv stride 2 -> BN -> dropout (draws from the RNG) -> x2 upsample -> conv -> logits."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.2)
        )
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.head = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(self.down(x)))


def _config(*overrides: str) -> Config:
    return build_config(
        {
            "data": {
                "format": "synthetic",
                "image_size": 16,
                "num_samples": 20,
                "num_val_samples": 3,
                "num_classes": 2,
            },
            "train": {
                "max_steps": 8,
                "batch_size": 4,
                "lr": 0.01,
                "warmup_steps": 2,
                "log_every": 1,
                "progress": "never",
                "dysample_lr_mult": 2.0,
                "grad_clip": 1.0,
            },
            "eval": {"batch_size": 2},
        },
        list(overrides),
    )


class Setup:
    """Data, task and one randomly initialised base model shared by every run of a test."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.train_set, self.val_set = load_datasets(cfg)
        self.task = make_task("segmentation", self.train_set)
        torch.manual_seed(0)
        self.base = TinySeg(self.task.num_classes)

    def trainer(self, out: Path, cfg: Config | None = None, base: nn.Module | None = None) -> Trainer:
        cfg = cfg or self.cfg
        arm = make_arm(cfg, base or self.base, self.task, self.val_set, swapped=True, verbose=False)
        return Trainer(cfg, arm, self.task, self.train_set, self.val_set, CPU, out)


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    oa, ob = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for index in oa:
        for name in oa[index]:
            assert torch.equal(torch.as_tensor(oa[index][name]), torch.as_tensor(ob[index][name]))
    assert a.scheduler.state_dict() == b.scheduler.state_dict()


def _train_losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(out / "metrics.jsonl") if r["split"] == "train"]


@pytest.fixture(scope="module")
def setup() -> Setup:
    return Setup(_config())


@pytest.fixture(scope="module")
def reference(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """The uninterrupted run: 8 steps, 5 steps per epoch (so it crosses an epoch boundary)."""
    trainer = setup.trainer(tmp_path_factory.mktemp("reference"))
    result = trainer.fit()
    assert result.completed and trainer.step == 8 and trainer.epoch == 1
    return trainer


@pytest.mark.parametrize("stop_after", [3, 5])  # mid-epoch, and exactly at the epoch's end
def test_interrupted_then_resumed_equals_uninterrupted(
    setup: Setup, reference: Trainer, tmp_path: Path, stop_after: int
) -> None:
    first = setup.trainer(tmp_path, _config(f"train.stop_after={stop_after}"))
    result = first.fit()
    assert not result.completed and first.step == stop_after
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == stop_after
    # A different initial model proves the checkpoint, not the init, sets every weight.
    torch.manual_seed(123)
    resumed = setup.trainer(tmp_path, base=TinySeg(setup.task.num_classes))
    torch.rand(5)  # disturb the global RNG: the checkpoint restores it
    assert resumed.fit(resume=True).completed
    _assert_same_state(reference, resumed)
    assert _train_losses(tmp_path) == _train_losses(reference.out_dir)


def _interrupt_at_step(trainer: Trainer, step: int) -> None:
    """Send SIGINT during the forward of training step ``step`` (the engine finishes that step)."""
    calls = {"n": 0}

    def hook(module: nn.Module, inputs: Any) -> None:
        if module.training:
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGINT)

    trainer.model.down.register_forward_pre_hook(hook)


@pytest.mark.parametrize("how", ["ctrl-c at step 5", "stop_after=4"])
def test_logged_losses_survive_an_interruption_between_logs(
    setup: Setup, reference: Trainer, tmp_path: Path, how: str
) -> None:
    # The reference logs every step, so its records are the per-step losses; a run logging every
    # 3 steps must log the mean of each window of them, interrupted mid-window or not.
    per_step = dict(_train_losses(reference.out_dir))
    expected = [
        (3, (per_step[1] + per_step[2] + per_step[3]) / 3),
        (6, (per_step[4] + per_step[5] + per_step[6]) / 3),
        (8, (per_step[7] + per_step[8]) / 2),
    ]
    cfg = _config("train.log_every=3")
    if how.startswith("ctrl-c"):
        first = setup.trainer(tmp_path, cfg)
        _interrupt_at_step(first, 5)
        with pytest.raises(TrainingInterrupted) as info:
            first.fit()
        assert info.value.step == 5
        assert _train_losses(tmp_path) == expected[:1]
    else:
        first = setup.trainer(tmp_path, _config("train.log_every=3", "train.stop_after=4"))
        assert not first.fit().completed
        # The stopped run reports its partial window (step 4 alone) ...
        assert _train_losses(tmp_path) == [expected[0], (4, per_step[4])]
    resumed = setup.trainer(tmp_path, cfg)
    assert resumed.fit(resume=True).completed
    _assert_same_state(reference, resumed)
    # ... and, resumed, logs every window whole, as an uninterrupted run does.
    assert _train_losses(tmp_path) == expected


def test_keyboard_interrupt_inside_a_step_checkpoints_the_last_full_step(
    setup: Setup, reference: Trainer, tmp_path: Path
) -> None:
    trainer = setup.trainer(tmp_path)
    calls = {"n": 0}

    def hook(module: nn.Module, inputs: Any) -> None:
        if module.training:
            calls["n"] += 1
            if calls["n"] == 5:  # forward of step 5: steps 1-4 are complete
                raise KeyboardInterrupt

    handle = trainer.model.down.register_forward_pre_hook(hook)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    handle.remove()
    assert info.value.step == 4
    assert load_checkpoint(info.value.checkpoint)["step"] == 4
    resumed = setup.trainer(tmp_path)
    resumed.fit(resume=True)
    _assert_same_state(reference, resumed)


def test_sigint_finishes_the_step_then_checkpoints(setup: Setup, reference: Trainer, tmp_path: Path) -> None:
    trainer = setup.trainer(tmp_path)
    _interrupt_at_step(trainer, 2)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert info.value.step == 2  # step 2 completed before stopping
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = setup.trainer(tmp_path)
    resumed.fit(resume=True)
    _assert_same_state(reference, resumed)


def test_dysample_only_steps_freeze_everything_else(setup: Setup, tmp_path: Path) -> None:
    cfg = _config("train.dysample_only_steps=3", "train.stop_after=3")
    trainer = setup.trainer(tmp_path, cfg)
    before = copy.deepcopy(trainer.model.state_dict())
    trainer.fit()
    after = trainer.model.state_dict()
    dys = {n for n, m in trainer.model.named_modules() if isinstance(m, DySample)}
    assert dys, "the tiny model should have been swapped"
    for key, value in after.items():
        owner = key.rsplit(".", 1)[0]
        is_dys = any(owner == d or owner.startswith(d + ".") for d in dys)
        if key.endswith(("weight", "bias")) and not is_dys:
            assert torch.equal(value, before[key]), f"{key} changed during the DySample-only phase"
    changed = [k for k in after if k.startswith(tuple(dys)) and not torch.equal(after[k], before[k])]
    assert changed, "DySample parameters did not train"


def test_bf16_autocast_trains(setup: Setup, tmp_path: Path) -> None:
    trainer = setup.trainer(tmp_path, _config("train.amp=bf16", "train.max_steps=2"))
    result = trainer.fit()
    assert result.completed and result.final_loss is not None and result.final_loss > 0
    assert set(result.metrics) >= {"mIoU", "bIoU"}


def test_fp16_needs_cuda(setup: Setup, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA device.*bf16 on CPU"):
        setup.trainer(tmp_path, _config("train.amp=fp16"))


# ----------------------------------------------------------------------------- bad checkpoints
def test_truncated_checkpoint(reference: Trainer, tmp_path: Path) -> None:
    data = (reference.out_dir / "checkpoints" / "last.pt").read_bytes()
    broken = tmp_path / "last.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.pt: cannot read checkpoint \\(truncated or corrupt"):
        load_checkpoint(broken)


def test_not_a_training_checkpoint(tmp_path: Path) -> None:
    plain = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a dysample-swap training checkpoint"):
        load_checkpoint(plain)
    pickled = tmp_path / "object.pt"
    torch.save({"format_version": 1, "obj": Path("x")}, pickled)
    with pytest.raises(CheckpointError, match="weights_only loading refuses"):
        load_checkpoint(pickled)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_from_another_recipe(setup: Setup, reference: Trainer, tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes((reference.out_dir / "checkpoints" / "last.pt").read_bytes())
    other = setup.trainer(tmp_path, _config("swap.variant=dysample"))
    with pytest.raises(
        CheckpointError,
        match="does not match this recipe: variant is 'dysample\\+' in the checkpoint but 'dysample' here",
    ):
        other.fit(resume=True)
    batch = setup.trainer(tmp_path, _config("train.batch_size=2"))
    with pytest.raises(CheckpointError, match="batch_size is 4 in the checkpoint but 2 here"):
        batch.fit(resume=True)


def test_checkpoint_weights_for_another_model(setup: Setup, reference: Trainer, tmp_path: Path) -> None:
    state = load_checkpoint(reference.out_dir / "checkpoints" / "last.pt")
    state["model"] = {k.replace("head.", "classifier."): v for k, v in state["model"].items()}
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(
        CheckpointError, match="do not fit this model: missing keys \\['head.weight', 'head.bias'\\]; unexpected keys"
    ):
        setup.trainer(tmp_path).fit(resume=True)
