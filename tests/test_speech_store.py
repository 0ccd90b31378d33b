"""Speech in the store and in search, on SQLite and PostgreSQL: segments commit with their
chunk's events (replaced with them), full-text search ranks them beside events and marks them,
and the pure parts: the merge of overlapping chunks' copies, the transcript's prompt bound, the
[speech] settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from daemon.config import ConfigError, parse_config
from daemon.engine.budget import CHARS_PER_TOKEN, text_tokens
from daemon.engine.prompts import build_prompt, transcript_text
from daemon.engine.speech import merge_speech
from daemon.models import Candidate, ChunkWindow, Utterance
from daemon.store import Store, search
from tests.services import store_url_for

OWNER = "test:1"
ASR = {"asr": {"model": "whisper-x", "beam_size": 1}}


def recording(
    store: Store, name: str, chunks: list[tuple[list[Candidate], list[Utterance]]]
) -> int:
    rec, _ = store.recordings.register(f"/v/{name}", f"fp:{name}", 1, 0.0)
    store.chunks.plan(
        rec.id,
        [ChunkWindow(i, i * 60.0, i * 60.0 + 60, (i * 60.0,), 64, 64) for i in range(len(chunks))],
    )
    for events, said in chunks:
        c = store.chunks.claim(rec.id, OWNER, 60)
        assert c is not None
        store.chunks.commit(
            rec.id, c.index, OWNER, events, {"model": "m", "speech": ASR}, speech=said
        )
    return rec.id


def test_speech_commits_with_events_and_is_replaced_with_them(store: Store) -> None:
    rid = recording(
        store,
        "talk.mp4",
        [
            (
                [Candidate(1, 2, "slide", "title")],
                [Utterance(3.0, 5.5, "entropy always grows", "en", -0.3, 0.01)],
            )
        ],
    )
    (seg,) = store.speech.of(rid)
    assert (seg.chunk_index, seg.start_s, seg.end_s, seg.text, seg.language) == (
        0,
        3.0,
        5.5,
        "entropy always grows",
        "en",
    )
    assert seg.provenance == {
        "model": "whisper-x",
        "asr": {"beam_size": 1},
        "avg_logprob": -0.3,
        "no_speech_prob": 0.01,
    }
    assert store.chunks.neighbour_speech(rid, 1) == [
        Utterance(3.0, 5.5, "entropy always grows", "en")
    ]
    # Running the chunk again replaces its events and its speech, in one transaction.
    store.chunks.release(rid, 0, OWNER)
    with store.db.engine.begin() as conn:
        conn.execute(text("UPDATE chunk SET status = 'pending'"))
    c = store.chunks.claim(rid, OWNER, 60)
    assert c is not None
    store.chunks.commit(
        rid, 0, OWNER, [], {"speech": ASR}, speech=[Utterance(4.0, 6.0, "heat flows", "en")]
    )
    assert [s.text for s in store.speech.of(rid)] == ["heat flows"]
    assert store.events.of(rid) == []
    assert [h.speech.text for h in store.events.search("heat") if h.speech] == ["heat flows"]
    assert store.events.search("entropy") == []
    # A commit refused to a box that lost the chunk stores no speech either.
    assert (
        store.chunks.commit(rid, 0, "other:2", [], {}, speech=[Utterance(1, 2, "late", "en")])
        is None
    )
    assert [s.text for s in store.speech.of(rid)] == ["heat flows"]


def test_search_ranks_speech_beside_events_and_marks_it(store: Store) -> None:
    rid = recording(
        store,
        "lecture.mp4",
        [
            ([Candidate(10, 20, "entropy slide", "The definition of entropy")], []),
            ([], [Utterance(70.0, 74.0, "so entropy never decreases in a closed system", "en")]),
        ],
    )
    hits = store.events.search("entropy")
    assert sorted(h.kind for h in hits) == ["event", "speech"]
    said = next(h for h in hits if h.kind == "speech")
    d = said.as_dict()
    assert d["kind"] == "speech" and d["text"] == d["description"] and d["label"] == "speech"
    assert d["speech_id"] == said.speech.id and d["chunk"] == 1 and d["start_s"] == 70.0  # type: ignore[union-attr]
    assert d["link"].endswith("lecture.mp4#t=70") and d["time"] == "00:01:10"
    assert d["provenance"]["model"] == "whisper-x" and d["recording_id"] == rid
    event = next(h for h in hits if h.kind == "event").as_dict()
    assert event["kind"] == "event" and "event_id" in event and "speech_id" not in event
    # Stemmed, and phrases, as for events; a label filter leaves speech out (it has none).
    assert [h.kind for h in store.events.search('"closed system"')] == ["speech"]
    assert [h.kind for h in store.events.search("decrease")] == ["speech"]
    assert [h.kind for h in store.events.search("entropy", labels=["entropy slide"])] == ["event"]
    assert [h.kind for h in store.events.search("entropy -closed")] == ["event"]
    assert store.events.search("entropy", recording_id=rid + 1) == []


def test_postgres_uses_the_speech_expression_index(tmp_path: Path) -> None:
    with store_url_for("postgresql", tmp_path) as url:
        store = Store(url)
        try:
            recording(store, "a.mp4", [([], [Utterance(1, 2, "red alarm heard", "en")])])
            stmt = search.build("postgresql", search.SearchQuery("red alarm"))
            assert stmt is not None
            with store.db.engine.begin() as c:
                c.execute(text("SET LOCAL enable_seqscan = off"))
                plan = "\n".join(r[0] for r in c.execute(text("EXPLAIN " + stmt.sql), stmt.params))
        finally:
            store.close()
    assert "speech_search_idx" in plan and "event_search_idx" in plan


def test_the_migration_spells_the_speech_document_as_the_query_does() -> None:
    import importlib

    revision = importlib.import_module("daemon.store.migrations.versions.0006_speech")
    assert revision.PG_SPEECH_DOCUMENT == search.PG_SPEECH_DOCUMENT


# -- pure parts ---------------------------------------------------------------------------------


def test_merge_keeps_one_copy_of_a_border_utterance() -> None:
    overlap = [(16.0, 20.0)]
    stored = [Utterance(18.27, 21.60, "x")]
    new = [Utterance(18.30, 21.60, "y"), Utterance(25.0, 27.0, "z")]
    assert merge_speech(stored, new, overlap) == ([new[1]], 1)
    # A copy one chunk's detector split differently lies inside the other's: the same speech.
    assert (
        merge_speech([Utterance(10.0, 22.0, "x")], [Utterance(17.5, 21.0, "y")], overlap)[0] == []
    )
    # The neighbour's next utterance is not this one; the middle of a chunk is never merged.
    assert merge_speech([Utterance(14.0, 16.5, "x")], [Utterance(17.0, 19.0, "y")], overlap)[1] == 0
    assert merge_speech([Utterance(5.0, 9.0, "x")], [Utterance(5.0, 9.0, "y")], overlap)[1] == 0


def test_the_transcript_in_the_prompt_is_bounded_by_its_tokens() -> None:
    said = [
        Utterance(10.0 + i, 10.5 + i, f"sentence number {i} " + "word " * 10) for i in range(200)
    ]
    for tokens in (0, 30, 300, 3000, 100_000):
        speech, left = transcript_text(said, tokens)
        assert (
            text_tokens(build_prompt("task", 0, 60, 5, speech=speech))
            - text_tokens(build_prompt("task", 0, 60, 5))
            <= tokens
        )
        kept = speech.count("\n[")
        assert left == (200 - kept if speech else 200)
        if speech and left:
            assert speech.endswith(f"({left} more lines left out)")
    whole, left = transcript_text(said[:2], 3000)
    assert (
        left == 0
        and whole.splitlines()[1] == "[10.0-10.5] sentence number 0 " + ("word " * 10).strip()
    )
    assert len(transcript_text(said, 3000)[0]) <= 3000 * CHARS_PER_TOKEN


def test_speech_settings_are_checked_with_key_paths() -> None:
    cfg = parse_config({"speech": {"mode": "auto", "language": "de", "device": "cuda:1"}})
    assert (cfg.speech.mode, cfg.speech.language, cfg.speech.device) == ("auto", "de", "cuda:1")
    assert parse_config({}).speech.mode == "off" and parse_config({}).speech.vad is True
    with pytest.raises(ConfigError) as ei:
        parse_config(
            {"speech": {"mode": "always", "language": "German", "device": "tpu", "speech_pad": 1}}
        )
    keys = {k for k, _, _ in ei.value.errors}
    assert keys == {"speech.mode", "speech.language", "speech.device", "speech.speech_pad"}
