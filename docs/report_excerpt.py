"""Writes the README's Markdown report excerpt: `python -m docs.report_excerpt [FOLDER]` (repository root).

No model runs (no Qwen3-VL weights where it was written): a 2-minute synthetic clip
(daemon.selftest.clips) with a colour per scene; its events stored as the worker stores a chunk's
(tests/outbox.py `analysed`); each event's thumbnail saved by daemon.thumbnails from the clip's
frame at the event's time, sampled by daemon.engine.sampler (what the worker keeps in memory);
the summary's answer given by a labelled stand-in for the model, repaired and stored by the
worker's summary pass (`Worker.settle`); the report written by markdown_export through the
dispatcher. Prints the report.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from daemon.engine.sampler import sample_frames
from daemon.pluginhost.analyzer import check_analyzer
from daemon.pluginhost.dispatch import Dispatcher
from daemon.selftest.clips import BLUE, GREEN, RED, make_video
from daemon.store import Store
from daemon.thumbnails import Thumbnails
from daemon.worker import Worker
from tests.outbox import analysed, ev, make_config, manager

EVENTS = [
    [
        ev(4, 9, "title slide", "Slide reads 'Sprint 42 review'"),
        ev(21, 40, "person speaking", "A woman at the whiteboard lists three open tickets"),
    ],
    [
        ev(75, 96, "screen share", "A terminal shows the test suite passing"),
        ev(112, 118, "person speaking", "A man asks about the release date"),
    ],
]


class StandInModel:
    """STAND-IN for the model's summary answer (no model runs). Its last chapter ends at 125 s
    (past the 120 s recording) and it names an event id, 999, that does not exist: the summary
    pass repairs both."""

    name = "stand-in"

    def analyze(self, chunk: Any) -> list[dict[str, Any]]:
        return []

    def summarize(self, request: Any) -> dict[str, Any]:
        return {
            "title": "Sprint 42 review",
            "summary": "The team reviewed sprint 42: three tickets are still open, and a demo "
            "showed the test suite passing. The release date was questioned at the end.",
            "chapters": [
                {"start_s": 0.0, "end_s": 60.0, "title": "Open tickets"},
                {"start_s": 60.0, "end_s": 125.0, "title": "Demo and questions"},
            ],
            "key_events": [2, 3, 999],
        }


def main(folder: Path) -> str:
    cfg = make_config(folder, {"markdown_export": {}})
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    scenes = [(0.0, RED), (20.0, GREEN), (60.0, BLUE)]
    video = make_video(folder / "standup.mp4", seconds=120.0, fps=2, size=(320, 180), scenes=scenes)
    rec = analysed(store, pm, video, EVENTS, finish=None)
    events = store.events.of(rec.id)
    frames = sample_frames(video, [e.start_s for e in events], 320, 176)
    Thumbnails(cfg.media_dir()).save(events, frames)
    model = check_analyzer(StandInModel(), "stand-in", None)
    worker = Worker(store, cfg, lambda: model, subscribers=pm.subscribers)
    assert worker.settle(rec.id).status == "done"
    Dispatcher(store, pm, cfg).deliver_all()
    store.close()
    return (folder / "standup.framewatch.md").read_text()


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="fw-report-"))
    print(main(where))
