"""Test helpers for alerts: a labelled stand-in analyzer (no model) and one recording analysed
with it through the real worker, store, sampler, plugin host and dispatcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.analysis import analyze_recording
from daemon.config import parse_config
from daemon.hookspecs import hookimpl
from daemon.models import ChunkInput, VerifyInput
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from daemon.worker import Worker
from tests.media import make_video
from tests.outbox import manager


class StandIn:
    """A stand-in analyzer the test labels (no model): `hits` maps a rule to the times it
    "happens" (a hit is answered by every chunk whose window holds its start); `verdicts` maps a
    rule to the second look's answer: True, False, "raise" or "garbage"."""

    name = "stand-in"

    def __init__(self, hits: dict[str, list[tuple[float, float]]], verdicts: dict[str, Any]):
        self.hits, self.verdicts = hits, verdicts
        self.chunks: list[ChunkInput] = []
        self.looks: list[VerifyInput] = []

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        self.chunks.append(chunk)
        out: list[dict[str, Any]] = [
            {"start_s": chunk.start_s, "end_s": chunk.start_s + 0.5, "label": f"c{chunk.index}"}
        ]
        for r in chunk.rules:
            for s, e in self.hits.get(r.name, ()):
                if chunk.start_s <= s <= chunk.end_s:
                    out.append({"rule": r.name, "start_s": s, "end_s": e, "why": f"saw {r.name}"})
        return out

    def verify(self, request: VerifyInput) -> Any:
        self.looks.append(request)
        v = self.verdicts.get(request.rule, True)
        if v == "raise":
            raise RuntimeError("camera offline")
        if v == "garbage":
            return "yes"
        return {"happened": v, "reason": f"{'I see' if v else 'no sign of'} {request.rule}"}


class NoVerify(StandIn):
    """The same stand-in without the optional verify()."""

    verify = None  # type: ignore[assignment]


class Plugin:
    """Registers a stand-in analyzer and records alert_fired calls."""

    def __init__(self, analyzer: StandIn):
        self.analyzer = analyzer
        self.fired: list[tuple[int, str, str, str]] = []
        self.pm: Any = None

    @hookimpl
    def make_analyzer(self) -> StandIn:
        return self.analyzer

    @hookimpl
    def alert_fired(self, recording: Any, alert: Any, delivery_id: str) -> None:
        self.fired.append((alert.id, alert.rule, alert.state, delivery_id))


def run(
    tmp_path: Path,
    analyzer: StandIn,
    rules: list[dict[str, Any]],
    *,
    name: str = "cam.mp4",
    seconds: float = 8.0,
    alerting: dict[str, Any] | None = None,
    plugins: dict[str, Any] | None = None,
    deliver: bool = True,
    extra: list[tuple[object, str]] = (),  # type: ignore[assignment]
) -> tuple[Store, Plugin, Any, Any]:
    """Analyse one clip of `seconds` in tmp_path/cam with `analyzer` and `rules` (chunks of 4 s
    overlapping by 1 s, 1 fps, 64 px), then deliver what is due (unless not `deliver`)."""
    folder = tmp_path / "cam"
    folder.mkdir(exist_ok=True)
    video = make_video(folder / name, seconds=seconds, fps=10, size=(320, 180), counter=True)
    cfg = parse_config(
        {
            "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
            "chunking": {"seconds": 4, "overlap_seconds": 1},
            "sampling": {"fps": 1, "max_side": 64},
            "alerts": rules,
            "alerting": {"verify_fps": 4, "verify_max_side": 160, **(alerting or {})},
            **({"plugins": plugins} if plugins is not None else {}),
        },
        tmp_path / "config.toml",
    )
    plugin = Plugin(analyzer)
    pm = manager(cfg, (plugin, "standin"), *extra)
    store = Store(cfg.storage_url())
    worker = Worker(store, cfg, pm.make_analyzer, subscribers=pm.subscribers)
    rec, _ = worker.ingest(str(video))
    plugin.pm = pm  # the plugin manager, for a test that delivers later
    rec = analyze_recording(worker, rec.id)
    worker.close()
    if deliver:
        Dispatcher(store, pm, cfg).deliver_all()
    return store, plugin, rec, cfg


def decided(store: Store, recording_id: int, outcomes: list[tuple[str, float, str]]) -> list[Any]:
    """Alerts of a stored recording, decided as the worker would: (rule, start_s, outcome) each,
    fired when confirmed. Returns them (a standing-in for the second look; no model)."""
    import numpy as np

    from daemon.engine.alerts import thumbnail_jpeg
    from daemon.models import RuleHit
    from daemon.store.alerts import insert_candidates

    picture = thumbnail_jpeg(np.full((36, 64, 3), 200, dtype=np.uint8))
    with store.db.session() as s:
        insert_candidates(
            s,
            recording_id,
            0,
            [RuleHit(rule, t, t + 2, f"saw {rule}", t, picture, t) for rule, t, _ in outcomes],
            {},
            {"model": "stand-in"},
        )
    out = []
    for rule, _, outcome in outcomes:
        a = store.alerts.claim("test:1", 60, recording_id)
        assert a is not None and a.rule == rule
        out.append(
            store.alerts.decide(
                a.id, "test:1", outcome, f"{outcome} by the test", fired=outcome == "confirmed"
            )
        )
    return out
