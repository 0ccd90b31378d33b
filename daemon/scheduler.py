"""The daemon's moving parts: the one chunk loop, the systemd watchdog and the periodic jobs.

One thread per process (the chunk loop) takes jobs from the work source (daemon/work/: the local
store queue or the shared Redis stream, chosen by config) and runs them one at a time through
`Worker.run`, so only one chunk is ever on the GPU; it checks the stop event between chunks.
APScheduler runs everything else on its own threads: the source's upkeep (retries, reaping),
rescans, and plugin deliveries in a pool of their own so a slow plugin never holds up analysis
(the daily digest, `[digest] schedule`, runs in that pool too: a cron trigger at `[digest] at`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from daemon import sdnotify
from daemon.exits import EXIT_CUDA, EXIT_FAILED
from daemon.gpu import CudaFault, GpuLeaseBusy
from daemon.work import open_source

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.models import ChunkInfo, RecordingInfo
    from daemon.pluginhost.dispatch import Dispatcher
    from daemon.store import Store
    from daemon.watcher import Watcher
    from daemon.work import Job, WorkSource
    from daemon.worker import Worker

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Current:
    """The chunk on the GPU now."""

    recording_id: int
    path: str
    index: int
    total: int
    started: float  # time.monotonic()


class ChunkLoop:
    """The single thread that takes jobs from the work source and runs them through the worker."""

    def __init__(self, worker: Worker, source: WorkSource, config: Config, stop: threading.Event):
        self.worker = worker
        self.source = source
        self.config = config
        self.stop = stop
        self.current: Current | None = None
        self.exit_code: int | None = None  # set when the loop ends the process (CUDA fault, crash)
        self.chunks = 0  # chunks analysed since start
        self._thread = threading.Thread(target=self._run, name="framewatch-chunks", daemon=True)
        self._last_status = ""
        # Why the watcher's intake is stuck, or None (set by the Scheduler when it watches).
        self.intake_stuck: Callable[[], str | None] = lambda: None
        self.taking_since: float | None = None  # inside source.take (which prepares) since

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New work (a file was queued, a retry came due): look at the queue now."""
        self.source.wake()

    def join(self, timeout: float | None) -> bool:
        """Wait for the loop to end; False if it is still inside a chunk."""
        self.source.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def healthy(self, now: float | None = None) -> bool:
        """Whether work is progressing: the thread lives and is idle or inside a chunk (or the
        preparing of a recording: its probe and plan) younger than daemon.chunk_timeout_s. The
        systemd watchdog is fed only while this holds."""
        if not self._thread.is_alive():
            return False
        cur = self.current
        now = time.monotonic() if now is None else now
        limit = self.config.daemon.chunk_timeout_s
        taking = self.taking_since
        if taking is not None and now - taking >= limit:
            return False
        return cur is None or now - cur.started < limit

    def release_current(self) -> Current | None:
        """Hand the chunk on the GPU back to the queue (the process must go before it ends)."""
        cur = self.current
        if cur is not None:
            self.worker.store.chunks.release(cur.recording_id, cur.index, self.worker.owner)
            log.warning("chunk_released", recording_id=cur.recording_id, chunk=cur.index)
        return cur

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.source.start()
            while not self.stop.is_set():
                # Taking includes preparing a new recording (probe, plan): timed like a chunk.
                self.taking_since = time.monotonic()
                try:
                    job = self.source.take(self.stop.is_set)
                finally:
                    self.taking_since = None
                if job is None:
                    if self._verify_due():
                        # Alert candidates left by a dead process or another box (or by a
                        # stop, or of a rule since removed) were decided; look for chunks again
                        # before idling. Without candidates this is one query.
                        self._ping()
                        continue
                    self._status(f"idle; {self.chunks} chunks analysed since start")
                    self._ping()
                    self.source.idle()
                    continue
                self._run_job(job)
        except CudaFault as exc:
            # The CUDA context is unusable; the worker already released the chunk.
            log.error("worker_cuda_fault", error=str(exc), exit_code=EXIT_CUDA)
            self.exit_code = EXIT_CUDA
            self.stop.set()
        except GpuLeaseBusy as exc:
            log.error("gpu_busy", error=str(exc))
            self.exit_code = EXIT_FAILED
            self.stop.set()
        except (
            Exception
        ):  # the loop must never die silently: end the process so systemd restarts it
            log.exception("worker_loop_crashed")
            self.release_current()
            self.exit_code = EXIT_FAILED
            self.stop.set()
        finally:
            self.current = None
            self.source.close()

    def _verify_due(self) -> int:
        try:
            return self.worker.verify_due(should_stop=self.stop.is_set)
        except (CudaFault, GpuLeaseBusy):
            raise
        except Exception:  # e.g. the store briefly away: the candidates wait for the next try
            log.exception("verification_failed")
            return 0

    def _run_job(self, job: Job) -> None:
        with structlog.contextvars.bound_contextvars(recording_id=job.recording_id):
            try:
                with self.source.hold(job) as hold:
                    done = self.worker.run(
                        job.recording_id,
                        job.index,
                        should_stop=self.stop.is_set,
                        on_start=self._chunk_started,
                    )
            except (CudaFault, GpuLeaseBusy):
                raise
            except Exception as exc:  # this job's problem, not the loop's: its source decides
                log.exception("chunk_error")
                self.release_current()
                self.source.failed(job, f"{type(exc).__name__}: {exc}")
                return
            finally:
                self.current = None
            self.source.finish(job, done, hold)
            if done is not None and done.status == "done":
                self.chunks += 1
            self._ping()

    def _chunk_started(self, rec: RecordingInfo, chunk: ChunkInfo) -> None:
        self.current = Current(rec.id, rec.path, chunk.index, chunk.chunks_total, time.monotonic())
        log.info("chunk_started", chunk=chunk.index, chunks_total=chunk.chunks_total)
        self._status(f"{os.path.basename(rec.path)} chunk {chunk.index + 1}/{chunk.chunks_total}")

    def _ping(self) -> None:
        # Progress, unless intake is stuck: then only Watchdog decides (and stays silent).
        if self.intake_stuck() is None:
            sdnotify.notify("WATCHDOG=1")

    def _status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            sdnotify.notify(f"STATUS={text}")


class Watchdog:
    """Feeds the systemd watchdog from its own thread while a long chunk is making progress, and
    stops feeding it once the chunk outlives daemon.chunk_timeout_s (a hung GPU call), so systemd
    restarts the service; the chunk is then reaped and run again. Likewise when the watcher's
    intake is stuck (daemon.intake_timeout_s): a file that blocks intake must not leave every later
    file queued behind it while systemd believes all is well."""

    def __init__(self, loop: ChunkLoop, interval_s: float):
        self.loop = loop
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="framewatch-watchdog", daemon=True)
        self._hung_logged = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            stuck = self.loop.intake_stuck()
            if self.loop.healthy() and stuck is None:
                self._hung_logged = False
                sdnotify.notify("WATCHDOG=1")
                continue
            if not self._hung_logged:
                self._hung_logged = True
                cur = self.loop.current
                taking = self.loop.taking_since
                if stuck is not None:
                    log.error("intake_stuck", reason=stuck)
                elif cur is None and taking is not None:
                    log.error("prepare_hung", running_s=round(time.monotonic() - taking))
                elif cur is None:
                    log.error("worker_not_running")
                else:
                    log.error(
                        "chunk_hung",
                        recording_id=cur.recording_id,
                        chunk=cur.index,
                        running_s=round(time.monotonic() - cur.started),
                        limit_s=self.loop.config.daemon.chunk_timeout_s,
                    )


class Scheduler:
    """Starts and stops the chunk loop over the configured work source, the watchdog and the
    periodic jobs."""

    def __init__(
        self,
        config: Config,
        store: Store,
        worker: Worker,
        watcher: Watcher | None,
        dispatcher: Dispatcher | None,
        stop: threading.Event,
        *,
        produce: bool = True,
    ):
        self.config = config
        self.store = store
        self.watcher = watcher
        self.dispatcher = dispatcher
        self.stop_event = stop
        self.source = open_source(config, store, worker, stop, produce=produce)
        # The daily digest is written by the box that watches folders (`framewatch run`), not by
        # every `framewatch worker` beside it.
        self.produce = produce
        self.loop = ChunkLoop(worker, self.source, config, stop)
        # Without systemd's watchdog it still reports hung chunks in the log.
        if watcher is not None:
            self.loop.intake_stuck = watcher.stuck
        self.watchdog = Watchdog(self.loop, sdnotify.watchdog_interval() or 30.0)
        self.aps = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1), "deliver": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        d = self.config.daemon
        if self.watcher is not None:
            self.aps.add_job(
                self._job(self.watcher.rescan), "interval", seconds=d.rescan_interval_s, id="rescan"
            )
        for upkeep in self.source.maintenance():
            self.aps.add_job(
                self._job(upkeep.run), "interval", seconds=upkeep.interval_s, id=upkeep.name
            )
        if self.dispatcher is not None:
            dispatcher = self.dispatcher
            self.aps.add_job(
                self._job(lambda: dispatcher.deliver_due(d.deliver_batch)),
                "interval",
                seconds=d.deliver_interval_s,
                id="deliver",
                executor="deliver",
            )
            if self.config.digest.schedule and self.produce:
                hour, minute = (int(x) for x in self.config.digest.at.split(":"))
                self.aps.add_job(
                    self._job(self.daily_digest),
                    "cron",
                    hour=hour,
                    minute=minute,
                    id="digest",
                    executor="deliver",
                )
        self.loop.start()
        self.watchdog.start()
        self.aps.start()

    def daily_digest(self, now: float | None = None) -> None:
        """The scheduled digest ([digest] schedule): the 24 hours up to now (to the minute),
        written and handed to the plugins that implement digest_ready."""
        from daemon.digest import make_digest, notify_digest

        assert self.dispatcher is not None
        until = float(int(now if now is not None else time.time()) // 60 * 60)
        digest = make_digest(self.store, self.config, until - 86400.0, until)
        notify_digest(self.dispatcher.plugins, digest)

    def stop(self, deadline: float) -> bool:
        """Stop in reverse order by `deadline` (time.monotonic()): the jobs, then the chunk loop
        (its chunk finishes), then the watchdog. False if the chunk had to be released."""
        self.stop_event.set()
        shutdown = None
        if self.aps.running:
            # APScheduler waits for running jobs without a timeout (a delivery round can take a
            # minute), so it is waited for from a helper thread, up to the deadline.
            shutdown = threading.Thread(
                target=self.aps.shutdown, kwargs={"wait": True}, name="framewatch-aps-stop"
            )
            shutdown.start()
        clean = self.loop.join(max(0.0, deadline - time.monotonic()))
        if not clean:
            self.loop.release_current()
        if shutdown is not None:
            shutdown.join(max(0.0, deadline - time.monotonic()))
            if shutdown.is_alive():
                log.warning("jobs_still_running_at_exit")
        self.watchdog.stop()
        return clean

    def _job(self, fn: Callable[[], object]) -> Callable[[], None]:
        name = getattr(fn, "__name__", "job")

        def run() -> None:
            if self.stop_event.is_set():
                return
            try:
                fn()
            except Exception:  # a failed round is retried at the next interval
                log.exception("job_failed", job=name)

        return run
