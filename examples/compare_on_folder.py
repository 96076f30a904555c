"""Compare the original upsamplers with DySample on your own folder of images + PNG masks (CPU).

    python examples/compare_on_folder.py --root /path/to/data --num-classes 3
    python examples/compare_on_folder.py             # writes a small demo folder first

The folder holds ``images/`` and ``masks/`` (same file stems; masks are 8-bit PNGs of class
indices, 255 = ignore), or ``train/`` and ``val/`` each holding those two. This runs the
``smp_fpn_folder`` recipe in compare mode with a CPU-sized budget; the command-line equivalent is

    dysample-swap compare smp_fpn_folder --set data.root=ROOT --set data.num_classes=N \\
        --set data.image_size=64 --set train.max_steps=60 --set train.lr=1e-3 ...
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dysample_swap.finetune.cli import compare_table
from dysample_swap.finetune.config import load_config
from dysample_swap.finetune.data.synthetic import render_scene
from dysample_swap.finetune.runner import run_compare


def write_demo_folder(root: Path, count: int = 48, size: int = 64) -> Path:
    """A folder dataset of synthetic shapes (3 shape classes + background), as a user would have."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for index in range(count):
        scene = render_scene(np.random.default_rng(index), size, size, 3)
        Image.fromarray(scene.image).save(root / "images" / f"{index:04d}.jpg", quality=95)
        Image.fromarray(scene.semantic_mask().astype(np.uint8)).save(root / "masks" / f"{index:04d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="dataset folder (default: write a demo one)")
    parser.add_argument("--num-classes", type=int, default=4, help="classes in the masks")
    parser.add_argument("--steps", type=int, default=60, help="training steps per arm")
    parser.add_argument("--out", type=Path, default=Path("runs/compare_on_folder"))
    args = parser.parse_args()
    root = args.root or write_demo_folder(Path(tempfile.mkdtemp()) / "shapes")
    cfg = load_config(
        "smp_fpn_folder",
        [
            f"data.root={root}",
            f"data.num_classes={args.num_classes}",
            "data.image_size=64",
            "model.spec=smp:FPN:encoder_name=resnet18,classes={num_classes}",
            f"train.max_steps={args.steps}",
            "train.batch_size=8",
            "train.lr=1e-3",
            "train.warmup_steps=10",
            "train.amp=none",
            f"train.eval_every={args.steps // 2}",
            "train.checkpoint_every=0",
            "train.log_every=5",
            "eval.batch_size=8",
        ],
    )
    summary = run_compare(cfg, args.out)
    print(compare_table(summary))
    print(f"plots: {', '.join(summary['plots'].values())}")


if __name__ == "__main__":
    main()
