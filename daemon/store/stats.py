"""Totals for operators (the metrics endpoint), computed from the rows at the time of asking, so
every process reading the store reports the same numbers and a restart resets none."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func
from sqlmodel import col, select

from daemon.store.session import Database
from daemon.store.tables import CHUNK_STATES, RECORDING_STATES, Chunk, Recording


def stats(db: Database) -> dict[str, Any]:
    """recordings/chunks: counts by state; video_s: seconds of video in done chunks (overlaps
    counted in each chunk: the model saw them twice); busy_s: wall time those chunks took from
    claim to commit; gpu_peak_gib: the highest measured peak of any chunk (provenance
    analyzer.peak_gib), gpu_budget_gib: the budget of the latest chunk that recorded one,
    gpu_peak_ratio: the highest peak/budget of one chunk. Deliveries are `Outbox.counts`."""
    prov = Chunk.__table__.c.provenance  # type: ignore[attr-defined]
    peak = prov[("analyzer", "peak_gib")].as_float()
    budget = prov[("memory", "budget_gib")].as_float()
    timed = col(Chunk.started_at).is_not(None) & col(Chunk.finished_at).is_not(None)
    with db.session() as s:
        recordings = dict(
            s.exec(select(Recording.status, func.count()).group_by(Recording.status)).all()
        )
        chunks = dict(s.exec(select(Chunk.status, func.count()).group_by(Chunk.status)).all())
        video_s, timed_video_s, busy_s, gpu_peak, gpu_ratio = s.exec(
            select(
                func.coalesce(func.sum(Chunk.end_s - Chunk.start_s), 0.0),
                func.coalesce(func.sum(case((timed, Chunk.end_s - Chunk.start_s))), 0.0),
                func.coalesce(func.sum(Chunk.finished_at - Chunk.started_at), 0.0),  # type: ignore[operator]
                func.max(peak),
                func.max(peak / func.nullif(budget, 0)),
            ).where(Chunk.status == "done")
        ).one()
        gpu_budget = s.exec(
            select(budget)
            .where(Chunk.status == "done", budget.is_not(None))
            .order_by(col(Chunk.finished_at).desc())
            .limit(1)
        ).first()
    return {
        "recordings": {st: int(recordings.get(st, 0)) for st in RECORDING_STATES},
        "chunks": {st: int(chunks.get(st, 0)) for st in CHUNK_STATES},
        "video_s": float(video_s),
        "timed_video_s": float(timed_video_s),
        "busy_s": float(busy_s),
        "gpu_peak_gib": None if gpu_peak is None else float(gpu_peak),
        "gpu_budget_gib": None if gpu_budget is None else float(gpu_budget),
        "gpu_peak_ratio": None if gpu_ratio is None else float(gpu_ratio),
    }
