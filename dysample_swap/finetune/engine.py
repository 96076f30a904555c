"""The training loop and evaluation: :class:`Trainer` and :func:`evaluate`.

One :class:`Trainer` trains one model (one "arm") for a step budget, single-process or under
``torchrun`` (DistributedDataParallel), with mixed precision, gradient clipping, a warm-up +
decay schedule, an optional DySample-only phase, periodic evaluation, a JSONL metrics log and
checkpoints that resume exactly:

* data order is a pure function of ``(seed, epoch)`` (:class:`TrainSampler`), and a resumed run
  skips the batches already read in the current epoch;
* every data loader has its own generator, so evaluation and loader start-up never draw from the
  global RNGs, whose state after each step is saved in the checkpoint;
* Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes ``checkpoints/last.pt`` and raises
  :class:`TrainingInterrupted`; a ``KeyboardInterrupt`` raised inside a step (before the optimiser
  update) saves the state after the last completed step;
* the checkpoint keeps the training losses summed since the last log record (every rank's), so a
  resumed run logs the same losses as an uninterrupted one at any ``train.log_every``;
* resuming checks the recipe against the run's (:func:`~dysample_swap.finetune.config.check_resume`):
  only the budget, logging/evaluation/checkpoint intervals and resources may change.

Example:
    >>> import tempfile
    >>> from dysample_swap.finetune.config import load_config
    >>> from dysample_swap.finetune.builders import build_base_model, load_datasets, make_arm
    >>> from dysample_swap.finetune.tasks import make_task
    >>> cfg = load_config("demo", ["data.image_size=32", "data.num_samples=8",
    ...     "data.num_val_samples=2", "train.batch_size=4", "train.max_steps=2",
    ...     "train.progress=never", "swap.policy.verbose=false"])
    >>> train_set, val_set = load_datasets(cfg)
    >>> task = make_task(cfg.task, train_set)
    >>> arm = make_arm(cfg, build_base_model(cfg, task.num_classes), task, val_set, swapped=True)
    >>> ctx = DistContext(0, 1, 0, torch.device("cpu"))
    >>> result = Trainer(cfg, arm, task, train_set, val_set, ctx, Path(tempfile.mkdtemp())).fit()
    >>> result.steps, result.completed, 0.0 <= result.metrics["mIoU"] <= 1.0
    (2, True, True)
    >>> evaluate(arm.model, task, val_set, cfg, ctx)["mIoU"] == result.metrics["mIoU"]
    True
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dysample_swap.finetune.checkpoint import (
    CheckpointError,
    check_signature,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from dysample_swap.finetune.config import Config, check_resume
from dysample_swap.finetune.distributed import (
    DistContext,
    ShardSampler,
    TrainSampler,
    any_rank,
    broadcast_buffers,
    gather_across_ranks,
    sum_across_ranks,
)
from dysample_swap.finetune.optim import build_optimizer, upsampler_parameters
from dysample_swap.finetune.runlog import MetricsLog
from dysample_swap.finetune.schedule import build_scheduler

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C / SIGTERM after writing a checkpoint.

    Example:
        >>> import pickle
        >>> pickle.loads(pickle.dumps(TrainingInterrupted(5, Path("run/checkpoints/last.pt")))).step
        5
    """

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step = step
        self.checkpoint = checkpoint

    def __reduce__(self) -> tuple[type, tuple[int, Path | None]]:
        """Pickle with its own arguments (a compare worker process sends it to the parent)."""
        return TrainingInterrupted, (self.step, self.checkpoint)


@dataclass
class Arm:
    """One model to train: ``name`` (the upsampler, or "original"), the module, its checkpoint
    signature, how many upsampling sites were swapped, and the names of the parameters the swap
    added (``None``: take the model's DySample parameters).

    Example:
        >>> Arm("original", torch.nn.Linear(1, 1), {"swapped": False}).swapped_sites
        0
    """

    name: str
    model: torch.nn.Module
    signature: dict[str, Any]
    swapped_sites: int = 0
    new_parameters: tuple[str, ...] | None = None


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` measured: ``steps`` is the step the run reached (resumed runs
    count from the start), throughput and time cover this session only.

    Example:
        >>> FitResult(steps=0, total_steps=1, completed=False).metrics
        {}
    """

    steps: int
    total_steps: int
    completed: bool
    train_time_s: float = 0.0
    images_seen: int = 0
    final_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    per_image_counts: np.ndarray | None = None

    @property
    def img_per_s(self) -> float:
        """Training throughput (all processes together), images per second of training time.

        Example:
            >>> FitResult(1, 1, True, train_time_s=2.0, images_seen=8).img_per_s
            4.0
        """
        return self.images_seen / self.train_time_s if self.train_time_s > 0 else 0.0


def autocast(ctx: DistContext, amp: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``train.amp`` ("none", "bf16", "fp16") on this device.

    Example:
        >>> with autocast(DistContext(0, 1, 0, torch.device("cpu")), "bf16"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and ctx.device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device (GradScaler); use train.amp=bf16 on CPU")
    return torch.autocast(device_type=ctx.device.type, dtype=_AMP_DTYPES[amp])


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for a data loader, so loaders never draw from the global RNG.

    Example:
        >>> int(torch.randint(10, (1,), generator=seeded_generator(0)))
        4
    """
    return torch.Generator().manual_seed(seed)


def progress_enabled(mode: str, ctx: DistContext) -> bool:
    """Whether to draw progress bars: never off rank 0; ``auto`` only on a terminal.

    Example:
        >>> progress_enabled("never", DistContext(0, 1, 0, torch.device("cpu")))
        False
    """
    import sys

    if not ctx.is_main or mode == "never":
        return False
    return mode == "always" or sys.stderr.isatty()


def eval_loader(dataset: Any, task: Any, cfg: Config, ctx: DistContext) -> DataLoader:
    """This rank's shard of ``dataset`` in order, without padding (every image scored once).

    Example:
        >>> from dysample_swap.finetune.config import Config
        >>> ctx = DistContext(0, 1, 0, torch.device("cpu"))
        >>> class T: collate = None
        >>> len(eval_loader(list(range(10)), T(), Config(), ctx))
        2
    """
    return DataLoader(
        dataset,
        batch_size=cfg.eval.batch_size,
        sampler=ShardSampler(len(dataset), rank=ctx.rank, world_size=ctx.world_size),
        collate_fn=task.collate,
        num_workers=cfg.train.num_workers,
        generator=seeded_generator(cfg.seed),
    )


def evaluate(model: torch.nn.Module, task: Any, dataset: Any, cfg: Config, ctx: DistContext) -> dict[str, float]:
    """Score ``model`` on ``dataset``; with several processes each scores its shard and the
    metric states are reduced across ranks, so every rank returns the whole-set result.

    Example:
        >>> # see the module example: evaluate(arm.model, task, val_set, cfg, ctx)["mIoU"]
    """
    return {k: float(v) for k, v in evaluate_metrics(model, task, dataset, cfg, ctx).compute().items()}


@torch.no_grad()
def evaluate_metrics(model: torch.nn.Module, task: Any, dataset: Any, cfg: Config, ctx: DistContext) -> Any:
    """The task's metric accumulator after scoring ``dataset`` (synced across ranks), for callers
    that need more than the final numbers (segmentation: ``per_image_counts()``).

    Example:
        >>> # evaluate_metrics(arm.model, task, val_set, cfg, ctx).per_image_counts().shape
    """
    was_training = model.training
    model.eval()
    broadcast_buffers(model, ctx)
    metrics = task.new_metrics(dataset)
    loader = eval_loader(dataset, task, cfg, ctx)
    bar = tqdm(
        loader, desc="evaluate", leave=False, dynamic_ncols=True, disable=not progress_enabled(cfg.train.progress, ctx)
    )
    with autocast(ctx, cfg.train.amp):
        for batch in bar:
            batch = task.to_device(batch, ctx.device)
            metrics.update(task.to_cpu(task.predict(model, batch)), task.to_cpu(task.targets(batch)))
    if ctx.distributed:
        metrics.sync()
    model.train(was_training)
    return metrics


class Trainer:
    """Train one :class:`Arm` according to ``cfg``; files go to ``out_dir`` (rank 0 only).

    Example:
        >>> # see the module example: Trainer(cfg, arm, task, train_set, val_set, ctx, out).fit()
    """

    def __init__(
        self, cfg: Config, arm: Arm, task: Any, train_set: Any, val_set: Any, ctx: DistContext, out_dir: Path
    ) -> None:
        self.cfg, self.arm, self.task, self.ctx, self.out_dir = cfg, arm, task, ctx, out_dir
        self.train_set, self.val_set = train_set, val_set
        t = cfg.train
        autocast(ctx, t.amp)  # fail early on an impossible precision setting
        self.model = arm.model.to(ctx.device)
        self.upsampler_params = upsampler_parameters(self.model, arm.new_parameters)
        special = {id(p) for p in self.upsampler_params}
        self.other_params = [p for p in self.model.parameters() if id(p) not in special]
        if t.dysample_only_steps and not self.upsampler_params and arm.signature.get("swapped"):
            raise ValueError(
                f"train.dysample_only_steps={t.dysample_only_steps} but the model has "
                "no swapped-in upsampler parameters to train; set it to 0"
            )
        self.optimizer = build_optimizer(self.model, t, self.upsampler_params)
        self.sampler = TrainSampler(
            train_set, num_replicas=ctx.world_size, rank=ctx.rank, seed=cfg.seed, batch_size=t.batch_size
        )
        self.steps_per_epoch = len(self.sampler) // t.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training split has {len(train_set)} samples: fewer than "
                f"train.batch_size ({t.batch_size}) x processes ({ctx.world_size}); "
                "lower train.batch_size or add data"
            )
        if t.max_steps is not None:
            self.total_steps = t.max_steps
        else:
            assert t.epochs is not None  # the config requires train.max_steps or train.epochs
            self.total_steps = t.epochs * self.steps_per_epoch
        self.stop_at = min(self.total_steps, t.stop_after or self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, t)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=t.amp == "fp16")
        self.loader_generator = seeded_generator(cfg.seed)
        self.loader = DataLoader(
            train_set,
            batch_size=t.batch_size,
            sampler=self.sampler,
            drop_last=True,
            collate_fn=task.collate,
            num_workers=t.num_workers,
            generator=self.loader_generator,
            pin_memory=ctx.device.type == "cuda",
        )
        self.net: torch.nn.Module = self.model
        if ctx.distributed:
            self.net = DistributedDataParallel(
                self.model,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=may_skip_parameters(self.model, task),
            )
        self.step = self.epoch = self.batches_done = 0
        self.log = MetricsLog(out_dir / "metrics.jsonl", enabled=ctx.is_main)
        self.checkpoint_path = out_dir / "checkpoints" / "last.pt"
        self._rng_after_step = rng_state()
        self._loss_sum, self._loss_count = 0.0, 0  # this rank's losses since the last log record
        self._stop_requested = False
        self._updating = False
        self.per_image_counts: np.ndarray | None = None

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this run is (after the last full step),
        but the logging window, which :meth:`save` collects from every rank.

        Example:
            >>> # torch.save(trainer.state_dict(), "last.pt")
        """
        return {
            "arm": self.arm.name,
            "signature": self.arm.signature,
            "position": {
                "world_size": self.ctx.world_size,
                "batch_size": self.cfg.train.batch_size,
                "seed": self.cfg.seed,
            },
            "step": self.step,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self._rng_after_step,
            "config": self.cfg.to_dict(),
        }

    def save(self, synced: bool = True) -> Path | None:
        """Write ``checkpoints/last.pt`` (rank 0) with every rank's training-loss sums since the
        last log record; returns its path.

        ``synced``: every rank calls this at the same step. ``False`` (an abort inside a step,
        where only this rank is here) keeps rank 0's sums only.

        Example:
            >>> # trainer.save()  ->  Path("runs/x/checkpoints/last.pt")
        """
        window = [self._loss_sum, float(self._loss_count)]
        if synced:
            windows = gather_across_ranks(window, self.ctx)
        else:
            windows = [window] + [[0.0, 0.0]] * (self.ctx.world_size - 1)
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, {**self.state_dict(), "log_window": windows})
        return self.checkpoint_path

    def load(self, path: Path) -> None:
        """Restore a checkpoint written by :meth:`save`, checked against this arm, position and
        recipe (:func:`~dysample_swap.finetune.config.check_resume`).

        Example:
            >>> # trainer.load(Path("runs/x/checkpoints/last.pt"))
        """
        state = load_checkpoint(path, self.arm.signature)
        check_signature(path, state["position"], self.state_dict()["position"])
        check_resume(state["config"], self.cfg, path)
        load_model_state(self.model, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"{path}: optimiser/scheduler state does not fit this run ({err}); "
                "resume with the recipe and settings it was written with"
            ) from err
        self.step, self.epoch, self.batches_done = state["step"], state["epoch"], state["batches_done"]
        self._rng_after_step = state["rng"]
        set_rng_state(state["rng"])
        # Checkpoints written before the window was saved start an empty one.
        window = state.get("log_window", [[0.0, 0.0]] * self.ctx.world_size)[self.ctx.rank]
        self._loss_sum, self._loss_count = float(window[0]), int(window[1])
        # With a window under way, a training record at this step was the partial one of a run
        # stopped between two log steps: the next record covers the whole window.
        self.log.truncate_after(self.step, partial=self._loss_count > 0)

    # ----------------------------------------------------------------- loop
    def _batches(self) -> Iterator[Any]:
        """Training batches from the current position onwards, epoch after epoch."""
        while True:
            self.sampler.set_epoch(self.epoch)
            self.sampler.set_start(self.batches_done)
            self.loader_generator.manual_seed(self.cfg.seed * 100003 + self.epoch)
            yield from self.loader
            self.epoch += 1
            self.batches_done = 0

    def _train_step(self, batch: Any) -> float:
        t = self.cfg.train
        self.net.train()
        batch = self.task.to_device(batch, self.ctx.device)
        with autocast(self.ctx, t.amp):
            loss = self.task.loss(self.net, batch)
        if t.amp != "fp16" and not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at step {self.step}; lower train.lr, set train.grad_clip, or use train.amp=none"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.step < t.dysample_only_steps and self.upsampler_params:
            for param in self.other_params:  # no gradient: no update, no weight decay, no state
                param.grad = None
        if t.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], t.grad_clip)
        self._updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self.batches_done += 1
        self._updating = False
        self._rng_after_step = rng_state()
        return float(loss.detach())

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        if self.ctx.is_main:
            tqdm.write(
                "stopping after this step (checkpoint follows); press Ctrl-C again to drop the step under "
                "way (the checkpoint then holds the last completed step)"
            )

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _evaluate(self) -> dict[str, float]:
        state = evaluate_metrics(self.model, self.task, self.val_set, self.cfg, self.ctx)
        metrics = {k: float(v) for k, v in state.compute().items()}
        self.per_image_counts = getattr(state, "per_image_counts", lambda: None)()
        record = {"split": "val", "step": self.step, "epoch": self.epoch, **metrics}
        self.log.write(record)
        return metrics

    def fit(self, resume: bool = False) -> FitResult:
        """Train until the budget (or ``train.stop_after``) is reached; evaluate at the end.

        ``resume=True`` continues from ``checkpoints/last.pt`` in ``out_dir``.

        Example:
            >>> # result = trainer.fit(); result.metrics["mIoU"], result.img_per_s
        """
        t = self.cfg.train
        if resume:
            self.load(self.checkpoint_path)
        else:
            self.log.truncate_after(0)  # a fresh run starts a fresh log
        train_time, images = 0.0, 0
        last_loss: float | None = None
        bar = tqdm(
            total=self.stop_at,
            initial=self.step,
            desc=f"train {self.arm.name}",
            dynamic_ncols=True,
            disable=not progress_enabled(t.progress, self.ctx),
        )
        batches = self._batches()
        with self._signals(), bar:
            try:
                tick = time.perf_counter()
                while self.step < self.stop_at:
                    batch = next(batches)
                    loss = self._train_step(batch)
                    images += self.task.batch_size(batch) * self.ctx.world_size
                    train_time += time.perf_counter() - tick
                    self._loss_sum, self._loss_count = self._loss_sum + loss, self._loss_count + 1
                    bar.update(1)
                    # Records every log_every steps and at the end of the budget; a run stopped
                    # before (train.stop_after) also logs its partial window, which it keeps.
                    on_grid = self.step % t.log_every == 0 or self.step == self.total_steps
                    if on_grid or self.step == self.stop_at:
                        total, count = sum_across_ranks([self._loss_sum, self._loss_count], self.ctx)
                        last_loss = total / count
                        record = {
                            "split": "train",
                            "step": self.step,
                            "epoch": self.epoch,
                            "loss": last_loss,
                            "lr": self.optimizer.param_groups[0]["lr"],
                            "img_per_s": images / train_time,
                        }
                        self.log.write(record)
                        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{record['lr']:.2e}")
                    if on_grid:
                        self._loss_sum, self._loss_count = 0.0, 0
                    if t.eval_every and self.step % t.eval_every == 0 and self.step < self.stop_at:
                        self._evaluate()
                    if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                        self.save()
                    if any_rank(self._stop_requested, self.ctx):
                        raise TrainingInterrupted(self.step, self.save())
                    tick = time.perf_counter()
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt:
                if self._updating:  # stopped inside the optimiser update: state is inconsistent
                    raise
                raise TrainingInterrupted(self.step, self.save(synced=False)) from None
        self.save()
        metrics = self._evaluate()
        return FitResult(
            steps=self.step,
            total_steps=self.total_steps,
            completed=self.step >= self.total_steps,
            train_time_s=train_time,
            images_seen=images,
            final_loss=last_loss,
            metrics=metrics,
            checkpoint=self.checkpoint_path,
            per_image_counts=self.per_image_counts,
        )


def may_skip_parameters(model: torch.nn.Module, task: Any) -> bool:
    """Whether a step may leave some of the model's parameters without a gradient, which DDP must
    then look for (``find_unused_parameters``): torchvision detectors and Panoptic FPN (heads that
    a batch without boxes skips) and transformers models (DPT's first fusion layer never uses its
    residual branch; MaskFormer's auxiliary outputs).

    Example:
        >>> class Seg: name = "segmentation"
        >>> may_skip_parameters(torch.nn.Conv2d(3, 3, 1), Seg())
        False
    """
    from dysample_swap.integrations.transformers import owns

    return task.name in ("detection", "panoptic") or owns(model)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameter elements.

    Example:
        >>> count_parameters(torch.nn.Linear(2, 3))
        9
    """
    return sum(p.numel() for p in module.parameters())
