"""The second look: each alert candidate shown to the analyzer again, denser and sharper, with
one yes/no question, and decided `confirmed`, `rejected` or `unverified(reason)` once.

It runs on the worker's thread, after a chunk commits and whenever the chunk loop has no chunk to
run, so it shares the model and the GPU lease and never overlaps a chunk. A candidate is claimed
in the store like a chunk (owner and lease): a process that dies in the middle leaves it to be
verified again by the next one, on this box or another. Each chunk gives at most
alerting.max_verifications_per_chunk candidates a second look (one answer per rule per chunk, so
also never more than the rules that apply); the rest are stored unverified with that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine.alerts import (
    Outcome,
    decide,
    nearest_frame,
    thumbnail_jpeg,
    verify_answer,
    verify_window,
)
from daemon.engine.analyzer import AnalyzerFailed
from daemon.engine.planner import Floors, step_down_window, window_steps
from daemon.engine.probe import UnsupportedMedia
from daemon.engine.prompts import prompt_hash, verify_prompt
from daemon.engine.sampler import sample_frames
from daemon.gpu import CudaFault, is_cuda_fault, is_oom, release_memory, trim_heap
from daemon.models import AlertInfo, ChunkWindow, MediaInfo, RuleQuestion, VerifyInput

if TYPE_CHECKING:
    from daemon.config import AlertRule
    from daemon.worker import Worker

log = structlog.get_logger(__name__)


class Released(Exception):
    """Stopped while waiting for GPU memory: the candidate goes back, verified later."""


def can_verify(analyzer: Any) -> bool:
    """Whether an analyzer offers the optional `verify(request)` (README, "Your own model")."""
    flag = getattr(analyzer, "can_verify", None)
    if isinstance(flag, bool):
        return flag
    return callable(getattr(analyzer, "verify", None))


class Verifier:
    """Second looks for one worker (its store, config, memory and analyzer)."""

    def __init__(self, worker: Worker):
        self.worker = worker

    def run_due(
        self, recording_id: int | None = None, should_stop: Callable[[], bool] = lambda: False
    ) -> int:
        w = self.worker
        decided = 0
        touched: set[int] = set()
        while not should_stop():
            alert = w.store.alerts.claim(w.owner, w.lease_s, recording_id)
            if alert is None:
                break
            with structlog.contextvars.bound_contextvars(
                recording_id=alert.recording_id, alert_id=alert.id, rule=alert.rule
            ):
                if self.run_one(alert, should_stop):
                    decided += 1
                    touched.add(alert.recording_id)
        for rid in sorted(touched):
            w.settle(rid)
        return decided

    def run_one(self, alert: AlertInfo, should_stop: Callable[[], bool]) -> bool:
        """Decide one claimed candidate; False when it was handed back (stopping)."""
        w = self.worker
        rule = w.config.rule(alert.rule)
        verification: dict[str, Any] | None = None
        thumbnail: tuple[bytes, float] | None = None
        if rule is None:
            outcome = decide(None, None, f"no [[alerts]] rule named {alert.rule!r}", verified=False)
        elif not rule.verify:
            if alert.end_s - alert.start_s < rule.min_duration_s:
                outcome = Outcome(
                    "unverified",
                    f"verification is off (verify = false) and the first answer lasts "
                    f"{alert.end_s - alert.start_s:g} s, under min_duration_s {rule.min_duration_s:g}",
                    False,
                )
            else:
                outcome = decide(
                    rule, None, "verification is off for this rule (verify = false)", verified=False
                )
        elif alert.provenance.get("no_second_look"):
            outcome = decide(rule, None, str(alert.provenance["no_second_look"]), verified=False)
        elif (
            fired := w.store.alerts.fired_near(
                alert.recording_id, alert.rule, alert.start_s, rule.cooldown_s
            )
        ) is not None:
            # Within the cooldown of an alert that fired: not worth a second look.
            outcome = Outcome(
                "suppressed",
                f"within the rule's cooldown ({rule.cooldown_s:g} s) of alert {fired.id} at "
                f"{fired.start_s:g} s",
                False,
            )
        else:
            try:
                happened, reason, verification, thumbnail = self._second_look(
                    alert, rule, should_stop
                )
            except Released:
                w.store.alerts.release(alert.id, w.owner)
                return False
            outcome = decide(rule, happened, reason, verified=happened is not None)
        notify: list[str] = []
        if outcome.fired and rule is not None:
            notify = [
                p for p in w.subscribers("alert_fired") if rule.plugins is None or p in rule.plugins
            ]
        done = w.store.alerts.decide(
            alert.id,
            w.owner,
            outcome.state,
            outcome.reason,
            fired=outcome.fired,
            cooldown_s=rule.cooldown_s if rule is not None else 0.0,
            verification=verification,
            thumbnail=thumbnail,
            notify=notify,
        )
        if done is None:
            log.warning("alert_decision_lost")  # taken over meanwhile; the other owner decides
            return False
        log.info(
            "alert_decided",
            outcome=done.state,
            fired=done.fired,
            reason=done.reason,
            start_s=done.start_s,
            deliveries=len(notify) if done.fired else 0,
        )
        return True

    # -- the look itself ------------------------------------------------------------------------

    def _second_look(
        self, alert: AlertInfo, rule: AlertRule, should_stop: Callable[[], bool]
    ) -> tuple[bool | None, str, dict[str, Any], tuple[bytes, float] | None]:
        """(happened or None when no look could run, the reason, what was done, a thumbnail)."""
        w = self.worker
        analyzer = w.analyzer
        if not can_verify(analyzer):
            name = getattr(analyzer, "name", type(analyzer).__name__)
            return None, f"the analyzer {name!r} cannot verify (it has no verify method)", {}, None
        rec = w.store.recordings.get(alert.recording_id)
        try:
            media = w.probe(rec)
        except UnsupportedMedia as exc:
            return None, f"cannot read the recording again: {exc.reason}", {}, None
        chunk = w.store.chunks.get(rec.id, alert.chunk_index)
        span = chunk.end_s - chunk.start_s
        c = w.config
        window = verify_window(
            alert.chunk_index,
            alert.start_s,
            alert.end_s,
            rule.min_duration_s,
            media,
            c.alerting,
            chunk.frames / span if span > 0 else c.sampling.fps,
            max(chunk.width, chunk.height, c.sampling.max_side),
            c.sampling.max_pixels,
        )
        planned = window
        fitted, steps = w.memory.fit_window(window, media)
        if fitted is None:
            return (
                None,
                f"the second look does not fit the GPU budget even at the floors ({steps})",
                {},
                None,
            )
        window = fitted
        stepped: list[dict[str, Any]] = [{"why": "budget", **steps}] if steps else []
        ready = w.memory.room_for(window, media, stepped, should_stop)
        if ready is None:
            raise Released
        window = ready
        question = RuleQuestion(rule.name, rule.when, rule.min_duration_s)
        prompt = verify_prompt(question, alert.start_s, alert.end_s, window.start_s, window.end_s)
        floors = Floors.from_config(c)
        while True:
            outcome = self._attempt(rec.path, media, alert, rule, window, prompt)
            if outcome is not None:
                break
            release_memory()
            smaller = step_down_window(window, media, floors, c.sampling.max_pixels)
            if smaller is None:
                return (
                    None,
                    f"out of GPU memory at the floor ({len(window.sample_times)} frames of "
                    f"{window.width}x{window.height})",
                    {},
                    None,
                )
            stepped.append({"why": "out_of_memory", **window_steps(window, smaller)})
            window = smaller
        trim_heap()
        happened, reason, frames, seconds, stats = outcome
        try:
            own = analyzer.provenance()
        except AnalyzerFailed as exc:
            own = {"error": str(exc)}
        verification = {
            "happened": happened,
            "reason": reason,
            "window": [window.start_s, window.end_s],
            "frames": len(window.sample_times),
            "fps": round(len(window.sample_times) / max(window.end_s - window.start_s, 1e-9), 3),
            "width": window.width,
            "height": window.height,
            "planned": {
                "frames": len(planned.sample_times),
                "width": planned.width,
                "height": planned.height,
            },
            "stepped_down": [
                {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()} for s in stepped
            ],
            "prompt_hash": prompt_hash(prompt),
            "seconds": round(seconds, 3),
            "analyzer": stats,
            "provenance": own,
        }
        frame = nearest_frame(frames, (alert.start_s + alert.end_s) / 2)
        thumb = (thumbnail_jpeg(frame.image), frame.t_s) if frame is not None else None
        return happened, reason, verification, thumb

    def _attempt(
        self,
        path: str,
        media: MediaInfo,
        alert: AlertInfo,
        rule: AlertRule,
        window: ChunkWindow,
        prompt: str,
    ) -> tuple[bool | None, str, tuple[Any, ...], float, dict[str, Any]] | None:
        """One try; None for out of memory (the exception stays in this frame, so its tensors
        can be freed once it returns)."""
        w = self.worker
        started = time.perf_counter()
        try:
            frames = tuple(
                sample_frames(
                    path,
                    window.sample_times,
                    window.width,
                    window.height,
                    media.rotation,
                    hwaccel=w.config.sampling.hwaccel,
                )
            )
            request = VerifyInput(
                recording_path=path,
                rule=rule.name,
                when=rule.when,
                min_duration_s=rule.min_duration_s,
                start_s=alert.start_s,
                end_s=alert.end_s,
                window_start_s=window.start_s,
                window_end_s=window.end_s,
                prompt=prompt,
                frames=frames,
            )
            raw = w.analyzer.verify(request)  # type: ignore[attr-defined]
        except UnsupportedMedia as exc:
            return (None, f"cannot sample the window: {exc.reason}", (), 0.0, {})
        except AnalyzerFailed as exc:
            return (None, str(exc), (), time.perf_counter() - started, {})
        except Exception as exc:  # a backend may fail in any way; the alert records why
            if is_oom(exc):
                log.warning("verify_out_of_memory", frames=len(window.sample_times))
                return None
            if is_cuda_fault(exc):
                log.error("cuda_fault", error=f"{type(exc).__name__}: {exc}")
                w.store.alerts.release(alert.id, w.owner)
                raise CudaFault(f"{type(exc).__name__}: {exc}") from exc
            log.warning("verify_failed", error=f"{type(exc).__name__}: {exc}")
            return (
                None,
                f"the second look failed: {type(exc).__name__}: {exc}",
                (),
                time.perf_counter() - started,
                {},
            )
        happened, reason = verify_answer(raw)
        if happened is None:
            reason = f"the second look's answer is unusable: {reason}"
        stats = dict(getattr(w.analyzer, "last_stats", None) or {})
        return happened, reason, frames, time.perf_counter() - started, stats
