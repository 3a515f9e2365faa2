"""``framejobs worker`` without its LISTEN connection, so it finds new jobs only by
polling (every ``FRAMEJOBS_POLL_INTERVAL_S``): the baseline of bench/pg_wakeup.py.

    python -m bench._pg_nolisten_worker [framejobs worker options]
"""

from __future__ import annotations

import sys

import service.runtime


class _NoListener:
    """Stands in for service.pglisten.Listener: listens to nothing."""

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


if __name__ == "__main__":
    service.runtime.Listener = _NoListener  # type: ignore[assignment,misc]
    from service.cli import app

    app(["worker", *sys.argv[1:]])
