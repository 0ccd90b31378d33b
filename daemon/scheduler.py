"""The daemon's moving parts: the one GPU worker thread, the watchdog heartbeat and the periodic jobs.

The database is the queue: a recording `queued` or `analyzing` with chunks left is work. One worker
thread per process takes recordings oldest first and runs them chunk by chunk through
`Worker.process`, so only one chunk is ever on the GPU; it checks the stop event between chunks.
APScheduler runs everything else on its own threads (rescan, retries, reaping, plugin deliveries in
a pool of their own so a slow plugin never holds up analysis).
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
from daemon.gpu import EXIT_CUDA, CudaFault, GpuLeaseBusy

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.dispatch import Dispatcher
    from daemon.models import ChunkInfo, RecordingInfo
    from daemon.store import Store
    from daemon.watcher import Watcher
    from daemon.worker import ChunkDone, Worker

log = structlog.get_logger(__name__)

EXIT_ERROR = 1


@dataclass(frozen=True, slots=True)
class Current:
    """The chunk on the GPU now."""

    recording_id: int
    path: str
    index: int
    total: int
    started: float  # time.monotonic()


class WorkerLoop:
    """The single thread that drains the queue through `Worker.process`."""

    def __init__(self, worker: Worker, store: Store, config: Config, stop: threading.Event):
        self.worker = worker
        self.store = store
        self.config = config
        self.stop = stop
        self.current: Current | None = None
        self.exit_code: int | None = None  # set when the loop ends the process (CUDA fault, crash)
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="framewatch-worker", daemon=True)
        self._chunks = 0
        self._last_status = ""

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New work (a file was queued, a retry came due): look at the queue now."""
        self._wake.set()

    def join(self, timeout: float | None) -> bool:
        """Wait for the loop to end; False if it is still inside a chunk."""
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def healthy(self, now: float | None = None) -> bool:
        """Whether work is progressing: the thread lives and is idle or inside a chunk younger
        than daemon.chunk_timeout_s. The systemd watchdog is fed only while this holds."""
        if not self._thread.is_alive():
            return False
        cur = self.current
        now = time.monotonic() if now is None else now
        return cur is None or now - cur.started < self.config.daemon.chunk_timeout_s

    def release_current(self) -> Current | None:
        """Hand the chunk on the GPU back to the queue (the process must go before it ends)."""
        cur = self.current
        if cur is not None:
            self.store.release_chunk(cur.recording_id, cur.index, self.worker.owner)
            log.warning("chunk_released", recording_id=cur.recording_id, chunk=cur.index)
        return cur

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                # Cleared before looking, so a wake-up that arrives while draining is not lost.
                self._wake.clear()
                if not self._drain():
                    self._status(self._idle_status())
                    sdnotify.notify("WATCHDOG=1")
                    self._wake.wait(self.config.daemon.queue_poll_s)
        except CudaFault as exc:
            # The CUDA context is unusable; the worker already released the chunk.
            log.error("worker_cuda_fault", error=str(exc), exit_code=EXIT_CUDA)
            self.exit_code = EXIT_CUDA
            self.stop.set()
        except GpuLeaseBusy as exc:
            log.error("gpu_busy", error=str(exc))
            self.exit_code = EXIT_ERROR
            self.stop.set()
        except Exception:  # the loop must never die silently: end the process so systemd restarts it
            log.exception("worker_loop_crashed")
            self.release_current()
            self.exit_code = EXIT_ERROR
            self.stop.set()
        finally:
            self.current = None

    def _drain(self) -> bool:
        """One pass over the due recordings; True if anything moved (a chunk ran, a state changed)."""
        moved = False
        for rid in self.store.due_recordings():
            if self.stop.is_set():
                break
            before = self._chunks
            with structlog.contextvars.bound_contextvars(recording_id=rid):
                try:
                    rec = self.worker.process(
                        rid,
                        on_chunk=self._chunk_done,
                        on_start_chunk=self._chunk_started,
                        should_stop=self.stop.is_set,
                    )
                except (CudaFault, GpuLeaseBusy):
                    raise
                except Exception as exc:  # anything else is this recording's problem, not the loop's
                    log.exception("recording_error")
                    self.release_current()
                    self._defer(rid, f"{type(exc).__name__}: {exc}")
                    moved = True
                    continue
                finally:
                    self.current = None
            moved = moved or self._chunks > before or rec.status not in ("queued", "analyzing")
        return moved

    def _defer(self, recording_id: int, error: str) -> None:
        d = self.config.daemon
        rec = self.store.recording(recording_id)
        delay = d.retry_backoff_s * 2**rec.attempts
        rec = self.store.defer(recording_id, error, delay)
        if rec.attempts >= d.max_attempts:
            reason = f"gave up after {rec.attempts} attempts: {error}"
            notify = [(p, "recording_failed") for p in self.worker.subscribers("recording_failed")]
            self.store.set_status(recording_id, "failed", reason, notify=notify)
            log.error("recording_failed", reason=reason)
        else:
            log.warning("recording_deferred", attempt=rec.attempts, retry_in_s=round(delay, 1))

    def _chunk_started(self, rec: RecordingInfo, chunk: ChunkInfo) -> None:
        self.current = Current(rec.id, rec.path, chunk.index, chunk.chunks_total, time.monotonic())
        log.info("chunk_started", chunk=chunk.index, chunks_total=chunk.chunks_total)
        self._status(f"{os.path.basename(rec.path)} chunk {chunk.index + 1}/{chunk.chunks_total}")

    def _chunk_done(self, done: ChunkDone) -> None:
        self.current = None
        self._chunks += 1
        sdnotify.notify("WATCHDOG=1")

    def _idle_status(self) -> str:
        return f"idle; {self._chunks} chunks analysed since start"

    def _status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            sdnotify.notify(f"STATUS={text}")


class Heartbeat:
    """Feeds the systemd watchdog from its own thread while a long chunk is making progress, and
    stops feeding it once the chunk outlives daemon.chunk_timeout_s (a hung GPU call), so systemd
    restarts the service; the chunk is then reaped and run again."""

    def __init__(self, loop: WorkerLoop, interval_s: float):
        self.loop = loop
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="framewatch-heartbeat", daemon=True)
        self._hung_logged = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.loop.healthy():
                self._hung_logged = False
                sdnotify.notify("WATCHDOG=1")
                continue
            if not self._hung_logged:
                self._hung_logged = True
                cur = self.loop.current
                if cur is None:
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
    """Starts and stops the worker loop, the heartbeat and the periodic jobs."""

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
        self.loop: WorkerLoop
        if config.queue.backend == "redis":
            # Several boxes: chunk jobs come from the shared Redis stream (daemon/fleet.py);
            # `produce` is False for `framewatch worker`, which only analyses.
            from daemon.fleet import QueueLoop

            self.loop = QueueLoop(worker, store, config, stop, produce=produce)
        else:
            self.loop = WorkerLoop(worker, store, config, stop)
        # Without systemd's watchdog the heartbeat still reports hung chunks in the log.
        self.heartbeat = Heartbeat(self.loop, sdnotify.watchdog_interval() or 30.0)
        self.aps = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1), "deliver": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        d = self.config.daemon
        if self.watcher is not None:
            self.aps.add_job(self._job(self.watcher.rescan), "interval", seconds=d.rescan_interval_s, id="rescan")
        if self.config.queue.backend == "local":
            # With a shared queue, its delivery counts and leases do this work (daemon/fleet.py);
            # these jobs would fail or re-pend chunks the queue still holds.
            self.aps.add_job(self._job(self.retry), "interval", seconds=min(60.0, max(1.0, d.retry_backoff_s / 2)), id="retry")
            self.aps.add_job(self._job(self.reap), "interval", seconds=d.reap_interval_s, id="reap")
        if self.dispatcher is not None:
            dispatcher = self.dispatcher
            self.aps.add_job(
                self._job(lambda: dispatcher.deliver_due(d.deliver_batch)),
                "interval",
                seconds=d.deliver_interval_s,
                id="deliver",
                executor="deliver",
            )
        self.loop.start()
        self.heartbeat.start()
        self.aps.start()

    def stop(self, deadline: float) -> bool:
        """Stop in reverse order by `deadline` (time.monotonic()): the jobs, then the worker loop
        (its chunk finishes), then the heartbeat. False if the chunk had to be released."""
        self.stop_event.set()
        shutdown = None
        if self.aps.running:
            # APScheduler waits for running jobs without a timeout (a delivery round can take a
            # minute), so it is waited for from a helper thread, up to the deadline.
            shutdown = threading.Thread(target=self.aps.shutdown, kwargs={"wait": True}, name="framewatch-aps-stop")
            shutdown.start()
        clean = self.loop.join(max(0.0, deadline - time.monotonic()))
        if not clean:
            self.loop.release_current()
        if shutdown is not None:
            shutdown.join(max(0.0, deadline - time.monotonic()))
            if shutdown.is_alive():
                log.warning("jobs_still_running_at_exit")
        self.heartbeat.stop()
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

    def retry(self) -> None:
        """Failed chunks with attempts left, once their backoff has passed, go back in the queue."""
        d = self.config.daemon
        if self.store.retry_failed_chunks(d.max_attempts, d.retry_backoff_s):
            self.loop.wake()

    def reap(self) -> None:
        """Chunks whose lease ran out return to pending; those that used every attempt fail."""
        n = self.store.reap()
        self.store.abandon_exhausted(self.config.daemon.max_attempts)
        if n:
            self.loop.wake()
