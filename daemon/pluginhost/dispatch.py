"""The dispatcher: delivers outbox rows to plugins one implementation at a time, with retries.

Every notification is a Delivery row written in the transaction that stored what it announces, so
the dispatcher only ever reads the database: after a crash or restart it simply carries on. Each
plugin gets its own lane (a thread) per round, so a failing or slow plugin delays neither another
plugin nor the analysis; a plugin still busy from an earlier round is skipped until it returns.
Delivery is at least once: a notification is repeated only if a process dies after calling the
plugin and before recording success, which is why plugins get a `delivery_id` stable across
retries.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog

from daemon.hookspecs import NOTIFICATION_HOOKS, Gone, RetryLater
from daemon.models import EventInfo, thumbnail_path

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.pluginhost.manager import PluginManager
    from daemon.store import DeliveryInfo, Store

log = structlog.get_logger(__name__)

# Backoff after the n-th failed attempt: min(MAX, BASE * 2**(n-1)), times a random factor in
# [0.5, 1) so many failing rows do not retry in lock-step: 15-30 s, 30-60 s, ... capped at
# 30-60 min. After MAX_AGE without success a row is dead (about 70 attempts over three days).
BASE_DELAY_S = 30.0
MAX_DELAY_S = 3600.0
MAX_AGE_S = 3 * 24 * 3600.0
# How long a claimed row stays ours before another dispatcher may take it.
LEASE_S = 300.0
# How long one deliver_due waits for its lanes before returning (the lanes carry on).
ROUND_TIMEOUT_S = 60.0


def settings_hash(settings: Any) -> str:
    """Fingerprint of a plugin's settings, so a block after HTTP 410 lifts when they change."""
    data = settings.model_dump_json() if settings is not None else "null"
    return hashlib.sha256(data.encode()).hexdigest()[:16]


class Dispatcher:
    """Delivers due outbox rows; `deliver_due` is safe to call from any thread, often."""

    def __init__(
        self,
        store: Store,
        plugin_manager: PluginManager,
        config: Config,
        *,
        base_delay_s: float = BASE_DELAY_S,
        max_delay_s: float = MAX_DELAY_S,
        max_age_s: float = MAX_AGE_S,
        lease_s: float = LEASE_S,
        round_timeout_s: float = ROUND_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ):
        self.store = store
        self.plugins = plugin_manager
        self.config = config
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_age_s = max_age_s
        self.lease_s = lease_s
        self.round_timeout_s = round_timeout_s
        self.clock = clock
        self.rng = rng
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Thread] = {}
        self._stop_until: dict[str, float] = {}  # plugin -> when its lane may go on

    # -- rounds -------------------------------------------------------------------------------

    def deliver_due(self, limit: int = 100) -> int:
        """Deliver up to `limit` due notifications; returns how many succeeded in this call."""
        with self._lock:
            self._busy = {p: t for p, t in self._busy.items() if t.is_alive()}
            wanted = {p for h in NOTIFICATION_HOOKS for p in self.plugins.subscribers(h)}
            free = sorted(wanted - set(self._busy))
            claimed = self.store.outbox.claim(free, limit, self.lease_s, now=self.clock())
            lanes: dict[str, list[DeliveryInfo]] = {}
            for d in claimed:
                lanes.setdefault(d.plugin, []).append(d)
            delivered = [0]
            threads = []
            for plugin, rows in lanes.items():
                t = threading.Thread(
                    target=self._lane,
                    args=(plugin, rows, delivered),
                    name=f"deliver-{plugin}",
                    daemon=True,
                )
                self._busy[plugin] = t
                threads.append(t)
                t.start()
        deadline = time.monotonic() + self.round_timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("delivery_lane_slow", lane=t.name, waited_s=self.round_timeout_s)
        return delivered[0]

    def deliver_all(self, limit: int = 100, max_rounds: int = 1000) -> int:
        """Rounds of `deliver_due` until one delivers nothing (end of `framewatch analyze`)."""
        total = 0
        for _ in range(max_rounds):
            n = self.deliver_due(limit)
            total += n
            if n == 0:
                break
        return total

    # -- one plugin's lane --------------------------------------------------------------------

    def _lane(self, plugin: str, rows: Sequence[DeliveryInfo], delivered: list[int]) -> None:
        # Rows of one plugin go in outbox order (a chunk's events before the recording's end).
        for i, d in enumerate(rows):
            with structlog.contextvars.bound_contextvars(
                plugin=plugin, hook=d.hook, delivery_id=d.id, recording_id=d.recording_id
            ):
                try:
                    outcome = self._deliver(d)
                except Exception:  # the dispatcher's own bug must not kill the lane silently
                    log.exception("delivery_crashed")
                    outcome = "failed"
            if outcome == "delivered":
                with self._lock:
                    delivered[0] += 1
            elif outcome == "stop":
                # The destination asked us to wait (or is gone): the rest of this lane waits too.
                with self._lock:
                    until = self._stop_until.pop(plugin, self.clock())
                self.store.outbox.release([r.id for r in rows[i + 1 :]], until)
                return

    def _deliver(self, d: DeliveryInfo) -> str:
        now = self.clock()
        settings = self.plugins.settings.get(d.plugin)
        block = self.store.outbox.blocked(d.plugin)
        if block is not None:
            if block[0] == settings_hash(settings):
                self.store.outbox.failed(d.id, f"not attempted: {block[1]}", None)
                return "dead"
            self.store.outbox.unblock(d.plugin)  # settings changed: try the new destination
            log.info("plugin_unblocked", reason="settings changed")
        if not self.store.outbox.renew(d.id, d.lease, now + self.lease_s):
            return "skipped"  # someone else has it now
        try:
            kwargs = self._payload(d)
        except KeyError as exc:
            self.store.outbox.failed(d.id, f"no longer in the store: {exc}", None)
            log.warning("delivery_dead", reason="subject deleted")
            return "dead"
        try:
            self.plugins.call_one(d.plugin, d.hook, delivery_id=str(d.id), **kwargs)
        except Gone as exc:
            reason = f"destination gone: {exc}"
            n = self.store.outbox.block(d.plugin, settings_hash(settings), reason)
            self.store.outbox.failed(d.id, reason, None)
            log.error("plugin_blocked", reason=reason, undelivered_dead=n)
            self._stop(d.plugin, now)
            return "stop"
        except RetryLater as exc:
            delay = self._retry_delay(exc.retry_after, d.attempts + 1)
            return self._failed(d, f"{type(exc).__name__}: {exc}", now, delay, stop=True)
        except Exception as exc:  # a plugin may fail in any way; the row records why
            # Network errors are expected weather; anything else is likely a plugin bug: traceback.
            log.warning(
                "delivery_failed",
                error=f"{type(exc).__name__}: {exc}",
                attempt=d.attempts + 1,
                exc_info=not isinstance(exc, OSError),
            )
            return self._failed(
                d, f"{type(exc).__name__}: {exc}", now, self._backoff(d.attempts + 1)
            )
        self.store.outbox.done(d.id, self.clock())
        log.debug("delivered")
        return "delivered"

    def _failed(
        self, d: DeliveryInfo, error: str, now: float, delay: float, *, stop: bool = False
    ) -> str:
        at = now + max(0.0, delay)
        if at - d.created_at > self.max_age_s:
            self.store.outbox.failed(d.id, error, None)
            log.error("delivery_dead", error=error, attempts=d.attempts + 1)
            return "dead"
        self.store.outbox.failed(d.id, error, at)
        if stop:
            log.info("delivery_deferred", error=error, retry_in_s=round(at - now, 1))
            self._stop(d.plugin, at)
            return "stop"
        return "failed"

    def _stop(self, plugin: str, until: float) -> None:
        with self._lock:
            self._stop_until[plugin] = until

    def _retry_delay(self, asked: Any, attempt: int) -> float:
        """The wait a destination asked for (RetryLater, from Retry-After), kept within the
        backoff's range: at least half the first backoff (15 s), so "0" cannot make a busy loop,
        and at most the longest (1 h), so a huge value cannot make the row dead at once. None, or
        anything that is not a number, leaves it to the backoff."""
        try:
            seconds = float(asked)
        except (TypeError, ValueError):
            return self._backoff(attempt)
        if math.isnan(seconds):
            return self._backoff(attempt)
        return min(max(seconds, self.base_delay_s / 2), self.max_delay_s)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempt - 1))
        return delay * (0.5 + self.rng() / 2)

    def _pictured(self, events: list[EventInfo]) -> list[EventInfo]:
        """The events with `thumbnail` set where their picture exists (daemon/thumbnails.py)."""
        media = self.config.media_dir()
        out = []
        for e in events:
            path = thumbnail_path(media, e.recording_id, e.id) if e.id is not None else None
            out.append(replace(e, thumbnail=str(path)) if path and path.is_file() else e)
        return out

    def _payload(self, d: DeliveryInfo) -> dict[str, Any]:
        # Loaded now, not when the row was written: the frozen objects show the stored truth.
        recording = self.store.recordings.get(d.recording_id)
        if d.hook == "events_found":
            assert d.chunk_index is not None
            return {
                "recording": recording,
                "chunk": self.store.chunks.get(d.recording_id, d.chunk_index),
                "events": self._pictured(self.store.events.of(d.recording_id, d.chunk_index)),
                "speech": self.store.speech.of(d.recording_id, d.chunk_index),
            }
        if d.hook == "recording_finished":
            return {
                "recording": recording,
                "events": self._pictured(self.store.events.of(d.recording_id)),
                "static_spans": self.store.chunks.static_spans(d.recording_id),
                "alerts": self.store.alerts.of(d.recording_id),
                "speech": self.store.speech.of(d.recording_id),
                "summary": self.store.summaries.get(d.recording_id),
            }
        if d.hook == "recording_failed":
            return {"recording": recording, "error": recording.reason or ""}
        if d.hook == "alert_fired":
            if d.alert_id is None:
                raise KeyError("alert_fired without an alert id")
            return {"recording": recording, "alert": self.store.alerts.get(d.alert_id)}
        raise KeyError(f"hook {d.hook}")

    # -- replay -------------------------------------------------------------------------------

    def replay(
        self,
        recording_ids: Sequence[int] | None,
        plugin: str | None = None,
        *,
        alerts: bool = False,
    ) -> int:
        """Queue every notification of these recordings (None: all) again, for one plugin or all
        that subscribe. New rows, so each is a new message with a new delivery_id. Lifts a
        plugin's block after HTTP 410. `alerts`: the alerts that fired instead (alert_fired, to
        the plugins each rule names). Returns how many rows were queued."""
        if plugin is not None:
            if plugin not in self.plugins.names():
                raise LookupError(f"no active plugin named {plugin!r}")
            if self.store.outbox.unblock(plugin):
                log.info("plugin_unblocked", plugin=plugin, reason="replay")
        subs = {
            h: [p for p in self.plugins.subscribers(h) if plugin in (None, p)]
            for h in NOTIFICATION_HOOKS
        }
        if recording_ids is None:
            recording_ids = [r.id for r, _, _ in reversed(self.store.recordings.list())]
        if alerts:
            fired: list[tuple[str, int, int, int]] = []
            for rid in recording_ids:
                for a in self.store.alerts.of(rid, thumbnails=False):
                    if not a.fired:
                        continue
                    rule = self.config.rule(a.rule)
                    names = rule.plugins if rule is not None else None
                    fired += [
                        (p, rid, a.chunk_index, a.id)
                        for p in subs["alert_fired"]
                        if names is None or p in names
                    ]
            return self.store.outbox.add([], fired)
        rows: list[tuple[str, str, int, int | None]] = []
        for rid in recording_ids:
            rec = self.store.recordings.get(rid)
            for c in self.store.chunks.of(rid):
                if c.status == "done":
                    rows += [(p, "events_found", rid, c.index) for p in subs["events_found"]]
            if rec.status == "done":
                rows += [(p, "recording_finished", rid, None) for p in subs["recording_finished"]]
            elif rec.status == "failed":
                rows += [(p, "recording_failed", rid, None) for p in subs["recording_failed"]]
        return self.store.outbox.add(rows)
