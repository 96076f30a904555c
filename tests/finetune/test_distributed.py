"""Two processes on CPU with torchrun (gloo): sharded data, identical weights, whole-set metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dysample_swap.finetune.builders import load_datasets, make_arm
from dysample_swap.finetune.checkpoint import load_checkpoint, load_model_state
from dysample_swap.finetune.config import build_config
from dysample_swap.finetune.distributed import DistContext, TrainSampler
from dysample_swap.finetune.engine import evaluate
from dysample_swap.finetune.tasks import make_task

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from distributed_worker import CONFIG, digest  # noqa: E402
from test_engine_resume import TinySeg  # noqa: E402


@pytest.mark.slow
def test_two_process_training(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(HERE / "distributed_worker.py"),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]

    # Each rank read its own shard: 4 steps x batch 2, no index shared, as DistributedSampler says.
    seen0, seen1 = ranks[0]["indices"], ranks[1]["indices"]
    assert len(seen0) == len(seen1) == 8 and not set(seen0) & set(seen1)
    for rank, seen in enumerate((seen0, seen1)):
        sampler = TrainSampler(range(20), num_replicas=2, rank=rank, seed=0, batch_size=2)
        sampler.set_epoch(0)
        assert seen == list(sampler)[:8]

    # Same weights (and, after evaluation's broadcast, the same buffers) on both ranks, and they
    # are what rank 0 saved.
    assert ranks[0]["digest"] == ranks[1]["digest"]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["position"]["world_size"] == 2

    # The distributed metrics are the whole validation set's (5 images, odd: no padding): both
    # ranks got the numbers one process gets for the saved model on all 5 images.
    cfg = build_config(CONFIG)
    train_set, val_set = load_datasets(cfg)
    task = make_task("segmentation", train_set)
    arm = make_arm(cfg, TinySeg(task.num_classes), task, val_set, swapped=True, verbose=False)
    load_model_state(arm.model, state["model"], "last.pt")
    assert digest(arm.model) == ranks[0]["digest"]
    single = evaluate(arm.model, task, val_set, cfg, DistContext(0, 1, 0, torch.device("cpu")))
    assert ranks[0]["metrics"] == ranks[1]["metrics"] == pytest.approx(single, abs=1e-12)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["split"] == "train"] == [1, 2, 3, 4]  # rank 0 wrote once
