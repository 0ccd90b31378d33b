"""Ground truth for `framewatch eval`: the events a recording really holds, read from a JSON or
CSV file, every mistake in the file reported with where it is (a key path or a line number).

JSON::

    {"recordings": [{"path": "clip.mp4",
                     "events": [{"start_s": 9.0, "end_s": 18.0, "label": "green"}]}],
     "synonyms": {"green": ["lime"]}}

CSV: one event a row, `path,start_s,end_s,label` (a header row of those names is optional; a row
with only a path names a recording without events; blank lines and lines starting with `#` are
skipped). Relative paths are relative to the truth file. `synonyms` (optional, JSON only, or
`--synonyms FILE` for either format) maps a label to other names that count as the same label.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.engine.events import as_number

FIELDS = ("path", "start_s", "end_s", "label")


@dataclass(frozen=True, slots=True)
class Span:
    """One event: [start_s, end_s] seconds from the recording's start, and its label."""

    start_s: float
    end_s: float
    label: str

    def as_json(self) -> dict[str, Any]:
        return {"start_s": self.start_s, "end_s": self.end_s, "label": self.label}


@dataclass(frozen=True, slots=True)
class TruthRecording:
    path: str  # absolute
    events: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Truth:
    source: str
    recordings: tuple[TruthRecording, ...]
    # alias (normalised) -> canonical label (normalised); see label_key
    synonyms: dict[str, str] = field(default_factory=dict)


class TruthError(ValueError):
    """The truth file is unusable; `problems` holds (where, message) pairs, `where` a key path
    such as `recordings[0].events[2].end_s` or `line 5`."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {where}: {msg}" for where, msg in self.problems]


def label_key(label: str, synonyms: dict[str, str] | None = None) -> str:
    """The form two labels are compared in: case-folded, spaces collapsed, synonyms resolved."""
    key = " ".join(str(label).split()).casefold()
    return (synonyms or {}).get(key, key)


def synonym_map(table: Any, where: str = "synonyms") -> dict[str, str]:
    """{"green": ["lime", "verdant"]} as alias -> canonical (both label_key'd); a name given two
    meanings is an error."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected an object of label: [other names], got {table!r}")
    out: dict[str, str] = {}
    for canonical, aliases in table.items():
        if isinstance(aliases, str):
            aliases = [aliases]
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ValueError(f"{where}.{canonical}: expected a list of names, got {aliases!r}")
        target = label_key(canonical)
        for alias in aliases:
            key = label_key(alias)
            if out.get(key, target) != target:
                raise ValueError(f"{where}.{canonical}: {alias!r} already means {out[key]!r}")
            out[key] = target
    return out


def load_synonyms(path: str | os.PathLike[str]) -> dict[str, str]:
    """A JSON file {"label": ["other name", ...]} for `--synonyms`."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TruthError(source, [("(file)", f"cannot read: {exc.strerror or exc}")]) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise TruthError(source, [(where, f"not valid JSON: {exc.msg}")]) from None
    try:
        return synonym_map(data, "(top level)")
    except ValueError as exc:
        raise TruthError(source, [("(file)", str(exc))]) from None


def load_truth(path: str | os.PathLike[str]) -> Truth:
    """Read a truth file: `.csv` as CSV, anything else as JSON."""
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TruthError(source, [("(file)", "truth file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TruthError(source, [("(file)", f"cannot read: {exc}")]) from None
    base = Path(os.path.abspath(p)).parent
    if p.suffix.casefold() == ".csv":
        return _from_csv(text, source, base)
    return _from_json(text, source, base)


def _resolve(base: Path, path: str) -> str:
    return os.path.abspath(base / Path(path).expanduser())


def _span(
    start: Any, end: Any, label: Any, where: str, sep: str, problems: list[tuple[str, str]]
) -> Span | None:
    """A checked event, or None with its problems added (`where` + sep + field)."""
    before = len(problems)
    s, e = as_number(start), as_number(end)
    if s is None:
        problems.append((f"{where}{sep}start_s", f"expected a number of seconds, got {start!r}"))
    elif s < 0:
        problems.append((f"{where}{sep}start_s", f"must be >= 0, got {start!r}"))
    if e is None:
        problems.append((f"{where}{sep}end_s", f"expected a number of seconds, got {end!r}"))
    elif s is not None and e < s:
        problems.append((f"{where}{sep}end_s", f"ends before it starts ({end!r} < {start!r})"))
    if not isinstance(label, str) or not label.strip():
        problems.append((f"{where}{sep}label", f"expected a non-empty label, got {label!r}"))
    if len(problems) > before or s is None or e is None:
        return None
    return Span(s, e, " ".join(str(label).split()))


def _from_json(text: str, source: str, base: Path) -> Truth:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise TruthError(source, [(where, f"not valid JSON: {exc.msg}")]) from None
    problems: list[tuple[str, str]] = []
    if not isinstance(data, dict) or not isinstance(data.get("recordings"), list):
        raise TruthError(
            source,
            [("recordings", 'expected {"recordings": [{"path": ..., "events": [...]}]}')],
        )
    unknown = sorted(set(data) - {"recordings", "synonyms"})
    problems += [(k, "unknown key (recordings, synonyms)") for k in unknown]
    synonyms: dict[str, str] = {}
    if "synonyms" in data:
        try:
            synonyms = synonym_map(data["synonyms"])
        except ValueError as exc:
            problems.append(("synonyms", str(exc)))
    recordings: list[TruthRecording] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(data["recordings"]):
        where = f"recordings[{i}]"
        if not isinstance(item, dict):
            problems.append((where, f"expected an object with path and events, got {item!r}"))
            continue
        problems += [
            (f"{where}.{k}", "unknown key") for k in sorted(set(item) - {"path", "events"})
        ]
        path = item.get("path")
        if not isinstance(path, str) or not path.strip():
            problems.append((f"{where}.path", f"expected a file path, got {path!r}"))
            continue
        full = _resolve(base, path)
        if full in seen:
            problems.append((f"{where}.path", f"the same file as recordings[{seen[full]}]"))
            continue
        seen[full] = i
        events = item.get("events", [])
        if not isinstance(events, list):
            problems.append((f"{where}.events", f"expected a list of events, got {events!r}"))
            continue
        spans = []
        for j, ev in enumerate(events):
            at = f"{where}.events[{j}]"
            if not isinstance(ev, dict):
                problems.append((at, f"expected an object with start_s, end_s, label, got {ev!r}"))
                continue
            extra = sorted(set(ev) - {"start_s", "end_s", "label", "description"})
            problems += [(f"{at}.{k}", "unknown key") for k in extra]
            span = _span(ev.get("start_s"), ev.get("end_s"), ev.get("label"), at, ".", problems)
            if span is not None:
                spans.append(span)
        recordings.append(TruthRecording(full, tuple(spans)))
    if not data["recordings"] and not problems:
        problems.append(("recordings", "no recordings listed"))
    if problems:
        raise TruthError(source, problems)
    return Truth(source, tuple(recordings), synonyms)


def _from_csv(text: str, source: str, base: Path) -> Truth:
    problems: list[tuple[str, str]] = []
    order: dict[str, list[Span]] = {}
    rows = csv.reader(io.StringIO(text))
    first = True
    for row in rows:
        line = rows.line_num
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if first and [c.casefold() for c in cells] == list(FIELDS):
            first = False
            continue
        first = False
        where = f"line {line}"
        if len(cells) == 1 or (len(cells) == 4 and not any(cells[1:])):
            order.setdefault(_resolve(base, cells[0]), [])  # a recording without events
            continue
        if len(cells) != 4:
            problems.append(
                (where, f"expected 4 fields path,start_s,end_s,label, got {len(cells)}: {row!r}")
            )
            continue
        if not cells[0]:
            problems.append((f"{where}: path", "empty"))
            continue
        span = _span(cells[1], cells[2], cells[3], where, ": ", problems)
        events = order.setdefault(_resolve(base, cells[0]), [])
        if span is not None:
            events.append(span)
    if not order and not problems:
        problems.append(("(file)", "no rows (expected path,start_s,end_s,label)"))
    if problems:
        raise TruthError(source, problems)
    return Truth(source, tuple(TruthRecording(p, tuple(ev)) for p, ev in order.items()))


def truth_json(truth: Truth, relative_to: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A Truth as the JSON format reads it (paths relative to `relative_to` when given)."""

    def shown(path: str) -> str:
        return os.path.relpath(path, relative_to) if relative_to is not None else path

    out: dict[str, Any] = {
        "recordings": [
            {"path": shown(r.path), "events": [e.as_json() for e in r.events]}
            for r in truth.recordings
        ]
    }
    if truth.synonyms:
        table: dict[str, list[str]] = {}
        for alias, canonical in truth.synonyms.items():
            table.setdefault(canonical, []).append(alias)
        out["synonyms"] = table
    return out
