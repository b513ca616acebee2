"""Progress and resume of long local jobs.

Progress of Beam workers is reported through small files for a local progress bar:

Each worker (DoFn instance) owns one ``<uuid>.count`` file in a folder and rewrites it with
its running count at most twice a second; the command line sums them. Works for any local
runner (in-process or multi-process); an empty folder name turns reporting off.
"""

from __future__ import annotations

import os
import time
import uuid


class ProgressFile:
    def __init__(self, folder: str):
        self._path = os.path.join(folder, f"{uuid.uuid4().hex}.count") if folder else None
        self._done = 0
        self._last = 0.0

    def add(self, n: int = 1) -> None:
        self._done += n
        if self._path and time.monotonic() - self._last > 0.5:
            self.flush()

    def flush(self) -> None:
        if self._path:
            tmp = self._path + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(self._done))
            os.replace(tmp, self._path)
            self._last = time.monotonic()


def count(folder: str) -> int:
    """Sum of the counts reported in ``folder`` (0 if it is gone)."""
    done = 0
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for name in names:
        if name.endswith(".count"):
            try:
                with open(os.path.join(folder, name)) as fh:
                    done += int(fh.read() or 0)
            except (OSError, ValueError):
                pass  # being replaced
    return done


class ResumeError(RuntimeError):
    """An output folder holds a run of other inputs or settings: it cannot be resumed."""
