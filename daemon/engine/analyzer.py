"""The Analyzer contract every inference backend (backends/) and plugin analyzer fulfils, and the
errors when one cannot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from daemon.models import ChunkInput


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message names the config setting to change."""


class AnalyzerRefused(ModelLoadError):
    """A plugin's analyzer breaks the contract (daemon/pluginhost/analyzer.py); the message names
    the plugin and what is wrong. A ModelLoadError: `analyze` exits 3 with it, `run` stops."""


class AnalyzerFailed(RuntimeError):
    """A plugin's analyzer failed one chunk; the message names the plugin. `permanent` when it
    broke the contract (an answer that is not a list, a provenance that is not a JSON object: a
    retry cannot cure that), not when it raised (a plugin calling a service may succeed next
    time; retries stay bounded by daemon.max_attempts / queue.max_deliveries)."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


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

    # Optional (checked with getattr; pluginhost/analyzer.py holds plugins to it):
    #   verify(request: VerifyInput) -> dict: an alert candidate's second look;
    #   summarize(request: SummaryInput) -> dict: a text-only pass, the recording's summary
    #     {"title", "summary", "chapters", "key_events"} (engine/summary.py) or {"error": why};
    #     without it a recording gets no summary (provenance note, never a failure);
    #   count_tokens(text) -> int: the model's tokenizer, to cut the summary's batches.

    def provenance(self) -> dict[str, Any]:
        """What produced the events (model id, dtype, device, backend), stored with each event."""
        ...


def new_stats(frames: int) -> dict[str, Any]:
    """The figures a backend reports for one chunk as `last_stats` (kept in the chunk's
    provenance under "analyzer"), before the model ran."""
    return {
        "frames": frames,
        "prompt_tokens": 0,
        "generated_tokens": 0,
        "truncated": False,
        "parse_error": None,
    }


__all__ = ["Analyzer", "AnalyzerFailed", "AnalyzerRefused", "ModelLoadError", "new_stats"]
