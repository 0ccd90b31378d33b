"""Speech timing for real: espeak-ng utterances at known offsets between silences (and in white
noise), two overlapping chunks, the real worker and store with the tiny random Whisper (real
faster-whisper and CTranslate2 path, random text). Stored segment boundaries must lie within
0.5 s of the true speech, one copy of the utterance that crosses the chunk border, whichever
chunk runs first: on one box, and on two boxes sharing a PostgreSQL store and a Redis stream.

The visual analyzer is a stand-in that keeps what it was given (the transcript in the prompt is
what these tests look at); tests/test_speech_analyze.py runs the tiny Qwen3-VL with speech."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import Config, parse_config
from daemon.models import ChunkInput, SpeechSegment
from daemon.store import Store
from daemon.worker import Worker
from tests.services import (
    REDIS_URL,
    drop_prefix,
    postgres_available,
    postgres_database,
    redis_available,
    redis_prefix,
)
from tests.speech_media import LECTURE, LECTURE_S, Truth, mux, speech_track

TOLERANCE_S = 0.5
BORDER_S = 20.0  # chunks [0, 20] and [16, 36]


class Recorder:
    """A stand-in analyzer: no events; keeps each chunk it is given."""

    name = "recorder"

    def __init__(self) -> None:
        self.chunks: list[ChunkInput] = []

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        self.chunks.append(chunk)
        return []

    def provenance(self) -> dict[str, Any]:
        return {"model": "recorder"}


def config(tmp: Path, whisper: Path, url: str | None = None, **speech: Any) -> Config:
    return parse_config(
        {
            "storage": {"url": url or f"sqlite:///{tmp / 'fw.db'}"},
            "chunking": {"seconds": 20, "overlap_seconds": 4},
            "sampling": {"fps": 0.5, "max_side": 32},
            "speech": {
                "mode": "on",
                "model": str(whisper),
                "beam_size": 1,
                "max_new_tokens": 16,  # random text runs to the limit: keep it short
                "cpu_threads": 1,
                **speech,
            },
        }
    )


def make_lecture(tmp: Path, noise_db: float | None) -> tuple[Path, Truth]:
    track, truth = speech_track(LECTURE_S, LECTURE, noise_db=noise_db)
    return mux(tmp / "lecture.mp4", track, video_s=LECTURE_S), truth


@pytest.fixture(scope="module", params=[None, -45.0], ids=["silence", "noise-45dB"])
def lecture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Truth]:
    return make_lecture(tmp_path_factory.mktemp("lecture"), request.param)


@pytest.fixture(scope="module")
def quiet_lecture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    return make_lecture(tmp_path_factory.mktemp("quiet"), None)


def assert_on_time(stored: list[SpeechSegment], truth: Truth) -> None:
    found = [(s.start_s, s.end_s) for s in stored]
    assert len(stored) == len(truth), found  # the border utterance once
    for s, (on, off, _) in zip(stored, truth, strict=True):
        assert abs(s.start_s - on) <= TOLERANCE_S and abs(s.end_s - off) <= TOLERANCE_S, (
            found,
            truth,
        )
        assert s.text  # random, but text: the tokenizer and decoder ran
    (border,) = [s for s in stored if s.start_s < BORDER_S < s.end_s]
    assert border.start_s > 16.0  # inside the overlap: both chunks heard it whole


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["in-order", "reversed"])
def test_boundaries_within_half_a_second_across_the_border(
    tmp_path: Path, tiny_whisper: Path, lecture: tuple[Path, Truth], order: tuple[int, int]
) -> None:
    path, truth = lecture
    cfg = config(tmp_path, tiny_whisper)
    store = Store(cfg.storage_url())
    recorder = Recorder()
    worker = Worker(store, cfg, lambda: recorder)
    try:
        rec, _ = worker.ingest(str(path))
        assert [(c.start_s, c.end_s) for c in worker.prepare(rec.id)] == [(0, 20), (16, 36)]
        for index in order:  # as a shared queue hands chunks over: by index
            done = worker.run(rec.id, index)
            assert done is not None and done.status == "done"
        assert worker.settle(rec.id).status == "done"
        stored = store.speech.of(rec.id)
        assert_on_time(stored, truth)

        # Each chunk's prompt carried the transcript of its window, on the frames' clock.
        for chunk in recorder.chunks:
            assert chunk.speech and all(
                u.end_s > chunk.start_s and u.start_s < chunk.end_s for u in chunk.speech
            )
            for u in chunk.speech:
                assert f"[{u.start_s:.1f}-{u.end_s:.1f}] {u.text}" in chunk.prompt
        # The chunk that ran second found the border utterance stored and kept one copy.
        second = store.chunks.get(rec.id, order[1]).provenance["speech"]
        assert second["merged"] == 1 and second["asr"]["model"] == str(tiny_whisper)
        assert second["asr"]["vad"] is True and second["asr"]["speech_pad_ms"] == 100
        assert all(s.provenance["model"] == str(tiny_whisper) for s in stored)
    finally:
        worker.close()
        store.close()


def test_without_context_the_border_utterance_is_cut(
    tmp_path: Path, tiny_whisper: Path, quiet_lecture: tuple[Path, Truth]
) -> None:
    """Why each chunk reads speech.context_s beyond its ends: without, the first chunk stores
    the border utterance cut at the border (and the second drops its whole copy)."""
    path, _ = quiet_lecture
    cfg = config(tmp_path, tiny_whisper, context_s=0)
    store = Store(cfg.storage_url())
    worker = Worker(store, cfg, Recorder)
    try:
        rec, _ = worker.ingest(str(path))
        worker.prepare(rec.id)
        for index in (0, 1):
            worker.run(rec.id, index)
        ends = [s.end_s for s in store.speech.of(rec.id)]
        assert any(abs(e - BORDER_S) < 0.05 for e in ends), ends
    finally:
        worker.close()
        store.close()


@pytest.fixture
def shared_store(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if not postgres_available() or not redis_available():
        pytest.fail("PostgreSQL and Redis must run on 127.0.0.1 (.ci/run starts them)")
    prefix = redis_prefix()
    with postgres_database() as url:
        try:
            yield url, prefix
        finally:
            drop_prefix(REDIS_URL, prefix)


def test_two_boxes_transcribe_the_chunks_they_take_from_the_stream(
    tmp_path: Path,
    tiny_whisper: Path,
    quiet_lecture: tuple[Path, Truth],
    shared_store: tuple[str, str],
) -> None:
    """The several-boxes path: each box's worker takes a chunk from the Redis stream, transcribes
    and commits it (the second-taken chunk commits first); the store holds each utterance once."""
    from daemon.work.redis import RedisSource

    path, truth = quiet_lecture
    url, prefix = shared_store
    base = config(tmp_path, tiny_whisper, url)
    cfg = base.model_copy(
        update={
            "queue": base.queue.model_copy(
                update={"backend": "redis", "url": REDIS_URL, "prefix": prefix}
            )
        }
    )
    stop = threading.Event()
    boxes = []
    for name in ("box-a", "box-b"):
        store = Store(url)
        worker = Worker(store, cfg, Recorder, owner=f"{name}:1")
        boxes.append(
            (store, worker, RedisSource(cfg, store, worker, stop, produce=name == "box-a"))
        )
    try:
        rec, _ = boxes[0][1].ingest(str(path))
        jobs = []
        for _, _, source in boxes:
            job = None
            while job is None:
                job = source.take(stop.is_set)
            jobs.append(job)
        assert sorted(j.index for j in jobs) == [0, 1]
        for (_, worker, source), job in reversed(list(zip(boxes, jobs, strict=True))):
            with source.hold(job) as hold:
                done = worker.run(job.recording_id, job.index)
            source.finish(job, done, hold)
            assert done is not None and done.status == "done"
        store = boxes[0][0]
        assert store.recordings.get(rec.id).status == "done"
        assert_on_time(store.speech.of(rec.id), truth)
        owners = {
            store.chunks.get(rec.id, j.index).provenance["speech"]["asr"]["model"] for j in jobs
        }
        assert owners == {str(tiny_whisper)}
    finally:
        stop.set()
        for store, worker, source in boxes:
            source.close()
            worker.close()
            store.close()


def test_without_the_detector_the_models_timestamps_decide(
    tiny_whisper: Path, quiet_lecture: tuple[Path, Truth]
) -> None:
    """speech.vad = false: the model's own segments over the window. The random model's
    timestamps mean nothing, so only what the code guarantees is checked: segments lie inside
    the audio read and touch the chunk, and nothing fails."""
    from daemon.engine.speech import Transcriber

    path, _ = quiet_lecture
    cfg = parse_config(
        {
            "speech": {
                "mode": "on",
                "model": str(tiny_whisper),
                "vad": False,
                "beam_size": 1,
                "max_new_tokens": 16,
            }
        }
    )
    transcript = Transcriber.from_config(cfg).transcribe(str(path), 0.0, 20.0, LECTURE_S)
    assert transcript.error is None and transcript.window == (0.0, LECTURE_S)
    assert "spans" not in transcript.stats and transcript.utterances
    for u in transcript.utterances:
        assert 0.0 <= u.start_s <= u.end_s <= LECTURE_S and u.start_s < 20.0 and u.end_s > 0.0
