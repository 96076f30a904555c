"""Worker for tests/finetune/test_distributed.py, launched as ``torchrun --nproc_per_node 2 THIS OUT``.

Trains the tiny segmentation model of the engine tests with DistributedDataParallel (gloo), then
writes, per rank, the sample indices it read, a digest of its final weights and buffers, and the
validation metrics it got, to ``OUT/rank<k>.json``. Rank 0's run directory is ``OUT/run``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dysample_swap.finetune.builders import load_datasets, make_arm, seed_everything
from dysample_swap.finetune.config import build_config
from dysample_swap.finetune.distributed import init_distributed, shutdown_distributed
from dysample_swap.finetune.engine import Trainer
from dysample_swap.finetune.tasks import make_task

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_resume import TinySeg

CONFIG = {
    "data": {"format": "synthetic", "image_size": 16, "num_samples": 20, "num_val_samples": 5, "num_classes": 2},
    "train": {
        "max_steps": 4,
        "batch_size": 2,
        "lr": 0.01,
        "log_every": 1,
        "progress": "never",
        "device": "cpu",
        "checkpoint_every": 2,
    },
    "eval": {"batch_size": 2},
}


class Recorder(Dataset):
    """Wraps a dataset and remembers which indices were read."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.seen = inner, []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        self.seen.append(int(index))
        return self.inner[index]


def digest(module: torch.nn.Module) -> str:
    sha = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def main(out: Path) -> None:
    cfg = build_config(CONFIG)
    ctx = init_distributed("cpu")
    train_set, val_set = load_datasets(cfg)
    task = make_task(cfg.task, train_set)
    seed_everything(0)
    arm = make_arm(cfg, TinySeg(task.num_classes), task, val_set, swapped=True, verbose=False)
    recorder = Recorder(train_set)
    result = Trainer(cfg, arm, task, recorder, val_set, ctx, out / "run").fit()
    (out / f"rank{ctx.rank}.json").write_text(
        json.dumps(
            {
                "rank": ctx.rank,
                "world_size": ctx.world_size,
                "indices": recorder.seen,
                "digest": digest(arm.model),
                "metrics": result.metrics,
            }
        )
    )
    shutdown_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
