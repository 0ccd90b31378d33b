"""Alert rules in the engine: which answers are rule hits, how a hit becomes a candidate, the
window of its second look, and the pure decisions (cap, cooldown, outcome).

Stage 1 asks every rule that applies to a recording in the chunk's own answer; a rule that
"happened" comes back as a hit: a dict with `rule` naming it, `start_s`, `end_s` and `why`
(README, "Your own model"). Stage 2 shows the candidate's window again, denser and sharper, with
one yes/no question (daemon/worker.py runs it after the chunk commits). Nothing here touches the
store or a model.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.engine.events import as_number, clean_text, nearest_time
from daemon.engine.planner import evenly_spaced, frame_size
from daemon.models import ChunkWindow, RuleHit, RuleQuestion

if TYPE_CHECKING:
    import numpy as np

    from daemon.config import AlertingConfig, AlertRule
    from daemon.models import Frame, MediaInfo

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
THUMBNAIL_SIDE = 480
# Tokens of one rule's verdict beyond its reason, at most: `"<name>": {"happened": true,
# "start_s": <14 chars>, "end_s": <14 chars>, "why": "` and the closing quote and brace (one
# token per character is the worst a tokenizer can do).
VERDICT_TOKENS = 80


def questions(rules: Iterable[AlertRule]) -> tuple[RuleQuestion, ...]:
    """The rules as an analyzer is asked them."""
    return tuple(RuleQuestion(r.name, r.when, r.min_duration_s) for r in rules)


def rule_answer_tokens(rules: Sequence[RuleQuestion], reason_chars: int) -> int:
    """Generated tokens the rules' verdicts may add to a chunk's answer, at most."""
    return sum(VERDICT_TOKENS + len(r.name) + reason_chars for r in rules)


def split_hits(raw: Sequence[Any], names: Iterable[str]) -> tuple[list[Any], list[dict[str, Any]]]:
    """(events, rule hits) of an analyzer's answer: a dict whose `rule` names one of the asked
    rules is a hit, everything else is an event as before."""
    asked = set(names)
    if not asked:
        return list(raw), []
    events: list[Any] = []
    hits: list[dict[str, Any]] = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("rule"), str) and item["rule"] in asked:
            hits.append(item)
        else:
            events.append(item)
    return events, hits


def thumbnail_jpeg(image: np.ndarray, max_side: int = THUMBNAIL_SIDE, quality: int = 80) -> bytes:
    """A frame (H x W x 3 RGB) as a small JPEG: the picture an alert carries."""
    from PIL import Image

    picture = Image.fromarray(image)
    picture.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def nearest_frame(frames: Sequence[Frame], t: float) -> Frame | None:
    if not frames:
        return None
    return min(frames, key=lambda f: abs(f.t_s - t))


def normalize_hits(
    raw: Sequence[dict[str, Any]],
    start_s: float,
    end_s: float,
    frames: Sequence[Frame] = (),
) -> tuple[list[RuleHit], int]:
    """Checked hits on the recording's clock: reversed times fixed, clamped to the chunk, one per
    rule (the first), with the nearest frame's time and a thumbnail of it. Returns (hits, how
    many were refused: no usable times, or wholly outside the chunk)."""
    times = [f.t_s for f in frames]
    out: dict[str, RuleHit] = {}
    refused = 0
    for item in raw:
        s, e = as_number(item.get("start_s")), as_number(item.get("end_s"))
        if e is None and s is not None:
            e = s
        if s is None or e is None:
            refused += 1
            continue
        if e < s:
            s, e = e, s
        if e < start_s or s > end_s:
            refused += 1
            continue
        s, e = max(s, start_s), min(e, end_s)
        rule = item["rule"]
        if rule in out:
            continue
        why = clean_text(item.get("why", item.get("reason", "")), 1000)
        frame = nearest_frame(frames, s)
        out[rule] = RuleHit(
            rule=rule,
            start_s=round(s, 3),
            end_s=round(e, 3),
            why=why,
            evidence_s=nearest_time(times, s),
            thumbnail=thumbnail_jpeg(frame.image) if frame is not None else None,
            thumbnail_s=frame.t_s if frame is not None else None,
        )
    return list(out.values()), refused


def capped(
    hits: Sequence[RuleHit], severity: dict[str, str], cap: int
) -> tuple[list[RuleHit], list[RuleHit]]:
    """(verified now, over the cap) of one chunk's hits: the most severe first, then in the
    order the rules were asked (their config order)."""
    order = sorted(
        range(len(hits)), key=lambda i: (SEVERITY_ORDER.get(severity.get(hits[i].rule, ""), 9), i)
    )
    keep = set(order[:cap])
    return [h for i, h in enumerate(hits) if i in keep], [
        h for i, h in enumerate(hits) if i not in keep
    ]


def in_cooldown(start_s: float, fired_starts: Iterable[float], cooldown_s: float) -> float | None:
    """The start of an alert that fired within `cooldown_s` of `start_s` (either side), or None."""
    for t in fired_starts:
        if abs(t - start_s) < cooldown_s:
            return t
    return None


# -- the second look ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What becomes of a candidate: its state, the reason a person reads, and whether it fires
    (is delivered)."""

    state: str
    reason: str
    fired: bool


def verify_window(
    index: int,
    start_s: float,
    end_s: float,
    min_duration_s: float,
    media: MediaInfo,
    alerting: AlertingConfig,
    chunk_fps: float,
    chunk_max_side: int,
    max_pixels: int | None = None,
) -> ChunkWindow:
    """The window of a candidate's second look: its times widened by the margin (and to
    `min_duration_s`), clipped to the recording, sampled at verify_fps and verify_max_side (never
    below the chunk's own fps and side), at most verify_max_frames frames (an even count). The
    planner's step-down (daemon/memory.py) shrinks it further when the GPU budget needs it."""
    lo = max(0.0, start_s - alerting.margin_s)
    hi = max(end_s, start_s + min_duration_s) + alerting.margin_s
    if media.duration_s > 0:
        hi = min(hi, media.duration_s)
    hi = max(hi, lo + 0.1)
    fps = max(alerting.verify_fps, chunk_fps)
    side = max(alerting.verify_max_side, chunk_max_side)
    n = max(2, min(alerting.verify_max_frames, round((hi - lo) * fps)))
    n -= n % 2
    dw, dh = media.display_size
    w, h = frame_size(dw, dh, side, max_pixels)
    return ChunkWindow(index, round(lo, 3), round(hi, 3), evenly_spaced(lo, hi, n), w, h)


def verify_answer(raw: Any) -> tuple[bool | None, str]:
    """(happened, reason) of a verify() answer; happened None when it is not usable, the reason
    then says why."""
    if not isinstance(raw, dict):
        return None, f"the answer is {type(raw).__name__}, not an object"
    if isinstance(raw.get("error"), str) and not isinstance(raw.get("happened"), bool):
        return None, clean_text(raw["error"], 500)
    happened = raw.get("happened")
    if not isinstance(happened, bool):
        return None, 'the answer has no boolean "happened"'
    return happened, clean_text(raw.get("reason", ""), 1000)


def decide(
    rule: AlertRule | None, happened: bool | None, reason: str, *, verified: bool
) -> Outcome:
    """A candidate's outcome. `verified`: a second look ran and answered (`happened`, `reason`);
    otherwise `reason` says why none could. A confirmed candidate fires; an unverified one fires
    when its rule has verify = false or deliver_unverified = true; a rejected one never."""
    if rule is None:
        return Outcome("unverified", f"the rule is no longer configured ({reason})", False)
    if verified and happened is not None:
        if happened:
            return Outcome("confirmed", reason or "confirmed by the second look", True)
        return Outcome("rejected", reason or "rejected by the second look", False)
    return Outcome("unverified", reason, (not rule.verify) or rule.deliver_unverified)


def parse_verdicts(data: Any, rules: Sequence[RuleQuestion]) -> list[dict[str, Any]]:
    """Rule hits from a model answer's "rules" object ({"<name>": {"happened": true, ...}}): one
    dict per rule that happened, in the shape an analyzer returns hits in."""
    verdicts = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(verdicts, dict):
        return []
    out = []
    for r in rules:
        v = verdicts.get(r.name)
        if isinstance(v, dict) and v.get("happened") is True:
            out.append(
                {
                    "rule": r.name,
                    "start_s": v.get("start_s"),
                    "end_s": v.get("end_s"),
                    "why": v.get("why", ""),
                }
            )
    return out


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
