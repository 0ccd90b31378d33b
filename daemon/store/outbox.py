"""The outbox: one row per notification for one plugin, written in the transaction that stored
what it announces, claimed and settled by the dispatcher (daemon/pluginhost/dispatch.py).

A delivery moves `pending -> delivered | dead`; a failed attempt stays pending with its error and
the time of its next attempt. A plugin whose destination is gone (HTTP 410) is blocked with the
settings it had, until they change or a replay lifts the block.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select, update

from daemon.store.session import Database
from daemon.store.tables import Delivery, PluginBlock

DELIVERY_STATES = ("pending", "failed", "dead", "delivered")


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """One claimed outbox row. `lease` is the next_attempt_at the claim wrote: the token that
    proves the row is still ours (see `Outbox.renew`)."""

    id: int
    plugin: str
    hook: str
    recording_id: int
    chunk_index: int | None
    attempts: int
    created_at: float
    lease: float
    last_error: str | None = None
    alert_id: int | None = None


class Outbox:
    """Every read and write of outbox rows and plugin blocks."""

    def __init__(self, db: Database):
        self.db = db

    def claim(
        self, plugins: Sequence[str], limit: int, lease_s: float, now: float | None = None
    ) -> list[DeliveryInfo]:
        """Take up to `limit` due, undelivered, live rows of `plugins`, oldest first.

        Claiming moves next_attempt_at to now + lease_s: that is the lease (no other dispatcher
        takes the rows meanwhile) and the token `renew` checks."""
        if not plugins:
            return []
        now = time.time() if now is None else now
        with self.db.session() as s:
            rows = s.exec(
                select(Delivery)
                .where(
                    col(Delivery.delivered_at).is_(None),
                    col(Delivery.dead).is_(False),
                    Delivery.next_attempt_at <= now,
                    col(Delivery.plugin).in_(list(plugins)),
                )
                .order_by(col(Delivery.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            until = now + lease_s
            out = []
            for d in rows:
                d.next_attempt_at = until
                s.add(d)
                assert d.id is not None
                out.append(
                    DeliveryInfo(
                        d.id,
                        d.plugin,
                        d.hook,
                        d.recording_id,
                        d.chunk_index,
                        d.attempts,
                        d.created_at,
                        until,
                        d.last_error,
                        d.alert_id,
                    )
                )
            return out

    def renew(self, delivery_id: int, lease: float, until: float) -> bool:
        """Extend a claimed row's lease just before calling its plugin; False when the row is no
        longer ours (delivered, dead, or re-claimed elsewhere after our lease ran out)."""
        with self.db.session() as s:
            res = s.exec(
                update(Delivery)
                .where(
                    col(Delivery.id) == delivery_id,
                    col(Delivery.next_attempt_at) == lease,
                    col(Delivery.delivered_at).is_(None),
                    col(Delivery.dead).is_(False),
                )
                .values(next_attempt_at=until)
            )
            return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    def done(self, delivery_id: int, now: float | None = None) -> None:
        with self.db.session() as s:
            d = s.get(Delivery, delivery_id)
            if d is not None:
                d.delivered_at = time.time() if now is None else now
                d.attempts += 1
                s.add(d)

    def failed(self, delivery_id: int, error: str, next_attempt_at: float | None) -> None:
        """Record a failed attempt: retried at `next_attempt_at`, or dead when that is None."""
        with self.db.session() as s:
            d = s.get(Delivery, delivery_id)
            if d is None:
                return
            d.attempts += 1
            d.last_error = error[:2000]
            if next_attempt_at is None:
                d.dead = True
            else:
                d.next_attempt_at = next_attempt_at
            s.add(d)

    def release(self, ids: Sequence[int], next_attempt_at: float) -> None:
        """Give claimed rows back unattempted, due again at `next_attempt_at`."""
        if not ids:
            return
        with self.db.session() as s:
            s.exec(
                update(Delivery)
                .where(col(Delivery.id).in_(list(ids)), col(Delivery.delivered_at).is_(None))
                .values(next_attempt_at=next_attempt_at)
            )

    def add(
        self,
        rows: Sequence[tuple[str, str, int, int | None]],
        alerts: Sequence[tuple[str, int, int, int]] = (),
    ) -> int:
        """New rows (plugin, hook, recording id, chunk index), e.g. for a replay, and alert_fired
        rows (plugin, recording id, chunk index, alert id)."""
        with self.db.session() as s:
            s.add_all(
                Delivery(plugin=p, hook=h, recording_id=r, chunk_index=c) for p, h, r, c in rows
            )
            s.add_all(
                Delivery(plugin=p, hook="alert_fired", recording_id=r, chunk_index=c, alert_id=a)
                for p, r, c, a in alerts
            )
        return len(rows) + len(alerts)

    def block(self, plugin: str, settings_hash: str, reason: str) -> int:
        """Stop delivering to `plugin` while it has these settings; its undelivered rows die with
        `reason`, in the same transaction. Returns how many died."""
        with self.db.session() as s:
            block = s.get(PluginBlock, plugin) or PluginBlock(
                plugin=plugin, settings_hash=settings_hash, reason=reason
            )
            block.settings_hash, block.reason, block.since = settings_hash, reason, time.time()
            s.add(block)
            res = s.exec(
                update(Delivery)
                .where(
                    col(Delivery.plugin) == plugin,
                    col(Delivery.delivered_at).is_(None),
                    col(Delivery.dead).is_(False),
                )
                .values(dead=True, last_error=reason[:2000])
            )
            return int(res.rowcount)  # type: ignore[attr-defined]

    def blocked(self, plugin: str) -> tuple[str, str] | None:
        """(settings hash, reason) when `plugin` is blocked, else None."""
        with self.db.session() as s:
            b = s.get(PluginBlock, plugin)
            return (b.settings_hash, b.reason) if b else None

    def unblock(self, plugin: str) -> bool:
        with self.db.session() as s:
            b = s.get(PluginBlock, plugin)
            if b is not None:
                s.delete(b)
            return b is not None

    def counts(self) -> dict[str, Any]:
        """Totals, overall and per plugin: pending (not yet tried), failed (tried, will be
        retried), dead (given up), delivered."""
        state = (
            "CASE WHEN delivered_at IS NOT NULL THEN 'delivered' WHEN dead THEN 'dead' "
            "WHEN attempts > 0 THEN 'failed' ELSE 'pending' END"
        )
        with self.db.session() as s:
            rows = s.exec(  # type: ignore[call-overload]
                text(f"SELECT plugin, {state} AS s, COUNT(*) FROM delivery GROUP BY plugin, s")
            ).all()
        out: dict[str, Any] = dict.fromkeys(DELIVERY_STATES, 0)
        plugins: dict[str, dict[str, int]] = {}
        for plugin, st, n in rows:
            out[st] += n
            plugins.setdefault(plugin, dict.fromkeys(DELIVERY_STATES, 0))[st] = n
        out["plugins"] = plugins
        return out
