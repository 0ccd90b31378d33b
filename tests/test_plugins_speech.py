"""Plugins get what was said: events_found with its chunk's speech segments, recording_finished
with all of them (frozen SpeechSegment objects, by time); a plugin written before speech existed
keeps working, since an implementation takes only the arguments it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.hookspecs import hookimpl
from daemon.models import EventInfo, RecordingInfo, SpeechSegment, Utterance
from daemon.pluginhost.dispatch import Dispatcher
from daemon.store import Store
from tests.outbox import analysed, ev, make_config, manager


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def events_found(
        self, chunk: Any, events: list[EventInfo], speech: list[SpeechSegment]
    ) -> None:
        self.calls.append(("events_found", chunk.index, [s.text for s in speech]))

    @hookimpl
    def recording_finished(self, recording: RecordingInfo, speech: list[SpeechSegment]) -> None:
        self.calls.append(
            ("recording_finished", [(s.chunk_index, s.start_s, s.text) for s in speech])
        )
        assert all(isinstance(s, SpeechSegment) for s in speech)
        assert recording.settings["speech"]["audio"] is True


class OldPlugin:
    """Written before speech: the spec grew, this implementation did not."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    @hookimpl
    def recording_finished(self, recording: RecordingInfo, events: list[EventInfo]) -> None:
        self.calls.append(len(events))


def test_hook_events_found_and_recording_finished_get_speech(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    listener, old = Listener(), OldPlugin()
    pm = manager(cfg, (listener, "listener"), (old, "old"))
    store = Store(cfg.storage_url())
    analysed(
        store,
        pm,
        tmp_path / "a.mp4",
        [[ev(1, 2)], []],
        speech=[[Utterance(3.0, 4.0, "hello", "en")], [Utterance(61.0, 63.0, "again", "en")]],
    )
    assert Dispatcher(store, pm, cfg).deliver_all() == 4
    assert listener.calls == [
        ("events_found", 0, ["hello"]),
        ("events_found", 1, ["again"]),
        ("recording_finished", [(0, 3.0, "hello"), (1, 61.0, "again")]),
    ]
    assert old.calls == [1]
