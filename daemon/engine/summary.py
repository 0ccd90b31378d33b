"""A recording's summary from its stored events (and speech): the text pass, pure (no store).

The events (and speech segments) become numbered lines; lines that fit one request's token budget
(counted with the model's own tokenizer when the analyzer offers `count_tokens`) form a batch.
One batch is summarised in one request; several are each summarised, then merged by one more
pass over their summaries (more passes only when the summaries themselves do not fit one
request). Every answer is schema-constrained JSON ({title, summary, chapters, key_events}); what
the model got wrong is repaired and counted in the provenance, as model times are for events:

- chapters are clipped to [0, duration], sorted, and their bounds moved so they cover the
  recording exactly (no gap, no overlap); one without usable times, or empty after clipping, is
  dropped; none left: one chapter spanning the recording;
- a key event id that is not a stored event of this recording (or of this batch) is dropped;
  duplicates are dropped; past `max_key_events` they are cut.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from daemon.engine.prompts import prompt_hash
from daemon.models import Chapter, EventInfo, SpeechSegment, Summary, SummaryInput

# A stand-in for a tokenizer when the analyzer has none: over-counts English (budget.py's rule).
CHARS_PER_TOKEN = 3.0
# Chat template around a text-only prompt (role markers, generation prompt).
TEMPLATE_TOKENS = 24

DEFAULT_TASK = (
    "Summarise this recording for someone who did not watch it: what it was about and what "
    "happened, in order."
)


class SummaryFailed(RuntimeError):
    """The text pass gave no usable answer (cut off, not JSON, a server error); the recording is
    done all the same, without a summary."""


@dataclass(frozen=True, slots=True)
class SummarySettings:
    """What shapes a summary ([summary] in the config, daemon/config/summary.py)."""

    task: str = DEFAULT_TASK
    max_sentences: int = 5
    max_chapters: int = 12
    max_key_events: int = 10
    title_chars: int = 80
    text_chars: int = 800
    chapter_title_chars: int = 60
    max_new_tokens: int = 768
    batch_tokens: int = 6000  # one request's prompt, at most (the memory budget may lower it)
    max_batches: int = 64


def char_tokens(text: str) -> int:
    """Tokens of `text` without a tokenizer: an over-estimate."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def summary_schema(request: SummaryInput) -> dict[str, Any]:
    """The JSON schema of a summary answer (the OpenAI-compatible backend sends it; the
    transformers backend compiles the same shape as a grammar, backends/grammar.py)."""
    return {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": request.title_chars},
            "summary": {"type": "string", "maxLength": request.text_chars},
            "chapters": {
                "type": "array",
                "maxItems": request.max_chapters,
                "items": {
                    "type": "object",
                    "properties": {
                        "start_s": {"type": "number", "minimum": 0},
                        "end_s": {"type": "number", "minimum": 0},
                        "title": {"type": "string", "maxLength": request.chapter_title_chars},
                    },
                    "required": ["start_s", "end_s", "title"],
                    "additionalProperties": False,
                },
            },
            "key_events": {
                "type": "array",
                "maxItems": request.max_key_events,
                "items": {"type": "integer", "minimum": 1},
            },
        },
        "required": ["title", "summary", "chapters", "key_events"],
        "additionalProperties": False,
    }


def _t(x: float) -> str:
    return f"{x:.1f}"


def event_line(e: EventInfo) -> str:
    return f"#{e.id} {_t(e.start_s)}-{_t(e.end_s)}s {e.label}: {e.description}"


def speech_line(s: SpeechSegment) -> str:
    return f"{_t(s.start_s)}-{_t(s.end_s)}s said: {s.text}"


@dataclass(frozen=True, slots=True)
class Line:
    start_s: float
    end_s: float
    text: str
    event_id: int | None = None


def lines_of(events: Sequence[EventInfo], speech: Sequence[SpeechSegment] = ()) -> list[Line]:
    """Events and speech as one time-ordered list of prompt lines."""
    out = [Line(e.start_s, e.end_s, event_line(e), e.id) for e in events]
    out += [Line(s.start_s, s.end_s, speech_line(s)) for s in speech]
    return sorted(out, key=lambda x: (x.start_s, x.end_s, x.event_id is None, x.text))


def _rules(s: SummarySettings, start_s: float, end_s: float) -> str:
    return (
        f"Answer with JSON: a short title; a summary of at most {s.max_sentences} sentences; "
        f"at most {s.max_chapters} chapters, in order, that together cover {_t(start_s)} to "
        f"{_t(end_s)} seconds without gaps or overlaps (start_s, end_s in seconds, a short "
        f"title each); and key_events: the #ids of at most {s.max_key_events} of the most "
        "important events listed above. Use only times and ids that appear above."
    )


def batch_prompt(
    s: SummarySettings, lines: Sequence[Line], start_s: float, end_s: float, duration_s: float
) -> str:
    part = (
        f" This is the part from {_t(start_s)} to {_t(end_s)} seconds."
        if (start_s, end_s) != (0.0, duration_s)
        else ""
    )
    body = "\n".join(x.text for x in lines) or "(nothing was found in this part)"
    return (
        f"{s.task}\nThe recording lasts {_t(duration_s)} seconds.{part} Each line is something "
        "seen (#id, start-end seconds, label: description) or said (start-end seconds, said: "
        f"words).\n\n{body}\n\n{_rules(s, start_s, end_s)}"
    )


@dataclass(frozen=True, slots=True)
class Partial:
    """One batch's (or one merge's) repaired answer, over [start_s, end_s]."""

    start_s: float
    end_s: float
    title: str
    text: str
    chapters: tuple[Chapter, ...]
    key_events: tuple[int, ...]


def partial_text(p: Partial, lines: dict[int, str]) -> str:
    chapters = "; ".join(f"{_t(c.start_s)}-{_t(c.end_s)}s {c.title}" for c in p.chapters)
    keys = "\n".join(lines[i] for i in p.key_events if i in lines)
    return (
        f"Part {_t(p.start_s)}-{_t(p.end_s)}s: {p.title}\n{p.text}\nChapters: {chapters}\n"
        f"Key events:\n{keys}"
    )


def merge_prompt(
    s: SummarySettings, parts: Sequence[str], start_s: float, end_s: float, duration_s: float
) -> str:
    return (
        f"{s.task}\nThe recording lasts {_t(duration_s)} seconds. It was summarised in parts; "
        "here is each part's summary, chapters and key events (#id, start-end seconds, label: "
        "description). Combine them into one summary of the whole span: merge chapters that "
        "continue each other.\n\n" + "\n\n".join(parts) + f"\n\n{_rules(s, start_s, end_s)}"
    )


# -- repair ------------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def repair_chapters(
    raw: Any, start_s: float, end_s: float, title_chars: int, fallback: str, counts: dict[str, int]
) -> tuple[Chapter, ...]:
    """Chapters that cover [start_s, end_s] exactly, in order; what was changed is counted in
    `counts` (chapters_dropped, chapter_times_clipped, chapter_bounds_moved, chapters_made)."""
    found: list[tuple[float, float, str]] = []
    for c in raw if isinstance(raw, list) else []:
        a = _num(c.get("start_s")) if isinstance(c, dict) else None
        b = _num(c.get("end_s")) if isinstance(c, dict) else None
        if a is None or b is None:
            counts["chapters_dropped"] += 1
            continue
        ca, cb = min(max(a, start_s), end_s), min(max(b, start_s), end_s)
        if (ca, cb) != (a, b):
            counts["chapter_times_clipped"] += 1
        if cb <= ca:
            counts["chapters_dropped"] += 1
            continue
        title = " ".join(str(c.get("title") or "").split())[:title_chars] or fallback
        found.append((ca, cb, title))
    found.sort(key=lambda c: c[0])  # stable: of two with one start, the first given stays
    kept: list[tuple[float, float, str]] = []
    for c in found:
        if kept and c[0] <= kept[-1][0]:  # starts where the previous one does: one of them
            counts["chapters_dropped"] += 1
            continue
        kept.append(c)
    if not kept:
        counts["chapters_made"] += 1
        return (Chapter(start_s, end_s, fallback[:title_chars]),)
    out = []
    for i, (a, b, title) in enumerate(kept):
        na = start_s if i == 0 else out[-1].end_s
        nb = end_s if i == len(kept) - 1 else kept[i + 1][0]
        if (na, nb) != (a, b):
            counts["chapter_bounds_moved"] += 1
        out.append(Chapter(round(na, 3), round(nb, 3), title))
    return tuple(out)


def repair_keys(raw: Any, known: set[int], limit: int, counts: dict[str, int]) -> tuple[int, ...]:
    out: list[int] = []
    for x in raw if isinstance(raw, list) else []:
        i = int(x) if isinstance(x, int) and not isinstance(x, bool) else None
        if i is None or i not in known:
            counts["key_events_dropped"] += 1
        elif i in out:
            counts["key_events_duplicate"] += 1
        elif len(out) >= limit:
            counts["key_events_cut"] += 1
        else:
            out.append(i)
    return tuple(out)


def new_counts() -> dict[str, int]:
    return dict.fromkeys(
        (
            "chapters_dropped",
            "chapter_times_clipped",
            "chapter_bounds_moved",
            "chapters_made",
            "key_events_dropped",
            "key_events_duplicate",
            "key_events_cut",
        ),
        0,
    )


def repair(
    answer: dict[str, Any],
    start_s: float,
    end_s: float,
    known: set[int],
    s: SummarySettings,
    counts: dict[str, int],
) -> Partial:
    """An answer made usable for [start_s, end_s] (module doc); raises SummaryFailed when it is
    an error or has no summary text at all."""
    if not isinstance(answer, dict) or "error" in answer:
        why = answer.get("error") if isinstance(answer, dict) else type(answer).__name__
        raise SummaryFailed(f"no usable summary: {why}")
    text = " ".join(str(answer.get("summary") or "").split())[: s.text_chars]
    if not text:
        raise SummaryFailed("no usable summary: the answer has no summary text")
    title = " ".join(str(answer.get("title") or "").split())[: s.title_chars] or "Recording"
    chapters = repair_chapters(
        answer.get("chapters"), start_s, end_s, s.chapter_title_chars, title, counts
    )
    keys = repair_keys(answer.get("key_events"), known, s.max_key_events, counts)
    return Partial(start_s, end_s, title, text, chapters, keys)


# -- batches ------------------------------------------------------------------------------------


def split(
    items: Sequence[Any], cost: Callable[[Any], int], room: int, *, at_least: int = 1
) -> list[list[Any]]:
    """Consecutive groups whose summed cost fits `room` (a group holds at least `at_least` items
    whatever they cost, so every call makes progress)."""
    groups: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for item in items:
        c = cost(item)
        if current and used + c > room and len(current) >= at_least:
            groups.append(current)
            current, used = [], 0
        current.append(item)
        used += c
    if current:
        if groups and len(current) < at_least:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


Ask = Callable[[SummaryInput], dict[str, Any]]
Count = Callable[[str], int]


def summarize(
    ask: Ask,
    recording_id: int,
    recording_path: str,
    duration_s: float,
    events: Sequence[EventInfo],
    speech: Sequence[SpeechSegment] = (),
    settings: SummarySettings | None = None,
    *,
    count_tokens: Count | None = None,
    budget_tokens: int | None = None,
    provenance: dict[str, Any] | None = None,
) -> Summary:
    """The recording's summary (module doc). `ask` is the analyzer's `summarize`; `count_tokens`
    its tokenizer (default: a character estimate); `budget_tokens` the prompt tokens one request
    may have when the memory budget allows fewer than `settings.batch_tokens`. Raises
    SummaryFailed when an answer cannot be used."""
    s = settings or SummarySettings()
    started = time.perf_counter()
    count = count_tokens or char_tokens
    room = min(s.batch_tokens, budget_tokens or s.batch_tokens)
    duration = max(0.0, float(duration_s or 0.0))
    if duration <= 0.0:
        duration = max((e.end_s for e in events), default=0.0)
    request = SummaryInput(
        recording_path=recording_path,
        prompt="",
        max_chapters=s.max_chapters,
        max_key_events=s.max_key_events,
        title_chars=s.title_chars,
        text_chars=s.text_chars,
        chapter_title_chars=s.chapter_title_chars,
        max_new_tokens=s.max_new_tokens,
    )
    lines = lines_of(events, speech)
    by_id = {x.event_id: x.text for x in lines if x.event_id is not None}
    counts = new_counts()
    stats = {"requests": 0, "prompt_tokens": 0, "largest_prompt_tokens": 0}

    def call(prompt: str) -> dict[str, Any]:
        n = count(prompt) + TEMPLATE_TOKENS
        stats["requests"] += 1
        stats["prompt_tokens"] += n
        stats["largest_prompt_tokens"] = max(stats["largest_prompt_tokens"], n)
        return ask(replace(request, prompt=prompt))

    # What one request costs besides its lines: the task and rules around an empty batch.
    overhead = count(batch_prompt(s, [], 0.0, duration, duration)) + TEMPLATE_TOKENS
    line_room = max(1, room - overhead)
    batches = split(lines, lambda x: count(x.text) + 1, line_room) if lines else [[]]
    if len(batches) > s.max_batches:
        raise SummaryFailed(
            f"{len(lines)} lines need {len(batches)} batches of {room} tokens, more than "
            f"summary.max_batches ({s.max_batches}); raise summary.batch_tokens or max_batches"
        )
    bounds = _batch_bounds(batches, duration)
    parts: list[Partial] = []
    for (a, b), batch in zip(bounds, batches, strict=True):
        known = {x.event_id for x in batch if x.event_id is not None}
        answer = call(batch_prompt(s, batch, a, b, duration))
        parts.append(repair(answer, a, b, known, s, counts))
    merges = 0
    known_all = set(by_id)
    while len(parts) > 1:
        merges += 1
        merge_overhead = count(merge_prompt(s, [], 0.0, duration, duration)) + TEMPLATE_TOKENS
        groups = split(
            parts,
            lambda p: count(partial_text(p, by_id)) + 2,
            max(1, room - merge_overhead),
            at_least=2,
        )
        merged = []
        for group in groups:
            a, b = group[0].start_s, group[-1].end_s
            text = merge_prompt(s, [partial_text(p, by_id) for p in group], a, b, duration)
            merged.append(repair(call(text), a, b, known_all, s, counts))
        parts = merged
    final = parts[0]
    made = {
        **(provenance or {}),
        "prompt_hash": prompt_hash(batch_prompt(s, [], 0.0, 0.0, 0.0)),
        "events": len(events),
        "speech_segments": len(speech),
        "batches": len(batches),
        "merge_passes": merges,
        "batch_tokens": room,
        "tokens_counted_by": "tokenizer" if count_tokens is not None else "characters",
        **stats,
        "corrections": {k: v for k, v in counts.items() if v},
        "seconds": round(time.perf_counter() - started, 3),
    }
    return Summary(
        recording_id=recording_id,
        title=final.title,
        text=final.text,
        chapters=final.chapters,
        key_events=final.key_events,
        provenance=made,
    )


def _batch_bounds(batches: list[list[Line]], duration: float) -> list[tuple[float, float]]:
    """Each batch's span: from where the previous one ended to where the next one starts, so
    the batches' chapters together cover the recording."""
    out: list[tuple[float, float]] = []
    for i in range(len(batches)):
        a = 0.0 if i == 0 else out[-1][1]
        last = i == len(batches) - 1
        b = duration if last else min(max(batches[i + 1][0].start_s, a), duration)
        out.append((a, b))
    return out


__all__ = [
    "DEFAULT_TASK",
    "SummaryFailed",
    "SummarySettings",
    "batch_prompt",
    "char_tokens",
    "lines_of",
    "merge_prompt",
    "repair",
    "repair_chapters",
    "repair_keys",
    "split",
    "summarize",
    "summary_schema",
]
