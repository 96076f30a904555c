"""Shared test setup: the paper-formula reference implementation lives in benchmarks/; test modules importable
by name; ultralytics offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

# ultralytics (a test extra) must never try to pip-install anything during the tests: its patched
# PIL Image.open installs pi-heif on the first unreadable image unless autoinstall is off.
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_OFFLINE", "true")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# Without a GPU, Triton's interpreter runs the Triton sampler's kernels on CPU tensors; it must be chosen
# before triton is first imported (torch itself does not import it).
if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests/ mirrors the package (upsamplers/, surgery/, integrations/, finetune/, cli/). A test module is
# importable by name from any test, as a model spec such as "test_compare:tiny_net" names one (also
# in compare's worker processes, which inherit sys.path).
TEST_FOLDERS = sorted(p for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and p.name != "__pycache__")
sys.path[:0] = [str(folder) for folder in TEST_FOLDERS]
