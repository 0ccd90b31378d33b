"""A picture for every event: the frame nearest its evidence time, saved while the chunk's frames
are in memory, named by event id under storage.media_dir, and kept consistent with the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from daemon.analysis import analyze_recording, result_json
from daemon.cli import main
from daemon.config import load_config
from daemon.models import ChunkInput, EventInfo, Frame, thumbnail_path
from daemon.selftest.clips import _colour_at
from daemon.store import Store
from daemon.thumbnails import MAX_SIDE, Thumbnails, encode_jpeg, frames_for, nearest_frame
from daemon.worker import Worker
from tests.media import BLUE, GREEN, RED, make_video
from tests.test_analyze import write_config

# Scene changes between sample times (fps 1 samples whole and half seconds at most), so the
# frame nearest an event's time has one scene's colour, known in advance.
SCENES = [(0.0, RED), (3.3, GREEN), (6.6, BLUE)]


def mean_rgb(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0)


def assert_colour(path: str | Path, colour: tuple[int, int, int]) -> None:
    got = mean_rgb(path)
    assert np.abs(got - np.array(colour)).max() < 40, f"{path}: {got} is not {colour}"


class EveryFrame:
    """A stand-in analyzer (no model): one event at every frame it is shown, labelled by the
    run, so each event's time is a known frame time and a second run gives new events."""

    name = "every-frame"

    def __init__(self) -> None:
        self.run = 0

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        return [
            {
                "start_s": f.t_s,
                "end_s": min(f.t_s + 0.2, chunk.end_s),
                "label": f"run{self.run}-{i}",
                "description": "stand-in",
            }
            for i, f in enumerate(chunk.frames)
        ]

    def provenance(self) -> dict[str, Any]:
        return {"model": "every-frame", "backend": "stand-in"}


class PlusMarkers:
    """The real analyzer (the tiny Qwen3-VL checkpoint) with stand-in events added: the random
    weights answer no events, so one event per frame, labelled as a stand-in, is added to what
    the model said. Sampling, the model call, normalising, commit and thumbnails are real."""

    def __init__(self, inner: Any):
        self.inner, self.name, self.model_events = inner, inner.name, 0

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        said = self.inner.analyze(chunk)
        self.model_events += len(said)
        return said + EveryFrame().analyze(chunk)

    def provenance(self) -> dict[str, Any]:
        return self.inner.provenance()


def test_analyze_json_thumbnails_show_the_frame_at_each_event_time(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    clip = make_video(tmp_path / "scenes.mp4", seconds=10, scenes=SCENES)
    cfg_path = write_config(tmp_path, tiny_model)
    cfg = load_config(cfg_path)
    analyzer = PlusMarkers(QwenAnalyzer.from_config(cfg))
    store = Store(cfg.storage_url())
    w = Worker(store, cfg, lambda: analyzer)
    rec, _ = w.ingest(str(clip))
    assert analyze_recording(w, rec.id).status == "done"
    out = result_json(store, rec, w.thumbnails)
    w.close()
    media = tmp_path / "media"  # the default: beside the SQLite store's file
    assert len(out["events"]) >= 10
    for e in out["events"]:
        assert e["thumbnail"] == str(thumbnail_path(media, rec.id, e["id"]))
        assert_colour(e["thumbnail"], _colour_at(SCENES, e.get("evidence_s", e["start_s"])))
    files = sorted(p.name for p in media.glob("*/*.jpg"))
    assert files == sorted(f"{e['id']}.jpg" for e in out["events"])

    capsys.readouterr()  # the run's log lines
    assert main(["events", "--config", str(cfg_path), "--json"]) == 0
    listed = [e for e in json.loads(capsys.readouterr().out) if e["kind"] == "event"]
    assert sorted((e["id"], e["thumbnail"]) for e in listed) == sorted(
        (e["id"], e["thumbnail"]) for e in out["events"]
    )


def test_thumbnails_match_frames_and_follow_reruns(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "big.mp4", seconds=10, size=(640, 360), scenes=SCENES)
    media = tmp_path / "pictures"
    cfg = load_config(
        write_config(
            tmp_path,
            tmp_path / "unused-model",
            sampling__max_side=640,
            storage__media_dir="pictures",  # relative: beside config.toml
        )
    )
    assert cfg.media_dir() == media
    stand_in = EveryFrame()
    store = Store(cfg.storage_url())
    w = Worker(store, cfg, lambda: stand_in)
    rec, _ = w.ingest(str(clip))
    assert analyze_recording(w, rec.id).status == "done"
    events = store.events.of(rec.id)
    assert len(events) >= 10
    for e in events:
        path = thumbnail_path(media, rec.id, e.id)  # type: ignore[arg-type]
        assert_colour(path, _colour_at(SCENES, e.evidence_s or e.start_s))
        with Image.open(path) as im:
            assert max(im.size) == MAX_SIDE  # frames are 640x352 (multiples of 32)
    json_events = result_json(store, rec, w.thumbnails)["events"]
    assert all(
        j["thumbnail"] == str(w.thumbnails.path(e))
        for j, e in zip(json_events, events, strict=True)
    )

    # Chunk 0 run again (a stand-in for a redelivered chunk: its row put back to pending): its
    # events are replaced by new ids, and the old ids' files go with them.
    before = {e.id for e in events if e.chunk_index == 0}
    db = sqlite3.connect(tmp_path / "fw.db")
    db.execute("update chunk set status='pending' where `index`=0")
    db.execute("update recording set status='analyzing'")
    db.commit()
    stand_in.run = 1
    assert w.run(rec.id) is not None
    after = store.events.of(rec.id)
    assert before and not before & {e.id for e in after}
    files = {p.name for p in (media / str(rec.id)).iterdir()}
    assert files == {f"{e.id}.jpg" for e in after}

    # A deleted recording: its folder goes.
    w.thumbnails.remove_recording(rec.id)
    assert not (media / str(rec.id)).exists()
    assert all(w.thumbnails.find(e) is None for e in after)
    w.close()


def test_nearest_frame_and_size() -> None:
    img = np.zeros((90, 160, 3), np.uint8)
    frames = [Frame(t, img) for t in (0.0, 1.0, 2.0)]
    assert nearest_frame(frames, -3).t_s == 0.0  # type: ignore[union-attr]
    assert nearest_frame(frames, 1.4).t_s == 1.0  # type: ignore[union-attr]
    assert nearest_frame(frames, 1.6).t_s == 2.0  # type: ignore[union-attr]
    assert nearest_frame(frames, 9).t_s == 2.0  # type: ignore[union-attr]
    assert nearest_frame([], 1.0) is None
    # Only the frames some event's picture comes from are kept until the commit.
    picked = frames_for(
        [
            EventInfo(1, 1, 0, 1.4, 3.0, "a", ""),
            EventInfo(2, 1, 0, 0.1, 1.0, "b", "", evidence_s=1.9),
        ],
        frames,
    )
    assert [f.t_s for f in picked] == [1.0, 2.0]
    # Never enlarged: a frame smaller than MAX_SIDE keeps its size.
    with Image.open(__import__("io").BytesIO(encode_jpeg(img))) as im:
        assert im.size == (160, 90)


def test_an_event_without_a_frame_has_no_stale_picture(tmp_path: Path) -> None:
    thumbs = Thumbnails(tmp_path)
    e = EventInfo(7, 1, 0, 1.0, 2.0, "x", "y")
    thumbs.save([e], [Frame(1.0, np.full((10, 10, 3), 200, np.uint8))])
    assert thumbs.find(e) == str(tmp_path / "1" / "7.jpg")
    # The same id stored again (SQLite may reuse a deleted id) for an event with no frame.
    thumbs.save([e], [])
    assert thumbs.find(e) is None


def test_default_media_dir_and_eval_runs_keep_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.config import parse_config
    from daemon.evaluation import RunSpec, run_config

    assert parse_config({"storage": {"url": f"sqlite:///{tmp_path}/x/fw.db"}}).media_dir() == (
        tmp_path / "x" / "media"
    )
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    pg = parse_config({"storage": {"url": "postgresql+psycopg://fw:pw@db/fw"}})
    other = parse_config({"storage": {"url": "postgresql+psycopg://fw@db2/fw"}})
    assert pg.media_dir().parent == tmp_path / "state" / "media"
    assert pg.media_dir().name.startswith("fw-") and "pw" not in pg.media_dir().name
    assert other.media_dir() != pg.media_dir()  # two stores never share (or prune) a folder
    # An eval run in a temporary store never writes (or prunes) the configured media folder.
    cfg = write_config(tmp_path, tmp_path / "m", storage__media_dir=str(tmp_path / "shared"))
    assert load_config(cfg).media_dir() == tmp_path / "shared"
    run = run_config(str(cfg), RunSpec("x"), str(tmp_path / "run1"))
    assert run.media_dir() == tmp_path / "run1" / "media"
