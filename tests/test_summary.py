"""A recording's summary: the text pass on the tiny checkpoint (schema-valid JSON, stored,
replaced, made again by `framewatch summarize` without decoding), batch-then-merge and repair
with labelled stand-ins, and what happens when an analyzer cannot or fails to summarise."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from daemon.cli import main
from daemon.config import parse_config
from daemon.engine.summary import (
    SummaryFailed,
    SummarySettings,
    char_tokens,
    summarize,
    summary_schema,
)
from daemon.models import EventInfo, SpeechSegment, SummaryInput
from daemon.pluginhost.analyzer import check_analyzer
from daemon.pluginhost.dispatch import Dispatcher
from daemon.selftest.testmodel import TINY_SUMMARY
from daemon.store import Store
from daemon.worker import Worker
from tests.media import BLUE, GREEN, RED, make_video
from tests.outbox import analysed, ev, make_config, manager


def check_schema(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """The subset of JSON Schema that summary_schema uses, checked by hand (no jsonschema here)."""
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), where
        assert set(schema["required"]) <= set(value), where
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(schema["properties"]), where
        for k, sub in schema["properties"].items():
            if k in value:
                check_schema(value[k], sub, f"{where}.{k}")
    elif kind == "array":
        assert isinstance(value, list), where
        assert len(value) <= schema.get("maxItems", math.inf), where
        for i, item in enumerate(value):
            check_schema(item, schema["items"], f"{where}[{i}]")
    elif kind == "string":
        assert isinstance(value, str) and len(value) <= schema.get("maxLength", math.inf), where
    elif kind == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert value >= schema.get("minimum", -math.inf), where
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert value >= schema.get("minimum", -math.inf), where


def covers(chapters: list[dict[str, Any]], duration: float) -> None:
    assert chapters and chapters[0]["start_s"] == 0.0
    assert chapters[-1]["end_s"] == pytest.approx(duration, abs=1e-3)
    for a, b in zip(chapters, chapters[1:], strict=False):
        assert a["end_s"] == b["start_s"] and a["start_s"] < a["end_s"]


def api_answer(summary: dict[str, Any]) -> dict[str, Any]:
    """summary_json's shape as the model's answer shape ("text" is "summary" there)."""
    return {
        "title": summary["title"],
        "summary": summary["text"],
        "chapters": summary["chapters"],
        "key_events": summary["key_events"],
    }


# -- the tiny checkpoint ------------------------------------------------------------------------


def test_summary_on_the_tiny_model_is_schema_valid_stored_replaced_and_remade_without_decoding(
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "videos").mkdir()
    clip = make_video(
        tmp_path / "videos" / "scenes.mp4",
        seconds=8,
        scenes=[(0, RED), (3.0, GREEN), (6.0, BLUE)],
    )
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[storage]\nurl = "sqlite:///{tmp_path / "fw.db"}"\n'
        f'[model]\nname = "{tiny_model}"\nmax_new_tokens = 48\n'
        "[chunking]\nseconds = 4\noverlap_seconds = 1\n"
        "[sampling]\nfps = 1\nmax_side = 64\n"
        "[analysis]\nmax_events = 2\nlabel_chars = 16\ndescription_chars = 40\n"
        "[summary]\n"
        + "".join(f"{k} = {v}\n" for k, v in TINY_SUMMARY.items())
        + f'[plugins.markdown_export]\ndir = "{tmp_path / "reports"}"\n'
    )
    assert main(["analyze", str(clip), "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    made = out["summary"]
    assert made is not None, out.get("summary_note")
    request = SummaryInput(
        "x",
        "",
        max_chapters=2,
        max_key_events=2,
        title_chars=16,
        text_chars=80,
        chapter_title_chars=16,
    )
    check_schema(api_answer(made), summary_schema(request))
    duration = out["recording"]["duration_s"]
    covers(made["chapters"], duration)
    assert set(made["key_events"]) <= {e["id"] for e in out["events"]}
    prov = made["provenance"]
    assert prov["model"] == str(tiny_model) and prov["tokens_counted_by"] == "tokenizer"
    assert prov["batches"] == 1 and prov["requests"] == 1 and prov["events"] == len(out["events"])

    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    stored = store.summaries.get(out["recording"]["id"])
    assert stored is not None and stored.title == made["title"] and stored.text == made["text"]
    first_made_at = stored.provenance["made_at"]

    # The report opens with it: title, text, chapters linking into the video.
    report = (tmp_path / "reports" / "scenes.framewatch.md").read_text(encoding="utf-8")
    tokens = MarkdownIt("commonmark").parse(report)
    h2 = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert "Chapters" in h2 and h2.index("Chapters") < h2.index("Timeline")
    hrefs = [
        c.attrs["href"]
        for t in tokens
        if t.type == "inline"
        for c in t.children or []
        if c.type == "link_open"
    ]
    assert "../videos/scenes.mp4#t=0" in hrefs

    # Made again from the store alone: the video is gone and nothing may open media.
    shutil.move(clip, tmp_path / "elsewhere.mp4")
    import av

    def no_decoding(*a: Any, **k: Any) -> Any:
        raise AssertionError("summarize must not open the video")

    monkeypatch.setattr(av, "open", no_decoding)
    code = main(
        ["summarize", str(clip), "--config", str(cfg), "--json", "--prompt", "What changed?"]
    )
    assert code == 0
    again = json.loads(capsys.readouterr().out)
    check_schema(api_answer(again), summary_schema(request))
    covers(again["chapters"], duration)
    assert again["provenance"]["prompt"] == "command line"
    assert again["provenance"]["prompt_hash"] != prov["prompt_hash"]
    replaced = store.summaries.get(out["recording"]["id"])
    assert replaced is not None and replaced.provenance["made_at"] > first_made_at
    with store.db.session() as s:
        from sqlmodel import func, select

        from daemon.store.tables import SummaryRow

        assert s.exec(select(func.count()).select_from(SummaryRow)).one() == 1
    store.close()


# -- labelled stand-ins (no model) --------------------------------------------------------------


class StandInSummarizer:
    """STAND-IN for a model's summarize (no model runs): answers each request with chapters at
    the times and key events at the ids it finds in the prompt, and records every request, so
    a test can see how the recording was batched and merged."""

    name = "stand-in-summarizer"

    def __init__(self, answer: Any = None) -> None:
        self.requests: list[SummaryInput] = []
        self.answer = answer

    def analyze(self, chunk: Any) -> list[dict[str, Any]]:
        return []

    def summarize(self, request: SummaryInput) -> dict[str, Any]:
        self.requests.append(request)
        if self.answer is not None:
            return self.answer(request) if callable(self.answer) else self.answer
        import re

        ids = [int(i) for i in re.findall(r"^#(\d+) ", request.prompt, re.M)]
        spans = [
            (float(a), float(b)) for a, b in re.findall(r" (\d+\.\d)-(\d+\.\d)s ", request.prompt)
        ]
        start, end = (spans[0][0], spans[-1][1]) if spans else (0.0, 1.0)
        mid = (start + end) / 2
        return {
            "title": f"part {len(self.requests)}",
            "summary": f"Things happened from {start} to {end}.",
            "chapters": [
                {"start_s": start, "end_s": mid, "title": "first half"},
                {"start_s": mid, "end_s": end, "title": "second half"},
            ],
            "key_events": ids[:2],
        }


def events(n: int, step: float = 10.0) -> list[EventInfo]:
    return [
        EventInfo(
            id=i + 1,
            recording_id=1,
            chunk_index=int(i * step // 60),
            start_s=i * step,
            end_s=i * step + 4,
            label=["person", "car", "door"][i % 3],
            description=f"something number {i} happens near the gate, described at some length",
        )
        for i in range(n)
    ]


def test_batch_then_merge_on_a_long_recording_with_a_stand_in() -> None:
    stand_in = StandInSummarizer()
    evs = events(400)  # 4000 s: too long for one request of 1500 tokens
    said = [SpeechSegment(None, 1, 0, 5.0, 8.0, "hello at the gate")]
    settings = SummarySettings(batch_tokens=1500, max_chapters=4, max_key_events=3)
    s = summarize(stand_in.summarize, 1, "/v/day.mp4", 4000.0, evs, said, settings)
    p = s.provenance
    assert p["batches"] > 2 and p["merge_passes"] >= 1
    assert p["requests"] == len(stand_in.requests) > p["batches"]
    # Every request fits the budget, counted as the pass counts it (characters here).
    assert all(char_tokens(r.prompt) + 24 <= 1500 for r in stand_in.requests)
    assert p["largest_prompt_tokens"] <= 1500 and p["tokens_counted_by"] == "characters"
    # The batches together see every event once, and the speech.
    batch_prompts = [r.prompt for r in stand_in.requests[: p["batches"]]]
    seen = [line for b in batch_prompts for line in b.splitlines() if line.startswith("#")]
    assert len(seen) == 400 and "said: hello at the gate" in batch_prompts[0]
    # The merge pass is given the batches' summaries, not the events again.
    merge = stand_in.requests[p["batches"]].prompt
    assert "It was summarised in parts" in merge and merge.count("Part ") >= 2
    covers([{"start_s": c.start_s, "end_s": c.end_s} for c in s.chapters], 4000.0)
    assert set(s.key_events) <= {e.id for e in evs} and len(s.key_events) <= 3


def test_one_batch_when_it_fits_and_a_tokenizer_is_used() -> None:
    stand_in = StandInSummarizer()
    s = summarize(
        stand_in.summarize,
        1,
        "/v/a.mp4",
        60.0,
        events(5),
        count_tokens=lambda text: len(text.split()),
    )
    assert s.provenance["batches"] == 1 and s.provenance["merge_passes"] == 0
    assert s.provenance["tokens_counted_by"] == "tokenizer" and len(stand_in.requests) == 1


def test_a_memory_budget_lower_than_batch_tokens_cuts_smaller_batches() -> None:
    wide = summarize(StandInSummarizer().summarize, 1, "/v", 1000.0, events(100))
    narrow = summarize(
        StandInSummarizer().summarize, 1, "/v", 1000.0, events(100), budget_tokens=900
    )
    assert wide.provenance["batches"] < narrow.provenance["batches"]
    assert narrow.provenance["batch_tokens"] == 900


def test_bad_chapter_times_and_ids_are_repaired_and_counted() -> None:
    answer = {
        "title": "  A   day ",
        "summary": "It rained.",
        "chapters": [
            {"start_s": 50, "end_s": 200, "title": "past the end"},  # clipped to 120
            {"start_s": -5, "end_s": 20, "title": "before the start"},  # clipped to 0
            {"start_s": 30, "end_s": 40, "title": "after a gap"},  # bounds moved: no gap
            {"start_s": 35, "end_s": 45, "title": "overlapping"},  # bounds moved: no overlap
            {"start_s": 130, "end_s": 150, "title": "outside"},  # empty after clipping
            {"start_s": "soon", "end_s": 3, "title": "no time"},  # dropped
            {"start_s": 30, "end_s": 31, "title": "same start"},  # dropped (one per start)
        ],
        "key_events": [2, 999, 2, 3, True, "4"],
    }
    stand_in = StandInSummarizer(answer)
    s = summarize(stand_in.summarize, 1, "/v", 120.0, events(5, step=20.0))
    assert s.title == "A day"
    assert [(c.start_s, c.end_s, c.title) for c in s.chapters] == [
        (0.0, 30.0, "before the start"),
        (30.0, 35.0, "after a gap"),
        (35.0, 50.0, "overlapping"),
        (50.0, 120.0, "past the end"),
    ]
    assert s.key_events == (2, 3)
    assert s.provenance["corrections"] == {
        "chapter_times_clipped": 3,
        "chapters_dropped": 3,
        "chapter_bounds_moved": 3,
        "key_events_dropped": 3,
        "key_events_duplicate": 1,
    }


def test_no_usable_chapters_give_one_spanning_the_recording() -> None:
    stand_in = StandInSummarizer({"title": "", "summary": "x", "chapters": [], "key_events": []})
    s = summarize(stand_in.summarize, 1, "/v", 30.0, events(2))
    assert [(c.start_s, c.end_s) for c in s.chapters] == [(0.0, 30.0)]
    assert s.title == "Recording" and s.provenance["corrections"] == {"chapters_made": 1}


@pytest.mark.parametrize("answer", [{"error": "cut off"}, {"title": "t", "summary": " "}, []])
def test_an_unusable_answer_fails_the_summary(answer: Any) -> None:
    with pytest.raises(SummaryFailed):
        summarize(StandInSummarizer(answer).summarize, 1, "/v", 30.0, events(2))


class NoSummaryAnalyzer:
    """STAND-IN for a third-party analyzer written before summaries: analyze only."""

    name = "old-plugin"

    def analyze(self, chunk: Any) -> list[dict[str, Any]]:
        return []


class FailingSummarizer(StandInSummarizer):
    """STAND-IN whose summarize raises, as a broken plugin or a lost server would."""

    def summarize(self, request: SummaryInput) -> dict[str, Any]:
        raise RuntimeError("the summary service is down")


@pytest.mark.parametrize(
    ("inner", "note"),
    [
        (NoSummaryAnalyzer(), "has no summarize method"),
        (FailingSummarizer(), "summarize() raised RuntimeError"),
        (StandInSummarizer({"error": "cut off at summary.max_new_tokens (8)"}), "cut off"),
    ],
)
def test_a_recording_without_a_summary_is_still_done_and_reported(
    tmp_path: Path, inner: Any, note: str
) -> None:
    cfg = make_config(tmp_path, {"markdown_export": {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    analyzer = check_analyzer(inner, "third-party", "1.0")
    rec = analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2, "door", "opens")]], finish=None)
    worker = Worker(store, cfg, lambda: analyzer, subscribers=pm.subscribers)
    settled = worker.settle(rec.id)
    assert settled.status == "done"
    assert store.summaries.get(rec.id) is None
    assert note in worker.summary_notes[rec.id]
    assert Dispatcher(store, pm, cfg).deliver_all() == 1  # recording_finished
    text = (tmp_path / "a.framewatch.md").read_text()
    assert "## Chapters" not in text and "## Timeline" in text


def test_the_worker_summarises_before_it_settles_and_plugins_get_it(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"markdown_export": {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    stand_in = StandInSummarizer()
    rec = analysed(
        store,
        pm,
        tmp_path / "yard.mp4",
        [[ev(1, 2, "door", "opens")], [ev(70, 75, "car", "leaves")]],
        finish=None,
    )
    worker = Worker(
        store, cfg, lambda: check_analyzer(stand_in, "stand-in", None), subscribers=pm.subscribers
    )
    assert worker.settle(rec.id).status == "done"
    made = store.summaries.get(rec.id)
    assert made is not None and len(stand_in.requests) == 1
    assert worker.settle(rec.id).status == "done" and len(stand_in.requests) == 1  # once
    assert Dispatcher(store, pm, cfg).deliver_all() == 1
    report = (tmp_path / "yard.framewatch.md").read_text()
    assert report.startswith(f"# {made.title}\n")
    tokens = MarkdownIt("commonmark").parse(report)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[:4] == [made.title, "Chapters", "Key moments", "Timeline"]
    # The timeline is grouped by the summary's chapters.
    h3 = [
        tokens[i + 1].content
        for i, t in enumerate(tokens)
        if t.type == "heading_open" and t.tag == "h3"
    ]
    assert h3 == [f"00:00:00 {made.chapters[0].title}", f"00:00:38 {made.chapters[1].title}"]


def test_summary_settings_per_watch_folder(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "summary": {"prompt": "general"},
            "watch": [
                {"path": "cams", "summary": False},
                {"path": "talks", "summary_prompt": "List the speakers."},
            ],
        },
        tmp_path / "config.toml",
    )
    assert cfg.summary_for(tmp_path / "cams" / "a.mp4") == (False, "general")
    assert cfg.summary_for(tmp_path / "talks" / "b.mp4") == (True, "List the speakers.")
    assert cfg.summary_for(tmp_path / "other.mp4") == (True, "general")


def test_summarize_command_text_output_and_its_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli import reports
    from daemon.hookspecs import hookimpl

    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nurl = "sqlite:///{tmp_path / "fw.db"}"\n')
    cfg = make_config(tmp_path)
    store = Store(cfg.storage_url())
    rec = analysed(store, manager(cfg), tmp_path / "yard.mp4", [[ev(1, 2, "door", "opens")]])
    store.close()
    made: list[Any] = [StandInSummarizer()]

    class Plugin:
        """STAND-IN analyzer plugin: what `made[0]` is."""

        @staticmethod
        @hookimpl
        def make_analyzer(config: Any) -> Any:
            return made[0]

    monkeypatch.setattr(reports, "plugins_of", lambda c: manager(c, (Plugin, "standin")))
    capsys.readouterr()
    assert main(["summarize", str(tmp_path / "yard.mp4"), "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# part 1\n\nThings happened from 1.0 to 2.0.\n")
    assert "[00:00:00-00:00:01] first half" in out and "key events: #1" in out
    assert "summary made from 1 events in 1 batches" in err and "framewatch replay" in err

    made[0] = NoSummaryAnalyzer()
    assert main(["summarize", str(tmp_path / "yard.mp4"), "--config", str(config)]) == 1
    assert "has no summarize method" in capsys.readouterr().err
    kept = Store(cfg.storage_url()).summaries.get(rec.id)
    assert kept is not None and kept.title == "part 1"  # the old one stays
    assert main(["summarize", str(tmp_path / "nope.mp4"), "--config", str(config)]) == 2
    assert "not in the store" in capsys.readouterr().err


class OutOfMemoryError(RuntimeError):
    """Named as torch's: daemon.gpu.is_oom recognises it by name without torch."""


class RaisingSummarizer(StandInSummarizer):
    """STAND-IN whose summarize raises the given GPU error."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def summarize(self, request: SummaryInput) -> dict[str, Any]:
        raise self.exc


def test_out_of_memory_in_the_summary_leaves_the_recording_done(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    rec = analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
    inner = RaisingSummarizer(OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    worker = Worker(store, cfg, lambda: check_analyzer(inner, "stand-in", None))
    assert worker.settle(rec.id).status == "done"
    assert "OutOfMemoryError" in worker.summary_notes[rec.id]


def test_a_cuda_fault_in_the_summary_ends_the_process_and_settles_later(tmp_path: Path) -> None:
    from daemon.gpu import CudaFault

    cfg = make_config(tmp_path)
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    rec = analysed(store, pm, tmp_path / "a.mp4", [[ev(1, 2)]], finish=None)
    inner = RaisingSummarizer(RuntimeError("CUDA error: an illegal memory access"))
    worker = Worker(store, cfg, lambda: check_analyzer(inner, "stand-in", None))
    with pytest.raises(CudaFault):
        worker.settle(rec.id)
    assert store.recordings.get(rec.id).status == "analyzing"  # the next process settles it
    fresh = Worker(store, cfg, lambda: check_analyzer(StandInSummarizer(), "stand-in", None))
    assert fresh.settle(rec.id).status == "done" and store.summaries.get(rec.id) is not None
