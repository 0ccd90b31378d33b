"""Static-span skipping: the activity pre-pass finds planted events, static chunks are stored done
with a `static` note instead of going to the model, and every event lies in an analysed chunk."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from markdown_it import MarkdownIt

from daemon.analysis import analyze_recording
from daemon.config import parse_config
from daemon.engine.activity import (
    change_score,
    scan_times,
    scan_window,
    static_window,
)
from daemon.models import ChunkWindow, hms
from daemon.pluginhost.dispatch import Dispatcher
from daemon.pluginhost.manager import load_plugins
from daemon.selftest.clips import make_static_scene
from daemon.store import Store, merge_static_spans
from daemon.worker import Worker
from tests.services import Receiver

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

# (start_s, duration_s, kind) on a 90 s clip; chunks are 10 s with 2 s overlap.
EVENTS = [(12.3, 2.0, "object"), (41.0, 1.5, "flash"), (66.5, 0.0, "scene")]
SECONDS = 90.0


# What the activity scores show, as spans: only these tests need it.
def active_spans(
    times: Sequence[float], scores: Sequence[float], threshold: float
) -> list[tuple[float, float]]:
    """Merged [start, end] spans between scan frames whose change exceeds `threshold`."""
    spans: list[tuple[float, float]] = []
    for (a, b), score in zip(pairwise(times), scores, strict=False):
        if score <= threshold:
            continue
        if spans and a <= spans[-1][1]:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


class Recorder:
    """A trivial analyzer that remembers which windows reached it."""

    name = "recorder"

    def __init__(self) -> None:
        self.chunks: list[Any] = []

    def analyze(self, chunk: Any) -> list[dict[str, Any]]:
        self.chunks.append(chunk)
        return []

    def provenance(self) -> dict[str, Any]:
        return {"model": "recorder", "backend": "test"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("activity")
    return make_static_scene(d / "static.mp4", seconds=SECONDS, events=EVENTS, fps=5, gop=150)


def run(
    tmp_path: Path,
    clip: Path,
    sampling: dict[str, Any],
    watch: dict[str, Any] | None = None,
    plugins: dict[str, Any] | None = None,
) -> tuple[Recorder, Store, int]:
    data: dict[str, Any] = {
        "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
        "model": {"device": "cpu"},
        "chunking": {"seconds": 10, "overlap_seconds": 2},
        "sampling": {"fps": 2, "max_side": 64, **sampling},
    }
    if watch is not None:
        data["watch"] = [{"path": str(clip.parent), **watch}]
    if plugins is not None:
        data["plugins"] = plugins
    cfg = parse_config(data)
    store = Store(cfg.storage_url())
    recorder = Recorder()
    pm = load_plugins(cfg, third_party=False)
    worker = Worker(store, cfg, lambda: recorder, subscribers=pm.subscribers)
    rec, _ = worker.ingest(str(clip))
    assert analyze_recording(worker, rec.id).status == "done"
    Dispatcher(store, pm, cfg).deliver_all()
    return recorder, store, rec.id


def test_change_score_and_spans() -> None:
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    assert change_score(a, b) == 0.0
    b[:5] = 255
    assert change_score(a, b) == 0.5
    b[:] = 10  # below the per-pixel delta: noise, not change
    assert change_score(a, b) == 0.0
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert active_spans(times, [0, 0.5, 0.4, 0, 0.1], 0.05) == [(1.0, 3.0), (4.0, 5.0)]
    assert scan_times(10.0, 12.0, 1.0) == (10.0, 11.0, 12.0)
    assert scan_times(0.0, 2.5, 1.0)[-1] == 2.5


def test_static_window_keeps_span_and_lowers_frames() -> None:
    w = ChunkWindow(3, 10.0, 20.0, tuple(10.25 + 0.5 * i for i in range(20)), 64, 32)
    assert static_window(w, 0.0) is None
    low = static_window(w, 0.2)
    assert low is not None and (low.start_s, low.end_s, low.index) == (10.0, 20.0, 3)
    assert len(low.sample_times) == 2
    assert static_window(w, 30.0) == w  # never more than planned


def test_scan_finds_every_planted_event(planted: Path) -> None:
    activity = scan_window(planted, 0.0, SECONDS, 1.0)
    spans = active_spans(activity.times, activity.scores, 0.002)
    for start, _, _ in EVENTS:
        assert any(a <= start + 1.0 and b >= start for a, b in spans), (start, spans)
    # Appearing and disappearing, three times over, and nothing else.
    assert len(spans) == 5
    assert scan_window(planted, 20.0, 35.0, 1.0).is_static(0.002)


def test_static_chunks_are_skipped_and_recorded(tmp_path: Path, planted: Path) -> None:
    recorder, store, rid = run(tmp_path, planted, {"skip_static": True})
    chunks = store.chunks.of(rid)
    assert all(c.status == "done" for c in chunks)
    analysed = [(c.start_s, c.end_s) for c in recorder.chunks]
    for start, duration, _ in EVENTS:
        end = start + max(duration, 0.2)
        assert any(a <= start and end <= b for a, b in analysed), (start, analysed)
    skipped = [c for c in chunks if c.provenance.get("skipped_static")]
    assert skipped and len(skipped) + len(recorder.chunks) == len(chunks)
    note = skipped[0].provenance["static"]
    assert note["action"] == "skipped" and note["peak_change"] <= note["threshold"]
    sent = sum(len(c.frames) for c in recorder.chunks)
    planned = sum(c.frames for c in chunks)
    assert sent <= 0.5 * planned


def test_static_chunks_at_a_floor_rate(tmp_path: Path, planted: Path) -> None:
    recorder, store, rid = run(tmp_path, planted, {"skip_static": True, "static_fps": 0.2})
    chunks = store.chunks.of(rid)
    assert len(recorder.chunks) == len(chunks)  # everything goes to the model ...
    low = [c for c in chunks if c.provenance.get("static")]
    assert low and all(c.provenance["static"]["action"] == "low_fps" for c in low)
    assert all(c.provenance["sampling"]["frames"] == 2 for c in low)  # ... static ones sparsely


def test_off_by_default_and_per_watch_override(tmp_path: Path, planted: Path) -> None:
    recorder, store, rid = run(tmp_path / "a", planted, {})
    assert len(recorder.chunks) == len(store.chunks.of(rid))
    assert not any(c.provenance.get("static") for c in store.chunks.of(rid))
    recorder, store, rid = run(tmp_path / "b", planted, {}, watch={"skip_static": True})
    assert len(recorder.chunks) < len(store.chunks.of(rid))


def test_static_spans_merge_runs_of_one_action() -> None:
    skip = {"action": "skipped", "peak_change": 0.001, "threshold": 0.002}
    low = {"action": "low_fps", "peak_change": 0.0015, "threshold": 0.002}
    notes = [
        (0.0, 10.0, skip),
        (8.0, 18.0, {**skip, "peak_change": 0.0012}),
        (16.0, 26.0, None),
        (24.0, 34.0, skip),
        (32.0, 42.0, low),
        (40.0, 50.0, low),
    ]
    spans = merge_static_spans(notes)
    assert [(s.start_s, s.end_s, s.action, s.chunks) for s in spans] == [
        (0.0, 18.0, "skipped", 2),
        (24.0, 34.0, "skipped", 1),
        (32.0, 50.0, "low_fps", 2),
    ]
    assert spans[0].peak_change == 0.0012
    assert "not sent to the model" in spans[0].reason and "floor rate" in spans[2].reason
    assert merge_static_spans([(0.0, 10.0, None)]) == []


def test_report_and_webhook_show_skipped_static_spans(
    tmp_path: Path, planted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Markdown report (read back by markdown-it) lists every skipped span with its reason,
    the webhook's recording.finished carries them, and the spans are exactly the chunks that did
    not reach the model."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    receiver = Receiver()
    try:
        recorder, store, rid = run(
            tmp_path,
            planted,
            {"skip_static": True},
            plugins={
                "markdown_export": {"dir": str(tmp_path / "reports")},
                "webhook": {"url": receiver.url},
            },
        )
    finally:
        receiver.close()
    spans = store.chunks.static_spans(rid)
    skipped = [c for c in store.chunks.of(rid) if c.provenance.get("skipped_static")]
    assert spans and sum(s.chunks for s in spans) == len(skipped)
    sent = [(c.start_s, c.end_s) for c in recorder.chunks]
    for s in spans:  # a span never swallows an analysed chunk
        assert not any(s.start_s <= a and b <= s.end_s for a, b in sent), (s, sent)
    text = (tmp_path / "reports" / "static.framewatch.md").read_text()
    tokens = MarkdownIt("commonmark").parse(text)
    heads = [i for i, t in enumerate(tokens) if t.type == "inline" and t.content == "Static spans"]
    assert len(heads) == 1 and tokens[heads[0] - 1].type == "heading_open"
    items = [
        tokens[i + 2] for i in range(heads[0], len(tokens)) if tokens[i].type == "list_item_open"
    ]
    shown = ["".join(c.content for c in i.children or [] if c.type == "text") for i in items]
    assert len(shown) == len(spans)
    for s, line in zip(spans, shown, strict=True):
        assert line.startswith(
            f"{hms(s.start_s)} to {hms(s.end_s)}, skipped: no change above 0.002"
        )
        assert "not sent to the model" in line
    skipped_s = sum(s.end_s - s.start_s for s in spans)
    assert (
        f"- Not sent to the model (nothing changed): {hms(skipped_s)} in {len(spans)} static spans"
        in text
    )
    (finished,) = [
        b
        for b in (json.loads(r["body"]) for r in receiver.requests)
        if b["type"] == "recording.finished"
    ]
    assert finished["data"]["static_spans"] == [
        {
            "start_s": s.start_s,
            "end_s": s.end_s,
            "action": "skipped",
            "reason": s.reason,
            "peak_change": s.peak_change,
            "threshold": 0.002,
            "chunks": s.chunks,
        }
        for s in spans
    ]
