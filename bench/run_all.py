"""Every benchmark in turn (what ``make bench`` runs); ``--quick`` for smoke-test sizes.
The PostgreSQL ones (``pg_*``) print why they skipped when the server is not reachable.

python -m bench.run_all [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from bench import (
    drain,
    engine,
    memory,
    pg_claim,
    pg_drain,
    pg_wakeup,
    poll,
    results,
    submit,
    watchers,
    webhooks,
)
from bench.report import parse_args

BENCHMARKS: tuple[tuple[str, Callable[[Sequence[str] | None], None]], ...] = (
    ("submit", submit.main),
    ("poll", poll.main),
    ("drain", drain.main),
    ("engine", engine.main),
    ("memory", memory.main),
    ("watchers", watchers.main),
    ("results", results.main),
    ("webhooks", webhooks.main),
    ("pg_claim", pg_claim.main),
    ("pg_wakeup", pg_wakeup.main),
    ("pg_drain", pg_drain.main),
)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(__doc__ or "", argv)
    forwarded = ["--quick"] if args.quick else []
    started = time.monotonic()
    failed = []
    for name, run in BENCHMARKS:
        began = time.monotonic()
        try:
            run(forwarded)
        except Exception as exc:  # one failing benchmark must not hide the others' figures
            failed.append(name)
            print(f"\n!! {name} failed: {type(exc).__name__}: {exc}")
        print(f"   ({name}: {time.monotonic() - began:.0f} s)", flush=True)
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
