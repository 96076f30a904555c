"""PNG plots of a run (matplotlib, Agg backend: no display needed).

* :func:`plot_curves`: training loss and validation metrics against the step, one line per arm:
  the mean over the arm's runs (seeds), with a band from the lowest to the highest run.
* :func:`plot_predictions`: a grid, one row per validation image: the image, its ground truth
  and each arm's prediction.

Example:
    >>> import tempfile, os
    >>> logs = {"original": [[{"split": "train", "step": 1, "loss": 1.0},
    ...                       {"split": "val", "step": 1, "mIoU": 0.5}]]}
    >>> plot_curves(logs, ["mIoU"], os.path.join(tempfile.mkdtemp(), "curves.png")).suffix
    '.png'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch


def _series(records: Sequence[Mapping[str, Any]], split: str, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in records if r.get("split") == split and r.get(key) is not None}


def seed_band(
    runs: Sequence[Sequence[Mapping[str, Any]]], split: str, key: str
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Steps logged by every run, and the mean, minimum and maximum of ``key`` over the runs.

    Example:
        >>> runs = [[{"split": "val", "step": 5, "mIoU": 0.2}], [{"split": "val", "step": 5, "mIoU": 0.4}]]
        >>> steps, mean, low, high = seed_band(runs, "val", "mIoU")
        >>> steps, mean.round(3).tolist(), low.tolist(), high.tolist()
        ([5], [0.3], [0.2], [0.4])
    """
    series = [_series(records, split, key) for records in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    values = np.array([[s[step] for step in steps] for s in series], dtype=np.float64)
    if not steps:
        empty = np.zeros(0)
        return [], empty, empty, empty
    return steps, values.mean(0), values.min(0), values.max(0)


def plot_curves(
    logs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], metrics: Sequence[str], path: str | Path
) -> Path:
    """Loss and metric curves from ``metrics.jsonl`` records: per arm the mean over its runs, and
    (with two runs or more) a shaded band from the lowest to the highest run.

    ``logs`` maps an arm name to its runs (one record list per seed); ``metrics`` names the
    validation metrics to draw (one panel each, after the loss panel).

    Example:
        >>> import tempfile, os
        >>> p = plot_curves({"a": [[{"split": "train", "step": 1, "loss": 2.0}]]}, [],
        ...                 os.path.join(tempfile.mkdtemp(), "c.png"))
        >>> p.stat().st_size > 0
        True
    """
    path = Path(path)
    panels = ["loss", *metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    seeds = max((len(runs) for runs in logs.values()), default=1)
    for ax, key in zip(axes[0], panels):
        split = "train" if key == "loss" else "val"
        for arm, runs in logs.items():
            steps, mean, low, high = seed_band(runs, split, key)
            label = arm if len(runs) < 2 else f"{arm} (mean of {len(runs)})"
            (line,) = ax.plot(steps, mean, marker="" if len(steps) > 12 else "o", label=label)
            if len(runs) > 1:
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        what = "training" if split == "train" else "validation"
        ax.set_title(f"{what} {key}" + (f" (band: min-max over {seeds} seeds)" if seeds > 1 else ""), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predictions(rows: Sequence[Sequence[torch.Tensor]], titles: Sequence[str], path: str | Path) -> Path:
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
