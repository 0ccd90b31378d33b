"""Alerts: rule candidates stored with their chunk, claimed for their second look, decided once.

An alert moves `candidate -> confirmed | rejected | unverified(reason)`, or `suppressed` when an
alert of its rule fired within the rule's cooldown. Candidates are written by the chunk's commit
(`insert_candidates`, in that transaction); a worker claims one (owner and lease, like a chunk,
so boxes never verify one twice and a dead process's claim is taken over), and `decide` settles
it: under the recording's row lock, so the cooldown holds whichever box decides first, and with
the alert_fired outbox rows of a fired alert in the same transaction: delivered once per alert.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, delete, select

from daemon.identity import owner_is_dead
from daemon.models import AlertInfo, RuleHit
from daemon.store.session import Database
from daemon.store.tables import Alert, Delivery, Recording, alert_info

DECIDED = ("confirmed", "rejected", "unverified", "suppressed")


def insert_candidates(
    s: Session,
    recording_id: int,
    chunk_index: int,
    hits: Sequence[RuleHit],
    severity: Mapping[str, str],
    provenance: Mapping[str, Any],
    notes: Mapping[str, str] | None = None,
) -> int:
    """Inside a chunk's commit: replace the chunk's undecided candidates with `hits`, leaving out
    a hit whose rule already has an alert of this recording overlapping it (the same moment seen
    by the overlapping chunk). `notes`: rule -> why its candidate gets no second look (over the
    per-chunk cap). Returns how many were stored."""
    s.exec(
        delete(Alert).where(  # type: ignore[call-overload]
            col(Alert.recording_id) == recording_id,
            col(Alert.chunk_index) == chunk_index,
            col(Alert.state) == "candidate",
        )
    )
    n = 0
    for h in hits:
        seen = s.exec(
            select(Alert.id).where(
                Alert.recording_id == recording_id,
                Alert.rule == h.rule,
                Alert.start_s <= h.end_s,
                Alert.end_s >= h.start_s,
            )
        ).first()
        if seen is not None:
            continue
        prov = dict(provenance)
        if notes and h.rule in notes:
            prov["no_second_look"] = notes[h.rule]
        s.add(
            Alert(
                recording_id=recording_id,
                chunk_index=chunk_index,
                rule=h.rule,
                severity=severity.get(h.rule, "warning"),
                start_s=h.start_s,
                end_s=h.end_s,
                why=h.why,
                provenance={**prov, "evidence_s": h.evidence_s},
                thumbnail=h.thumbnail,
                thumbnail_s=h.thumbnail_s,
            )
        )
        n += 1
    return n


class Alerts:
    """Every read and write of alerts."""

    def __init__(self, db: Database):
        self.db = db

    # -- the second look ------------------------------------------------------------------------

    def claim(
        self,
        owner: str,
        lease_s: float,
        recording_id: int | None = None,
        now: float | None = None,
    ) -> AlertInfo | None:
        """Lease the oldest candidate nobody holds (of one recording, when given) to `owner` for
        its second look: unclaimed, or its owner dead or its lease out. None when there is none."""
        now = time.time() if now is None else now
        with self.db.session() as s:
            q = select(Alert).where(Alert.state == "candidate")
            if recording_id is not None:
                q = q.where(Alert.recording_id == recording_id)
            rows = s.exec(q.order_by(col(Alert.id)).limit(50).with_for_update(skip_locked=True))
            for a in rows.all():
                free = (
                    a.owner is None
                    or (a.lease_until or 0) < now
                    or (a.owner != owner and owner_is_dead(a.owner))
                )
                if not free:
                    continue
                a.owner, a.lease_until, a.attempts = owner, now + lease_s, a.attempts + 1
                s.add(a)
                return alert_info(a)
            return None

    def release(self, alert_id: int, owner: str) -> None:
        """Give a claimed candidate back unverified (stopping): it is verified later."""
        with self.db.session() as s:
            a = s.get(Alert, alert_id)
            if a is not None and a.state == "candidate" and a.owner == owner:
                a.owner, a.lease_until = None, None
                a.attempts = max(0, a.attempts - 1)
                s.add(a)

    def fired_near(
        self, recording_id: int, rule: str, start_s: float, cooldown_s: float
    ) -> AlertInfo | None:
        """An alert of `rule` in this recording that fired within `cooldown_s` of `start_s`."""
        if cooldown_s <= 0:
            return None
        with self.db.session() as s:
            a = s.exec(
                select(Alert)
                .where(
                    Alert.recording_id == recording_id,
                    Alert.rule == rule,
                    col(Alert.fired).is_(True),
                    Alert.start_s > start_s - cooldown_s,
                    Alert.start_s < start_s + cooldown_s,
                )
                .order_by(col(Alert.id))
                .limit(1)
            ).first()
            return alert_info(a, thumbnail=False) if a is not None else None

    def decide(
        self,
        alert_id: int,
        owner: str,
        state: str,
        reason: str,
        *,
        fired: bool,
        cooldown_s: float = 0.0,
        verification: dict[str, Any] | None = None,
        thumbnail: tuple[bytes, float] | None = None,
        notify: Sequence[str] = (),
    ) -> AlertInfo | None:
        """Settle a claimed candidate: `state` with `reason`; when it `fired`, outbox rows
        (hook alert_fired) for `notify` plugins in the same transaction. A candidate that would
        fire within `cooldown_s` of an alert of its rule that already fired is `suppressed`
        instead (checked under the recording's row lock, so boxes deciding at once agree).
        None when the candidate is no longer this owner's, or already decided."""
        if state not in DECIDED:
            raise ValueError(state)
        with self.db.session() as s:
            s.exec(
                select(Recording.id)
                .where(Recording.id == _recording_of(s, alert_id))
                .with_for_update()
            )
            a = s.exec(select(Alert).where(Alert.id == alert_id).with_for_update()).first()
            if a is None or a.state != "candidate" or a.owner not in (None, owner):
                return None
            if fired and cooldown_s > 0:
                earlier = s.exec(
                    select(Alert)
                    .where(
                        Alert.recording_id == a.recording_id,
                        Alert.rule == a.rule,
                        col(Alert.fired).is_(True),
                        Alert.start_s > a.start_s - cooldown_s,
                        Alert.start_s < a.start_s + cooldown_s,
                    )
                    .limit(1)
                ).first()
                if earlier is not None:
                    state, fired = "suppressed", False
                    reason = (
                        f"within the rule's cooldown ({cooldown_s:g} s) of alert {earlier.id} "
                        f"at {earlier.start_s:g} s; {reason}"
                    )
            a.state, a.reason, a.fired = state, reason[:2000], fired
            a.owner, a.lease_until, a.decided_at = None, None, time.time()
            if verification is not None:
                a.verification = dict(verification)
            if thumbnail is not None:
                a.thumbnail, a.thumbnail_s = thumbnail
            s.add(a)
            if fired:
                for plugin in notify:
                    s.add(
                        Delivery(
                            plugin=plugin,
                            hook="alert_fired",
                            recording_id=a.recording_id,
                            chunk_index=a.chunk_index,
                            alert_id=a.id,
                        )
                    )
            s.flush()
            return alert_info(a)

    # -- reading --------------------------------------------------------------------------------

    def get(self, alert_id: int) -> AlertInfo:
        """One alert with its thumbnail (KeyError when there is none)."""
        with self.db.session() as s:
            a = s.get(Alert, alert_id)
            if a is None:
                raise KeyError(alert_id)
            return alert_info(a)

    def of(
        self,
        recording_id: int | None = None,
        *,
        rule: str | None = None,
        states: Sequence[str] | None = None,
        thumbnails: bool = True,
    ) -> list[AlertInfo]:
        """Alerts (of one recording, one rule, some states), by recording, time and id."""
        with self.db.session() as s:
            q = select(Alert)
            if recording_id is not None:
                q = q.where(Alert.recording_id == recording_id)
            if rule is not None:
                q = q.where(Alert.rule == rule)
            if states is not None:
                q = q.where(col(Alert.state).in_(list(states)))
            rows = s.exec(
                q.order_by(col(Alert.recording_id), col(Alert.start_s), col(Alert.id))
            ).all()
            return [alert_info(a, thumbnail=thumbnails) for a in rows]

    def with_paths(
        self, recording_id: int | None = None, rule: str | None = None
    ) -> list[tuple[AlertInfo, str]]:
        """Alerts with their recordings' paths, by recording and time (`framewatch alerts`)."""
        with self.db.session() as s:
            q = select(Alert, Recording.path).join(
                Recording,
                col(Recording.id) == col(Alert.recording_id),  # type: ignore[arg-type]
            )
            if recording_id is not None:
                q = q.where(Alert.recording_id == recording_id)
            if rule is not None:
                q = q.where(Alert.rule == rule)
            rows = s.exec(
                q.order_by(col(Alert.recording_id), col(Alert.start_s), col(Alert.id))
            ).all()
            return [(alert_info(a), p) for a, p in rows]

    def undecided(self, recording_id: int) -> int:
        """Candidates of a recording still waiting for their second look."""
        with self.db.session() as s:
            return int(
                s.exec(
                    select(func.count()).where(
                        Alert.recording_id == recording_id, Alert.state == "candidate"
                    )
                ).one()
            )

    def counts(self) -> list[tuple[str, str, int]]:
        """(rule, state, how many) over every recording (the metrics endpoint)."""
        with self.db.session() as s:
            rows = s.exec(
                select(Alert.rule, Alert.state, func.count())
                .group_by(Alert.rule, Alert.state)
                .order_by(Alert.rule, Alert.state)
            ).all()
            return [(r, st, int(n)) for r, st, n in rows]


def _recording_of(s: Session, alert_id: int) -> int | None:
    return s.exec(select(Alert.recording_id).where(Alert.id == alert_id)).first()
