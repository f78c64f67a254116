"""One log per training job that keeps every attempt, in order (`fpt train --log`).

Snakemake deletes a job's log file before the job runs (in the process that runs it: inside
the SLURM job too), so a retry would lose the attempts before it, and a job that still runs
after its Snakemake died (an orphan) would write into a deleted file. The log is therefore a
hard link to a second name that Snakemake does not know, `.<log name>.attempts` beside it:
each attempt links the log's name to that file again and appends to it, so the log reads as
every attempt's output, each starting with its header line (fpt.runlock.attempt_header).
Where hard links fail (a file system without them), the log holds this attempt only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def history(log: Path) -> Path:
    """The file that keeps every attempt of `log`."""
    return log.with_name(f".{log.name}.attempts")


def append_attempts_to(log: str | Path) -> None:
    """Send this process's stdout and stderr (its own and its children's, Python's and C
    libraries') to the end of `log`, linked to its history first."""
    log = Path(log)
    keep = history(log)
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.touch()
    if not (log.exists() and os.path.samefile(log, keep)):
        log.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.link(keep, log)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
