"""Shared test setup: the paper-formula reference implementation lives in benchmarks/; ultralytics offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# ultralytics (a test extra) must never try to pip-install anything during the tests: its patched
# PIL Image.open installs pi-heif on the first unreadable image unless autoinstall is off.
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "true")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
