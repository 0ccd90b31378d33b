"""The prompt of a chunk (a profile's task, or the user's, plus the answer format) and the JSON
schema the model's answer must follow. The profiles' texts are configuration (daemon/config/sections.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from daemon.config import PROFILES
from daemon.engine.budget import CHARS_PER_TOKEN
from daemon.models import Utterance

if TYPE_CHECKING:
    from daemon.models import RuleQuestion

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


# Only for recordings that [[alerts]] rules apply to: without rules the prompt is _FORMAT alone,
# byte for byte, and so is the answer's grammar.
_RULES = (
    'Also answer each question below in "rules", after "events", keyed by its name: '
    '{{"happened": true, "start_s": number, "end_s": number, "why": one sentence}} when it '
    'happens in this part, else {{"happened": false}}. The whole answer is then {{"events": '
    '[...], "rules": {{{keys}}}}}. Say true only when you can see it happen.\n{questions}'
)


def rule_line(rule: RuleQuestion) -> str:
    """One rule as the prompts ask it."""
    lasting = (
        f" (lasting at least {rule.min_duration_s:g} seconds)" if rule.min_duration_s > 0 else ""
    )
    return f"{rule.when}{lasting}"


def build_prompt(
    task: str,
    start_s: float,
    end_s: float,
    max_events: int,
    rules: Sequence[RuleQuestion] = (),
    speech: str = "",
) -> str:
    """The full text sent with one chunk's frames: the task, its transcript when `speech` (see
    transcript_text) and the answer format; with `rules`, their questions too. Without speech and
    rules it is the same text, byte for byte, as before either existed."""
    answer = _FORMAT.format(start=start_s, end=end_s, max_events=max_events)
    text = task + "\n\n" + (speech + "\n\n" if speech else "") + answer
    if not rules:
        return text
    keys = ", ".join(f'"{r.name}": ...' for r in rules)
    questions = "\n".join(f"- {r.name}: {rule_line(r)}?" for r in rules)
    return text + "\n\n" + _RULES.format(keys=keys, questions=questions)


_VERIFY = (
    "Each frame group is preceded by its time as <T seconds>, counted from the start of the "
    "recording. These frames run from {window_start:.1f} to {window_end:.1f} seconds. Look "
    "closely: between {start:.1f} and {end:.1f} seconds, does this happen: {question}? "
    'Answer with JSON only: {{"happened": true or false, "reason": one sentence saying what you '
    "see}}. Say true only when you can see it happen."
)


def verify_prompt(
    rule: RuleQuestion, start_s: float, end_s: float, window_start_s: float, window_end_s: float
) -> str:
    """The one yes/no question of a candidate's second look."""
    return _VERIFY.format(
        window_start=window_start_s,
        window_end=window_end_s,
        start=start_s,
        end=end_s,
        question=rule_line(rule),
    )


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


def rules_hash(task: str, rules: Sequence[RuleQuestion]) -> str:
    """Short stable id of the task and the rules asked with it (an alert's provenance)."""
    return prompt_hash(task + "\n\n" + "\n".join(f"{r.name}: {rule_line(r)}" for r in rules))


def _bounded_text(max_chars: int) -> dict[str, Any]:
    # A `pattern` bounds length and excludes quotes, backslashes and control characters;
    # xgrammar compiled `maxLength` to a rule that let raw control characters through.
    return {"type": "string", "pattern": f'^[^"\\\\\\x00-\\x1f]{{0,{max_chars}}}$'}


def event_schema(
    max_events: int,
    label_chars: int,
    description_chars: int,
    rules: Sequence[str] = (),
    reason_chars: int = 160,
) -> dict[str, Any]:
    """JSON schema of one chunk's answer. `end_s >= start_s` cannot be expressed; events.py checks it.

    With `rules` (their names) the answer also holds "rules": one verdict per rule, no other."""
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
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"events": {"type": "array", "items": event, "maxItems": max_events}},
        "required": ["events"],
        "additionalProperties": False,
    }
    if rules:
        no = {
            "type": "object",
            "properties": {"happened": {"type": "boolean", "enum": [False]}},
            "required": ["happened"],
            "additionalProperties": False,
        }
        yes = {
            "type": "object",
            "properties": {
                "happened": {"type": "boolean", "enum": [True]},
                "start_s": {"type": "number"},
                "end_s": {"type": "number"},
                "why": _bounded_text(reason_chars),
            },
            "required": ["happened", "start_s", "end_s", "why"],
            "additionalProperties": False,
        }
        schema["properties"]["rules"] = {
            "type": "object",
            "properties": {name: {"anyOf": [no, yes]} for name in rules},
            "required": list(rules),
            "additionalProperties": False,
        }
        schema["required"] = ["events", "rules"]
    return schema


def verify_schema(reason_chars: int) -> dict[str, Any]:
    """JSON schema of a second look's answer: one yes/no and its reason."""
    return {
        "type": "object",
        "properties": {"happened": {"type": "boolean"}, "reason": _bounded_text(reason_chars)},
        "required": ["happened", "reason"],
        "additionalProperties": False,
    }


def schema_key(schema: dict[str, Any]) -> str:
    """Stable text form of a schema (for caching a compiled grammar)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def parse_events(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """The event dicts in the model's JSON answer, or ([], why) when it is not usable."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], f"not JSON: {exc.msg} at character {exc.pos}"
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return [], 'not an object with an "events" list'
    events = data["events"]
    if not all(isinstance(e, dict) for e in events):
        return [], "an event is not an object"
    return events, None
