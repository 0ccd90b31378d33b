"""Runs one recording through the engine against the store: probe, plan, claim, analyse, commit.

`framewatch analyze` and the daemon's scheduler both drive recordings through this; it is the
one place where the engine (pure) meets the store (state).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine.budget import (
    BudgetError,
    Estimator,
    budget_from,
    calibration_key,
    estimator_for,
    load_model_spec,
    what_would_fit,
)
from daemon.engine.events import merge_overlaps
from daemon.engine.activity import StaticSettings
from daemon.engine.pipeline import ChunkResult, Prepared, analyze_prepared, prepare_chunk
from daemon.engine.prefetch import Prefetcher
from daemon.engine.planner import (
    FittedPlan,
    Floors,
    configured_plan,
    describe_steps,
    evenly_spaced,
    fit_plan,
    step_down_window,
    window_steps,
)
from daemon.engine.probe import UnsupportedMedia, probe
from daemon.engine.prompts import instructions, prompt_hash
from daemon.engine.prompts import build_prompt
from daemon.gpu import (
    CudaFault, GpuLease, GpuRuntime, is_cuda_fault, is_oom, lease_dir, release_memory, trim_heap,
)
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
    # Failed for a reason a retry cannot cure (unreadable media, no memory at the floor): a
    # shared queue sends such a chunk to its dead letters at once.
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
        subscribers: Subscribers = _no_subscribers,
        lease_s: float = DEFAULT_LEASE_S,
        gpu: GpuRuntime | None = None,
    ):
        self.store = store
        self.config = config
        self._make_analyzer = make_analyzer
        self._analyzer: Analyzer | None = None
        self._lock = threading.Lock()
        self.owner = owner or process_owner()
        self.subscribers = subscribers
        self.lease_s = lease_s
        # Set by a shared-queue consumer: a failed chunk goes back to pending for the queue to
        # redeliver, instead of failed for the local retry job.
        self.retry_by_queue = False
        # The device (detected on first use: it imports torch), its lease, the memory model and
        # budget on a GPU, and the fitted plan of the recording being processed.
        self._gpu = gpu
        self._gpu_lease: GpuLease | None = None
        self._memory: tuple[Estimator, float] | None = None
        self._fitted: FittedPlan | None = None
        self._memory_unavailable = False
        # Set while process() runs: samples the next chunk while the current one is analysed.
        self._prefetch: Prefetcher[Prepared] | None = None

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
        return StaticSettings(threshold=pick("static_threshold"), static_fps=pick("static_fps"), scan_fps=s.activity_fps)

    def plan(self, media: MediaInfo) -> list[ChunkWindow]:
        """The configured plan; on a GPU, fitted to the memory budget (BudgetError when even the
        floors do not fit, saying what would)."""
        c = self.config
        self._fitted = None
        memory = self.memory()
        if memory is not None:
            est, budget = memory
            fitted = fit_plan(media, c, est, budget)
            if not fitted.fits:
                advice = what_would_fit(est, budget, fitted.floor, c.model_name())
                raise BudgetError(f"{c.model_name()}: {fitted.reason}. What would fit: {advice}")
            if fitted.stepped_down:
                log.info("plan_stepped_down", stepped_down=fitted.describe(), budget_gib=round(budget, 2))
            self._fitted = fitted
            return list(fitted.windows)
        return configured_plan(media, c)

    def process(
        self,
        recording_id: int,
        *,
        on_chunk: Callable[[ChunkDone], None] | None = None,
        on_start_chunk: Callable[[RecordingInfo, ChunkInfo], None] | None = None,
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
            if self._fitted is not None and self._fitted.stepped_down:
                settings = {**settings, "fitted": {k: list(v) for k, v in self._fitted.stepped_down.items()}}
            if not self.hold_gpu(should_stop):
                return self.store.recording(rec.id)
            # Load the model before taking a chunk: a model that cannot load (ModelLoadError) is
            # the operator's to fix, not a failure of this recording's chunks.
            self.analyzer  # noqa: B018
            chunks = self.store.plan(rec.id, windows)
            rec = self.store.set_status(rec.id, "analyzing", duration_s=media.duration_s, settings=settings)
            log.info("recording_started", chunks=len(chunks), duration_s=round(media.duration_s, 3))
            by_index = {c.index: c for c in chunks}
            if retry_failed:
                self.store.requeue_failed(rec.id)
            self._prefetch = Prefetcher(depth=1)
            try:
                while not should_stop():
                    claimed = self.store.claim(rec.id, self.owner, self.lease_s)
                    if claimed is None:
                        break
                    if on_start_chunk is not None:
                        # The daemon's watchdog, STATUS= line and shutdown release need to know which
                        # chunk is on the GPU from the moment it is claimed.
                        on_start_chunk(rec, claimed)
                    done = self._run_chunk(rec, media, claimed, by_index, task, settings, should_stop)
                    if on_chunk is not None:
                        on_chunk(done)
            finally:
                prefetch, self._prefetch = self._prefetch, None
                prefetch.close()
            return self._settle(rec)

    def _prefetch_after(self, rec: RecordingInfo, media: MediaInfo, index: int) -> None:
        """Start sampling the first pending chunk after `index` on the prefetch thread."""
        if self._prefetch is None:
            return
        rows = self.store.chunks(rec.id)
        nxt = min((c for c in rows if c.status == "pending" and c.index > index), key=lambda c: c.index, default=None)
        if nxt is None:
            return
        window = self._row_window(nxt)
        static = self.static_settings(rec.path)
        path, rotation, hwaccel = rec.path, media.rotation, self.config.sampling.hwaccel
        self._prefetch.submit(
            (rec.id, window, rotation, static), lambda: prepare_chunk(path, window, rotation, static, hwaccel)
        )

    def _prepare(self, rec: RecordingInfo, media: MediaInfo, window: ChunkWindow) -> Prepared:
        """The chunk's frames: from the prefetch thread when it prepared this exact window, else now."""
        static = self.static_settings(rec.path)
        if self._prefetch is not None:
            ready = self._prefetch.take((rec.id, window, media.rotation, static))
            if ready is not None:
                return ready
        return prepare_chunk(rec.path, window, media.rotation, static, self.config.sampling.hwaccel)

    def _window(self, chunk: ChunkInfo) -> ChunkWindow:
        # Replays the stored plan (a resumed run samples exactly the frames first planned).
        row = next(c for c in self.store.chunks(chunk.recording_id) if c.index == chunk.index)
        return self._row_window(row)

    @staticmethod
    def _row_window(row: Any) -> ChunkWindow:
        return ChunkWindow(
            index=row.index,
            start_s=row.start_s,
            end_s=row.end_s,
            sample_times=evenly_spaced(row.start_s, row.end_s, row.frames),
            width=row.width,
            height=row.height,
        )

    # -- GPU memory -----------------------------------------------------------------------------

    @property
    def gpu(self) -> GpuRuntime:
        if self._gpu is None:
            # With an inference server the model's memory is the server's: nothing to budget or
            # lease here.
            local = self.config.model.backend == "transformers"
            self._gpu = GpuRuntime.detect(self.config.model.device) if local else GpuRuntime("cpu")
        return self._gpu

    def memory(self) -> tuple[Estimator, float] | None:
        """(memory model, budget GiB) on a GPU, calibrated from the store; None on the CPU, whose
        memory is not budgeted."""
        if not self.gpu.is_cuda or self._memory_unavailable:
            return None
        if self._memory is None:
            c = self.config
            budget, _ = budget_from(c, self.gpu.total_gib)
            if budget is None:
                return None
            try:
                spec = load_model_spec(c.model_name(), c.model.revision)
            except BudgetError as exc:
                # No config.json to estimate from (a plugin's analyzer, an unusual checkpoint):
                # run unfitted; out-of-memory retries still protect each chunk.
                log.warning("memory_plan_unavailable", error=str(exc))
                self._memory_unavailable = True
                return None
            ratio = self.store.calibration(calibration_key(c, self.gpu.device), self._gpu_key()) or 1.0
            task = instructions(c.analysis.profile, c.analysis.prompt)
            prompt = build_prompt(task, 0.0, 0.0, c.analysis.max_events)
            self._memory = (estimator_for(c, spec, self.gpu.device, ratio=ratio, prompt=prompt), budget)
        return self._memory

    def _gpu_key(self) -> str:
        return self.gpu.name or self.gpu.device

    def hold_gpu(self, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """One consumer per GPU: take this device's lease (kept for the life of the worker).
        Raises GpuLeaseBusy, or waits, per gpu.when_locked; False if stopped while waiting."""
        if not self.gpu.is_cuda:
            return True
        if self._gpu_lease is None:
            self._gpu_lease = GpuLease(lease_dir(self.config), self.gpu.device)
        return self._gpu_lease.acquire(
            wait=self.config.gpu.when_locked == "wait", should_stop=should_stop,
            poll_s=self.config.gpu.busy_poll_seconds,
        )

    def close(self) -> None:
        """Give the GPU lease back (process exit does too)."""
        if self._gpu_lease is not None:
            self._gpu_lease.release()

    def _room_for(
        self, window: ChunkWindow, media: MediaInfo, steps: list[dict[str, Any]], should_stop: Callable[[], bool]
    ) -> ChunkWindow | None:
        """The chunk as it can run now: as planned, or, when another process holds GPU memory,
        after waiting or stepped down (gpu.when_busy). None if stopped while waiting."""
        memory = self.memory()
        if memory is None or self.gpu.room_gib() is None:
            return window
        est, budget = memory
        g = self.config.gpu
        waiting_since: float | None = None
        while True:
            room = self.gpu.room_gib()
            # The room excludes our CUDA context, which the estimate includes.
            limit = min(budget, (room if room is not None else budget) + est.context_gib)

            def fits(w: ChunkWindow) -> bool:
                return est.peak_gib(len(w.sample_times), w.width, w.height) <= limit

            if fits(window):
                if waiting_since is not None:
                    log.info("gpu_free_again", waited_s=round(time.monotonic() - waiting_since, 1))
                return window
            if g.when_busy == "step_down":
                smaller = step_down_window(
                    window, media, Floors.from_config(self.config), self.config.sampling.max_pixels, fits
                )
                if smaller is not None and fits(smaller):
                    steps.append({"why": "gpu_busy", **window_steps(window, smaller)})
                    log.warning("gpu_busy_stepped_down", room_gib=round(limit, 2),
                                stepped_down=describe_steps(window_steps(window, smaller)))
                    return smaller
            if waiting_since is None:
                waiting_since = time.monotonic()
                need = est.peak_gib(len(window.sample_times), window.width, window.height)
                log.warning("gpu_busy_waiting", room_gib=round(limit, 2), need_gib=round(need, 2))
            deadline = time.monotonic() + g.busy_poll_seconds
            while time.monotonic() < deadline:
                if should_stop():
                    return None
                time.sleep(min(0.5, g.busy_poll_seconds))

    def _attempt(
        self, rec: RecordingInfo, chunk: ChunkInfo, window: ChunkWindow, media: MediaInfo, task: str
    ) -> ChunkResult | ChunkDone | None:
        """One try at a chunk: its result, a failed ChunkDone, or None for out of memory.

        The exception stays inside this frame, so once it returns nothing references the tensors
        the failed try allocated and release_memory() can free them."""
        try:
            prepared = self._prepare(rec, media, window)
            # Only sampling runs ahead: the next chunk is claimed as before, and what was
            # prepared for a chunk this worker does not claim next is dropped at the next take.
            self._prefetch_after(rec, media, chunk.index)
            return analyze_prepared(prepared, self.analyzer, task, self.config.analysis.max_events)
        except UnsupportedMedia as exc:
            return self._chunk_failed(rec, chunk, exc.reason, permanent=True)
        except Exception as exc:  # an analyzer may fail in any way; the chunk records why
            if is_oom(exc):
                log.warning("chunk_out_of_memory", frames=len(window.sample_times),
                            width=window.width, height=window.height)
                return None
            if is_cuda_fault(exc):
                # The CUDA context is gone: hand the chunk back and end the process (EXIT_CUDA).
                log.error("cuda_fault", error=f"{type(exc).__name__}: {exc}")
                self.store.release_chunk(rec.id, chunk.index, self.owner)
                raise CudaFault(f"{type(exc).__name__}: {exc}") from exc
            log.exception("chunk_failed")
            return self._chunk_failed(rec, chunk, f"{type(exc).__name__}: {exc}")

    def _calibrate(self, window: ChunkWindow, stats: dict[str, Any]) -> None:
        """Keep the measured peak against the estimate, so later plans use the ratio."""
        memory = self.memory() if self.gpu.is_cuda else None
        peak = stats.get("peak_gib")
        if memory is None or not isinstance(peak, (int, float)) or peak <= 0:
            return
        est, budget = memory
        estimated = est.calibrated(1.0).chunk(len(window.sample_times), window.width, window.height)
        ratio = self.store.record_calibration(
            calibration_key(self.config, self.gpu.device), self._gpu_key(), float(peak), estimated.allocated_gib
        )
        self._memory = (est.calibrated(ratio), budget)
        log.debug("memory_calibrated", measured_gib=peak, estimated_gib=round(estimated.allocated_gib, 3),
                  ratio=round(ratio, 3))

    def _run_chunk(
        self,
        rec: RecordingInfo,
        media: MediaInfo,
        chunk: ChunkInfo,
        planned: dict[int, ChunkInfo],
        task: str,
        settings: dict[str, object],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> ChunkDone:
        window = planned_window = self._window(chunk)
        with structlog.contextvars.bound_contextvars(chunk=chunk.index):
            steps: list[dict[str, Any]] = []
            ready = self._room_for(window, media, steps, should_stop)
            if ready is None:
                self.store.release_chunk(rec.id, chunk.index, self.owner)
                return ChunkDone(rec, chunk, "released", 0)
            window = ready
            floors = Floors.from_config(self.config)
            while True:
                outcome = self._attempt(rec, chunk, window, media, task)
                if isinstance(outcome, ChunkDone):
                    return outcome
                if outcome is not None:
                    result = outcome
                    break
                # Out of memory: free what the try left (outside the except block, where the
                # traceback no longer pins its tensors), then the same chunk, smaller.
                release_memory()
                smaller = step_down_window(window, media, floors, self.config.sampling.max_pixels)
                if smaller is None:
                    tried = "; ".join(describe_steps({k: v for k, v in s.items() if k != "why"}) for s in steps)
                    return self._chunk_failed(
                        rec, chunk,
                        f"out of GPU memory at the floor ({len(window.sample_times)} frames of "
                        f"{window.width}x{window.height}; stepped down: {tried or 'nothing'})",
                        permanent=True,
                    )
                steps.append({"why": "out_of_memory", **window_steps(window, smaller)})
                window = smaller
            trim_heap()  # the chunk's frames are gone now
            analyzer = self.analyzer
            self._calibrate(window, result.analyzer_stats)
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
                    "frames": len(result.frame_times) if result.static else len(window.sample_times),
                    "width": window.width,
                    "height": window.height,
                },
                "memory": self._memory_provenance(planned_window, window, steps),
                "counts": result.counts.as_dict(),
                "decode_s": round(result.decode_s, 3),
                "analyze_s": round(result.analyze_s, 3),
                "analyzer": result.analyzer_stats,
            }
            if result.static is not None:
                # Recorded, not silent: a person can see the chunk was judged static, and why.
                provenance["static"] = result.static
                provenance["skipped_static"] = result.static["action"] == "skipped"
            stored = self.store.commit_chunk(
                rec.id,
                chunk.index,
                self.owner,
                events,
                provenance,
                notify=self.subscribers("events_found"),
            )
            n = len(stored) if stored is not None else 0
            if result.static is not None:
                log.info("chunk_static", action=result.static["action"], peak_change=result.static["peak_change"])
            log.info("chunk_analyzed", events=n, **result.counts.as_dict())
            return ChunkDone(rec, chunk, "done", n)

    def _memory_provenance(
        self, planned: ChunkWindow, used: ChunkWindow, steps: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """What the chunk was planned as, what ran, and each step down on the way (and why)."""
        out: dict[str, Any] = {
            "planned": {"frames": len(planned.sample_times), "width": planned.width, "height": planned.height},
            "stepped_down": [{k: list(v) if isinstance(v, tuple) else v for k, v in s.items()} for s in steps],
        }
        if self._fitted is not None and self._fitted.stepped_down:
            out["plan_stepped_down"] = {k: list(v) for k, v in self._fitted.stepped_down.items()}
        if self._memory is not None:
            est, budget = self._memory
            out["budget_gib"] = round(budget, 3)
            out["est_peak_gib"] = round(est.peak_gib(len(used.sample_times), used.width, used.height), 3)
        return out

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

    def _chunk_failed(
        self, rec: RecordingInfo, chunk: ChunkInfo, reason: str, *, permanent: bool = False
    ) -> ChunkDone:
        if self.retry_by_queue and not permanent:
            # The shared queue redelivers it (and fails it after queue.max_deliveries); pending
            # meanwhile, so no box settles the recording as failed too early.
            self.store.retry_chunk(rec.id, chunk.index, self.owner, reason)
        else:
            self.store.fail_chunk(rec.id, chunk.index, self.owner, reason)
        log.warning("chunk_failed", reason=reason, permanent=permanent)
        return ChunkDone(rec, chunk, "failed", 0, reason, permanent)

    def _settle(self, rec: RecordingInfo) -> RecordingInfo:
        # In the store, under the recording's lock: with several boxes, the last two chunks may
        # end at once, and only one of them may announce the recording.
        settled = self.store.settle(
            rec.id, self.subscribers("recording_finished"), self.subscribers("recording_failed")
        )
        if settled.status == "done" and rec.status != "done":
            log.info("recording_finished", chunks=len(self.store.chunks(rec.id)))
        elif settled.status == "failed" and rec.status != "failed":
            log.info("recording_failed", recording_id=rec.id, reason=settled.reason)
        return settled

    def settle(self, recording_id: int) -> RecordingInfo:
        """Settle a recording once its last chunk ended (with a shared queue, on whichever box)."""
        return self._settle(self.store.recording(recording_id))

    # -- a shared work queue (daemon/queue.py, daemon/fleet.py) -----------------------------------

    def prepare(self, recording_id: int) -> list[ChunkInfo]:
        """Producer side: probe and plan a queued recording (no model is loaded) and return its
        chunks to enqueue. Returns [] when another box got there first or the file cannot be
        analysed (then the recording is failed)."""
        rec = self.store.recording(recording_id)
        if rec.status != "queued":
            return []
        with structlog.contextvars.bound_contextvars(recording_id=rec.id, path=rec.path):
            try:
                media = probe(rec.path)
            except UnsupportedMedia as exc:
                self._fail(rec, exc.reason)
                return []
            settings = self.settings(rec.profile)
            try:
                instructions(str(settings["profile"]), self.config.analysis.prompt)
            except ValueError as exc:
                self._fail(rec, str(exc))
                return []
            windows = self.plan(media)
            if self._fitted is not None and self._fitted.stepped_down:
                settings = {**settings, "fitted": {k: list(v) for k, v in self._fitted.stepped_down.items()}}
            chunks = self.store.plan(rec.id, windows)
            if not self.store.start_analysis(rec.id, media.duration_s, settings):
                return []
            log.info("recording_planned", chunks=len(chunks), duration_s=round(media.duration_s, 3))
            return chunks

    def process_chunk(
        self, recording_id: int, index: int, *, should_stop: Callable[[], bool] = lambda: False
    ) -> ChunkDone | None:
        """Consumer side: analyse the one chunk a shared queue handed to this box. None when
        there is nothing to do: the chunk already committed (a redelivery), or the recording
        is settled."""
        rec = self.store.recording(recording_id)
        if rec.status not in ("queued", "analyzing"):
            return None
        with structlog.contextvars.bound_contextvars(recording_id=rec.id, path=rec.path):
            if not self.hold_gpu(should_stop):
                return None
            self.analyzer  # noqa: B018  (a model that cannot load is not this chunk's failure)
            chunk = self.store.claim_chunk(rec.id, index, self.owner, self.lease_s)
            if chunk is None:
                log.info("chunk_already_done", chunk=index)
                return None
            try:
                media = probe(rec.path)
            except UnsupportedMedia as exc:
                return self._chunk_failed(rec, chunk, exc.reason, permanent=True)
            settings = rec.settings or self.settings(rec.profile)
            task = instructions(str(settings.get("profile") or self.config.analysis.profile), self.config.analysis.prompt)
            planned: dict[int, Any] = {c.index: c for c in self.store.chunks(rec.id)}
            return self._run_chunk(rec, media, chunk, planned, task, settings, should_stop)

    def _fail(self, rec: RecordingInfo, reason: str) -> RecordingInfo:
        log.info("recording_failed", recording_id=rec.id, reason=reason)
        return self.store.set_status(
            rec.id, "failed", reason, notify=[(p, "recording_failed") for p in self.subscribers("recording_failed")]
        )

