"""/metrics: Prometheus metrics computed from the store at scrape time, on SQLite and PostgreSQL,
the same from every process that reads the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from daemon.models import ChunkWindow
from daemon.store import Store
from daemon.store.tables import Chunk
from plugins.web.app import create_app
from tests.eventdata import CAMERA, LECTURE, OWNER, ev, populate, provenance

GIB = 2**30


def scrape(store: Store) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    r = TestClient(create_app(store)).get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    return r.text, values


def test_metrics_from_the_store(url: str, tmp_path: Path) -> None:
    store = Store(url)
    try:
        # Two analysed recordings (3 chunks: 1800 + 1800 + 600 s of video), GPU peaks measured.
        populate(
            store,
            tmp_path / "lecture.mp4",
            LECTURE,
            chunk_s=1800,
            prov=provenance(analyzer={"peak_gib": 11.5}, memory={"budget_gib": 20.0}),
        )
        populate(
            store,
            tmp_path / "camera.mp4",
            CAMERA,
            chunk_s=600,
            prov=provenance(analyzer={"peak_gib": 18.0}, memory={"budget_gib": 16.0}),
        )
        # One queued with a chunk failed and one pending; one notification failing, one dead.
        rec, _ = store.recordings.register(str(tmp_path / "new.mp4"), "fp:new", 1, 0.0)
        store.chunks.plan(
            rec.id, [ChunkWindow(i, i * 60.0, i * 60.0 + 60, (1.0,), 64, 64) for i in range(2)]
        )
        store.chunks.claim(rec.id, OWNER, 60)
        store.chunks.fail(rec.id, 0, "boom", owner=OWNER)
        store.outbox.add([("webhook", "recording_finished", rec.id, None)] * 3)
        ids = [d.id for d in store.outbox.claim(["webhook"], 2, 60)]
        store.outbox.failed(ids[0], "HTTP 500", next_attempt_at=0.0)
        store.outbox.failed(ids[1], "HTTP 410", next_attempt_at=None)
        # Analysis took half the video's length in wall-clock time.
        with store.db.session() as s:
            for c in s.exec(select(Chunk).where(Chunk.status == "done")).all():
                c.started_at, c.finished_at = 1000.0, 1000.0 + (c.end_s - c.start_s) / 2
                s.add(c)

        text, m = scrape(store)
        assert m[("framewatch_recordings", (("state", "done"),))] == 2
        assert m[("framewatch_recordings", (("state", "queued"),))] == 1
        assert m[("framewatch_queue_depth", ())] == 1
        assert m[("framewatch_chunks", (("state", "done"),))] == 3
        assert m[("framewatch_chunks", (("state", "failed"),))] == 1
        assert m[("framewatch_chunks", (("state", "pending"),))] == 1
        assert m[("framewatch_chunks_analysed_total", ())] == 3
        assert m[("framewatch_video_analysed_seconds_total", ())] == 4200
        assert m[("framewatch_analysis_busy_seconds_total", ())] == 2100
        assert m[("framewatch_realtime_factor", ())] == pytest.approx(0.5)
        assert m[("framewatch_gpu_memory_peak_bytes", ())] == 18.0 * GIB
        assert m[("framewatch_gpu_memory_peak_ratio", ())] == pytest.approx(18.0 / 16.0)
        assert ("framewatch_gpu_memory_budget_bytes", ()) in m
        assert m[("framewatch_deliveries", (("plugin", "webhook"), ("state", "pending")))] == 1
        assert m[("framewatch_deliveries", (("plugin", "webhook"), ("state", "failed")))] == 1
        assert m[("framewatch_deliveries", (("plugin", "webhook"), ("state", "dead")))] == 1
        assert "# TYPE framewatch_chunks_analysed_total counter" in text

        # Another process over the same store reports the same; new work shows at the next scrape.
        other = Store(url)
        try:
            assert scrape(other)[0] == text
            claimed = other.chunks.claim(rec.id, OWNER, 60)
            assert claimed is not None
            other.chunks.commit(
                rec.id,
                claimed.index,
                OWNER,
                [ev(61, 62, "x", "y")],
                provenance(analyzer={"peak_gib": 30.0}, memory={"budget_gib": 40.0}),
            )
            m2 = scrape(store)[1]
            assert m2[("framewatch_chunks_analysed_total", ())] == 4
            assert m2[("framewatch_gpu_memory_peak_bytes", ())] == 30.0 * GIB
            assert (
                m2[("framewatch_gpu_memory_budget_bytes", ())] == 40.0 * GIB
            )  # the latest chunk's
        finally:
            other.close()
    finally:
        store.close()


def test_an_empty_store_has_no_made_up_numbers(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        text, m = scrape(store)
        assert m[("framewatch_queue_depth", ())] == 0
        assert m[("framewatch_chunks_analysed_total", ())] == 0
        # No chunk measured yet: no ratio or GPU value rather than a zero that looks like data.
        for name in (
            "framewatch_realtime_factor",
            "framewatch_gpu_memory_peak_bytes",
            "framewatch_gpu_memory_budget_bytes",
            "framewatch_gpu_memory_peak_ratio",
        ):
            assert name not in text
        create_app(store)  # a second app, a second registry: nothing global to collide in
        assert scrape(store)[0] == text
    finally:
        store.close()


def test_alerts_counted_by_rule_and_outcome(tmp_path: Path) -> None:
    from tests.alertdata import decided

    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        rec = populate(store, tmp_path / "cam.mp4", CAMERA, chunk_s=600)
        decided(
            store,
            rec.id,
            [
                ("fence", 10.0, "confirmed"),
                ("fence", 400.0, "rejected"),
                ("fall", 50.0, "confirmed"),
            ],
        )
        _, values = scrape(store)
        assert (
            values[("framewatch_alerts_total", (("outcome", "confirmed"), ("rule", "fence")))] == 1
        )
        assert (
            values[("framewatch_alerts_total", (("outcome", "rejected"), ("rule", "fence")))] == 1
        )
        assert (
            values[("framewatch_alerts_total", (("outcome", "confirmed"), ("rule", "fall")))] == 1
        )
    finally:
        store.close()
