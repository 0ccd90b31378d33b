"""Test helpers for plugins and the outbox: a store driven directly (no model), hostile text."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.config import Config, parse_config
from daemon.models import Candidate, ChunkWindow, RecordingInfo, Utterance
from daemon.pluginhost.manager import PluginManager, load_plugins
from daemon.store import Store

# Everything a model could write to break an output format.
HOSTILE = (
    "<script>alert('x')</script>",
    "a | b | c",
    "cue --> 00:00:01,000 --> 00:00:02,000",
    "first line\nsecond line\n\n3\n00:00:00,000 --> 00:00:09,000\ninjected cue",
    "\u202eright-to-left override\u202c and \u200fmark\u200e \u2066isolate\u2069",
    "# heading? ![img](http://x/y.png) [link](javascript:alert(1)) `code` **bold** _it_ <b>&amp;</b>",
    "x" * 10_000,
    "- not a list\r\n+ nor this\u2028\u2029\x00\x1b[31m",
    "{\\an8}{\\c&H0000FF&}ass override",
)


def make_config(tmp: Path, plugins: dict[str, Any] | None = None, **sections: Any) -> Config:
    data: dict[str, Any] = {"storage": {"url": f"sqlite:///{tmp / 'fw.db'}"}, **sections}
    if plugins is not None:
        data["plugins"] = plugins
    return parse_config(data, tmp / "config.toml")


def manager(cfg: Config, *extra: tuple[object, str]) -> PluginManager:
    """Built-ins per `cfg`, no entry points (tests stay independent of what is installed)."""
    return load_plugins(cfg, third_party=False, extra=extra)


def ev(start: float, end: float, label: str = "thing", description: str = "happens") -> Candidate:
    return Candidate(start, end, label, description)


def analysed(
    store: Store,
    pm: PluginManager,
    path: Path | str,
    chunks: Sequence[Sequence[Candidate]],
    *,
    chunk_s: float = 60.0,
    finish: str | None = "done",
    reason: str | None = None,
    profile: str | None = "general",
    speech: Sequence[Sequence[Utterance]] | None = None,
    audio: bool = True,
) -> RecordingInfo:
    """Drive the store as the Worker does (register, plan, claim, commit with outbox rows, settle),
    standing in for a real analysis: the events are given, no model runs. With `speech` (one
    list of utterances per chunk) the recording was analysed with speech on, and `audio` says
    whether the file had an audio stream."""
    rec, _ = store.recordings.register(str(path), f"fp:{path}", 1, 0.0, profile=profile)
    windows = [
        ChunkWindow(i, i * chunk_s, (i + 1) * chunk_s, (i * chunk_s,), 64, 64)
        for i in range(len(chunks))
    ]
    store.chunks.plan(rec.id, windows)
    settings = {
        "model": "stand-in",
        "profile": profile,
        "prompt_hash": "abc",
        "sampling": {"fps": 1.0},
    }
    if speech is not None:
        settings["speech"] = {"mode": "on", "model": "stand-in-asr", "audio": audio}
    store.recordings.set_status(
        rec.id, "analyzing", duration_s=chunk_s * len(chunks), settings=settings
    )
    for i, events in enumerate(chunks):
        c = store.chunks.claim(rec.id, "test:1", 60)
        assert c is not None
        said = list(speech[i]) if speech is not None else []
        store.chunks.commit(
            rec.id,
            c.index,
            "test:1",
            list(events),
            {"model": "stand-in"}
            | ({"speech": {"asr": {"model": "stand-in-asr"}}} if speech is not None else {}),
            speech=said,
            notify=pm.subscribers("events_found"),
        )
    if finish == "done":
        return store.recordings.set_status(
            rec.id,
            "done",
            notify=[(p, "recording_finished") for p in pm.subscribers("recording_finished")],
        )
    if finish == "failed":
        return store.recordings.set_status(
            rec.id,
            "failed",
            reason,
            notify=[(p, "recording_failed") for p in pm.subscribers("recording_failed")],
        )
    return store.recordings.get(rec.id)


class Clock:
    """The real time plus an offset a test moves forward (outbox rows are stamped with the real
    time when written, so a frozen clock would see new rows as not yet due)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, s: float) -> None:
        self.offset += s
