"""The metrics log of a run: one JSON object per line in ``metrics.jsonl``.

Training records: ``{"split": "train", "step", "epoch", "loss", "lr", "img_per_s"}``;
evaluation records: ``{"split": "val", "step", <metric>: value, ...}``.

Example:
    >>> import tempfile, os
    >>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "metrics.jsonl"))
    >>> log.write({"split": "train", "step": 1, "loss": 0.5})
    >>> read_log(log.path)[0]["loss"]
    0.5
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only JSONL writer (pass ``enabled=False`` on ranks other than 0).

    Example:
        >>> MetricsLog("/nonexistent/m.jsonl", enabled=False).write({"step": 1})
    """

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (non-finite numbers are written as null).

        Example:
            >>> import tempfile, os
            >>> MetricsLog(os.path.join(tempfile.mkdtemp(), "m.jsonl")).write({"loss": float("nan")})
        """
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")

    def truncate_after(self, step: int, partial: bool = False) -> None:
        """Drop records logged after ``step`` (they are redone when a run resumes from ``step``);
        with ``partial``, also the training record at ``step`` (a run stopped between two
        ``log_every`` steps logs its unfinished window there; resumed, it logs the whole window).

        Example:
            >>> import tempfile, os
            >>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "m.jsonl"))
            >>> for s in (1, 2, 3): log.write({"split": "train", "step": s})
            >>> log.truncate_after(2); [r["step"] for r in read_log(log.path)]
            [1, 2]
            >>> log.truncate_after(2, partial=True); [r["step"] for r in read_log(log.path)]
            [1]
        """
        if not self.enabled or not self.path.exists():
            return
        kept = [
            r
            for r in read_log(self.path)
            if r.get("step", 0) <= step and not (partial and r.get("step") == step and r.get("split") == "train")
        ]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (empty list if the file does not exist).

    Example:
        >>> read_log("/nonexistent/metrics.jsonl")
        []
    """
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by ``None`` (strict JSON has no NaN), recursively.

    A class absent from both predictions and ground truth has IoU NaN; it is written as null.

    Example:
        >>> json_safe({"IoU/a": float("nan"), "steps": [1, float("inf")]})
        {'IoU/a': None, 'steps': [1, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
