"""The worker: a claimer hands jobs to slot threads; a monitor keeps them honest.

The claimer takes as many due jobs as there are free slots (a few per statement);
each slot runs one job: execute -> finish. The monitor, every ``progress_interval_s``,
saves changed progress, enforces timeouts and notices cancel requests; a heartbeat
thread renews leases every ``heartbeat_s``; a housekeeping thread re-queues jobs whose
worker vanished every ``rescue_interval_s`` (and prunes, when set). ``stop()`` only
sets an event: slots stop claiming, running jobs get the grace period, then are
interrupted and go back to the queue.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import SQLAlchemyError

from service import claim as claiming
from service import finish, spool
from service.config import Settings
from service.db import reading, writing
from service.decode import StoredFrame
from service.errors import (
    FramejobsError,
    Interrupted,
    JobCancelled,
    JobError,
    JobTimeout,
    ServiceUnavailable,
    first_line,
)
from service.execute import Engines, ExecutionHandle, run_pipeline
from service.logs import log_streak, worth_logging
from service.metrics import Metrics
from service.notify import Hub
from service.pipelines import Registry
from service.progress import cancel_requested, renew_leases, write_progress
from service.prune import prune
from service.retry import RetryStrategy
from service.schemas import TERMINAL
from service.store import live_jobs, payload_to_file, utcnow
from service.submit import input_cache

log = logging.getLogger("framejobs.worker")


@dataclass
class _Running:
    handle: ExecutionHandle
    attempt: finish.Attempt
    pipeline: str
    last_written: tuple[float | None, str | None] = (None, None)


@dataclass(frozen=True)
class Outcome:
    """What to save when an attempt ends: ``save`` writes it in one transaction."""

    save: Callable[..., RowMapping | None]
    args: dict[str, Any] = field(default_factory=dict)


class Worker:
    # How long stop() waits for the claimer, for interrupted jobs, for the monitor threads
    join_s = 10.0
    # Worker ids alive in this process: a restarted process can get the pid of a dead
    # one, so "same pid" alone does not mean "alive".
    _live_ids: frozenset[str] = frozenset()
    _live_lock = threading.Lock()

    def __init__(
        self,
        *,
        engine: Engine,
        settings: Settings,
        registry: Registry,
        engines: Engines,
        hub: Hub,
        concurrency: int,
        metrics: Metrics | None = None,
        retry: RetryStrategy | None = None,
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.settings = settings
        self.registry = registry
        self.engines = engines
        self.hub = hub
        self.concurrency = concurrency
        self.retry = retry or RetryStrategy(
            base_s=settings.retry_base_s, max_s=settings.retry_max_s
        )
        self.id = claiming.worker_id(secrets.token_hex(4))
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor_stop = threading.Event()
        self._hurry = threading.Event()
        self._slot_free = threading.Condition()
        self._in_flight = 0
        self._local_failures = 0  # in a row: jobs this machine could not prepare
        self._pool: ThreadPoolExecutor | None = None
        self._claimer: threading.Thread | None = None
        self._monitors: list[threading.Thread] = []
        hub.on_cancel(self._on_cancel)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        with Worker._live_lock:
            Worker._live_ids = Worker._live_ids | {self.id}
        self._rescue()
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="fj-job")
        self._claimer = threading.Thread(target=self._claim_loop, name="fj-claim", daemon=True)
        self._claimer.start()
        for name, duties in self._duties().items():
            thread = threading.Thread(
                target=self._run_duties, args=(duties,), name=f"fj-{name}", daemon=True
            )
            thread.start()
            self._monitors.append(thread)

    def stop(self, grace_s: float) -> None:
        """Stop claiming; give running jobs ``grace_s``; interrupt the rest (re-queued)."""
        self._stopping.set()
        self.hub.wake_all()
        with self._slot_free:
            self._slot_free.notify_all()
        if self._claimer is not None:
            self._claimer.join(self.join_s)
        if not self._wait_idle(grace_s):
            for running in self._snapshot():
                running.handle.interrupt("shutdown")
            self._hurry.clear()  # now wait for the interrupted jobs to be saved
            if not self._wait_idle(self.join_s):
                self._log_deaf()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._monitor_stop.set()
        deadline = time.monotonic() + self.join_s  # one wait for all three, not one each
        for thread in self._monitors:
            thread.join(max(0.0, deadline - time.monotonic()))
        with Worker._live_lock:
            Worker._live_ids = Worker._live_ids - {self.id}

    def _log_deaf(self) -> None:
        # Python between queries stops only at its next progress() or check_cancelled()
        # call, and DuckDB's binder not at all; until they return, their thread keeps
        # the process from exiting.
        for running in self._snapshot():
            log.warning(
                "job %s (pipeline %r) did not stop when interrupted: it runs work that "
                "checks for no stop (Python that calls neither ctx.progress() nor "
                "ctx.check_cancelled(), or DuckDB binding a query, which cannot be "
                "interrupted); the process exits once it returns",
                running.attempt.job_id,
                running.pipeline,
            )

    def hurry(self) -> None:
        """End the grace period now (a second SIGTERM/SIGINT): interrupt and re-queue."""
        self._hurry.set()
        with self._slot_free:
            self._slot_free.notify_all()

    def _wait_idle(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        with self._slot_free:
            while self._in_flight and not self._hurry.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._slot_free.wait(left)
            return self._in_flight == 0

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    # -- claiming ------------------------------------------------------------------------
    def _claim_loop(self) -> None:
        """Claim as many jobs as there are free slots (a few at a time), hand them out."""
        failures = 0
        while not self._stopping.is_set():
            free = self._wait_for_free_slot()
            if not free:
                return
            if pause := self._local_pause():
                # This machine could not prepare its last jobs: claiming at full speed
                # would only bounce the queue. Wait, then try (and so find out) again.
                self._stopping.wait(pause)
            try:
                jobs = self._claim(min(free, self.settings.claim_batch))
                failures = 0
            except Exception:  # the claim thread must outlive any one failure
                failures += 1
                log_streak(log, "claim", failures)
                self._stopping.wait(_backoff(failures, self.settings.poll_interval_s))
                continue
            if not jobs:
                self.hub.wait_for_work(self.settings.poll_interval_s)
                continue
            for job in jobs:
                self._hand_out(job)

    def _hand_out(self, job: RowMapping) -> None:
        """Run the job in a slot. A claim can outlast ``stop()``'s wait for it (the
        database was slow): a job claimed while stopping goes back to the queue with
        its attempt refunded, instead of staying ``running`` under a stopped worker."""
        with self._slot_free:
            self._in_flight += 1
        try:
            if self._stopping.is_set() or self._pool is None:
                raise RuntimeError("the worker is stopping")
            self._pool.submit(self._run_slot, job)
        except RuntimeError:  # also the pool's own "cannot schedule after shutdown"
            self._run_slot(job, Outcome(finish.requeue, _REFUND | {"message": _NOT_STARTED}))

    def _wait_for_free_slot(self) -> int:
        with self._slot_free:
            while self._in_flight >= self.concurrency and not self._stopping.is_set():
                self._slot_free.wait(1.0)
            return 0 if self._stopping.is_set() else self.concurrency - self._in_flight

    def _run_slot(self, job: RowMapping, instead: Outcome | None = None) -> None:
        try:
            if instead is None:
                self._process(job)
            else:
                self._save(finish.Attempt(job["id"], self.id, job["attempt"]), instead)
        except Exception:  # an error here would otherwise vanish with the slot's future
            log.exception("job %s: the worker slot failed", job["id"])
        finally:
            with self._slot_free:
                self._in_flight -= 1
                self._slot_free.notify_all()

    def _claim(self, limit: int) -> list[RowMapping]:
        with writing(self.engine) as conn:
            jobs = claiming.claim(
                conn,
                worker=self.id,
                now=utcnow(),
                lease_s=self.settings.lease_s,
                limit=limit,
                pipelines=self.registry.names,
            )
        for job in jobs:
            self.hub.job_changed(job["id"])
        return jobs

    def _process(self, job: RowMapping) -> None:
        attempt = finish.Attempt(job["id"], self.id, job["attempt"])
        workdir: Path | None = None
        outcome = Outcome(finish.fail, {"error_type": "InternalError", "message": "lost"})
        started = time.monotonic()
        try:
            workdir = Path(
                tempfile.mkdtemp(prefix=spool.owned(f"job-{job['id']}-"), dir=self._spool())
            )
            pipeline = self.registry.get(job["pipeline"])
            handle = ExecutionHandle(
                job_id=job["id"],
                attempt=job["attempt"],
                params=pipeline.parse_params(job["params"]),
                timeout_s=job["timeout_s"],
            )
            with self._lock:
                self._running[job["id"]] = _Running(handle, attempt, pipeline.name)
            if job["cancel_requested"]:
                handle.interrupt("cancel")
            input_path = self._input(job, workdir)
            with self._lock:
                self._local_failures = 0
            result = run_pipeline(
                self.engines,
                handle,
                pipeline,
                input_path=input_path,
                result_path=workdir / "result.parquet",
                max_result_bytes=self.settings.max_result_bytes,
            )
            outcome = Outcome(finish.complete, {"result": result, "message": handle.message})
        except JobError as exc:
            outcome = self._after_error(job, exc)
        except (ServiceUnavailable, SQLAlchemyError) as exc:
            # The database went away mid-job: not the job's fault, so it runs again.
            outcome = Outcome(finish.requeue, _REFUND | {"message": str(exc)[:500]})
        except FramejobsError as exc:
            outcome = Outcome(
                finish.fail, {"error_type": type(exc).__name__, "message": _described(exc)}
            )
        except OSError as exc:
            outcome = self._after_local_failure(job["id"], exc)
        except Exception as exc:
            log.exception("job %s: unexpected error", job["id"])
            outcome = Outcome(finish.fail, {"error_type": "InternalError", "message": repr(exc)})
        finally:
            with self._lock:
                self._running.pop(job["id"], None)
            # Only a completed job's save reads its folder (the result). Any other is
            # removed first: a partial result may have filled the disk the save needs.
            keep_until_saved = outcome.save is finish.complete
            if workdir is not None and not keep_until_saved:
                shutil.rmtree(workdir, ignore_errors=True)
            row = self._save(attempt, outcome)
            if workdir is not None and keep_until_saved:
                shutil.rmtree(workdir, ignore_errors=True)
            self._count(job["pipeline"], row, time.monotonic() - started)

    def _after_local_failure(self, job_id: str, exc: OSError) -> Outcome:
        """This machine could not prepare the job (its spool folder is full, gone or
        read-only): not the job's fault. Back to the queue, attempt refunded, after a
        pause that grows while the trouble lasts, so that it is not claimed in a loop."""
        with self._lock:
            self._local_failures += 1
            failures = self._local_failures
        if worth_logging(failures):
            log.error(
                "job %s: could not prepare its work folder (%d in a row): %s", job_id, failures, exc
            )
        message = f"the worker could not prepare the job ({exc.strerror or exc}); it will run again"
        return Outcome(
            finish.requeue, _REFUND | {"delay_s": self._local_pause(), "message": message}
        )

    def _local_pause(self) -> float:
        """0 while jobs can be prepared here; else a pause that grows with the streak."""
        with self._lock:
            failures = self._local_failures
        return _backoff(failures, max(self.settings.retry_base_s, 0.1)) if failures else 0.0

    def _count(self, pipeline: str, row: RowMapping | None, seconds: float) -> None:
        if self.metrics is None:
            return
        status = row["status"] if row is not None else "lease_lost"
        self.metrics.finished.labels(pipeline, status).inc()
        self.metrics.run_seconds.labels(pipeline).observe(seconds)

    def _input(self, job: RowMapping, workdir: Path) -> Path:
        """The local copy submit left here when its size matches the stored payload
        (payloads never change), else a fresh copy out of the database."""
        cached = input_cache(self.settings, job["id"])
        if cached.exists() and cached.stat().st_size == job["input_bytes"]:
            return cached
        return payload_to_file(self.engine, job["id"], "input", workdir / "input.parquet")

    def _after_error(self, job: RowMapping, exc: JobError) -> Outcome:
        name, message = type(exc).__name__, exc.detail
        if isinstance(exc, JobCancelled):
            return Outcome(finish.cancelled)
        if isinstance(exc, Interrupted):
            return Outcome(finish.requeue, _REFUND | {"message": message})
        delay = None
        if not isinstance(exc, JobTimeout):
            delay = self.retry.delay(
                attempt=job["attempt"], max_attempts=job["max_attempts"], error=exc
            )
        if delay is None:
            return Outcome(finish.fail, {"error_type": name, "message": message})
        return Outcome(finish.requeue, {"delay_s": delay, "error_type": name, "message": message})

    def _save(self, attempt: finish.Attempt, outcome: Outcome) -> RowMapping | None:
        """Persist the outcome, retrying through brief database trouble. If it cannot be
        saved before the lease runs out, rescue re-queues the job: nothing is lost."""
        try:
            row = self._write(attempt, outcome)
        except _Unsaved:
            return None
        except Exception as exc:  # a bug: fail the job now rather than at its rescue
            log.exception("job %s: its outcome could not be saved", attempt.job_id)
            if outcome.save is finish.fail:
                return None
            message = f"the outcome could not be saved: {type(exc).__name__}"
            failed = {"error_type": "InternalError", "message": message}
            return self._save(attempt, Outcome(finish.fail, failed))
        self._announce(attempt.job_id, row)
        return row

    def _write(self, attempt: finish.Attempt, outcome: Outcome) -> RowMapping | None:
        deadline = time.monotonic() + self.settings.lease_s
        args = dict(outcome.args)
        if outcome.save is finish.complete:
            args["chunk_bytes"] = self.settings.payload_chunk_bytes
        failures = 0
        while True:
            try:
                with writing(self.engine) as conn:
                    return outcome.save(conn, attempt, now=utcnow(), **args)
            except (SQLAlchemyError, ServiceUnavailable) as exc:
                if time.monotonic() > deadline:
                    log.exception("job %s: could not save its outcome", attempt.job_id)
                    raise _Unsaved from None
                failures += 1
                if worth_logging(failures, every=20):
                    log.warning(
                        "job %s: saving the outcome failed (%s); retrying",
                        attempt.job_id,
                        first_line(exc),
                    )
                time.sleep(0.5)

    def _announce(self, job_id: str, row: RowMapping | None) -> None:
        """Tidy up after a saved outcome and wake whoever waits for it."""
        if row is None or row["status"] in TERMINAL:
            with contextlib.suppress(OSError):  # a spool gone bad: the sweep retries it
                input_cache(self.settings, job_id).unlink(missing_ok=True)
        if row is None:
            log.warning("job %s: lease lost before the outcome was saved", job_id)
        elif row["status"] == "queued":
            self.hub.work_available()
        elif row["webhook_state"] == "pending":
            self.hub.deliveries_due()
        self.hub.job_changed(job_id)

    def _spool(self) -> Path:
        return spool.ensure(self.settings.spool_dir)

    # -- monitor -------------------------------------------------------------------------
    def _snapshot(self) -> list[_Running]:
        with self._lock:
            return list(self._running.values())

    def _on_cancel(self, job_id: str) -> None:
        with self._lock:
            running = self._running.get(job_id)
        if running is not None:
            running.handle.interrupt("cancel")

    def _duties(self) -> dict[str, list[_Duty]]:
        """The monitor's duties, by thread. Heartbeats have a thread of their own: a
        duty that waits (a prune of a million rows, a rescue on a locked row, a slow
        progress write) must never delay the lease renewals of healthy jobs."""
        settings = self.settings
        housekeeping = [_Duty("rescue", settings.rescue_interval_s, self._housekeeping)]
        if (after_s := settings.prune_after_s) is not None and after_s > 0:
            prune_old = partial(self._prune, after_s)
            housekeeping.append(_Duty("prune", settings.prune_interval_s, prune_old))
        return {
            "monitor": [_Duty("progress", 0.0, lambda: self._tick(self._snapshot()))],
            "heartbeat": [
                _Duty("heartbeat", settings.heartbeat_s, lambda: self._heartbeat(self._snapshot()))
            ],
            "housekeeping": housekeeping,
        }

    def _run_duties(self, duties: list[_Duty]) -> None:
        while not self._monitor_stop.wait(self.settings.progress_interval_s):
            for duty in duties:
                duty.run_if_due()

    def _housekeeping(self) -> None:
        self._rescue()
        self._sweep_inputs()
        spool.sweep(self.settings.spool_dir)

    def _tick(self, running: list[_Running]) -> None:
        if not running:
            return
        for item in running:
            item.handle.check_deadline()
        with reading(self.engine) as conn:
            wanted = cancel_requested(
                conn, worker=self.id, job_ids=[r.attempt.job_id for r in running]
            )
        for item in running:
            if item.attempt.job_id in wanted:
                item.handle.interrupt("cancel")
        self._flush_progress(running)

    def _flush_progress(self, running: list[_Running]) -> None:
        for item in running:
            percent, message = item.handle.snapshot()
            rounded = (round(percent, 1) if percent is not None else None, message)
            if rounded == item.last_written:
                continue
            with writing(self.engine) as conn:
                write_progress(
                    conn,
                    job_id=item.attempt.job_id,
                    worker=self.id,
                    attempt=item.attempt.attempt,
                    percent=rounded[0],
                    message=message,
                    now=utcnow(),
                )
            item.last_written = rounded
            self.hub.job_changed(item.attempt.job_id)

    def _heartbeat(self, running: list[_Running]) -> None:
        if not running:
            return
        jobs = [(r.attempt.job_id, r.attempt.attempt) for r in running]
        with writing(self.engine) as conn:
            held = renew_leases(
                conn, worker=self.id, jobs=jobs, now=utcnow(), lease_s=self.settings.lease_s
            )
        log.debug("heartbeat: renewed %s of %s", sorted(held), [j for j, _ in jobs])
        for item in running:
            # A job that ended since the snapshot holds no lease either: it was not lost.
            if item.attempt.job_id not in held and self._still_running(item):
                log.warning("job %s: lease lost; stopping it", item.attempt.job_id)
                item.handle.interrupt("shutdown")

    def _still_running(self, item: _Running) -> bool:
        with self._lock:
            return self._running.get(item.attempt.job_id) is item

    def _prune(self, after_s: float) -> None:
        before = utcnow() - timedelta(seconds=after_s)
        deleted = prune(self.engine, before=before, stop=self._monitor_stop.is_set)
        if deleted:
            log.info("pruned %d finished job(s)", deleted)

    def _sweep_inputs(self) -> None:
        """Drop local input copies of jobs that ended elsewhere or were deleted."""
        folder = self.settings.spool_dir / "inputs"
        files = {p.stem: p for p in folder.glob("*.parquet")} if folder.exists() else {}
        if not files:
            return
        with reading(self.engine) as conn:
            live = live_jobs(conn, list(files))
        for job_id, path in files.items():
            if job_id not in live:
                path.unlink(missing_ok=True)

    def _rescue(self) -> None:
        with writing(self.engine) as conn:
            dead = frozenset[str]()
            if self.settings.rescue_dead_local:
                dead = claiming.dead_local_workers(
                    claiming.running_workers(conn), mine=Worker._live_ids
                )
            rescued = claiming.rescue(conn, now=utcnow(), dead_workers=dead)
        if rescued.requeued or rescued.ended:
            log.info("rescued jobs: requeued=%s ended=%s", rescued.requeued, rescued.ended)
            self.hub.work_available(len(rescued.requeued))
            self.hub.deliveries_due()
        for job_id in (*rescued.requeued, *rescued.ended):
            self.hub.job_changed(job_id)


# Back to the queue at once without using up an attempt (the job did nothing wrong).
_REFUND: dict[str, Any] = {"delay_s": 0.0, "error_type": "Interrupted", "refund_attempt": True}
_NOT_STARTED = "the worker shut down before the job started; it will run again"


class _Unsaved(Exception):
    """The database stayed away longer than the lease: rescue will re-queue the job."""


@dataclass
class _Duty:
    """One of the monitor's duties, run every ``interval_s``. Each fails on its own:
    a progress write that fails must not stop the heartbeats of every other job."""

    name: str
    interval_s: float
    run: Callable[[], None]
    due: float = field(init=False)
    failures: int = 0

    def __post_init__(self) -> None:
        self.due = time.monotonic() + self.interval_s

    def run_if_due(self) -> None:
        if time.monotonic() < self.due:
            return
        self.due = time.monotonic() + self.interval_s
        try:
            self.run()
            self.failures = 0
        except Exception:  # timeouts, heartbeats and rescue must keep running
            self.failures += 1
            log_streak(log, f"monitor ({self.name})", self.failures)


def _described(exc: FramejobsError) -> str:
    """The detail and the first error it sums up: a job's error has no list of them."""
    if not exc.errors:
        return exc.detail
    first = exc.errors[0]
    where = first.get("field") or first.get("column")
    return f"{exc.detail}: {where + ': ' if where else ''}{first.get('reason', '')}"


def _backoff(failures: int, base_s: float) -> float:
    """Wait longer after each failure in a row, up to 10 s: a database that stays
    away (or a read-only one) is retried without spinning."""
    return float(min(base_s * 2 ** min(failures - 1, 10), 10.0))


__all__ = ["StoredFrame", "Worker"]
