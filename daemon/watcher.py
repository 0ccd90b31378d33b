"""Watched folders: decides when a file is finished and hands each finished file over once.

A file is taken when it was closed after writing (inotify close-write), renamed or linked into
place, or found by a scan, and then kept its size and mtime for `settle_seconds`. A file still
being written stays `writing` however long it pauses: only its close (or, when no close can be
seen, a long silence with no local process holding it open for writing) lets it settle. On
network file systems no close event exists, so a polled folder relies on stability alone.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from daemon.files import printable
from daemon.procfs import NETWORK_FS, mount_fstype, open_for_writing

if TYPE_CHECKING:
    from daemon.config import Config, WatchConfig

log = structlog.get_logger(__name__)

# Names downloaders, editors and rsync use while a file is incomplete; taken once renamed.
PARTIAL_GLOBS = ("*.part", "*.crdownload", "*.tmp", ".~*")

_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirMovedEvent,
    DirDeletedEvent,  # only the root's own deletion is acted on
]

OnReady = Callable[[str, "WatchConfig"], None]
KnownPaths = Callable[[], dict[str, tuple[int, float]]]


# -- pure helpers -------------------------------------------------------------------------------


def is_partial(name: str) -> bool:
    """A name that marks an unfinished or hidden file (ignored until renamed)."""
    return name.startswith(".") or any(fnmatch.fnmatchcase(name, g) for g in PARTIAL_GLOBS)


def matches(rel: str, include: list[str], exclude: list[str]) -> bool:
    """Whether the file at `rel` (relative to its watched folder) is wanted.

    A glob without '/' is matched against the name, one with '/' against the relative path;
    case does not matter (cameras write .MP4). Hidden folders and partial names never match."""
    parts = rel.split("/")
    if any(is_partial(p) for p in parts):
        return False
    name, low = parts[-1].lower(), rel.lower()

    def hit(glob: str) -> bool:
        g = glob.lower()
        return fnmatch.fnmatchcase(low if "/" in g else name, g)

    return any(hit(g) for g in include) and not any(hit(g) for g in exclude)


# -- one watched folder -------------------------------------------------------------------------


@dataclass
class _Pending:
    """A file seen but not yet taken."""

    folder: Folder
    writing: bool  # a writer may still have it open: wait for its close
    size: int
    mtime_ns: int
    changed: float  # monotonic time of the last change seen (event or stat)


class Folder:
    """One `[[watch]]` table: its root, filters and observer."""

    def __init__(self, watch: WatchConfig, root: Path):
        self.watch = watch
        self.root = str(root)
        self.real_root = os.path.realpath(root)
        self.observer: BaseObserver | None = None
        self.polling = False
        # The root itself was deleted (inotify reported it, and its watch ended with it): a
        # new watch is set on the folder made again, not a poll for good.
        self.root_deleted = False

    def rel(self, path: str) -> str | None:
        """`path` relative to the root, or None when outside it."""
        if path != self.root and path.startswith(self.root.rstrip("/") + "/"):
            return path[len(self.root.rstrip("/")) + 1 :]
        return None

    def wants(self, path: str) -> bool:
        rel = self.rel(path)
        if rel is None or (not self.watch.recursive and "/" in rel):
            return False
        return matches(rel, self.watch.include, self.watch.exclude)

    def should_poll(self) -> bool:
        if self.watch.poll != "auto":
            return bool(self.watch.poll)
        return mount_fstype(self.root) in NETWORK_FS


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, folder: Folder):
        self.watcher = watcher
        self.folder = folder

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self.watcher._on_event(self.folder, event)
        except Exception:  # an observer thread that raises stops watching for good
            log.exception(
                "watch_event_failed", event=type(event).__name__, path=str(event.src_path)
            )


class Watcher:
    """Every watched folder: observers, the settle loop and the scans.

    `on_ready(path, watch)` is called from the settle thread once per finished file (again only
    when the file changes); `known()` gives the (size, mtime) of paths already registered, so a
    rescan skips them without reading a byte."""

    def __init__(self, config: Config, on_ready: OnReady, known: KnownPaths, stop: threading.Event):
        self.config = config
        self.on_ready = on_ready
        self.known = known
        self.stop_event = stop
        self.folders = [Folder(w, config.watch_path(w)) for w in config.watch]
        self._pending: dict[str, _Pending] = {}
        self._taken: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) when handed over
        self._reported: dict[str, str] = {}  # path -> why it was skipped, logged once
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy: tuple[str, float] | None = None  # the file being handed over, since when
        self._ticked = time.monotonic()  # the settle loop's last finished tick
        settle = [w.settle_seconds for w in config.watch] or [1.0]
        # Often enough that a file is taken within a quarter of its settle time after it settled.
        self.tick_s = min(1.0, max(0.05, min(settle) / 4))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for folder in self.folders:
            self._observe(folder)
        self._thread = threading.Thread(
            target=self._settle_loop, name="framewatch-settle", daemon=True
        )
        self._thread.start()
        # After the observers are up, so nothing written between scan and watch is missed.
        self.rescan()

    def stop(self, timeout: float | None = None) -> None:
        for folder in self.folders:
            if folder.observer is not None:
                folder.observer.stop()
        for folder in self.folders:
            if folder.observer is not None:
                folder.observer.join(timeout)
                folder.observer = None
        if self._thread is not None:
            self._thread.join(timeout)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _observe(self, folder: Folder) -> None:
        """Start watching `folder`: inotify, or polling on network file systems, when asked to,
        or when inotify has run out of watches or instances."""
        if not os.path.isdir(folder.root):
            self._report(folder.root, "watch_folder_missing", "will retry at the next rescan")
            return
        self._reported.pop(folder.root, None)
        folder.root_deleted = False
        poll = folder.should_poll()
        if not poll:
            try:
                observer: BaseObserver = InotifyObserver(generate_full_events=True)
                self._schedule(observer, folder)
                observer.start()
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                log.warning(
                    "inotify_limit_reached",
                    folder=folder.root,
                    error=exc.strerror or str(exc),
                    action="falling back to polling; raise fs.inotify.max_user_watches / max_user_instances",
                )
                poll = True
        if poll:
            observer = PollingObserver(timeout=folder.watch.poll_interval_s)
            self._schedule(observer, folder)
            observer.start()
        folder.observer, folder.polling = observer, poll
        log.info(
            "watching",
            folder=folder.root,
            mode="poll" if poll else "inotify",
            recursive=folder.watch.recursive,
        )

    def _schedule(self, observer: BaseObserver, folder: Folder) -> None:
        observer.schedule(
            _Handler(self, folder),
            folder.root,
            recursive=folder.watch.recursive,
            event_filter=_EVENTS,
            # watchdog would follow a folder loop (sub/up -> ..) until ELOOP, adding a watch per
            # level; files in linked folders are found by the scans instead, which visit each
            # real folder once.
            follow_symlink=False,
        )

    def _check_observers(self) -> None:
        # An emitter thread dies when, say, a new subfolder needs an inotify watch beyond the
        # limit; the folder is then polled instead of silently going unwatched.
        for folder in self.folders:
            obs = folder.observer
            if obs is None:
                self._observe(folder)
                continue
            if obs.is_alive() and all(e.is_alive() for e in obs.emitters):
                continue
            log.warning(
                "observer_died", folder=folder.root, mode="poll" if folder.polling else "inotify"
            )
            obs.stop()
            folder.observer = None
            self._drain(obs, folder)
            # A folder deleted (and perhaps made again) ended its watch: watch it afresh, by
            # inotify again where it applies. Only a watch that died over a folder still there
            # (a subfolder beyond the inotify limit) falls back to polling for good.
            if folder.polling or not os.path.isdir(folder.root) or folder.root_deleted:
                self._observe(folder)
                continue
            observer = PollingObserver(timeout=folder.watch.poll_interval_s)
            self._schedule(observer, folder)
            observer.start()
            folder.observer, folder.polling = observer, True
            log.warning("watching", folder=folder.root, mode="poll", reason="inotify observer died")

    def _drain(self, obs: Any, folder: Folder) -> None:
        """Read what a dead observer's emitter queued but its dispatcher had not handed over yet:
        the emitter queues the root's deletion just before it stops, so a rescan that comes
        between the two must still see it (and watch the folder made again by inotify)."""
        while True:
            try:
                item = obs.event_queue.get_nowait()
            except queue.Empty:
                return
            event = item[0] if isinstance(item, tuple) and item else None
            if isinstance(event, DirDeletedEvent):
                self._on_event(folder, event)

    # -- events -------------------------------------------------------------------------------

    def _on_event(self, folder: Folder, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if isinstance(event, DirDeletedEvent):
            if src.rstrip("/") == folder.root.rstrip("/"):
                folder.root_deleted = True
            return
        if isinstance(event, DirMovedEvent):
            # A folder moved in: its files are complete (a move does not write). The created
            # events watchdog synthesises for them afterwards find them pending already.
            if dest and folder.rel(dest) is not None:
                for path in self._walk(folder, dest):
                    self._track(folder, path, writing=False, why="moved_in")
            return
        if isinstance(event, FileMovedEvent):
            was = None
            if src:
                with self._lock:
                    was = self._pending.pop(src, None)
            if dest and folder.wants(dest):
                # A file renamed while still open for writing keeps waiting for its close.
                self._track(folder, dest, writing=bool(was and was.writing), why="moved")
            return
        if isinstance(event, FileDeletedEvent):
            with self._lock:
                self._pending.pop(src, None)
            return
        if not folder.wants(src):
            return
        if isinstance(event, FileClosedEvent):
            self._track(folder, src, writing=False, why="closed")
        elif isinstance(event, FileModifiedEvent):
            # No close events when polling: a change only restarts the settle time.
            self._track(folder, src, writing=not folder.polling, why="modified")
        elif isinstance(event, FileCreatedEvent):
            with self._lock:
                if src in self._pending:
                    return  # already known (a folder moved in, or a re-reported create)
            try:
                st = os.lstat(src)
            except OSError:
                return
            # A hard link or a symlink appears complete; a new file with one link is being
            # written by whoever created it, and its close will follow.
            linked = st.st_nlink > 1 or os.path.islink(src)
            self._track(folder, src, writing=not (linked or folder.polling), why="created")

    def _track(self, folder: Folder, path: str, *, writing: bool, why: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return  # gone, or a dangling link (reported when a scan meets it)
        if not stat.S_ISREG(st.st_mode):
            writing = False  # a FIFO or device has no writer to wait for: intake skips it
        now = time.monotonic()
        with self._lock:
            entry = self._pending.get(path)
            if entry is None:
                if not writing and self._taken.get(path) == (st.st_size, st.st_mtime_ns):
                    return  # closed again without a change (touch, a reader opening O_RDWR)
                self._pending[path] = _Pending(folder, writing, st.st_size, st.st_mtime_ns, now)
                log.debug("file_seen", path=path, why=why, writing=writing)
                return
            entry.writing = writing
            entry.size, entry.mtime_ns, entry.changed = st.st_size, st.st_mtime_ns, now

    # -- settling -----------------------------------------------------------------------------

    def _settle_loop(self) -> None:
        while not self.stop_event.wait(self.tick_s):
            try:
                self.settle_once()
            except Exception:  # keep settling; the next tick retries
                log.exception("settle_failed")
            self._ticked = time.monotonic()

    def settle_once(self, now: float | None = None) -> list[str]:
        """Hand over every file that has settled; returns their paths."""
        now = time.monotonic() if now is None else now
        ready: dict[str, _Pending] = {}
        with self._lock:
            items = list(self._pending.items())
        for path, entry in items:
            try:
                st = os.stat(path)
            except OSError:
                with self._lock:
                    self._pending.pop(path, None)
                continue
            with self._lock:
                if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                    entry.size, entry.mtime_ns, entry.changed = st.st_size, st.st_mtime_ns, now
                    continue
                quiet = now - entry.changed
                if not entry.writing and quiet >= entry.folder.watch.settle_seconds:
                    ready[path] = entry
                elif entry.writing and quiet >= self._stale_after(entry.folder):
                    ready[path] = entry  # a close we never saw? confirmed below
        if not ready:
            return []
        held, complete = open_for_writing(set(ready))
        taken = []
        for path, entry in ready.items():
            if path in held:
                # Still open for writing: wait for its close however long the writer pauses.
                with self._lock:
                    entry.writing, entry.changed = True, now
                continue
            if entry.writing:
                if not complete and now - entry.changed < 2 * self._stale_after(entry.folder):
                    continue
                log.info("write_close_missed", path=path, quiet_s=round(now - entry.changed))
            if not self._allowed(entry.folder, path):
                with self._lock:
                    self._pending.pop(path, None)
                continue
            with self._lock:
                if self._pending.get(path) is not entry:
                    continue  # changed under us; the next tick decides
                del self._pending[path]
                self._taken[path] = (entry.size, entry.mtime_ns)
            log.info(
                "file_ready", path=path, quiet_s=round(now - entry.changed, 3), size=entry.size
            )
            self._busy = (path, time.monotonic())
            try:
                self.on_ready(path, entry.folder.watch)
                taken.append(path)
            except Exception:
                log.exception("intake_failed", path=path)
                with self._lock:
                    self._taken.pop(path, None)
                    self._pending.setdefault(path, entry)
                entry.changed = now
            finally:
                self._busy = None
        return taken

    def stuck(self, now: float | None = None) -> str | None:
        """Why intake is stuck, or None: one file's intake (fingerprint, accept_recording,
        register: well under a second) has run for more than daemon.intake_timeout_s, or the
        settle loop has not finished a tick for as long (a hung network mount). The systemd
        watchdog stops being fed then (scheduler.Watchdog)."""
        now = time.monotonic() if now is None else now
        limit = self.config.daemon.intake_timeout_s
        busy = self._busy
        if busy is not None and now - busy[1] > limit:
            return f"intake of {printable(busy[0])} running for {now - busy[1]:.0f} s"
        if self._thread is not None and now - self._ticked > limit + self.tick_s:
            return f"the settle loop has not ticked for {now - self._ticked:.0f} s"
        return None

    @staticmethod
    def _stale_after(folder: Folder) -> float:
        # How long a file that was never seen closed must stay untouched before /proc is asked.
        return max(300.0, 10 * folder.watch.settle_seconds)

    def _allowed(self, folder: Folder, path: str) -> bool:
        """Symlink policy: a link must resolve, without a loop, to a file inside the folder
        unless follow_symlinks is set."""
        if not os.path.islink(path):
            return True
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as exc:
            kind = "symlink_loop" if exc.errno == errno.ELOOP else "symlink_dangling"
            self._report(path, kind, exc.strerror or str(exc))
            return False
        inside = real.startswith(folder.real_root.rstrip("/") + "/")
        if not inside and not folder.watch.follow_symlinks:
            self._report(path, "symlink_refused", f"target {real} is outside the watched folder")
            return False
        if not os.path.isfile(real):
            self._report(path, "symlink_not_a_file", real)
            return False
        return True

    def _report(self, path: str, event: str, detail: str) -> None:
        # Once per path and reason: a periodic rescan must not repeat the same warning forever.
        if self._reported.get(path) != event:
            self._reported[path] = event
            log.warning(event, path=path, detail=detail)

    # -- scanning -----------------------------------------------------------------------------

    def rescan(self) -> int:
        """Look at every file of every folder (start-up and periodically): files neither pending
        nor registered with their current size and mtime start settling. Returns how many."""
        with self._scan_lock:
            self._check_observers()
            known = self.known()
            seen: set[str] = set()
            added = 0
            for folder in self.folders:
                if not os.path.isdir(folder.root):
                    continue
                for path in self._walk(folder, folder.root):
                    if self.stop_event.is_set():
                        return added
                    seen.add(path)
                    try:
                        st = os.stat(path)
                    except OSError as exc:
                        kind = "symlink_loop" if exc.errno == errno.ELOOP else "symlink_dangling"
                        if os.path.islink(path):
                            self._report(path, kind, exc.strerror or str(exc))
                        continue
                    with self._lock:
                        if path in self._pending or self._taken.get(path) == (
                            st.st_size,
                            st.st_mtime_ns,
                        ):
                            continue
                    if known.get(path) == (st.st_size, st.st_mtime):
                        continue
                    if os.path.islink(path) and not self._allowed(folder, path):
                        continue
                    self._track(folder, path, writing=False, why="scan")
                    added += 1
            with self._lock:
                # Forget files that are gone, so the map does not grow forever.
                self._taken = {p: v for p, v in self._taken.items() if p in seen}
        if added:
            log.info("rescan_found", files=added)
        return added

    def _walk(self, folder: Folder, top: str) -> Iterator[str]:
        """Wanted files under `top`, following linked folders only when allowed, each real
        folder once (a link back up would loop forever)."""
        follow = folder.watch.follow_symlinks
        visited: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(top, followlinks=follow):
            real = os.path.realpath(dirpath)
            if real in visited:
                self._report(dirpath, "symlink_loop", f"folder {real} already scanned")
                dirnames[:] = []
                continue
            visited.add(real)
            dirnames[:] = (
                [d for d in dirnames if not is_partial(d)] if folder.watch.recursive else []
            )
            for name in filenames:
                path = os.path.join(dirpath, name)
                if folder.wants(path):
                    yield path
