"""The Analyzer contract every inference backend fulfils, and the error when loading fails."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from daemon.models import ChunkInput


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message names the config setting to change."""


@runtime_checkable
class Analyzer(Protocol):
    """Turns one chunk's frames and prompt into the model's events.

    Built once per process and reused for every chunk; the pipeline owns validation, clamping and
    absolute time, so an Analyzer returns the model's answer as plain dicts.
    """

    name: str

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        """Events for one chunk: dicts with `start_s`, `end_s`, `label`, `description` (and
        possibly extra keys), times on the clock of the frames' `t_s`. An answer that cannot be
        used (cut off, not JSON) gives [] rather than an exception."""
        ...

    def provenance(self) -> dict[str, Any]:
        """What produced the events (model id, dtype, device, backend), stored with each event."""
        ...


__all__ = ["Analyzer", "ModelLoadError"]
