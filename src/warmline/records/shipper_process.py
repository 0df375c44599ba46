"""The engine's handle on the records shipper process (shipper.py): start it, wake it, hear
its reports, stop it.

The database URL travels in the child's environment, not on its command line,
so a password in it is not shown to every user of the machine by ``ps``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

URL_VARIABLE = "WARMLINE_RECORDS_URL"
EXIT_GRACE_SECONDS = 3.0  # beyond the shipping time asked for: then it is killed


class ShipperProcess:
    """One shipper process. ``on_report`` gets each line it writes (a reader thread,
    blocked in read() and so off the GIL, calls it); ``on_exit`` its exit code once its
    output ends, whether it was asked to stop or died.

    Start it from a thread that lives as long as the engine (the main thread): Linux
    delivers the child's PR_SET_PDEATHSIG when the thread that started it ends."""

    def __init__(self, journal: Path, url: str, retry_seconds: float,
                 on_report: Callable[[str], None], on_exit: Callable[[int], None]) -> None:
        self._on_report, self._on_exit = on_report, on_exit
        self._process = subprocess.Popen(
            [sys.executable, "-m", "warmline.records.shipper", str(journal), URL_VARIABLE,
             repr(retry_seconds), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            env={**os.environ, URL_VARIABLE: url})
        assert self._process.stdin is not None and self._process.stdout is not None
        self._control = self._process.stdin.fileno()
        os.set_blocking(self._control, False)
        self._reader = threading.Thread(target=self._read_reports, daemon=True,
                                        name="warmline-records-reports")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def wake(self) -> None:
        """New events are in the journal. Never blocks: a full pipe already holds
        wake-ups enough, and a dead child is noticed by the reader."""
        with contextlib.suppress(OSError):
            os.write(self._control, b"w")

    def close(self, timeout: float) -> None:
        """Ask it to ship for at most ``timeout`` seconds and exit; wait, kill if it does
        not, and return once its last report was handled."""
        with contextlib.suppress(OSError):
            os.set_blocking(self._control, True)
            os.write(self._control, f"c{timeout:.3f}\n".encode())
        try:
            self._process.wait(timeout + EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join()
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()

    def _read_reports(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            self._on_report(raw.decode("utf-8", "replace").rstrip("\n"))
        self._on_exit(self._process.wait())
