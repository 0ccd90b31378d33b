"""Full-text search over stored events and speech: the query text for each store.

SQLite has an FTS5 table over the event table's label and description, and one over the speech
table's text, kept in sync by triggers on those tables (so every writer, present or future,
updates them in the same transaction as the rows: a re-analysed chunk's delete-and-reinsert
included). PostgreSQL has a GIN index on the same weighted tsvector expression each query uses,
searched with websearch_to_tsquery. Migration 0002 made the events' index, 0006 the speech one.
One ranked list holds both kinds: speech text weighs like an event's description. Everything
here is pure: `Events.search` (events.py) runs what this module builds.

One query syntax for both stores, the one search engines taught people (and PostgreSQL's
websearch_to_tsquery reads): words must all occur, "quoted words" as a phrase, `-word` must not
occur, `a or b` either. Words are stemmed (English), so "alarms" finds "alarm".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.models import EventInfo, SpeechSegment, event_json, hms, speech_json

# Label hits weigh more than description hits: a label is the model's one-line summary.
LABEL_WEIGHT, DESCRIPTION_WEIGHT = 4.0, 1.0
FTS_TABLE = "event_fts"
SPEECH_FTS_TABLE = "speech_fts"
PG_CONFIG = "english"
# The PostgreSQL document; the index and the query must spell it identically for the planner to
# use the index.
PG_DOCUMENT = (
    f"(setweight(to_tsvector('{PG_CONFIG}'::regconfig, label), 'A') || "
    f"setweight(to_tsvector('{PG_CONFIG}'::regconfig, description), 'B'))"
)
# Speech text weighs like a description (weight B), in both stores' rankings.
PG_SPEECH_DOCUMENT = f"setweight(to_tsvector('{PG_CONFIG}'::regconfig, text), 'B')"
MAX_LIMIT = 500


# -- the query language ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Terms:
    """A parsed query: every group must match (a group is alternatives joined by `or`), no
    excluded term may. Each term is a word or a phrase, as the person typed it."""

    groups: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.groups)


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w")


def parse(text: str) -> Terms:
    """Read a search box's text. Terms without a letter or digit are dropped (they would match
    nothing in FTS5 and everything in PostgreSQL). A query of only exclusions has no groups:
    it finds nothing, on both stores."""
    groups: list[list[str]] = []
    excluded: list[str] = []
    pending_or = False
    # PostgreSQL refuses NUL in text; it is never part of a word anyway.
    for m in _TOKEN.finditer(text.replace("\x00", " ")):
        if m.group(2) is not None:
            negated, term = bool(m.group(1)), " ".join(m.group(2).split())
        else:
            raw = m.group(3)
            if raw.casefold() == "or":
                pending_or = bool(groups)
                continue
            negated, term = raw.startswith("-") and len(raw) > 1, raw
            if negated:
                term = raw[1:]
        if not _WORD.search(term):
            continue
        if negated:
            excluded.append(term)
        elif pending_or:
            groups[-1].append(term)
        else:
            groups.append([term])
        pending_or = False
    return Terms(tuple(tuple(g) for g in groups), tuple(excluded))


def _fts5_string(term: str) -> str:
    # Inside an FTS5 string everything is literal but the quote (doubled); the tokenizer splits it
    # as it split the text, so `e-mail` becomes the phrase "e mail", never an operator.
    return '"' + term.replace('"', '""') + '"'


def fts5_match(terms: Terms) -> str:
    """The FTS5 MATCH expression of a parsed query (never an FTS5 syntax error)."""
    if not terms:
        raise ValueError("empty query")
    expr = " AND ".join(
        "(" + " OR ".join(_fts5_string(t) for t in group) + ")" for group in terms.groups
    )
    if terms.excluded:
        expr = f"({expr}) NOT (" + " OR ".join(_fts5_string(t) for t in terms.excluded) + ")"
    return expr


def websearch(terms: Terms) -> str:
    """The same query in websearch_to_tsquery's syntax (which never raises on any input)."""

    def one(t: str) -> str:
        return f'"{t}"' if " " in t else t.replace('"', " ")

    parts = [" or ".join(one(t) for t in group) for group in terms.groups]
    parts += [f"-{one(t)}" for t in terms.excluded]
    return " ".join(parts)


# -- queries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What a person asked for: text plus filters. `since` is a Unix time: only recordings whose
    file was last modified then or later. `labels` match case-insensitively, any of them."""

    text: str
    recording_id: int | None = None
    since: float | None = None
    labels: tuple[str, ...] = ()
    limit: int = 20
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One ranked event, or one ranked speech segment (`speech` set, `event` None); `score` is
    higher for better matches (comparable within one search)."""

    event: EventInfo | None
    recording_path: str
    recording_status: str
    score: float
    rank: int = 0
    speech: SpeechSegment | None = None

    @property
    def kind(self) -> str:
        return "speech" if self.speech is not None else "event"

    @property
    def start_s(self) -> float:
        return self.speech.start_s if self.speech is not None else self.event.start_s  # type: ignore[union-attr]

    @property
    def recording_id(self) -> int:
        item = self.speech if self.speech is not None else self.event
        return item.recording_id  # type: ignore[union-attr]

    @property
    def hms(self) -> str:
        return hms(self.start_s)

    @property
    def link(self) -> str:
        """file:// URL of the recording opened at the hit (a media fragment, whole seconds)."""
        return f"{Path(self.recording_path).as_uri()}#t={max(0, int(self.start_s))}"

    def as_dict(self) -> dict[str, Any]:
        """The hit as `framewatch search --json` prints it: its rank, score, recording and link
        with `"kind": "event"` and the event (models.event_json, its id as `event_id`), or with
        `"kind": "speech"` and the segment (models.speech_json with its provenance, its id as
        `speech_id`; `label` "speech" and the text as `description` too, so a reader of event
        hits can show it)."""
        head = {
            "rank": self.rank,
            "score": self.score,
            "recording_id": self.recording_id,
            "recording": self.recording_path,
            "recording_status": self.recording_status,
        }
        if self.speech is not None:
            said = speech_json(self.speech, provenance=True)
            return {
                **head,
                "kind": "speech",
                "speech_id": said.pop("id"),
                **said,
                "label": "speech",
                "description": self.speech.text,
                "time": self.hms,
                "link": self.link,
            }
        event = event_json(self.event)  # type: ignore[arg-type]
        return {
            **head,
            "event_id": event.pop("id"),
            **event,
            "time": self.hms,
            "link": self.link,
            "kind": "event",
        }


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL text with its bound parameters; rows are (kind, id, score, ...), kind "event" or
    "speech"."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def _filters(q: SearchQuery, params: dict[str, Any], t: str) -> list[str]:
    """Conditions on the rows of table alias `t` (labels: the events' alias only)."""
    where = []
    if q.recording_id is not None:
        where.append(f"{t}.recording_id = :recording_id")
        params["recording_id"] = q.recording_id
    if q.labels and t == "e":
        names = []
        for i, label in enumerate(q.labels):
            params[f"label{i}"] = label.replace("\x00", "")
            names.append(f"lower(:label{i})")
        # lower() on both sides: the same function, whatever the database's notion of case.
        where.append(f"lower(e.label) IN ({', '.join(names)})")
    if q.since is not None:
        where.append(
            "EXISTS (SELECT 1 FROM recording_path rp "
            f"WHERE rp.recording_id = {t}.recording_id AND rp.mtime >= :since)"
        )
        params["since"] = q.since
    return where


def _page(q: SearchQuery, params: dict[str, Any]) -> str:
    params["limit"] = max(1, min(q.limit, MAX_LIMIT))
    params["offset"] = max(0, q.offset)
    # Ties (equal scores) in a stable, readable order: by recording, then by time.
    return " ORDER BY score DESC, recording_id, start_s, kind, id LIMIT :limit OFFSET :offset"


# The columns every part of the union returns, under the names the ORDER BY uses.
_COLUMNS = "{kind} AS kind, {t}.id AS id, {score} AS score, {t}.recording_id AS recording_id, {t}.start_s AS start_s"


def build(dialect: str, q: SearchQuery) -> Statement | None:
    """The ranked query for `dialect` ("sqlite" or "postgresql"); None when the text has no
    searchable term (nothing can match). Speech segments have no label: a label filter leaves
    them out."""
    terms = parse(q.text)
    if not terms:
        return None
    params: dict[str, Any] = {}
    parts = []
    if dialect == "sqlite":
        params["match"] = fts5_match(terms)
        # bm25 is lower for better matches; negated so that higher is better on both stores.
        where = [f"{FTS_TABLE} MATCH :match", *_filters(q, params, "e")]
        score = f"-bm25({FTS_TABLE}, {LABEL_WEIGHT}, {DESCRIPTION_WEIGHT})"
        parts.append(
            f"SELECT {_COLUMNS.format(kind=repr('event'), t='e', score=score)} "
            f"FROM {FTS_TABLE} JOIN event e ON e.id = {FTS_TABLE}.rowid "
            f"WHERE {' AND '.join(where)}"
        )
        if not q.labels:
            where = [f"{SPEECH_FTS_TABLE} MATCH :match", *_filters(q, params, "s")]
            score = f"-bm25({SPEECH_FTS_TABLE}, {DESCRIPTION_WEIGHT})"
            parts.append(
                f"SELECT {_COLUMNS.format(kind=repr('speech'), t='s', score=score)} "
                f"FROM {SPEECH_FTS_TABLE} JOIN speech s ON s.id = {SPEECH_FTS_TABLE}.rowid "
                f"WHERE {' AND '.join(where)}"
            )
    elif dialect == "postgresql":
        params["websearch"] = websearch(terms)
        # Ranked by the wanted terms alone: ts_rank of a query with a negation scores 0.
        params["wanted"] = websearch(Terms(terms.groups))
        queries = (
            f"websearch_to_tsquery('{PG_CONFIG}'::regconfig, :websearch) AS q(query), "
            f"websearch_to_tsquery('{PG_CONFIG}'::regconfig, :wanted) AS w(wanted)"
        )
        where = [f"{PG_DOCUMENT} @@ q.query", *_filters(q, params, "e")]
        score = f"ts_rank({PG_DOCUMENT}, w.wanted)"
        parts.append(
            f"SELECT {_COLUMNS.format(kind=repr('event'), t='e', score=score)} "
            f"FROM event e, {queries} WHERE {' AND '.join(where)}"
        )
        if not q.labels:
            where = [f"{PG_SPEECH_DOCUMENT} @@ q.query", *_filters(q, params, "s")]
            score = f"ts_rank({PG_SPEECH_DOCUMENT}, w.wanted)"
            parts.append(
                f"SELECT {_COLUMNS.format(kind=repr('speech'), t='s', score=score)} "
                f"FROM speech s, {queries} WHERE {' AND '.join(where)}"
            )
    else:
        raise NotImplementedError(f"full-text search is not available on {dialect!r} stores")
    return Statement(" UNION ALL ".join(parts) + _page(q, params), params)
