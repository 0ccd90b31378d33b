"""Runs one recording through the engine against the store: probe, plan, claim, analyse, commit.

`framewatch analyze` and the daemon's scheduler both drive recordings through this; it is the
one place where the engine (pure) meets the store (state).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from daemon.engine.events import merge_overlaps
from daemon.engine.pipeline import analyze_chunk
from daemon.engine.planner import evenly_spaced, plan_chunks
from daemon.engine.probe import UnsupportedMedia, probe
from daemon.engine.prompts import instructions, prompt_hash
from daemon.identity import fingerprint
from daemon.models import ChunkInfo, ChunkWindow, MediaInfo, RecordingInfo
from daemon.store import Store, process_owner

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.engine.backends import Analyzer

log = structlog.get_logger(__name__)

DEFAULT_LEASE_S = 3600.0

# (hook name) -> plugin names that implement it; the plugin layer provides it, the worker only
# writes the outbox rows in the right transactions.
Subscribers = Callable[[str], Sequence[str]]


def _no_subscribers(_hook: str) -> Sequence[str]:
    return ()


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """Progress report after each chunk (for progress bars and sd_notify STATUS=)."""

    recording: RecordingInfo
    chunk: ChunkInfo
    status: str
    events: int
    error: str | None = None


class Worker:
    """Analyses recordings one chunk at a time with a lazily created analyzer."""

    def __init__(
        self,
        store: Store,
        config: Config,
        make_analyzer: Callable[[], Analyzer],
        *,
        owner: str | None = None,
        subscribers: Subscribers = _no_subscribers,
        lease_s: float = DEFAULT_LEASE_S,
    ):
        self.store = store
        self.config = config
        self._make_analyzer = make_analyzer
        self._analyzer: Analyzer | None = None
        self._lock = threading.Lock()
        self.owner = owner or process_owner()
        self.subscribers = subscribers
        self.lease_s = lease_s

    @property
    def analyzer(self) -> Analyzer:
        """Created on first use, so bad input never pays for loading the model."""
        with self._lock:
            if self._analyzer is None:
                self._analyzer = self._make_analyzer()
            return self._analyzer

    # -- intake -------------------------------------------------------------------------------

    def ingest(self, path: str, profile: str | None = None) -> tuple[RecordingInfo, bool]:
        """Register the file's content; returns (recording, new?). An unreadable file becomes a
        failed recording keyed by its path, so `status` can show why."""
        try:
            fid = fingerprint(path)
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"
            rec, created = self.store.register(path, f"unreadable:{path}", 0, 0.0, profile)
            return self._fail(rec, reason), created
        return self.store.register(path, fid.fingerprint, fid.size, fid.mtime, profile)

    # -- analysis -----------------------------------------------------------------------------

    def settings(self, profile: str | None) -> dict[str, object]:
        cfg = self.config
        task = instructions(profile or cfg.analysis.profile, cfg.analysis.prompt)
        return {
            "model": cfg.model_name(),
            "profile": profile or cfg.analysis.profile,
            "prompt_hash": prompt_hash(task),
            "sampling": {
                "fps": cfg.sampling.fps,
                "max_side": cfg.sampling.max_side,
                "max_pixels": cfg.sampling.max_pixels,
                "chunk_s": cfg.chunking.seconds,
                "overlap_s": cfg.chunking.overlap_seconds,
            },
        }

    def plan(self, media: MediaInfo) -> list[ChunkWindow]:
        c = self.config
        return plan_chunks(
            media,
            seconds=c.chunking.seconds,
            overlap_s=c.chunking.overlap_seconds,
            fps=c.sampling.fps,
            max_side=c.sampling.max_side,
            max_pixels=c.sampling.max_pixels,
        )

    def process(
        self,
        recording_id: int,
        *,
        on_chunk: Callable[[ChunkDone], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        retry_failed: bool = False,
    ) -> RecordingInfo:
        """Analyse every unfinished chunk of a recording, then settle its status.

        Resumes at the first unfinished chunk; a done recording is left as it is."""
        rec = self.store.recording(recording_id)
        if rec.status in ("done", "skipped"):
            return rec
        bound = structlog.contextvars.bound_contextvars(recording_id=rec.id, path=rec.path)
        with bound:
            try:
                media = probe(rec.path)
            except UnsupportedMedia as exc:
                return self._fail(rec, exc.reason)
            settings = self.settings(rec.profile)
            try:
                task = instructions(str(settings["profile"]), self.config.analysis.prompt)
            except ValueError as exc:
                return self._fail(rec, str(exc))
            windows = self.plan(media)
            chunks = self.store.plan(rec.id, windows)
            rec = self.store.set_status(rec.id, "analyzing", duration_s=media.duration_s, settings=settings)
            log.info("recording_started", chunks=len(chunks), duration_s=round(media.duration_s, 3))
            by_index = {c.index: c for c in chunks}
            while not should_stop():
                claimed = self.store.claim(rec.id, self.owner, self.lease_s, retry_failed=retry_failed)
                if claimed is None:
                    break
                done = self._run_chunk(rec, media, claimed, by_index, task, settings)
                if on_chunk is not None:
                    on_chunk(done)
            return self._settle(rec)

    def _window(self, chunk: ChunkInfo) -> ChunkWindow:
        # Replays the stored plan (a resumed run samples exactly the frames first planned).
        row = next(c for c in self.store.chunks(chunk.recording_id) if c.index == chunk.index)
        return ChunkWindow(
            index=row.index,
            start_s=row.start_s,
            end_s=row.end_s,
            sample_times=evenly_spaced(row.start_s, row.end_s, row.frames),
            width=row.width,
            height=row.height,
        )

    def _run_chunk(
        self,
        rec: RecordingInfo,
        media: MediaInfo,
        chunk: ChunkInfo,
        planned: dict[int, ChunkInfo],
        task: str,
        settings: dict[str, object],
    ) -> ChunkDone:
        window = self._window(chunk)
        with structlog.contextvars.bound_contextvars(chunk=chunk.index):
            try:
                analyzer = self.analyzer
                result = analyze_chunk(
                    rec.path, window, media.rotation, analyzer, task, self.config.analysis.max_events
                )
            except UnsupportedMedia as exc:
                return self._chunk_failed(rec, chunk, exc.reason)
            except Exception as exc:  # an analyzer may fail in any way; the chunk records why
                log.exception("chunk_failed")
                return self._chunk_failed(rec, chunk, f"{type(exc).__name__}: {exc}")
            overlap = self._overlaps(window, planned)
            events = merge_overlaps(
                self.store.neighbour_events(rec.id, chunk.index),
                result.events,
                overlap,
                self.config.analysis.merge_tolerance_s,
                result.counts,
            )
            provenance = {
                **analyzer.provenance(),
                "prompt_hash": settings["prompt_hash"],
                "sampling": {
                    **settings["sampling"],  # type: ignore[dict-item]
                    "frames": len(window.sample_times),
                    "width": window.width,
                    "height": window.height,
                },
                "counts": result.counts.as_dict(),
                "decode_s": round(result.decode_s, 3),
                "analyze_s": round(result.analyze_s, 3),
                "analyzer": result.analyzer_stats,
            }
            stored = self.store.commit_chunk(
                rec.id,
                chunk.index,
                self.owner,
                events,
                provenance,
                notify=self.subscribers("events_found"),
            )
            n = len(stored) if stored is not None else 0
            log.info("chunk_analyzed", events=n, **result.counts.as_dict())
            return ChunkDone(rec, chunk, "done", n)

    @staticmethod
    def _overlaps(window: ChunkWindow, planned: dict[int, ChunkInfo]) -> list[tuple[float, float]]:
        out = []
        for j in (window.index - 1, window.index + 1):
            other = planned.get(j)
            if other is not None:
                lo, hi = max(window.start_s, other.start_s), min(window.end_s, other.end_s)
                if hi >= lo:
                    out.append((lo, hi))
        return out

    def _chunk_failed(self, rec: RecordingInfo, chunk: ChunkInfo, reason: str) -> ChunkDone:
        self.store.fail_chunk(rec.id, chunk.index, self.owner, reason)
        log.warning("chunk_failed", reason=reason)
        return ChunkDone(rec, chunk, "failed", 0, reason)

    def _settle(self, rec: RecordingInfo) -> RecordingInfo:
        chunks = self.store.chunks(rec.id)
        failed = [c for c in chunks if c.status == "failed"]
        if any(c.status in ("pending", "running") for c in chunks):
            return self.store.recording(rec.id)  # stopped part-way; a later run resumes
        if failed:
            first = failed[0]
            reason = f"{len(failed)} of {len(chunks)} chunks failed; chunk {first.index}: {first.error}"
            return self._fail(rec, reason)
        done = self.store.set_status(
            rec.id, "done", notify=[(p, "recording_finished") for p in self.subscribers("recording_finished")]
        )
        log.info("recording_finished", chunks=len(chunks))
        return done

    def _fail(self, rec: RecordingInfo, reason: str) -> RecordingInfo:
        log.info("recording_failed", recording_id=rec.id, reason=reason)
        return self.store.set_status(
            rec.id, "failed", reason, notify=[(p, "recording_failed") for p in self.subscribers("recording_failed")]
        )

