"""The watcher in-process: when a file counts as finished, names it ignores, symlinks, polling and
the inotify-limit fallback. No model and no daemon: `on_ready` just records what it is handed."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import daemon.watcher as watcher_mod
from daemon.config import parse_config
from daemon.watcher import Watcher, matches, mount_fstype, open_for_writing

SETTLE = 0.4


class Taken:
    """What the watcher handed over, with the time it did."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def __call__(self, path: str, _watch: Any) -> None:
        with self.lock:
            self.paths.append((path, time.monotonic()))

    def names(self) -> list[str]:
        with self.lock:
            return sorted(os.path.basename(p) for p, _ in self.paths)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.paths) < n:
            time.sleep(0.05)
        return self.names()


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Callable[..., tuple[Watcher, Taken, Path]]]:
    started: list[Watcher] = []
    stop = threading.Event()

    def make(
        known: dict[str, tuple[int, float]] | None = None, **options: Any
    ) -> tuple[Watcher, Taken, Path]:
        folder = tmp_path / "in"
        folder.mkdir(exist_ok=True)
        cfg = parse_config({"watch": [{"path": str(folder), "settle_seconds": SETTLE, **options}]})
        taken = Taken()
        w = Watcher(cfg, taken, lambda: dict(known or {}), stop)
        w.start()
        started.append(w)
        return w, taken, folder

    yield make
    stop.set()
    for w in started:
        w.stop(5)


def video_bytes(n: int = 3000) -> bytes:
    return bytes(range(256)) * (n // 256 + 1)


def test_globs_and_partial_names() -> None:
    inc, exc = ["*.mp4", "cam/*.mkv"], ["*skip*"]
    assert matches("a.mp4", inc, exc) and matches("sub/A.MP4", inc, exc)
    assert matches("cam/x.mkv", inc, exc) and not matches("other/x.mkv", inc, exc)
    assert not matches("a_skip.mp4", inc, exc)
    for name in (
        "a.mp4.part",
        "a.mp4.crdownload",
        "a.mp4.tmp",
        ".~lock.mp4",
        ".a.mp4.Xy12",
        ".hidden/a.mp4",
    ):
        assert not matches(name, ["*"], []), name


def test_mount_type_is_the_longest_matching_mount(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "nas:/export /srv/nas nfs4 rw 0 0\n"
        "//host/share /srv/nas/my\\040share cifs rw 0 0\n"
    )
    assert mount_fstype("/srv/nas/x/y.mp4", str(mounts)) == "nfs4"
    assert mount_fstype("/srv/nas/my share/y.mp4", str(mounts)) == "cifs"
    assert mount_fstype("/srv/nassy", str(mounts)) == "ext4"


def test_slow_writer_is_taken_once_after_it_closes(watch: Any) -> None:
    _, taken, folder = watch()
    data = video_bytes(30000)
    with open(folder / "slow.mp4", "wb") as f:
        for part in range(3):
            f.write(data[part * 10000 : (part + 1) * 10000])
            f.flush()
            # Pauses longer and shorter than settle_seconds: still open, so never taken.
            time.sleep(SETTLE * 3 if part == 0 else SETTLE / 4)
        assert taken.names() == []
    closed = time.monotonic()
    assert taken.wait_for(1) == ["slow.mp4"]
    assert taken.paths[0][1] - closed >= SETTLE
    time.sleep(SETTLE * 3)
    assert taken.names() == ["slow.mp4"]


def test_renames_moves_and_links_each_give_one_file(watch: Any, tmp_path: Path) -> None:
    _, taken, folder = watch()
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "dl.mp4.part").write_bytes(video_bytes())
    (folder / ".rsync.mp4.a1b2").write_bytes(video_bytes(4000))
    time.sleep(SETTLE * 3)
    assert taken.names() == []  # partial names are left alone however long they sit
    os.rename(folder / "dl.mp4.part", folder / "dl.mp4")
    os.rename(folder / ".rsync.mp4.a1b2", folder / "synced.mp4")
    (outside / "moved.mp4").write_bytes(video_bytes(5000))
    os.rename(outside / "moved.mp4", folder / "moved.mp4")
    (outside / "linked.mp4").write_bytes(video_bytes(6000))
    os.link(outside / "linked.mp4", folder / "linked.mp4")
    shutil.copyfile(outside / "linked.mp4", folder / "copied.mp4")
    assert taken.wait_for(5) == ["copied.mp4", "dl.mp4", "linked.mp4", "moved.mp4", "synced.mp4"]
    os.rename(folder / "dl.mp4", folder / "renamed.mp4")
    assert taken.wait_for(6)[-1] == "synced.mp4" and "renamed.mp4" in taken.names()
    time.sleep(SETTLE * 3)
    assert len(taken.paths) == 6


def test_symlinks_outside_are_refused_and_broken_ones_reported(watch: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.mp4").write_bytes(video_bytes())
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "inside.mp4").write_bytes(video_bytes(4000))
    os.symlink(outside / "target.mp4", folder / "out.mp4")
    os.symlink(folder / "inside.mp4", folder / "in-link.mp4")
    os.symlink(tmp_path / "nowhere.mp4", folder / "dangling.mp4")
    os.symlink(folder / "loop-b.mp4", folder / "loop-a.mp4")
    os.symlink(folder / "loop-a.mp4", folder / "loop-b.mp4")
    with capture_logs() as logs:
        _, taken, _ = watch()
        assert taken.wait_for(2) == ["in-link.mp4", "inside.mp4"]
        time.sleep(SETTLE * 2)
    events = {(e["event"], os.path.basename(e.get("path", ""))) for e in logs}
    assert ("symlink_refused", "out.mp4") in events
    assert ("symlink_dangling", "dangling.mp4") in events
    assert ("symlink_loop", "loop-a.mp4") in events and ("symlink_loop", "loop-b.mp4") in events
    assert "out.mp4" not in taken.names()


def test_follow_symlinks_takes_links_out_and_survives_folder_loops(
    watch: Any, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.mp4").write_bytes(video_bytes())
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    os.symlink(outside / "target.mp4", folder / "out.mp4")
    os.symlink(folder, folder / "sub" / "up")  # a folder loop
    _, taken, _ = watch(follow_symlinks=True)
    assert taken.wait_for(1) == ["out.mp4"]
    time.sleep(SETTLE * 2)
    assert taken.names() == ["out.mp4"]


def test_start_up_scan_takes_missed_files_and_skips_known_ones(watch: Any, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "deep").mkdir(parents=True)
    (folder / "new.mp4").write_bytes(video_bytes())
    (folder / "deep" / "nested.MKV").write_bytes(video_bytes(4000))
    (folder / "notes.txt").write_text("not a recording")
    st = (folder / "new.mp4").stat()
    known = {str(folder / "new.mp4"): (st.st_size, st.st_mtime)}
    w, taken, _ = watch(known=known)
    assert taken.wait_for(1) == ["nested.MKV"]
    assert w.rescan() == 0  # nothing new: the taken file is remembered, the known one skipped


def test_a_file_held_open_is_not_taken(watch: Any) -> None:
    _, taken, folder = watch()
    with open(folder / "held.mp4", "wb") as f:
        f.write(video_bytes())
        f.flush()
        assert open_for_writing({str(folder / "held.mp4")})[0] == {str(folder / "held.mp4")}
        time.sleep(SETTLE * 4)
        assert taken.names() == []
    assert taken.wait_for(1) == ["held.mp4"]
    assert open_for_writing({str(folder / "held.mp4")})[0] == set()


def test_network_file_systems_are_polled(watch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher_mod, "mount_fstype", lambda _path: "nfs4")
    w, taken, folder = watch(poll_interval_s=0.2)
    assert w.folders[0].polling
    shutil.copyfile(__file__, folder / "polled.mp4")
    assert taken.wait_for(1) == ["polled.mp4"]


def test_inotify_limit_falls_back_to_polling(watch: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    class Exhausted:
        def __init__(self, **_kw: Any) -> None:
            pass

        def schedule(self, *_a: Any, **_kw: Any) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(watcher_mod, "InotifyObserver", Exhausted)
    with capture_logs() as logs:
        w, taken, folder = watch(poll_interval_s=0.2)
    assert w.folders[0].polling
    assert any(e["event"] == "inotify_limit_reached" for e in logs)
    (folder / "late.mp4").write_bytes(video_bytes())
    assert taken.wait_for(1) == ["late.mp4"]


def test_a_watch_folder_deleted_and_made_again_is_watched_by_inotify_again(watch: Any) -> None:
    w, taken, folder = watch()
    old = w.folders[0].observer
    assert old is not None and not w.folders[0].polling
    # The worst order, made certain: the emitter has queued the root's deletion and stopped, and
    # the rescan comes before the dispatcher hands that event over (once the first deletion, of
    # a file in the folder, has been dispatched, this dispatcher only sleeps).
    (folder / "notes.txt").write_text("x")
    time.sleep(0.3)  # its created event is dispatched before the slow dispatcher takes over
    held = threading.Event()

    def slow(_queue: Any) -> None:
        held.wait(5)

    old.dispatch_events = slow
    shutil.rmtree(folder)
    folder.mkdir()
    # The inotify watch ends with the folder it was set on (watchdog stops its emitter).
    deadline = time.monotonic() + 10  # a guard, not a measurement
    while all(e.is_alive() for e in old.emitters) and old.emitters and time.monotonic() < deadline:
        time.sleep(0.05)
    with capture_logs() as logs:
        w.rescan()  # the periodic rescan checks the observers
    held.set()
    assert any(e["event"] == "observer_died" for e in logs), logs
    new = w.folders[0]
    assert new.observer is not old and not new.polling  # inotify, not polling for good
    assert isinstance(new.observer, watcher_mod.InotifyObserver)
    (folder / "after.mp4").write_bytes(video_bytes())
    assert taken.wait_for(1) == ["after.mp4"]
