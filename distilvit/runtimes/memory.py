"""Peak resident memory of a process while a block runs: what `bench` reports for each runtime (a Python process,
Node, Chromium's renderers). It knows nothing about what the process does."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    """Peak resident memory of this process (or another pid) while the block runs, in MiB above the start.

    Where Linux lets us reset the kernel's high-water mark (writing 5 to /proc/PID/clear_refs), the peak is that mark
    (VmHWM) read at exit: exact, whatever the scheduler does. Elsewhere, and in addition, a thread samples the resident
    size every 5 ms and once more at exit, so memory still held at exit is always counted; a short spike between two
    samples is missed there. A PeakMemory nested inside another resets the mark, so the outer one then counts the
    time before the inner one from its samples only.
    """

    def __init__(self, pid: int | None = None, kernel_mark: bool = True):
        self.process = psutil.Process(pid or os.getpid())
        self._use_kernel_mark = kernel_mark
        self.peak = 0
        self._stop = threading.Event()
        self._proc = Path(f"/proc/{self.process.pid}")

    def __enter__(self):
        self._kernel_mark = self._use_kernel_mark and self._reset_kernel_mark()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.samples = 0  # taken by the thread so far
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _reset_kernel_mark(self) -> bool:
        try:
            (self._proc / "clear_refs").write_text("5")
            return self._read_kernel_mark() is not None
        except OSError:  # not Linux, or not allowed for this pid: samples only
            return False

    def _read_kernel_mark(self) -> int | None:
        try:
            for line in (self._proc / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        if self._kernel_mark:
            self.peak = max(self.peak, self._read_kernel_mark() or 0)

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20
