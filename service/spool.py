"""The spool folder: temporary files of requests and jobs in progress (uploads being
converted, per-job work folders, results being encoded for a download).

Each entry's name starts with its owner's tag (``p<host hash>.<pid>-``), so any
process may remove what a crashed one left behind (kill -9, power loss) without
touching the files of processes that are still alive; every process sweeps at start
and its workers again every rescue interval. ``inputs/`` is swept by job state
instead (see ``Worker._sweep_inputs``).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from service.processes import owner_tag, tag_is_dead

log = logging.getLogger("framejobs.spool")
_OWNED = re.compile(r"p([0-9a-f]{8}\.\d+)-")


def ensure(folder: Path) -> Path:
    """The spool folder, made when missing: the owner's alone, like the database (it
    holds inputs and results), whichever of submit, worker or start-up makes it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def owned(name: str) -> str:
    """``name`` prefixed with this process's tag."""
    return f"p{owner_tag()}-{name}"


def sweep(folder: Path) -> int:
    """Remove the entries of dead processes of this host; returns how many."""
    removed = 0
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        match = _OWNED.match(entry.name)
        if match is None or not tag_is_dead(match.group(1)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("removed %d file(s) left in %s by processes that ended", removed, folder)
    return removed
