"""PNG plots of a run (matplotlib, Agg backend: no display needed).

* :func:`plot_curves`: training loss and validation metrics against the step, one line per arm
  (both arms on the same axes in compare mode).
* :func:`plot_predictions`: a grid, one row per validation image: the image, its ground truth
  and each arm's prediction.

Example:
    >>> import tempfile, os
    >>> logs = {"baseline": [{"split": "train", "step": 1, "loss": 1.0},
    ...                      {"split": "val", "step": 1, "mIoU": 0.5}]}
    >>> plot_curves(logs, ["mIoU"], os.path.join(tempfile.mkdtemp(), "curves.png")).suffix
    '.png'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import torch  # noqa: E402


def _series(records: Sequence[Mapping[str, Any]], split: str, key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in records
              if r.get("split") == split and r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(logs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str],
                path: str | Path) -> Path:
    """Loss and metric curves from ``metrics.jsonl`` records, one line per arm.

    ``logs`` maps an arm name to its records; ``metrics`` names the validation metrics to draw
    (one panel each, after the loss panel).

    Example:
        >>> import tempfile, os
        >>> p = plot_curves({"a": [{"split": "train", "step": 1, "loss": 2.0}]}, [],
        ...                 os.path.join(tempfile.mkdtemp(), "c.png"))
        >>> p.stat().st_size > 0
        True
    """
    path = Path(path)
    panels = ["loss", *metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        split = "train" if key == "loss" else "val"
        for arm, records in logs.items():
            steps, values = _series(records, split, key)
            ax.plot(steps, values, marker="" if len(steps) > 12 else "o", label=arm)
        ax.set_title(f"{'training' if split == 'train' else 'validation'} {key}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predictions(rows: Sequence[Sequence[torch.Tensor]], titles: Sequence[str],
                     path: str | Path) -> Path:
    """A grid of ``uint8 [3, H, W]`` pictures: ``rows[i][j]`` under column title ``titles[j]``.

    Example:
        >>> import tempfile, os
        >>> img = torch.zeros(3, 8, 8, dtype=torch.uint8)
        >>> plot_predictions([[img, img]], ["image", "truth"], os.path.join(tempfile.mkdtemp(), "p.png")).name
        'p.png'
    """
    path = Path(path)
    if not rows:
        raise ValueError("no pictures to plot; set eval.num_images >= 1")
    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.4 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        if len(row) != n_cols:
            raise ValueError(f"row {i} has {len(row)} pictures for {n_cols} titles")
        for j, picture in enumerate(row):
            ax = axes[i][j]
            ax.imshow(picture.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
