"""A test plugin for `framewatch run` subprocesses: a make_analyzer that answers at once (or after
`sleep_s`, to stand in for a long GPU call), with one event per chunk labelled by its index. It
fails on purpose for files whose name contains one of `fail_names`, and while the file
`fail_if_exists` exists (a transient fault the test can end). Its accept_recording refuses files
whose name contains one of `refuse_names`.

The daemon tests install it through an entry point in a temporary dist-info folder on PYTHONPATH,
so the real plugin loading is exercised and nothing imports torch.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from daemon.hookspecs import hookimpl
from daemon.models import ChunkInput

NAME = "fake"


class FakeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sleep_s: float = 0.0
    fail_names: list[str] = []
    fail_if_exists: str | None = None
    refuse_names: list[str] = []
    # accept_recording sleeps this long for files whose name contains `slow_accept_names`: an
    # intake that hangs (a plugin blocking on a network call).
    accept_sleep_s: float = 0.0
    # analyze waits while this file exists (at most 120 s): a chunk held as long as a test wants.
    hold_while_exists: str | None = None
    slow_accept_names: list[str] = []


class FakeAnalyzer:
    name = "fake"

    def __init__(self, settings: FakeSettings):
        self.sleep_s = settings.sleep_s
        self.settings = settings

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        time.sleep(self.sleep_s)
        hold, waited = self.settings.hold_while_exists, 0.0
        while hold and os.path.exists(hold) and waited < 120:
            time.sleep(0.05)
            waited += 0.05
        name = os.path.basename(chunk.recording_path)
        if any(bad in name for bad in self.settings.fail_names):
            raise RuntimeError(f"fake analyzer refuses {name}")
        marker = self.settings.fail_if_exists
        if marker and os.path.exists(marker):
            raise RuntimeError("fake transient fault")
        # A distinct label per chunk, so overlapping chunks never merge and every chunk stores
        # exactly one event: a chunk stored twice shows up as a duplicate.
        return [
            {
                "start_s": chunk.start_s,
                "end_s": chunk.end_s,
                "label": f"chunk-{chunk.index}",
                "description": f"{len(chunk.frames)} frames",
            }
        ]

    def provenance(self) -> dict[str, Any]:
        return {"model": "fake", "backend": "fake", "sleep_s": self.sleep_s}


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: FakeSettings}


@hookimpl
def make_analyzer(settings: FakeSettings) -> FakeAnalyzer:
    return FakeAnalyzer(settings)


@hookimpl
def accept_recording(path: str, settings: FakeSettings) -> bool | None:
    if any(slow in os.path.basename(path) for slow in settings.slow_accept_names):
        time.sleep(settings.accept_sleep_s)
    return False if any(bad in os.path.basename(path) for bad in settings.refuse_names) else None
