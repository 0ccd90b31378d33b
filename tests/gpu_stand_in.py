"""A test plugin for the several-boxes tests: its make_analyzer wraps the real transformers
Qwen3-VL analyzer (the tiny checkpoint) and stands in for a slow GPU or a poison chunk.

- `slow`: file-name substring -> seconds: chunk 0 of such a file first sleeps that long, as a long
  chunk on a slow GPU would take (while the worker's lease heartbeat must keep it).
- `poison`: file-name substrings: chunk 1 of such a file raises every time, as a chunk that
  crashes the model would.
- `ensure_event`: the tiny checkpoint's random weights answer with no events; this adds one per
  chunk (labelled by its index, so overlapping chunks never merge) when the model gave none, so
  notifications have events to carry.

Installed through an entry point (a dist-info folder on PYTHONPATH), like a real plugin.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from daemon.hookspecs import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.config import Config
    from daemon.models import ChunkInput

NAME = "gpu_stand_in"


class StandInSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slow: dict[str, float] = {}
    poison: list[str] = []
    ensure_event: bool = False


class StandInAnalyzer:
    def __init__(self, real: Any, settings: StandInSettings):
        self.real = real
        self.settings = settings
        self.name = real.name

    @property
    def last_stats(self) -> dict[str, Any]:
        return dict(self.real.last_stats)

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        name = os.path.basename(chunk.recording_path)
        if chunk.index == 1 and any(p in name for p in self.settings.poison):
            raise RuntimeError(f"poison chunk {chunk.index} of {name}")
        if chunk.index == 0:
            for part, seconds in self.settings.slow.items():
                if part in name:
                    time.sleep(seconds)  # a slow GPU
        events = list(self.real.analyze(chunk))
        if not events and self.settings.ensure_event:
            events = [
                {
                    "start_s": chunk.start_s,
                    "end_s": chunk.end_s,
                    "label": f"c{chunk.index}",
                    "description": "stand-in",
                }
            ]
        return events

    def provenance(self) -> dict[str, Any]:
        return self.real.provenance()


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: StandInSettings}


@hookimpl
def make_analyzer(config: Config, settings: StandInSettings) -> StandInAnalyzer:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    return StandInAnalyzer(QwenAnalyzer.from_config(config), settings)


def install(site: Path) -> Path:
    """A dist-info folder registering this module as plugin `gpu_stand_in`; put `site` on
    PYTHONPATH and every framewatch process loads it like an installed plugin."""
    info = site / "framewatch_test_gpu_stand_in-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: framewatch-test-gpu-stand-in\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[framewatch]\n{NAME} = tests.gpu_stand_in\n")
    return site
