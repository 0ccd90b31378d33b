"""`framewatch run` with the tiny Qwen3-VL checkpoint, end to end: one daemon process serves every
scenario in this module (loading torch and the model costs ~15 s), each scenario adding its own
files and checking only those. Every file must be analysed exactly once, after it is finished."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.store import Store
from tests.daemon_proc import Daemon, status_json, unique_copies, wait_until, write_config
from tests.media import make_bad_inputs, make_video

# One daemon serves the module, and the SIGTERM test ends it: the module runs on one xdist worker,
# in file order (`--dist loadgroup` in pyproject.toml). Every test makes its own files.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("daemon")]

SETTLE = 2.0


class Env:
    def __init__(self, root: Path, daemon: Daemon, config: Path, store: Store):
        self.root = root
        self.inbox = root / "in"
        self.outside = root / "outside"
        self.daemon = daemon
        self.config = config
        self.store = store
        self.clips = 0

    def clip(self, name: str, seconds: float = 2.0) -> Path:
        """A new clip outside the watched folder, different from every other one."""
        self.clips += 1
        colour = ((self.clips * 37) % 256, (self.clips * 91) % 256, 128)
        return make_video(
            self.outside / name, seconds=seconds, fps=4, size=(64, 48), scenes=[(0.0, colour)]
        )

    def finished(self, path: Path, timeout: float = 90.0) -> dict[str, Any]:
        """The recording_finished/failed line for the recording at `path`."""

        def done() -> dict[str, Any] | None:
            for e in self.daemon.logs:
                if e.get("event") in ("recording_finished", "recording_failed") and e.get(
                    "path"
                ) == str(path):
                    return e
            return None

        return wait_until(done, timeout, what=f"{path.name} finished")  # type: ignore[no-any-return]

    def chunk_starts(self, recording_id: int) -> list[dict[str, Any]]:
        return self.daemon.find("chunk_started", recording_id=recording_id)

    def recordings_at(self, path: Path) -> list[Any]:
        return [r for r, _, _ in self.store.recordings.list() if r.path == str(path)]

    def analysed_once(self, path: Path) -> Any:
        """The one recording at `path`, with every chunk done and started exactly once."""
        recs = self.recordings_at(path)
        assert len(recs) == 1, f"{path.name}: {len(recs)} recordings"
        rec = recs[0]
        chunks = self.store.chunks.of(rec.id)
        assert rec.status == "done" and chunks and all(c.status == "done" for c in chunks)
        starts = sorted(e["chunk"] for e in self.chunk_starts(rec.id))
        assert starts == [c.index for c in chunks], f"{path.name}: chunks started {starts}"
        return rec


@pytest.fixture(scope="module")
def env(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("daemon")
    (root / "in").mkdir()
    (root / "outside").mkdir()
    config = write_config(
        root / "config.toml",
        {
            "storage": {"url": f"sqlite:///{root / 'fw.db'}"},
            "model": {"name": str(tiny_model), "max_new_tokens": 24},
            "chunking": {"seconds": 4, "overlap_seconds": 1},
            "sampling": {"fps": 1, "max_side": 64},
            "analysis": {"max_events": 1},
            "daemon": {"queue_poll_s": 5},
            "summary": {"enabled": False},  # test_summary.py tests the text pass
        },
        [{"path": "in", "settle_seconds": SETTLE, "include": ["*.mp4", "*.mkv", "*.m4a"]}],
    )
    # Dropped while the daemon is not running: good files and every kind of broken one.
    make_video(
        root / "in" / "before1.mp4",
        seconds=2.0,
        fps=4,
        size=(64, 48),
        scenes=[(0.0, (10, 200, 10))],
    )
    make_video(
        root / "in" / "before2.mkv",
        seconds=6.0,
        fps=4,
        size=(64, 48),
        scenes=[(0.0, (10, 10, 200))],
    )
    make_bad_inputs(root / "in")
    daemon = Daemon(config)
    store = Store(f"sqlite:///{root / 'fw.db'}")
    try:
        yield Env(root, daemon.started(), config, store)
    finally:
        daemon.kill()
        store.close()


BAD = {
    "empty.mp4": "empty",
    "random.mp4": "",
    "text.mp4": "",
    "truncated.mp4": "moov",
    "audio_only.m4a": "no video stream",
    "huge.mkv": "exceeds",
}


def test_files_dropped_while_stopped_are_analysed_and_bad_ones_fail_with_reasons(env: Env) -> None:
    for name in ("before1.mp4", "before2.mkv", *BAD):
        env.finished(env.inbox / name)
    env.analysed_once(env.inbox / "before1.mp4")
    assert env.analysed_once(env.inbox / "before2.mkv") is not None
    status = status_json(env.config)
    by_name = {os.path.basename(r["path"]): r for r in status["recordings"]}
    assert by_name["before2.mkv"]["status"] == "done"
    assert by_name["before2.mkv"]["chunks_done"] == by_name["before2.mkv"]["chunks_total"] == 2
    for name, word in BAD.items():
        r = by_name[name]
        assert r["status"] == "failed" and r["reason"] and word in r["reason"], r


def test_slow_writer_is_analysed_once_after_it_finished(env: Env) -> None:
    data = env.clip("slow-source.mp4").read_bytes()
    target = env.inbox / "slow.mp4"
    third = len(data) // 3
    with open(target, "wb") as f:
        f.write(data[:third])
        f.flush()
        time.sleep(SETTLE * 1.5)  # longer than settle_seconds, still open
        f.write(data[third : 2 * third])
        f.flush()
        time.sleep(SETTLE / 4)  # shorter
        f.write(data[2 * third :])
    closed = time.time()
    env.finished(target)
    rec = env.analysed_once(target)
    assert env.store.recordings.get(rec.id).duration_s == pytest.approx(2.0, abs=0.3)
    ready = [e for e in env.daemon.find("file_ready") if e["path"] == str(target)]
    assert len(ready) == 1 and ready[0]["_t"] >= closed + SETTLE - 0.05
    first = min(e["_t"] for e in env.chunk_starts(rec.id))
    # Stable -> first chunk on the model: the settle tick plus intake and probe, well under a second.
    assert first - (closed + SETTLE) < 2.0


def test_part_rename_mv_rsync_and_cp_each_give_one_analysis(env: Env) -> None:
    part = env.inbox / "download.mp4.part"
    shutil.copyfile(env.clip("a.mp4"), part)
    rsync_tmp = env.inbox / ".synced.mp4.Xa81Qz"
    shutil.copyfile(env.clip("b.mp4"), rsync_tmp)
    time.sleep(SETTLE * 1.5)  # partial names are never taken, however long they sit
    os.rename(part, env.inbox / "download.mp4")
    os.rename(rsync_tmp, env.inbox / "synced.mp4")
    os.rename(env.clip("moved.mp4"), env.inbox / "moved.mp4")
    shutil.copyfile(env.clip("c.mp4"), env.inbox / "copied.mp4")
    for name in ("download.mp4", "synced.mp4", "moved.mp4", "copied.mp4"):
        env.finished(env.inbox / name)
        env.analysed_once(env.inbox / name)
    assert not [
        r for r, _, _ in env.store.recordings.list() if r.path.endswith((".part", "Xa81Qz"))
    ]


def test_same_bytes_under_another_name_are_not_analysed_again(env: Env) -> None:
    # Files of this test's own, analysed first (so it runs alone too: `-k same_bytes`).
    for name in ("to-rename.mp4", "to-link.mp4", "to-change.mp4"):
        os.rename(env.clip(name), env.inbox / name)
    for name in ("to-rename.mp4", "to-link.mp4", "to-change.mp4"):
        env.finished(env.inbox / name)
        env.analysed_once(env.inbox / name)
    before = len(env.store.recordings.list())
    starts = len(env.daemon.find("chunk_started"))
    shutil.copyfile(env.inbox / "to-change.mp4", env.inbox / "to-change-copy.mp4")
    os.rename(env.inbox / "to-rename.mp4", env.inbox / "renamed.mp4")
    os.link(env.inbox / "to-link.mp4", env.inbox / "linked.mp4")
    names = {str(env.inbox / n) for n in ("to-change-copy.mp4", "renamed.mp4", "linked.mp4")}
    wait_until(
        lambda: names <= set(env.store.recordings.paths()), 30, what="the new names registered"
    )
    time.sleep(0.5)
    assert len(env.store.recordings.list()) == before
    assert len(env.daemon.find("chunk_started")) == starts
    # The recording follows its file when the old name is gone.
    assert env.store.recordings.find(str(env.inbox / "renamed.mp4")).path == str(
        env.inbox / "renamed.mp4"
    )
    # Changed bytes at a known path are new content: analysed once more.
    with open(env.inbox / "to-change.mp4", "wb") as f:
        f.write(env.clip("d.mp4").read_bytes())
    wait_until(
        lambda: len(env.store.recordings.list()) == before + 1, 30, what="the changed file queued"
    )
    new = max((r for r, _, _ in env.store.recordings.list()), key=lambda r: r.id)
    wait_until(
        lambda: env.store.recordings.get(new.id).status == "done",
        60,
        what="the changed file analysed",
    )
    assert sorted(e["chunk"] for e in env.chunk_starts(new.id)) == [0]


def test_many_files_at_once_are_each_analysed_once(env: Env) -> None:
    base = env.clip("many.mp4", seconds=1.0).read_bytes()
    paths = []
    for i, data in enumerate(unique_copies(base, 8)):
        staged = env.outside / f"many{i:02d}.mp4"
        staged.write_bytes(data)
        paths.append(staged)
    for i, staged in enumerate(paths):
        # Half moved in, half copied in, all within a few milliseconds.
        if i % 2:
            os.rename(staged, env.inbox / staged.name)
        else:
            shutil.copyfile(staged, env.inbox / staged.name)
    for staged in paths:
        env.finished(env.inbox / staged.name, timeout=120)
        env.analysed_once(env.inbox / staged.name)


def test_sigterm_when_idle_exits_0_at_once(env: Env) -> None:
    t0 = time.monotonic()
    env.daemon.signal(signal.SIGTERM)
    assert env.daemon.wait_exit(30) == 0
    assert time.monotonic() - t0 < 10
    assert env.daemon.find("daemon_stopped", exit_code=0)
