"""Prefetch: chunk k+1 is sampled on a thread while chunk k is analysed; claim and commit stay
as they were, and a prefetched chunk that is not claimed next is dropped."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import daemon.worker as worker_module
from daemon.analysis import analyze_recording
from daemon.config import parse_config
from daemon.engine.prefetch import Prefetcher
from daemon.engine.sampler import sample_frames
from daemon.store import Store
from daemon.worker import Worker, window_of
from tests.media import BLUE, GREEN, RED, make_video

if TYPE_CHECKING:
    from pathlib import Path


class Recorder:
    name = "recorder"

    def __init__(self, during: Any = None) -> None:
        self.chunks: list[Any] = []
        self.during = during

    def analyze(self, chunk: Any) -> list[dict[str, Any]]:
        self.chunks.append(chunk)
        if self.during is not None:
            self.during(chunk)
        return []

    def provenance(self) -> dict[str, Any]:
        return {"model": "recorder", "backend": "test"}


def make_worker(tmp_path: Path, analyzer: Any) -> Worker:
    cfg = parse_config(
        {
            "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
            "model": {"device": "cpu"},
            "chunking": {"seconds": 3, "overlap_seconds": 1},
            "sampling": {"fps": 2, "max_side": 64},
        }
    )
    return Worker(Store(cfg.storage_url()), cfg, lambda: analyzer)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prefetch")
    return make_video(
        d / "c.mp4", seconds=10, counter=True, scenes=[(0, RED), (4, GREEN), (7, BLUE)], gop=20
    )


def test_prefetcher_hands_back_results_once_and_drops_others() -> None:
    with Prefetcher[int](depth=1) as p:
        assert p.submit("a", lambda: 1)
        assert not p.submit("b", lambda: 2)  # bounded: one ahead
        assert p.take("a") == 1
        assert p.take("a") is None  # used once
        assert p.submit("b", lambda: 2)
        assert p.take("c") is None  # "b" was not claimed: dropped
        assert p.take("b") is None

        def boom() -> int:
            raise ValueError("bad media")

        p.submit("d", boom)
        with pytest.raises(ValueError, match="bad media"):
            p.take("d")
        assert (p.hits, p.misses) == (2, 3)


def test_next_chunk_is_sampled_ahead_with_the_same_frames(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[int, str] = {}
    real = worker_module.prepare_chunk

    def spy(path: str, window: Any, *args: Any) -> Any:
        threads[window.index] = threading.current_thread().name
        return real(path, window, *args)

    monkeypatch.setattr(worker_module, "prepare_chunk", spy)
    recorder = Recorder()
    w = make_worker(tmp_path, recorder)
    rec, _ = w.ingest(str(clip))
    assert analyze_recording(w, rec.id).status == "done"
    indices = [c.index for c in recorder.chunks]
    assert indices == sorted(set(indices)) and len(indices) == len(w.store.chunks.of(rec.id))
    # The first chunk is sampled in line; every later one on the prefetch thread.
    assert threads[0] == threading.current_thread().name
    assert all(threads[i].startswith("prefetch") for i in indices[1:])
    for chunk in recorder.chunks:
        row = next(r for r in w.store.chunks.of(rec.id) if r.index == chunk.index)
        window = window_of(row)
        expected = sample_frames(clip, window.sample_times, window.width, window.height)
        assert [f.t_s for f in chunk.frames] == [f.t_s for f in expected]
        assert all(
            np.array_equal(a.image, b.image) for a, b in zip(chunk.frames, expected, strict=True)
        )
    assert w._prefetch.pending == 0  # nothing prepared is held after the recording


def test_prefetched_chunk_claimed_elsewhere_is_dropped(tmp_path: Path, clip: Path) -> None:
    stolen: list[int] = []

    def steal(chunk: Any) -> None:
        # While chunk 0 is on the model (and chunk 1 is being prefetched), another box claims
        # chunk 1. This worker must go on to chunk 2 and never analyse chunk 1.
        if chunk.index == 0:
            other = w.store.chunks.claim(rec.id, "other-box", 600)
            assert other is not None
            stolen.append(other.index)

    recorder = Recorder(steal)
    w = make_worker(tmp_path, recorder)
    rec, _ = w.ingest(str(clip))
    analyze_recording(w, rec.id)
    assert stolen == [1]
    assert 1 not in [c.index for c in recorder.chunks]
    assert [c.index for c in recorder.chunks][:2] == [0, 2]
    rows = {r.index: r for r in w.store.chunks.of(rec.id)}
    assert rows[1].status == "running" and rows[1].owner == "other-box"
    assert all(r.status == "done" for i, r in rows.items() if i != 1)
