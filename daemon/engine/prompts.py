"""The prompt of a chunk (a profile's task, or the user's, plus the answer format) and the JSON
schema the model's answer must follow. The profiles' texts are configuration (daemon/config.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from daemon.config import PROFILES
from daemon.engine.budget import CHARS_PER_TOKEN
from daemon.models import Utterance

_FORMAT = (
    "Each frame group is preceded by its time as <T seconds>, counted from the start of the "
    "recording. This part of the recording runs from {start:.1f} to {end:.1f} seconds. "
    'Answer with JSON only: {{"events": [{{"start_s": number, "end_s": number, '
    '"label": short name, "description": one sentence}}]}}, with times in seconds on the '
    "same clock as the <T seconds> markers, at most {max_events} events, ordered by time. "
    'If nothing happens, answer {{"events": []}}.'
)


_SPEECH = (
    "What is said in this part, transcribed from the audio track (each line starts with its "
    "time on the same clock as the frames: [start-end] seconds):"
)


class UnknownProfile(ValueError):
    """analysis.profile names no known profile."""


def instructions(profile: str, custom: str | None) -> str:
    """The task text for a profile, or the user's own prompt when given."""
    if custom:
        return custom.strip()
    try:
        return PROFILES[profile]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise UnknownProfile(f"unknown analysis profile {profile!r}; known: {known}") from None


def build_prompt(task: str, start_s: float, end_s: float, max_events: int, speech: str = "") -> str:
    """The full text sent with one chunk's frames; `speech` is its transcript_text, if any."""
    answer = _FORMAT.format(start=start_s, end=end_s, max_events=max_events)
    return task + "\n\n" + (speech + "\n\n" if speech else "") + answer


def transcript_text(utterances: Sequence[Utterance], max_tokens: int) -> tuple[str, int]:
    """A chunk's transcript for its prompt, one line per utterance, at most `max_tokens` by the
    budget's count (daemon/engine/budget.py: CHARS_PER_TOKEN, an over-estimate), so the memory
    estimate that adds `max_tokens` holds. Whole lines in time order, as many as fit; a last
    line counts the rest. Returns the text ("" when nothing is said or nothing fits) and how
    many lines were left out."""
    lines = [f"[{u.start_s:.1f}-{u.end_s:.1f}] {' '.join(u.text.split())}" for u in utterances]
    room = int(max_tokens * CHARS_PER_TOKEN) - 2  # the blank line that joins it to the prompt
    used = len(_SPEECH)
    kept: list[str] = []
    for i, line in enumerate(lines):
        left = len(lines) - i - 1
        tail = len(f"\n({left} more lines left out)") if left else 0
        if used + 1 + len(line) + tail > room:
            break
        kept.append(line)
        used += 1 + len(line)
    left = len(lines) - len(kept)
    if not kept:
        return "", left
    return "\n".join([_SPEECH, *kept] + ([f"({left} more lines left out)"] if left else [])), left


def prompt_hash(task: str) -> str:
    """Short stable id of the task text, kept in every event's provenance."""
    return hashlib.sha256(task.encode("utf-8")).hexdigest()[:16]


def _bounded_text(max_chars: int) -> dict[str, Any]:
    # A `pattern` bounds length and excludes quotes, backslashes and control characters;
    # xgrammar compiled `maxLength` to a rule that let raw control characters through.
    return {"type": "string", "pattern": f'^[^"\\\\\\x00-\\x1f]{{0,{max_chars}}}$'}


def event_schema(max_events: int, label_chars: int, description_chars: int) -> dict[str, Any]:
    """JSON schema of one chunk's answer. `end_s >= start_s` cannot be expressed; events.py checks it."""
    event = {
        "type": "object",
        "properties": {
            "start_s": {"type": "number"},
            "end_s": {"type": "number"},
            "label": _bounded_text(label_chars),
            "description": _bounded_text(description_chars),
        },
        "required": ["start_s", "end_s", "label", "description"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"events": {"type": "array", "items": event, "maxItems": max_events}},
        "required": ["events"],
        "additionalProperties": False,
    }


def schema_key(schema: dict[str, Any]) -> str:
    """Stable text form of a schema (for caching a compiled grammar)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))
