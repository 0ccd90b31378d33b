"""Test helpers for search, the web API and metrics: a store populated directly (no model)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import select

from daemon.models import Candidate, ChunkWindow, RecordingInfo
from daemon.store import Store
from daemon.store.tables import Chunk

OWNER = "test:1"


def provenance(
    prompt_hash: str = "p1", model: str = "Qwen/Qwen3-VL-2B-Instruct", **more: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "prompt_hash": prompt_hash,
        "sampling": {"fps": 2.0, "max_side": 640},
        **more,
    }


def ts(day: str) -> float:
    return datetime.fromisoformat(day).timestamp()


def populate(
    store: Store,
    path: Path | str,
    chunks: Sequence[Sequence[Candidate]],
    *,
    chunk_s: float = 60.0,
    mtime: float = 0.0,
    size: int = 1,
    prov: dict[str, Any] | None = None,
    finish: str | None = "done",
) -> RecordingInfo:
    """Register, plan, claim and commit each chunk as the Worker does; the events are given."""
    rec, _ = store.recordings.register(str(path), f"fp:{path}", size, mtime, profile="general")
    windows = [
        ChunkWindow(i, i * chunk_s, (i + 1) * chunk_s, (i * chunk_s + 1,), 64, 64)
        for i in range(len(chunks))
    ]
    store.chunks.plan(rec.id, windows)
    for events in chunks:
        chunk = store.chunks.claim(rec.id, OWNER, 600)
        assert chunk is not None
        store.chunks.commit(rec.id, chunk.index, OWNER, list(events), prov or provenance())
    if finish is not None:
        store.recordings.set_status(
            rec.id,
            finish,
            duration_s=len(chunks) * chunk_s,
            settings={"model": (prov or provenance())["model"]},
        )
    return store.recordings.get(rec.id)


def reanalyse(
    store: Store, recording_id: int, index: int, events: Sequence[Candidate], prov: dict[str, Any]
) -> None:
    """Analyse one done chunk again (a changed prompt or model): back to pending, claimed,
    committed; commit_chunk replaces that chunk's events."""
    with store.db.session() as s:
        c = s.exec(
            select(Chunk).where(Chunk.recording_id == recording_id, Chunk.index == index)
        ).one()
        c.status = "pending"
        s.add(c)
    claimed = store.chunks.claim(recording_id, OWNER, 600)
    assert claimed is not None and claimed.index == index
    assert store.chunks.commit(recording_id, index, OWNER, list(events), prov) is not None


def ev(start: float, end: float, label: str, description: str) -> Candidate:
    return Candidate(start, end, label, description)


# Two recordings; "red" and "alarm" are rare enough in the whole corpus for BM25's IDF to count.
LECTURE = [
    [
        ev(12, 20, "title slide", "Title slide: Thermodynamics, lecture 4"),
        ev(40, 55, "person", "The lecturer walks to the board"),
        ev(300, 320, "board", "Equations written on the whiteboard"),
        ev(600, 640, "question", "A student raises a hand"),
    ],
    [
        ev(2832.4, 2840, "red alarm", "A red alarm light flashes above the door"),
        ev(2900, 2910, "slide", "A slide shows a red warning sign and an alarm schedule"),
        ev(3000, 3100, "empty room", "Students leave, the room is empty"),
    ],
]
CAMERA = [
    [
        ev(5, 9, "door", "Door opens, nobody enters"),
        ev(30, 35, "Red Alarm", "alarm"),
        ev(60, 70, "vehicle", "A red car parks in the yard"),
        ev(80, 90, "person", "A person in a blue jacket crosses the yard"),
        ev(100, 110, "lights", "Lights switch off in the corridor"),
        ev(120, 130, "cat", "A cat walks along the fence"),
    ],
]
