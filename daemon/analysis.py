"""One recording, analysed now in the foreground: what `framewatch analyze` (and `selftest`) run.

The file is registered like one the watcher found, then prepared and run chunk by chunk in this
thread with the local work source's policy for failed chunks (daemon/work/local.py), and its notifications are delivered before
returning, so the result is the stored truth: the same JSON whichever way a recording was analysed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemon.files import printable
from daemon.models import event_json, speech_json, summary_json
from daemon.work import Hold, Job
from daemon.work.local import LocalSource
from daemon.worker import ChunkDone, Worker

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.models import RecordingInfo
    from daemon.pluginhost.manager import PluginManager
    from daemon.store import Store
    from daemon.thumbnails import Thumbnails


def analyze_recording(
    worker: Worker,
    recording_id: int,
    *,
    on_chunk: Callable[[ChunkDone], None] | None = None,
    retry_failed: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> RecordingInfo:
    """Run every unfinished chunk of a recording in this thread, then settle it. Resumes at the
    first unfinished chunk; a done recording is left as it is. `retry_failed`: a failed recording
    (or its failed chunks) is analysed again."""
    store = worker.store
    rec = store.recordings.get(recording_id)
    if rec.status in ("done", "skipped"):
        return rec
    if retry_failed:
        store.chunks.retry_failed(recording_id)
        if store.recordings.get(recording_id).status == "failed":
            store.recordings.set_status(recording_id, "queued")  # failed before a chunk ran
    # Problems of the setup (a budget the model does not fit) propagate: they are the operator's.
    if not worker.prepare(recording_id):
        return store.recordings.get(recording_id)
    source = LocalSource(worker.config, store, worker)
    while not should_stop():
        done = worker.run(recording_id, should_stop=should_stop)
        if done is None:
            break
        source.finish(Job(recording_id), done, Hold())
        if on_chunk is not None:
            on_chunk(done)
        if done.status == "released":
            break
    if not should_stop():
        # Candidates the chunks' own passes did not reach (left by an earlier run).
        worker.verify_due(recording_id, should_stop)
    return worker.settle(recording_id)


def result_json(
    store: Store,
    rec: RecordingInfo,
    thumbnails: Thumbnails | None = None,
    summary_note: str | None = None,
) -> dict[str, Any]:
    """A recording as `framewatch analyze --json` prints it: recording, chunks, events (each with
    its `thumbnail`: an absolute path, or null), speech (a chunk whose audio gave no transcript
    says why in `speech_note`), and its summary (`summary_json`; null without one, and then
    `summary_note` says why when this run knows)."""
    chunks = store.chunks.of(rec.id)
    find = thumbnails.find if thumbnails is not None else (lambda _e: None)
    summary = store.summaries.get(rec.id)
    return {
        "recording": {
            "id": rec.id,
            "path": rec.path,
            "status": rec.status,
            "reason": rec.reason,
            "duration_s": rec.duration_s,
        },
        "chunks": [
            {
                "index": c.index,
                "start_s": c.start_s,
                "end_s": c.end_s,
                "frames": c.frames,
                "status": c.status,
                **({"error": c.error} if c.error else {}),
                **({"speech_note": note} if (note := speech_note(c.provenance)) else {}),
            }
            for c in chunks
        ],
        "events": [{**event_json(e), "thumbnail": find(e)} for e in store.events.of(rec.id)],
        "speech": [speech_json(s) for s in store.speech.of(rec.id)],
        "summary": summary_json(summary) if summary is not None else None,
        **({"summary_note": summary_note} if summary is None and summary_note else {}),
    }


def speech_note(provenance: dict[str, Any]) -> str | None:
    """Why a chunk's audio gave no (or only part of a) transcript: its error or note."""
    heard = provenance.get("speech") or {}
    return heard.get("error") or heard.get("note")


def speech_summary(result: dict[str, Any], chunk_provenance: list[dict[str, Any]]) -> str:
    """ ", N speech segments" or ", no speech (why)" for the summary line; "" with speech off."""
    if not any("speech" in p for p in chunk_provenance):
        return ""
    if result["speech"]:
        return f", {len(result['speech'])} speech segments"
    notes = [n for p in chunk_provenance if (n := speech_note(p))]
    return f", no speech ({notes[0] if notes else 'nothing said'})"


def deliver(store: Store, plugins: PluginManager, cfg: Config) -> str:
    """Deliver what is due now (a one-shot run delivers too); says what is left for later."""
    from daemon.pluginhost.dispatch import Dispatcher

    Dispatcher(store, plugins, cfg).deliver_all()
    counts = store.outbox.counts()
    waiting = counts["pending"] + counts["failed"]
    return f"; {waiting} notifications to retry later (framewatch status)" if waiting else ""


def analyze_path(
    cfg: Config,
    path: str,
    *,
    profile: str | None = None,
    on_chunk: Callable[[ChunkDone], None] | None = None,
    store: Store | None = None,
    plugins: PluginManager | None = None,
    worker: Worker | None = None,
) -> tuple[dict[str, Any], str]:
    """Analyse one file into the store and deliver its notifications to plugins; returns the
    JSON result and a one-line summary. A caller analysing several files passes its own
    `worker` (on `store`, made from `plugins`), so the model is loaded once; it closes it."""
    from daemon.pluginhost.manager import load_plugins
    from daemon.store import Store

    plugins = plugins or load_plugins(cfg)
    store = store or Store(cfg.storage_url())
    own = worker is None
    if worker is None:
        worker = Worker(store, cfg, plugins.make_analyzer, subscribers=plugins.subscribers)
    try:
        store.chunks.reap()
        rec, _ = worker.ingest(path, profile)
        if rec.status == "done":
            result = result_json(store, rec, worker.thumbnails, worker.summary_notes.get(rec.id))
            left = deliver(store, plugins, cfg)
            return (
                result,
                f"{printable(path)}: already analysed as recording {rec.id} (same content); nothing to do{left}",
            )
        rec = analyze_recording(worker, rec.id, on_chunk=on_chunk, retry_failed=True)
    finally:
        if own:
            worker.close()
    result = result_json(store, rec, worker.thumbnails, worker.summary_notes.get(rec.id))
    left = deliver(store, plugins, cfg)
    path = printable(path)
    if rec.status in ("failed", "skipped"):
        return result, f"{path}: {rec.status}: {rec.reason}{left}"
    if rec.status in ("queued", "analyzing"):
        # Its chunks are held by another process (a second `analyze` of the same file, or the
        # daemon): this one did nothing, and says so rather than report a result.
        holders = sorted({o for r, _, o, _ in store.chunks.running() if r == rec.id and o})
        by = f" ({', '.join(holders)})" if holders else ""
        return result, (
            f"{path}: recording {rec.id} is being analysed by another process{by}; nothing done "
            f"here (framewatch status shows its progress){left}"
        )
    n = len(result["events"])
    said = speech_summary(result, [c.provenance for c in store.chunks.of(rec.id)])
    return result, f"{path}: {rec.status}, {len(result['chunks'])} chunks, {n} events{said}{left}"
