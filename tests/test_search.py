"""Search: the query language, ranking and filters on SQLite (FTS5) and PostgreSQL, the index
following re-analysis, and `framewatch search`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from daemon.cli import main
from daemon.store import Store, search
from tests.eventdata import CAMERA, LECTURE, ev, populate, provenance, reanalyse, ts
from tests.services import store_url_for

HOSTILE_QUERIES = [
    '"',
    '""',
    "'",
    "AND",
    "OR",
    "NOT",
    "NEAR(red alarm)",
    "*",
    "red*",
    "-",
    "--",
    "-red",
    "or red",
    "red or",
    "label:red",
    "description : alarm",
    "^red",
    "(((",
    ")",
    '"unclosed red',
    "red\x00alarm",
    "\x00",
    "a" * 5000,
    "🚨 red",
    "SELECT * FROM event; --",
    "{red alarm}",
    "red & !alarm | <->",
    "e-mail",
    "'red' 'alarm'",
    "\\",
    "%_",
    "   ",
]


@pytest.fixture
def corpus(store: Store, tmp_path: Path) -> tuple[Store, int, int]:
    lecture = populate(
        store, tmp_path / "lecture.mp4", LECTURE, chunk_s=1800, mtime=ts("2024-01-10")
    )
    camera = populate(store, tmp_path / "camera.mp4", CAMERA, chunk_s=600, mtime=ts("2024-03-01"))
    return store, lecture.id, camera.id


def labels(hits: list[search.SearchHit]) -> list[str]:
    return [h.event.label for h in hits]


# -- the query language (pure) ----------------------------------------------------------------


def test_parse_reads_words_phrases_exclusions_and_or() -> None:
    t = search.parse('red alarm "fire door" -drill smoke or fire')
    assert t.groups == (("red",), ("alarm",), ("fire door",), ("smoke", "fire"))
    assert t.excluded == ("drill",)
    assert search.fts5_match(t) == (
        '(("red") AND ("alarm") AND ("fire door") AND ("smoke" OR "fire")) NOT ("drill")'
    )
    assert search.websearch(t) == 'red alarm "fire door" smoke or fire -drill'


def test_parse_drops_what_cannot_match() -> None:
    assert not search.parse("")
    assert not search.parse("  - -- * ( ) ")
    assert not search.parse("-red")  # only exclusions: nothing to rank, nothing found
    assert search.parse('say "she said ""hi"""').groups[0] == ("say",)
    assert search.fts5_match(search.parse('a"b')) == '("a""b")'


def test_build_returns_none_without_terms() -> None:
    assert search.build("sqlite", search.SearchQuery("-only")) is None
    with pytest.raises(NotImplementedError):
        search.build("mysql", search.SearchQuery("red"))


# -- ranking and filters, on both stores ------------------------------------------------------


def test_all_words_must_occur_and_label_hits_rank_first(corpus: tuple[Store, int, int]) -> None:
    store, _, _ = corpus
    hits = store.events.search("red alarm")
    # "A red car" has red but no alarm; the slide has both words in its description only.
    assert sorted(labels(hits[:2])) == ["Red Alarm", "red alarm"]
    assert labels(hits)[2:] == ["slide"]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].score >= hits[1].score > hits[2].score


def test_phrase_exclusion_or_and_stemming(corpus: tuple[Store, int, int]) -> None:
    store, _, _ = corpus
    assert sorted(labels(store.events.search('"red alarm"'))) == ["Red Alarm", "red alarm"]
    assert labels(store.events.search("red -alarm")) == ["vehicle"]
    assert sorted(labels(store.events.search("cat or vehicle"))) == ["cat", "vehicle"]
    assert sorted(labels(store.events.search("alarms"))) == ["Red Alarm", "red alarm", "slide"]
    assert labels(store.events.search("flashing")) == ["red alarm"]  # flashes ~ flashing
    assert store.events.search("unicorn") == []


def test_filters_recording_label_since_and_paging(corpus: tuple[Store, int, int]) -> None:
    store, lecture, camera = corpus
    assert labels(store.events.search("red alarm", recording_id=camera)) == ["Red Alarm"]
    assert {h.event.recording_id for h in store.events.search("red", recording_id=lecture)} == {
        lecture
    }
    by_label = store.events.search("alarm", labels=["RED ALARM"])
    assert sorted(labels(by_label)) == ["Red Alarm", "red alarm"]
    assert labels(store.events.search("alarm", labels=["slide", "nothing"])) == ["slide"]
    assert {h.recording_path for h in store.events.search("red", since=ts("2024-02-01"))} == {
        str(Path(store.recordings.get(camera).path))
    }
    assert store.events.search("red", since=ts("2030-01-01")) == []
    everything = store.events.search("red")
    page = store.events.search("red", limit=2, offset=1)
    assert [h.event.id for h in page] == [h.event.id for h in everything[1:3]]
    assert [h.rank for h in page] == [2, 3]


def test_hit_has_time_link_and_provenance(corpus: tuple[Store, int, int], tmp_path: Path) -> None:
    store, lecture, _ = corpus
    (hit,) = store.events.search("flashes")
    assert hit.hms == "00:47:12"
    assert hit.link == (tmp_path / "lecture.mp4").as_uri() + "#t=2832"
    assert hit.recording_status == "done"
    d = hit.as_dict()
    assert d["recording"] == str(tmp_path / "lecture.mp4") and d["time"] == "00:47:12"
    assert d["provenance"]["model"] == "Qwen/Qwen3-VL-2B-Instruct"
    assert d["provenance"]["prompt_hash"] == "p1"
    assert d["provenance"]["sampling"] == {"fps": 2.0, "max_side": 640}
    assert json.dumps(d)


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_any_text_is_a_query_never_an_error(corpus: tuple[Store, int, int], query: str) -> None:
    store, _, _ = corpus
    hits = store.events.search(query, labels=[query])
    assert isinstance(hits, list)
    assert isinstance(store.events.search(query), list)


def test_reanalysis_replaces_only_that_chunks_events(corpus: tuple[Store, int, int]) -> None:
    store, lecture, camera = corpus
    before = {e.id: e for e in store.events.of(lecture) if e.chunk_index == 0}
    camera_ids = [e.id for e in store.events.of(camera)]
    reanalyse(
        store,
        lecture,
        1,
        [ev(2833, 2841, "fire alarm", "Smoke, then a fire alarm sounds")],
        provenance(prompt_hash="p2", model="Qwen/Qwen3-VL-8B-Instruct"),
    )
    assert labels(store.events.search("red alarm")) == [
        "Red Alarm"
    ]  # the lecture's old ones are gone
    assert (
        store.events.search("whiteboard")[0].event.id in before
    )  # chunk 0 untouched, still indexed
    assert {e.id: e for e in store.events.of(lecture) if e.chunk_index == 0} == before
    assert [e.id for e in store.events.of(camera)] == camera_ids
    (hit,) = store.events.search("smoke")
    assert hit.event.label == "fire alarm"
    assert hit.event.provenance["prompt_hash"] == "p2"
    assert hit.event.provenance["model"] == "Qwen/Qwen3-VL-8B-Instruct"
    if store.db.engine.dialect.name == "sqlite":
        with store.db.engine.begin() as c:  # raises if the index and the table disagree
            c.exec_driver_sql(
                f"INSERT INTO {search.FTS_TABLE}({search.FTS_TABLE}, rank) VALUES ('integrity-check', 1)"
            )


def test_postgres_uses_the_expression_index(tmp_path: Path) -> None:
    with store_url_for("postgresql", tmp_path) as url:
        store = Store(url)
        try:
            populate(store, tmp_path / "camera.mp4", CAMERA)
            stmt = search.build("postgresql", search.SearchQuery("red alarm"))
            assert stmt is not None
            with store.db.engine.begin() as c:
                c.execute(text("SET LOCAL enable_seqscan = off"))
                plan = "\n".join(r[0] for r in c.execute(text("EXPLAIN " + stmt.sql), stmt.params))
        finally:
            store.close()
    assert "event_search_idx" in plan


def test_sqlite_store_from_before_search_is_indexed_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    populate(store, tmp_path / "camera.mp4", CAMERA)
    with store.db.engine.begin() as c:  # as a store written by a framewatch without search
        for trigger in ("event_fts_ai", "event_fts_ad", "event_fts_au"):
            c.exec_driver_sql(f"DROP TRIGGER {trigger}")
        c.exec_driver_sql(f"DROP TABLE {search.FTS_TABLE}")
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    store.close()
    reopened = Store(url)
    try:
        assert labels(reopened.events.search("red car")) == ["vehicle"]
        again = Store(url)  # opening again does not index twice
        assert labels(again.events.search("red car")) == ["vehicle"]
        again.close()
        assert len(reopened.events.search("yard")) == 2
    finally:
        reopened.close()


# -- framewatch search ------------------------------------------------------------------------


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    populate(store, tmp_path / "lecture.mp4", LECTURE, chunk_s=1800, mtime=ts("2024-01-10"))
    populate(store, tmp_path / "camera.mp4", CAMERA, chunk_s=600, mtime=ts("2024-03-01"))
    store.close()
    path = tmp_path / "config.toml"
    path.write_text('[storage]\nurl = "sqlite:///fw.db"\n')
    return path


def test_cli_search_prints_time_description_and_link(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", "red alarm", "--config", str(conf)]) == 0
    out = capsys.readouterr().out.splitlines()
    lecture = conf.parent / "lecture.mp4"
    i = out.index(f"{lecture} 00:47:12 red alarm: A red alarm light flashes above the door")
    assert out[i + 1].startswith(
        f"    {lecture.as_uri()}#t=2832  (model Qwen/Qwen3-VL-2B-Instruct, prompt_hash p1)"
    )


def test_cli_search_json_and_filters(
    conf: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(conf.parent)
    assert (
        main(["search", "red", "--config", str(conf), "--json", "--recording", "camera.mp4"]) == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert {h["recording"] for h in hits} == {str(conf.parent / "camera.mp4")}
    assert hits[0]["link"].startswith("file://") and "provenance" in hits[0]
    assert main(["search", "red", "--config", str(conf), "--json", "--since", "2024-02-01"]) == 0
    assert {h["label"] for h in json.loads(capsys.readouterr().out)} == {"Red Alarm", "vehicle"}
    assert main(["search", "alarm", "--config", str(conf), "--json", "--label", "slide"]) == 0
    assert [h["label"] for h in json.loads(capsys.readouterr().out)] == ["slide"]
    assert main(["search", "red", "--config", str(conf), "--json", "--limit", "1"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_cli_search_usage_errors(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "red", "--config", str(conf), "--recording", "/nope.mp4"]) == 2
    assert "no such recording" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["search", "red", "--config", str(conf), "--since", "last tuesday"])
    assert exc.value.code == 2
    assert "not a date" in capsys.readouterr().err
    assert main(["search", "unicorn", "--config", str(conf)]) == 0
    assert "no events or speech match" in capsys.readouterr().err
