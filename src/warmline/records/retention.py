"""How long call recordings (and old trace files) are kept: older files are deleted.

Recordings are personal data (a caller's voice), so they are kept no longer
than the operator said ([recording] retention_days). The sweep looks only at
``*.wav`` files directly in the recordings folder, judges their age by the
time they were last written (a recording is finished when its call ends),
and never follows a link out of the folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("warmline")
DAY = 86400.0


def sweep_recordings(directory: Path, retention_days: float,
                     now: Callable[[], float] = time.time) -> list[Path]:
    """Delete the recordings in ``directory`` last written more than ``retention_days``
    ago; returns what was deleted. 0 days keeps everything; a missing folder has none."""
    return sweep_old_files(directory, "*.wav", retention_days, now)


def sweep_old_files(directory: Path, pattern: str, retention_days: float,
                    now: Callable[[], float] = time.time) -> list[Path]:
    """Delete the regular files matching ``pattern`` directly in ``directory`` last
    written more than ``retention_days`` ago (links never followed); what was deleted."""
    if retention_days <= 0 or not directory.is_dir():
        return []
    oldest_kept = now() - retention_days * DAY
    deleted = []
    for path in sorted(directory.glob(pattern)):
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_mtime >= oldest_kept:
                continue
            path.unlink()
        except OSError as error:  # gone meanwhile, or not ours to delete: the next sweep
            log.warning("%s not deleted: %s", path.name, error.strerror)
            continue
        deleted.append(path)
    return deleted
