"""A recording's summary against the store: read its stored events (and speech), run the text
pass (engine/summary.py) on the loaded analyzer, store the result (replacing any earlier one).

The worker calls `summarize_before_settle` when a recording's last chunk ended, before it settles, so the
`recording_finished` notification carries the summary; `framewatch summarize` calls
`summarize_stored` to make it again. Neither decodes video: only stored text goes to the model.
A summary that cannot be made is logged and left out; the recording is done all the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine.summary import DEFAULT_TASK, SummaryFailed, SummarySettings, summarize
from daemon.gpu import CudaFault, GpuLeaseBusy, is_cuda_fault, is_oom, release_memory

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.memory import GpuMemory
    from daemon.models import Summary
    from daemon.store import Store

log = structlog.get_logger(__name__)


class NoSummary(Exception):
    """Why a recording has no summary: off for it, or an analyzer without `summarize`."""


def settings_of(config: Config, path: str, prompt: str | None = None) -> SummarySettings:
    """The summary settings for a recording at `path` ([summary], its [[watch]] folder's prompt,
    or `prompt` given on the command line)."""
    sm = config.summary
    _, task = config.summary_for(path)
    return SummarySettings(
        task=prompt or task or DEFAULT_TASK,
        max_sentences=sm.max_sentences,
        max_chapters=sm.max_chapters,
        max_key_events=sm.max_key_events,
        title_chars=sm.title_chars,
        text_chars=sm.max_chars,
        chapter_title_chars=sm.chapter_title_chars,
        max_new_tokens=sm.max_new_tokens,
        batch_tokens=sm.batch_tokens,
        max_batches=sm.max_batches,
    )


def can_summarize(analyzer: Any) -> bool:
    flag = getattr(analyzer, "can_summarize", None)
    if isinstance(flag, bool):
        return flag
    return callable(getattr(analyzer, "summarize", None))


def _counter(analyzer: Any) -> Any:
    own = getattr(analyzer, "count_tokens", None)
    if not callable(own):
        return None
    try:
        if own("probe") is None:  # a checked plugin analyzer without a tokenizer says None
            return None
    except Exception as exc:  # its tokenizer cannot count: batches are sized by estimate
        log.warning("summary_token_counter_failed", error=f"{type(exc).__name__}: {exc}")
        return None
    return own


def summarize_stored(
    store: Store,
    config: Config,
    analyzer: Any,
    recording_id: int,
    *,
    prompt: str | None = None,
    memory: GpuMemory | None = None,
    force: bool = False,
) -> Summary:
    """Make the recording's summary from what is stored and store it (replacing the old one).
    `force`: even where [summary] (or the folder) turned it off (an explicit `summarize`).
    Raises NoSummary (off, or the analyzer cannot summarise) or SummaryFailed (no usable
    answer)."""
    rec = store.recordings.get(recording_id)
    on, _ = config.summary_for(rec.path)
    if not on and not force:
        raise NoSummary("summary.enabled is false for this recording's folder")
    if not can_summarize(analyzer):
        name = getattr(analyzer, "name", type(analyzer).__name__)
        raise NoSummary(
            f"the analyzer {name!r} has no summarize method, so recordings get no summary "
            '(README, "Your own model")'
        )
    settings = settings_of(config, rec.path, prompt)
    budget = None
    if memory is not None:
        budget = memory.text_tokens(settings.batch_tokens, settings.max_new_tokens)
    provenance = analyzer.provenance() if callable(getattr(analyzer, "provenance", None)) else {}
    made = summarize(
        analyzer.summarize,
        rec.id,
        rec.path,
        float(rec.duration_s or 0.0),
        store.events.of(rec.id),
        store.speech.of(rec.id) if config.summary.speech else (),
        settings,
        count_tokens=_counter(analyzer),
        budget_tokens=budget,
        provenance={
            "model": provenance.get("model"),
            "analyzer": getattr(analyzer, "name", None),
            "backend": provenance.get("backend"),
            **({"prompt": "command line"} if prompt else {}),
        },
    )
    stored = store.summaries.put(made)
    log.info(
        "summary_made",
        recording_id=rec.id,
        batches=made.provenance["batches"],
        merge_passes=made.provenance["merge_passes"],
        corrections=made.provenance["corrections"],
        seconds=made.provenance["seconds"],
    )
    return stored


def before_settle(
    store: Store, config: Config, load: Any, recording_id: int, memory: GpuMemory | None = None
) -> str | None:
    """When the recording is about to be done (its last chunk ended, no alert candidate left),
    make its summary; `load()` gives the analyzer (loading it when needed) or None when it
    cannot now (stopping). Never raises for the summary's own failures (a CUDA fault or a
    GPU lease taken away excepted: the process must end): returns why there is none, or None
    when it was made (or nothing was due)."""
    if store.recordings.outcome(recording_id) != "done":
        return None
    rec = store.recordings.get(recording_id)
    if not config.summary_for(rec.path)[0]:
        return "summary.enabled is false"
    try:
        analyzer = load()
        if analyzer is None:
            return "stopped before the summary"
        summarize_stored(store, config, analyzer, recording_id, memory=memory)
        return None
    except (CudaFault, GpuLeaseBusy):
        raise
    except NoSummary as exc:
        log.info("summary_skipped", recording_id=recording_id, reason=str(exc))
        return str(exc)
    except SummaryFailed as exc:
        log.warning("summary_failed", recording_id=recording_id, error=str(exc))
        return str(exc)
    except Exception as exc:  # the recording stands whatever the text pass does
        if is_cuda_fault(exc):  # the CUDA context is gone: the process must end
            raise CudaFault(f"{type(exc).__name__}: {exc}") from exc
        oom = is_oom(exc)
        if oom:
            log.warning("summary_out_of_memory", recording_id=recording_id)
        else:
            log.exception("summary_failed", recording_id=recording_id)
        why = f"{type(exc).__name__}: {exc}"
    if oom:
        release_memory()  # outside the except block: the traceback no longer holds tensors
    return why


def summarize_before_settle(worker: Any, recording_id: int) -> None:
    """`before_settle` for a Worker (daemon/worker.py, `settle`): its store, config and memory,
    its analyzer once it holds the GPU, and why there is no summary kept in its
    `summary_notes` (`analyze --json` shows it)."""

    def load() -> Any:
        return worker.analyzer if worker.ready() else None

    note = before_settle(worker.store, worker.config, load, recording_id, worker.memory)
    if note is not None:
        worker.summary_notes[recording_id] = note


__all__ = [
    "NoSummary",
    "before_settle",
    "summarize_before_settle",
    "can_summarize",
    "settings_of",
    "summarize_stored",
]
