"""The `framewatch run` service: start the parts in order, stop them in reverse, handle signals.

start(): config checked, plugins loaded (their settings validated), store opened and crash
leftovers reaped, GPU lease and model loaded, plugins' startup, watcher (with its start-up scan),
scheduler (worker thread, heartbeat, periodic jobs); then READY=1. A first SIGTERM/SIGINT only
sets the stop event: no new work is taken, the chunk on the GPU finishes (or is released when
daemon.stop_timeout_s runs out) and the process exits 0. A second signal exits at once with
EXIT_FORCED; SQLite's transactions keep the store consistent either way.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from daemon import sdnotify
from daemon.config import ConfigError
from daemon.exits import EXIT_FORCED
from daemon.files import NotRegularFile, check_regular, printable, storable

if TYPE_CHECKING:
    from daemon.config import Config, WatchConfig
    from daemon.pluginhost.manager import PluginManager
    from daemon.scheduler import Scheduler
    from daemon.store import Store
    from daemon.watcher import Watcher
    from daemon.worker import Worker

log = structlog.get_logger(__name__)

# A claimed chunk's lease outlives chunk_timeout_s by this much: the watchdog restarts a hung
# process first, and the lease only matters to a process on another host.
LEASE_MARGIN_S = 300.0


class Daemon:
    """The running service; plugins receive it as `app` (its `config` is the Config)."""

    def __init__(self, config: Config, *, plugins: PluginManager | None = None, watch: bool = True):
        self.config = config
        # False for `framewatch worker`: analyse chunks from the shared queue, watch nothing.
        self.watch = watch
        self.stop_event = threading.Event()
        self.plugins = plugins
        self.store: Store | None = None
        self.worker: Worker | None = None
        self.watcher: Watcher | None = None
        self.scheduler: Scheduler | None = None
        self._plugins_started = False
        self._signals = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Bring every part up in order; on failure, take down what came up and re-raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        from daemon.pluginhost.dispatch import Dispatcher
        from daemon.pluginhost.manager import load_plugins
        from daemon.scheduler import Scheduler
        from daemon.store import Store
        from daemon.watcher import Watcher
        from daemon.worker import Worker

        cfg = self.config
        if self.watch and not cfg.watch:
            raise ConfigError(
                str(cfg.source) if cfg.source else None,
                [
                    (
                        "watch",
                        [],
                        "no [[watch]] folder configured: framewatch run would have nothing to do",
                    )
                ],
            )
        for warning in cfg.warnings:
            log.warning("config_secrets_exposed", detail=warning)
        self.plugins = self.plugins or load_plugins(cfg)
        self.store = Store(cfg.storage_url())
        self.store.chunks.reap()  # chunks a dead process of this host left running
        self.worker = Worker(
            self.store,
            cfg,
            self.plugins.make_analyzer,
            subscribers=self.plugins.subscribers,
            lease_s=cfg.daemon.chunk_timeout_s + LEASE_MARGIN_S,
        )
        sdnotify.notify("STATUS=loading the model")
        t0 = time.monotonic()
        # Loaded now: READY=1 promises chunks can run. An analyzer that breaks the plugin
        # contract stops the start here, with the plugin's name (AnalyzerRefused); so does a
        # speech model that cannot load while speech is on.
        if not self.worker.ready(self.stop_event.is_set, speech=cfg.speech.mode != "off"):
            return  # stopped while another process held the GPU
        log.info(
            "model_ready",
            analyzer=self.worker.analyzer.name,
            seconds=round(time.monotonic() - t0, 2),
        )
        if self.stop_event.is_set():
            return  # signalled while the model loaded
        self.plugins.startup(self)
        self._plugins_started = True
        if self.watch:
            self.watcher = Watcher(cfg, self._intake, self.store.recordings.paths, self.stop_event)
            self.watcher.start()
        self.scheduler = Scheduler(
            cfg,
            self.store,
            self.worker,
            self.watcher,
            Dispatcher(self.store, self.plugins, cfg),
            self.stop_event,
            produce=self.watch,
        )
        self.scheduler.start()
        folders = [str(f.root) for f in self.watcher.folders] if self.watcher is not None else []
        sdnotify.notify("READY=1", f"STATUS=watching {len(folders)} folder(s)")
        log.info("daemon_started", folders=folders, pid=os.getpid())

    def wait(self) -> None:
        """Block the main thread until a signal (or a fatal worker error) asks to stop."""
        while not self.stop_event.wait(3600):
            pass

    def stop(self) -> bool:
        """Take the parts down in reverse order and join their threads. False when the chunk on
        the GPU did not finish within daemon.stop_timeout_s and was released instead (its thread
        may still be inside the model: the caller must end the process with os._exit)."""
        sdnotify.notify("STOPPING=1", "STATUS=stopping: finishing the current chunk")
        self.stop_event.set()
        deadline = time.monotonic() + self.config.daemon.stop_timeout_s
        clean = True
        if self.scheduler is not None:
            clean = self.scheduler.stop(deadline)
        if self.watcher is not None:
            self.watcher.stop(max(1.0, deadline - time.monotonic()))
        if self._plugins_started and self.plugins is not None:
            self.plugins.shutdown(self)
            self._plugins_started = False
        if clean:
            if self.worker is not None:
                self.worker.close()
            if self.store is not None:
                self.store.close()
        return clean

    @property
    def exit_code(self) -> int:
        """0, or why the worker ended the process (a CUDA fault, a crashed loop)."""
        if self.scheduler is not None and self.scheduler.loop.exit_code is not None:
            return self.scheduler.loop.exit_code
        return 0

    # -- intake -------------------------------------------------------------------------------

    def _intake(self, path: str, watch: WatchConfig) -> None:
        """A finished file from the watcher: register its content; new content is queued."""
        assert self.worker is not None and self.store is not None and self.plugins is not None
        with structlog.contextvars.bound_contextvars(path=printable(path)):
            if self._refused(path):
                # A FIFO, a device or a name that is not UTF-8: skipped with its reason, and no
                # plugin is handed a path it could block on or fail to encode.
                self.worker.ingest(path, watch.profile)
                return
            try:
                verdict = self.plugins.accept_recording(path)
            except Exception:  # a broken filter plugin must not stop intake; its error is logged
                log.exception("accept_recording_failed")
                verdict = None
            if verdict is False:
                log.info("recording_refused", by="accept_recording")
                return
            rec, created = self.worker.ingest(path, watch.profile)
            with structlog.contextvars.bound_contextvars(recording_id=rec.id):
                if created:
                    log.info("recording_queued", status=rec.status, profile=watch.profile)
                elif rec.path != path and not os.path.exists(rec.path):
                    # Renamed or moved before or while it was analysed: follow the file.
                    self.store.recordings.set_path(rec.id, path)
                    log.info("recording_moved", old_path=rec.path, status=rec.status)
                else:
                    log.info("recording_known", status=rec.status, first_path=rec.path)
                if rec.status in ("queued", "analyzing") and self.scheduler is not None:
                    self.scheduler.loop.wake()

    @staticmethod
    def _refused(path: str) -> bool:
        if not storable(path):
            return True
        try:
            check_regular(path)
        except NotRegularFile:
            return True
        except OSError:
            return False  # gone or unreadable: ingest says so
        return False

    # -- signals ------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread, which does nothing else (see run): no lock another thread
        # holds can be waited for here, but logging is still left to the lifecycle thread.
        self._signals += 1
        if self._signals > 1:
            os.write(2, f"framewatch: second {signal.Signals(signum).name}, exiting now\n".encode())
            os._exit(EXIT_FORCED)
        self.stop_event.set()


def run(config: Config, *, watch: bool = True) -> int:
    """`framewatch run`: serve until signalled; returns the exit code.

    The kernel may deliver SIGTERM to any thread, and CPython runs the handler only when the main
    thread next executes bytecode: a main thread blocked in a join or a long wait would notice a
    signal late, or a second one not at all. So start/serve/stop run in a lifecycle thread and
    the main thread only sleeps in select() on the signal wakeup fd, which every signal wakes."""
    daemon = Daemon(config, watch=watch)
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, daemon._on_signal)
    signal.signal(signal.SIGINT, daemon._on_signal)
    outcome: dict[str, object] = {}

    def lifecycle() -> None:
        try:
            daemon.start()
            daemon.wait()
            log.info("daemon_stopping", signals=daemon._signals, exit_code=daemon.exit_code)
            outcome["clean"] = daemon.stop()
        except BaseException as exc:  # handed to the main thread, which raises it
            outcome["error"] = exc
        finally:
            done.set()
            os.write(wfd, b"\0")  # wake the main thread

    done = threading.Event()
    thread = threading.Thread(target=lifecycle, name="framewatch-lifecycle")
    thread.start()
    while not done.is_set():
        select.select([rfd], [], [])
        with contextlib.suppress(BlockingIOError):
            os.read(rfd, 512)
        # Returning to bytecode here runs the Python-level signal handlers.
    thread.join()
    signal.set_wakeup_fd(-1)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    code = daemon.exit_code
    clean = bool(outcome.get("clean", True))
    log.info("daemon_stopped", exit_code=code, chunk_released=not clean)
    if not clean:
        # The worker thread is still inside the model and cannot be interrupted; its chunk is
        # back in the queue, so leave without waiting for it.
        sys.stderr.flush()
        os._exit(code)
    return code
