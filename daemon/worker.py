"""A recording's way through the engine against the store: intake (register, probe, plan), then
one chunk at a time (claim, sample and transcribe, analyse, commit).

Whoever hands out the work (daemon/work/: the local store queue or the Redis stream, and
`framewatch analyze` through the local one) calls `prepare` once per recording and `run` per
chunk, and decides what a failed chunk means for its queue; the worker reports, it does not
retry. This is the one place where the engine (pure) meets the store (state).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine.activity import StaticSettings
from daemon.engine.alerts import questions
from daemon.engine.analyzer import AnalyzerFailed
from daemon.engine.events import merge_overlaps
from daemon.engine.pipeline import ChunkResult, Prepared, analyze_prepared, prepare_chunk
from daemon.engine.planner import (
    Floors,
    describe_steps,
    step_down_window,
    window_of,
    window_steps,
)
from daemon.engine.prefetch import Prefetcher
from daemon.engine.probe import UnsupportedMedia, probe
from daemon.engine.prompts import instructions, prompt_hash
from daemon.engine.speech import AsrSettings, Transcriber
from daemon.files import NotRegularFile, printable, storable
from daemon.findings import alert_candidates, chunk_provenance, overlaps, speech_to_store
from daemon.gpu import CudaFault, GpuRuntime, is_cuda_fault, is_oom, release_memory, trim_heap
from daemon.identity import fingerprint, owner_id
from daemon.memory import GpuMemory
from daemon.models import ChunkInfo, ChunkWindow, MediaInfo, RecordingInfo, RuleQuestion, Utterance
from daemon.summarizing import summarize_before_settle
from daemon.thumbnails import Thumbnails, frames_for
from daemon.verification import Verifier

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.engine.analyzer import Analyzer
    from daemon.store import Store

log = structlog.get_logger(__name__)

DEFAULT_LEASE_S = 3600.0

# (hook name) -> plugin names that implement it; the plugin host provides it, the worker only
# writes the outbox rows in the right transactions.
Subscribers = Callable[[str], Sequence[str]]


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """What became of one chunk: done, failed (with why) or released (handed back unrun)."""

    recording: RecordingInfo
    chunk: ChunkInfo
    status: str
    events: int
    error: str | None = None
    # Failed for a reason a retry cannot cure (unreadable media, no memory at the floor, an
    # analyzer that breaks its contract): a shared queue dead-letters such a chunk at once.
    permanent: bool = False


class Worker:
    """Analyses recordings one chunk at a time with a lazily created analyzer."""

    def __init__(
        self,
        store: Store,
        config: Config,
        make_analyzer: Callable[[], Analyzer],
        *,
        owner: str | None = None,
        subscribers: Subscribers = lambda _hook: (),
        lease_s: float = DEFAULT_LEASE_S,
        gpu: GpuRuntime | None = None,
    ):
        self.store = store
        self.config = config
        self._make_analyzer = make_analyzer
        self._analyzer: Analyzer | None = None
        self._transcriber: Transcriber | None = None
        self._lock = threading.Lock()
        self.owner = owner or owner_id()
        self.subscribers = subscribers
        self.lease_s = lease_s
        self.memory = GpuMemory(store, config, gpu)
        # The file of the recording being worked on, probed once (recording id -> media).
        self._media: tuple[int, str, MediaInfo] | None = None
        # Samples the next chunk of a recording while the current one is on the model.
        self._prefetch: Prefetcher[Prepared] = Prefetcher(depth=1)
        # Alert candidates' second looks, on this thread (the same model and GPU lease).
        self.verifier = Verifier(self)
        self.thumbnails = Thumbnails(config.media_dir())
        self.summary_notes: dict[int, str] = {}  # recording id -> why it has no summary

    @property
    def analyzer(self) -> Analyzer:
        """Created on first use, so bad input never pays for loading the model."""
        with self._lock:
            if self._analyzer is None:
                self._analyzer = self._make_analyzer()
            return self._analyzer

    @property
    def transcriber(self) -> Transcriber:
        """The speech recogniser (speech.model), created on first use like the analyzer."""
        with self._lock:
            if self._transcriber is None:
                self._transcriber = Transcriber.from_config(self.config)
            return self._transcriber

    def ready(self, should_stop: Callable[[], bool] = lambda: False, speech: bool = False) -> bool:
        """Hold the GPU and load the model (and, with `speech`, the speech recogniser): a model
        that cannot load (ModelLoadError) is the operator's to fix, not a failure of a chunk.
        False if stopped while waiting for the GPU."""
        if not self.memory.hold(should_stop):
            return False
        self.analyzer  # noqa: B018
        if speech:
            self.transcriber  # noqa: B018
        return True

    def wants_speech(self, rec: RecordingInfo) -> bool:
        """Whether a recording's chunks are transcribed: speech.mode on, or auto and the file has
        an audio stream (a file that cannot be probed: no, its chunk reports why)."""
        mode = self.config.speech.mode
        if mode != "auto":
            return mode == "on"
        try:
            return self.probe(rec).has_audio
        except UnsupportedMedia:
            return False

    def close(self) -> None:
        """Stop the prefetch thread and give the GPU lease back (process exit does too)."""
        self._prefetch.close()
        self.memory.close()

    # -- intake -------------------------------------------------------------------------------

    def ingest(self, path: str, profile: str | None = None) -> tuple[RecordingInfo, bool]:
        """Register the file's content; returns (recording, new?). An unreadable file becomes a
        failed recording keyed by its path, so `status` can show why; a FIFO, device or other
        non-regular file, or a name that is not UTF-8, a skipped one (once: never retried)."""
        if not storable(path):
            return self._skip(path, "file name is not valid UTF-8: rename the file to analyse it")
        try:
            fid = fingerprint(path)
        except NotRegularFile as exc:
            return self._skip(path, exc.reason)
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"
            rec, created = self.store.recordings.register(
                path, f"unreadable:{path}", 0, 0.0, profile
            )
            return self.fail(rec, reason), created
        return self.store.recordings.register(
            path, fid.fingerprint, fid.size, fid.mtime, profile, file_key=fid.file_key
        )

    def _skip(self, path: str, reason: str) -> tuple[RecordingInfo, bool]:
        name = printable(path)  # a name that is not UTF-8: its bytes as \xNN
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        rec, created = self.store.recordings.register(
            name, f"skipped:{name}", st.st_size if st else 0, st.st_mtime if st else 0.0
        )
        if rec.status != "skipped":
            log.warning("recording_skipped", recording_id=rec.id, path=name, reason=reason)
            rec = self.store.recordings.set_status(rec.id, "skipped", reason)
        return rec, created

    def settings(self, profile: str | None) -> dict[str, Any]:
        """What a recording is analysed with (stored on it, and in each event's provenance)."""
        cfg = self.config
        task = instructions(profile or cfg.analysis.profile, cfg.analysis.prompt)
        out: dict[str, Any] = {
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
        if cfg.speech.mode != "off":
            out["speech"] = {"mode": cfg.speech.mode, **AsrSettings.from_config(cfg).provenance()}
        return out

    def static_settings(self, path: str) -> StaticSettings | None:
        """sampling.skip_static and its knobs for a file, with its [[watch]] folder's overrides;
        None when static chunks are analysed like any other."""
        s = self.config.sampling
        watch = self.config.watch_for(path)

        def pick(name: str) -> Any:
            own = getattr(watch, name) if watch is not None else None
            return own if own is not None else getattr(s, name)

        if not pick("skip_static"):
            return None
        return StaticSettings(
            threshold=pick("static_threshold"),
            static_fps=pick("static_fps"),
            scan_fps=s.activity_fps,
        )

    def prepare(self, recording_id: int) -> list[ChunkInfo]:
        """Probe a queued (or resumed) recording and plan its chunks (fitted to the GPU budget; no
        model is loaded), then move it to analyzing. Returns its chunks, or [] when there is
        nothing to run: it failed here (unusable file, unknown profile), it is settled, or
        another box moved it first."""
        rec = self.store.recordings.get(recording_id)
        if rec.status not in ("queued", "analyzing"):
            return []
        with structlog.contextvars.bound_contextvars(recording_id=rec.id, path=rec.path):
            try:
                media = self.probe(rec)
            except UnsupportedMedia as exc:
                self.fail(rec, exc.reason)
                return []
            if rec.status == "analyzing" and rec.settings:
                return self.store.chunks.of(rec.id)  # resumed: its plan and settings stand
            try:
                settings = self.settings(rec.profile)
            except ValueError as exc:
                self.fail(rec, str(exc))
                return []
            windows, stepped = self.memory.plan(media)
            if stepped:
                settings["fitted"] = stepped
            if "speech" in settings:
                # Plugins tell "no audio stream" from "nothing said" by it (subtitles).
                settings["speech"]["audio"] = media.has_audio
            chunks = self.store.chunks.plan(rec.id, windows)
            if rec.status == "queued" and not self.store.recordings.start_analysis(
                rec.id, media.duration_s, settings
            ):
                return []
            if rec.status == "analyzing":
                self.store.recordings.set_status(
                    rec.id, "analyzing", duration_s=media.duration_s, settings=settings
                )
            log.info("recording_planned", chunks=len(chunks), duration_s=round(media.duration_s, 3))
            return chunks

    def probe(self, rec: RecordingInfo) -> MediaInfo:
        """The recording's file, probed once while it is the one being worked on."""
        if self._media is not None and self._media[:2] == (rec.id, rec.path):
            return self._media[2]
        media = probe(rec.path, self.config.chunking.max_duration_s)
        self._media = (rec.id, rec.path, media)
        return media

    def fail(self, rec: RecordingInfo, reason: str) -> RecordingInfo:
        """The recording cannot be analysed: failed with `reason`, and plugins told."""
        log.info("recording_failed", recording_id=rec.id, path=rec.path, reason=reason)
        notify = [(p, "recording_failed") for p in self.subscribers("recording_failed")]
        return self.store.recordings.set_status(rec.id, "failed", reason, notify=notify)

    def defer(self, recording_id: int, error: str) -> RecordingInfo:
        """An unexpected error while processing a recording: hold it back for
        daemon.retry_backoff_s (doubling with each attempt), and fail it once daemon.max_attempts
        attempts failed."""
        d = self.config.daemon
        rec = self.store.recordings.get(recording_id)
        delay = d.retry_backoff_s * 2**rec.attempts
        rec = self.store.recordings.defer(recording_id, error, delay)
        if rec.attempts >= d.max_attempts:
            return self.fail(rec, f"gave up after {rec.attempts} attempts: {error}")
        log.warning(
            "recording_deferred",
            recording_id=recording_id,
            attempt=rec.attempts,
            retry_in_s=round(delay, 1),
        )
        return rec

    def settle(self, recording_id: int) -> RecordingInfo:
        """Once its last chunk ended (on whichever box), summarise it (summarizing.py, never fatal)
        and move it to done or failed, telling plugins; a no-op while chunks are left."""
        summarize_before_settle(self, recording_id)
        before = self.store.recordings.get(recording_id)
        settled = self.store.recordings.settle(
            recording_id,
            self.subscribers("recording_finished"),
            self.subscribers("recording_failed"),
        )
        if settled.status == "done" and before.status != "done":
            chunks = len(self.store.chunks.of(recording_id))
            log.info(
                "recording_finished", recording_id=recording_id, path=settled.path, chunks=chunks
            )
        elif settled.status == "failed" and before.status != "failed":
            log.info(
                "recording_failed",
                recording_id=recording_id,
                path=settled.path,
                reason=settled.reason,
            )
        return settled

    # -- one chunk ----------------------------------------------------------------------------

    def run(
        self,
        recording_id: int,
        index: int | None = None,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_start: Callable[[RecordingInfo, ChunkInfo], None] | None = None,
    ) -> ChunkDone | None:
        """Claim and analyse one chunk of a recording: the first pending one, or the one a queue
        handed over (`index`, taken whatever its state unless done). None when there is nothing
        to do (no pending chunk, a chunk already done, a settled recording, or stopped while
        waiting for the GPU). A failed chunk is reported, not recorded: its work source decides."""
        rec = self.store.recordings.get(recording_id)
        if rec.status not in ("queued", "analyzing"):
            return None
        with structlog.contextvars.bound_contextvars(recording_id=rec.id, path=rec.path):
            if not self.ready(should_stop, speech=self.wants_speech(rec)):
                return None
            chunk = self.store.chunks.claim(rec.id, self.owner, self.lease_s, index)
            if chunk is None:
                if index is not None:
                    log.info("chunk_already_done", chunk=index)
                return None
            if on_start is not None:
                # The daemon's watchdog, STATUS= line and shutdown release need to know which
                # chunk is on the GPU from the moment it is claimed.
                on_start(rec, chunk)
            with structlog.contextvars.bound_contextvars(chunk=chunk.index):
                try:
                    media = self.probe(rec)
                except UnsupportedMedia as exc:
                    return self._failed(rec, chunk, exc.reason, permanent=True)
                settings = rec.settings or self.settings(rec.profile)
                task = instructions(
                    str(settings.get("profile") or self.config.analysis.profile),
                    self.config.analysis.prompt,
                )
                done = self._run_chunk(rec, media, chunk, task, settings, should_stop)
                if done.status == "done":
                    # The second looks of this chunk's candidates (and of any this recording
                    # had left), after the commit, before the chunk is reported done. The chunk
                    # stands whatever happens here: a candidate left undecided is verified later.
                    try:
                        self.verify_due(rec.id, should_stop)
                    except CudaFault:
                        raise
                    except Exception:
                        log.exception("verification_failed")
                return done

    def rules(
        self, rec: RecordingInfo, settings: dict[str, Any] | None = None
    ) -> tuple[RuleQuestion, ...]:
        """The [[alerts]] rules asked in this recording's chunks (by its folder and profile)."""
        if not self.config.alerts:
            return ()
        profile = str(
            (settings or rec.settings).get("profile") or rec.profile or self.config.analysis.profile
        )
        return questions(self.config.rules_for(rec.path, profile))

    def verify_due(
        self, recording_id: int | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> int:
        """Give every alert candidate waiting for its second look (of one recording, when given)
        that look now, on this thread; settles their recordings once nothing is left. Returns how
        many were decided. The chunk loop calls it when there is no chunk to run, so candidates
        a dead process or another box left behind are verified too."""
        return self.verifier.run_due(recording_id, should_stop)

    def _prepare(self, rec: RecordingInfo, media: MediaInfo, window: ChunkWindow) -> Prepared:
        """The chunk's frames (and transcript): from the prefetch thread when it prepared this
        exact window, else now."""
        static = self.static_settings(rec.path)
        asr = self._transcriber if self.wants_speech(rec) else None
        ready = self._prefetch.take((rec.id, window, media.rotation, static, asr is not None))
        if ready is not None:
            return ready
        return prepare_chunk(
            rec.path,
            window,
            media.rotation,
            static,
            self.config.sampling.hwaccel,
            asr,
            media.duration_s,
        )

    def _prefetch_after(self, rec: RecordingInfo, media: MediaInfo, index: int) -> None:
        """Start sampling the first pending chunk after `index` on the prefetch thread. Only
        sampling runs ahead: what was prepared for a chunk this worker does not claim next (taken
        by another box, a retry) is dropped at the next take."""
        nxt = next(
            (c for c in self.store.chunks.of(rec.id) if c.status == "pending" and c.index > index),
            None,
        )
        if nxt is None:
            return
        window = window_of(nxt)
        static = self.static_settings(rec.path)
        path, rotation, hwaccel = rec.path, media.rotation, self.config.sampling.hwaccel
        asr, duration = (self._transcriber if self.wants_speech(rec) else None), media.duration_s
        self._prefetch.submit(
            (rec.id, window, rotation, static, asr is not None),
            lambda: prepare_chunk(path, window, rotation, static, hwaccel, asr, duration),
        )

    def _attempt(
        self,
        rec: RecordingInfo,
        chunk: ChunkInfo,
        window: ChunkWindow,
        media: MediaInfo,
        task: str,
        rules: tuple[RuleQuestion, ...] = (),
    ) -> ChunkResult | ChunkDone | None:
        """One try at a chunk: its result, a failed ChunkDone, or None for out of memory.

        The exception stays inside this frame, so once it returns nothing references the tensors
        the failed try allocated and release_memory() can free them."""
        try:
            prepared = self._prepare(rec, media, window)
            self._prefetch_after(rec, media, chunk.index)
            return analyze_prepared(
                prepared,
                self.analyzer,
                task,
                self.config.analysis.max_events,
                rules,
                self.config.speech.prompt_tokens,
            )
        except UnsupportedMedia as exc:
            return self._failed(rec, chunk, exc.reason, permanent=True)
        except AnalyzerFailed as exc:
            return self._failed(rec, chunk, str(exc), permanent=exc.permanent)
        except Exception as exc:  # an analyzer may fail in any way; the chunk records why
            if is_oom(exc):
                log.warning(
                    "chunk_out_of_memory",
                    frames=len(window.sample_times),
                    width=window.width,
                    height=window.height,
                )
                return None
            if is_cuda_fault(exc):
                # The CUDA context is gone: hand the chunk back and end the process (EXIT_CUDA).
                log.error("cuda_fault", error=f"{type(exc).__name__}: {exc}")
                self.store.chunks.release(rec.id, chunk.index, self.owner)
                raise CudaFault(f"{type(exc).__name__}: {exc}") from exc
            log.exception("chunk_failed")
            return self._failed(rec, chunk, f"{type(exc).__name__}: {exc}")

    def _run_chunk(
        self,
        rec: RecordingInfo,
        media: MediaInfo,
        chunk: ChunkInfo,
        task: str,
        settings: dict[str, Any],
        should_stop: Callable[[], bool],
    ) -> ChunkDone:
        window = planned_window = window_of(chunk)
        steps: list[dict[str, Any]] = []
        ready = self.memory.room_for(window, media, steps, should_stop)
        if ready is None:
            self.store.chunks.release(rec.id, chunk.index, self.owner)
            return ChunkDone(rec, chunk, "released", 0)
        window = ready
        floors = Floors.from_config(self.config)
        rules = self.rules(rec, settings)
        while True:
            outcome = self._attempt(rec, chunk, window, media, task, rules)
            if isinstance(outcome, ChunkDone):
                return outcome
            if outcome is not None:  # only the frames of its events' pictures are kept
                result = replace(outcome, frames=frames_for(outcome.events, outcome.frames))
                del outcome
                break
            # Out of memory: free what the try left (outside the except block, where the
            # traceback no longer pins its tensors), then the same chunk, smaller.
            release_memory()
            smaller = step_down_window(window, media, floors, self.config.sampling.max_pixels)
            if smaller is None:
                tried = "; ".join(
                    describe_steps({k: v for k, v in s.items() if k != "why"}) for s in steps
                )
                return self._failed(
                    rec,
                    chunk,
                    f"out of GPU memory at the floor ({len(window.sample_times)} frames of "
                    f"{window.width}x{window.height}; stepped down: {tried or 'nothing'})",
                    permanent=True,
                )
            steps.append({"why": "out_of_memory", **window_steps(window, smaller)})
            window = smaller
        trim_heap()  # the chunk's frames are gone now (but for its events' pictures)
        self.memory.calibrate(window, result.analyzer_stats)
        tolerance = self.config.analysis.merge_tolerance_s
        events, widened = merge_overlaps(
            self.store.chunks.neighbour_events(
                rec.id, chunk.index, window.start_s - tolerance, window.end_s + tolerance
            ),
            result.events,
            overlaps(window, self.store.chunks.of(rec.id)),
            tolerance,
            result.counts,
        )
        try:
            own = self.analyzer.provenance()
        except AnalyzerFailed as exc:
            return self._failed(rec, chunk, str(exc), permanent=exc.permanent)
        provenance = chunk_provenance(
            own,
            settings,
            window,
            result,
            self.memory.provenance(planned_window, window, steps, settings.get("fitted")),
        )
        alerting: dict[str, Any] = {}
        if result.asked:
            alerting = alert_candidates(self.config, chunk, task, rules, result, own)
        speech: list[Utterance] = []
        heard: dict[str, Any] | None = None  # None: speech is off
        if self.config.speech.mode != "off":
            speech, heard = speech_to_store(
                self.store,
                lambda: self.transcriber,
                rec,
                media,
                window,
                result.transcript,
                result.speech_left_out,
            )
        if heard is not None:
            provenance["speech"] = heard
        stored = self.store.chunks.commit(
            rec.id,
            chunk.index,
            self.owner,
            events,
            provenance,
            speech=speech,
            notify=self.subscribers("events_found"),
            widened=widened,
            **alerting,
        )
        if stored is not None:  # pictures from the frames still in memory
            self.thumbnails.sync_chunk(self.store, rec.id, stored, result.frames)
        n = len(stored) if stored is not None else 0
        if result.static is not None:
            log.info(
                "chunk_static",
                action=result.static["action"],
                peak_change=result.static["peak_change"],
            )
        log.info("chunk_analyzed", events=n, speech=len(speech), **result.counts.as_dict())
        return ChunkDone(rec, chunk, "done", n)

    def _failed(
        self, rec: RecordingInfo, chunk: ChunkInfo, reason: str, *, permanent: bool = False
    ) -> ChunkDone:
        log.warning("chunk_failed", reason=reason, permanent=permanent)
        return ChunkDone(rec, chunk, "failed", 0, reason, permanent)
