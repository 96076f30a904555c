"""Peak memory of a block of work, per arm of ``compare``.

On a CUDA device: ``torch.cuda.max_memory_allocated`` (tensor memory, reset when the block
starts). On the CPU: the process's resident set size, sampled by a background thread every
``interval`` seconds while the block runs (Linux ``/proc/self/statm``; elsewhere the
``getrusage`` high-water mark, which never goes down, so it only separates runs made in separate
processes, e.g. ``compare --jobs N``).

Example:
    >>> with PeakMemory(torch.device("cpu")) as peak:
    ...     x = torch.zeros(1024, 1024)
    >>> peak.megabytes > 0, peak.kind
    (True, 'cpu process RSS')
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from pathlib import Path
from types import TracebackType

import torch

_STATM = Path("/proc/self/statm")


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far (``getrusage``).

    Example:
        >>> resident_bytes() > 0
        True
    """
    if _STATM.is_file():
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; BSDs: KiB


class PeakMemory:
    """Context manager measuring the peak memory while its block runs (see the module docstring).

    ``megabytes`` (MiB) and ``kind`` (``"cuda max allocated"`` or ``"cpu process RSS"``) are set
    when the block exits.

    Example:
        >>> with PeakMemory(torch.device("cpu"), interval=0.01) as peak:
        ...     pass
        >>> peak.megabytes >= 0.0
        True
    """

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self.device = device
        self.interval = interval
        self.kind = "cuda max allocated" if device.type == "cuda" else "cpu process RSS"
        self.megabytes = 0.0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, resident_bytes())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._peak = resident_bytes()
            self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, resident_bytes())
        self.megabytes = round(peak / 2**20, 1)
