"""The `framewatch` command. Nothing heavy is imported at start-up: torch loads only to analyse."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon import __version__
from daemon.config import Config, ConfigError, load_config
from daemon.models import hms
from daemon.gpu import EXIT_CUDA, CudaFault, GpuLeaseBusy

if TYPE_CHECKING:
    from daemon.models import EventInfo, RecordingInfo
    from daemon.plugins import PluginManager
    from daemon.store import Store

# Exit codes: 0 ok; 1 the recording failed (bad input, failed chunks); 2 usage or config error;
# 3 the model could not be loaded or does not fit the GPU memory budget; EXIT_CUDA (75, in
# daemon/gpu.py) a CUDA fault ended the process and its chunk is to be run again.
EXIT_FAILED, EXIT_USAGE, EXIT_MODEL = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("FRAMEWATCH_CONFIG")
    return load_config(path)


def _store(cfg: Config) -> Store:
    from daemon.store import Store

    return Store(cfg.storage_url())


def _event_json(e: EventInfo, path: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "chunk": e.chunk_index,
        "start_s": e.start_s,
        "end_s": e.end_s,
        "label": e.label,
        "description": e.description,
    }
    if path is not None:
        out["recording"] = path
    if e.confidence is not None:
        out["confidence"] = e.confidence
    if e.evidence_s is not None:
        out["evidence_s"] = e.evidence_s
    out["provenance"] = e.provenance
    return out


def _result_json(store: Store, rec: RecordingInfo) -> dict[str, Any]:
    chunks = store.chunks(rec.id)
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
            }
            for c in chunks
        ],
        "events": [_event_json(e) for e in store.events(rec.id)],
    }


def default_analyzer_factory(cfg: Config, plugins: PluginManager | None = None):  # type: ignore[no-untyped-def]
    """The analyzer from the plugins' make_analyzer (by default the Qwen3-VL transformers
    backend), built on first use: bad input never pays for loading a model."""

    def make():  # type: ignore[no-untyped-def]
        from daemon.plugins import load_plugins

        return (plugins or load_plugins(cfg)).make_analyzer()

    return make


def _plugins(cfg: Config) -> PluginManager:
    from daemon.plugins import load_plugins

    return load_plugins(cfg)


def _deliver(store: Store, plugins: PluginManager, cfg: Config) -> str:
    """Deliver what is due now (a one-shot run delivers too); says what is left for later."""
    from daemon.dispatch import Dispatcher

    Dispatcher(store, plugins, cfg).deliver_all()
    counts = store.delivery_counts()
    waiting = counts["pending"] + counts["failed"]
    return f"; {waiting} notifications to retry later (framewatch status)" if waiting else ""


def analyze_path(
    cfg: Config,
    path: str,
    *,
    profile: str | None = None,
    progress: bool = False,
    store: Store | None = None,
    plugins: PluginManager | None = None,
) -> tuple[dict[str, Any], str]:
    """Analyse one file into the store and deliver its notifications to plugins; returns the
    JSON result and a one-line summary."""
    from daemon.worker import Worker

    plugins = plugins or _plugins(cfg)
    store = store or _store(cfg)
    make = default_analyzer_factory(cfg, plugins)
    worker = Worker(store, cfg, make, subscribers=plugins.subscribers)
    store.reap()
    rec, created = worker.ingest(path, profile)
    if rec.status == "done":
        result = _result_json(store, rec)
        left = _deliver(store, plugins, cfg)
        return result, f"{path}: already analysed as recording {rec.id} (same content); nothing to do{left}"
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=None, unit="chunk", desc=Path(path).name, file=sys.stderr)

    def on_chunk(done: Any) -> None:
        if bar is not None:
            bar.total = done.chunk.chunks_total
            bar.update(1)
            bar.set_postfix_str(f"chunk {done.chunk.index + 1}/{done.chunk.chunks_total} {done.status}")

    try:
        rec = worker.process(rec.id, on_chunk=on_chunk, retry_failed=True)
    finally:
        if bar is not None:
            bar.close()
    result = _result_json(store, rec)
    left = _deliver(store, plugins, cfg)
    if rec.status == "failed":
        return result, f"{path}: failed: {rec.reason}{left}"
    n = len(result["events"])
    return result, f"{path}: {rec.status}, {len(result['chunks'])} chunks, {n} events{left}"


def cmd_analyze(args: argparse.Namespace) -> int:
    from daemon.engine.backends import ModelLoadError

    cfg = _config(args)
    path = os.path.abspath(args.file)
    if not os.path.exists(path):
        raise CliError(f"{args.file}: no such file")
    try:
        result, summary = analyze_path(
            cfg, path, profile=args.profile, progress=not args.json and sys.stderr.isatty()
        )
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for e in result["events"]:
            print(f"[{hms(e['start_s'])}] {e['label']}: {e['description']}")
    failed = result["recording"]["status"] == "failed"
    print(("framewatch: error: " if failed else "") + summary, file=sys.stderr)
    return EXIT_FAILED if failed else 0


def cmd_events(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = os.path.abspath(args.recording) if args.recording else None
    if args.json:
        store = _store(cfg)
        rec = store.find_recording(path) if path else None
        if path and rec is None:
            return 0
        rows = store.events_with_paths()
        if rec is not None:
            rows = [(e, p) for e, p in rows if e.recording_id == rec.id]
        print(json.dumps([_event_json(e, p) for e, p in rows], indent=2))
        return 0
    # The plain listing reads through SQLAlchemy Core (daemon/listing.py), not the Store: no ORM
    # to import, one read-only snapshot, rows as the driver gives them, one write. 100,000 events
    # list in 0.68 s on a 2-core box, 0.39 s of it start-up (bench/run.py, store target).
    from daemon import listing
    from daemon.db import open_engine, read_only

    engine = open_engine(cfg.storage_url())
    try:
        with read_only(engine) as conn, conn.begin():
            recording_id = listing.recording_id_at(conn, path) if path else None
            if path and recording_id is None:
                return 0
            rows = listing.event_lines(conn, recording_id)
    finally:
        engine.dispose()
    # Events share their whole seconds (many per second, or a start with the previous end):
    # formatting each second once took a quarter of the command off.
    clock = functools.cache(hms)
    lines = [f"{p} [{clock(int(a))}-{clock(int(b))}] {label}: {desc}" for p, a, b, label, desc in rows]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _since(value: str) -> float:
    """--since: an ISO date or date-time (local time unless it carries an offset) -> Unix time."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"not a date: {value!r} (e.g. 2025-03-01 or 2025-03-01T14:30)"
        ) from None


def cmd_search(args: argparse.Namespace) -> int:
    cfg = _config(args)
    store = _store(cfg)
    recording_id = None
    if args.recording:
        rec = store.find_recording(os.path.abspath(args.recording))
        if rec is None:
            raise CliError(f"{args.recording}: no such recording in the store")
        recording_id = rec.id
    hits = store.search(
        args.query, recording_id=recording_id, since=args.since, labels=args.label or (),
        limit=args.limit,
    )
    if args.json:
        print(json.dumps([h.as_dict() for h in hits], indent=2))
        return 0
    if not hits:
        print(f"no events match {args.query!r}", file=sys.stderr)
    for h in hits:
        e = h.event
        prov = e.provenance
        source = ", ".join(
            f"{k} {str(prov[k])[:12] if k == 'prompt_hash' else prov[k]}"
            for k in ("model", "prompt_hash") if prov.get(k)
        )
        print(f"{h.recording_path} {h.hms} {e.label}: {e.description}")
        print(f"    {h.link}" + (f"  ({source})" if source else ""))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The web plugin's API, pages and /metrics in the foreground, over the configured store."""
    cfg = _config(args)
    from plugins.web import WebSettings, build

    settings = _plugins(cfg).settings.get("web") or WebSettings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.model_copy(update=overrides)  # type: ignore[union-attr]
    store = _store(cfg)
    try:
        _, server = build(cfg, store, settings)  # type: ignore[arg-type]
        print(f"framewatch: serving {server.url}", file=sys.stderr)
        server.run()
    except (RuntimeError, OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    store = _store(cfg)
    recs = store.recordings()
    current = None
    # The chunk on the GPU now (the oldest running one when several processes share the store).
    running = {rid: (index, owner, started) for rid, index, owner, started in reversed(store.running_chunks())}
    for rec, done, total in sorted(recs, key=lambda r: (r[0].id not in running, r[0].id)):
        if rec.id in running or rec.status == "analyzing":
            index, owner, started = running.get(rec.id, (None, None, None))
            current = {
                "id": rec.id,
                "path": rec.path,
                "chunks_done": done,
                "chunks_total": total,
                "chunk": index,
                "chunk_started_at": started,
                "owner": owner,
            }
            break
    from daemon.store import RECORDING_STATES

    counts = {state: sum(1 for r, _, _ in recs if r.status == state) for state in RECORDING_STATES}
    data = {
        "recordings": [
            {
                "id": r.id,
                "path": r.path,
                "status": r.status,
                "reason": r.reason,
                "chunks_done": done,
                "chunks_total": total,
            }
            for r, done, total in recs
        ],
        "current": current,
        "counts": counts,
        # Notifications not yet in their plugins' hands: pending (untried), failed (retrying), dead.
        "deliveries": store.delivery_counts(),
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    if not recs:
        print("no recordings")
    else:
        print(", ".join(f"{n} {state}" for state, n in counts.items()))
    if current is not None and current["chunk"] is not None:
        print(f"now: {current['path']} chunk {current['chunk'] + 1}/{current['chunks_total']}")
    for r, done, total in recs:
        reason = f" ({r.reason})" if r.reason else ""
        print(f"{r.id:>5} {r.status:<9} {done}/{total} {r.path}{reason}")
    d = data["deliveries"]
    if d["pending"] or d["failed"] or d["dead"]:
        print(f"deliveries: {d['pending']} pending, {d['failed']} failed (retrying), {d['dead']} dead")
        for name, c in sorted(d["plugins"].items()):
            if c["pending"] or c["failed"] or c["dead"]:
                print(f"  {name}: {c['pending']} pending, {c['failed']} failed, {c['dead']} dead")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    cfg = _config(args)
    entries = _plugins(cfg).entries()
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return 0
    for e in entries:
        state = "active" if e.active else f"inactive: {e.reason}"
        print(f"{e.name} {e.version or '?'} ({e.source}; {state})")
        print(f"  hooks: {', '.join(e.hooks) or '-'}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from daemon.dispatch import Dispatcher

    if args.all == bool(args.recording):
        raise CliError("replay: give a RECORDING, or --all with --plugin")
    if args.all and not args.plugin:
        raise CliError("replay --all needs --plugin NAME (it back-fills one plugin)")
    cfg = _config(args)
    plugins = _plugins(cfg)
    store = _store(cfg)
    ids: list[int] | None = None
    if args.recording:
        rec = store.find_recording(os.path.abspath(args.recording))
        if rec is None and args.recording.isdigit():
            try:
                rec = store.recording(int(args.recording))
            except KeyError:
                rec = None
        if rec is None:
            raise CliError(f"{args.recording}: no such recording in the store")
        ids = [rec.id]
    dispatcher = Dispatcher(store, plugins, cfg)
    try:
        queued = dispatcher.replay(ids, args.plugin)
    except LookupError as exc:
        raise CliError(str(exc)) from None
    delivered = dispatcher.deliver_all()
    counts = store.delivery_counts()
    print(
        f"queued {queued} notifications, delivered {delivered}; "
        f"{counts['pending'] + counts['failed']} waiting for a retry, {counts['dead']} dead",
        file=sys.stderr,
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """The chunk plan of one file with its memory estimate; arithmetic only (no torch)."""
    from daemon.engine.backends import ModelLoadError
    from daemon.engine.probe import UnsupportedMedia
    from daemon.plan_report import format_report, plan_report

    cfg = _config(args)
    if not os.path.exists(args.file):
        raise CliError(f"{args.file}: no such file")
    try:
        report = plan_report(cfg, os.path.abspath(args.file))
    except UnsupportedMedia as exc:
        raise CliError(f"{args.file}: {exc.reason}", EXIT_FAILED) from None
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The service: watch folders and analyse what lands in them until SIGTERM."""
    from daemon.app import run
    from daemon.engine.backends import ModelLoadError

    cfg = _config(args)
    try:
        return run(cfg)
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None


def cmd_worker(args: argparse.Namespace) -> int:
    """Analyse only: take chunk jobs from the shared queue (queue.backend = "redis"), or from the
    store's queue, until SIGTERM; watch nothing (another box runs `framewatch run`)."""
    from daemon.app import run
    from daemon.engine.backends import ModelLoadError

    cfg = _config(args)
    try:
        return run(cfg, watch=False)
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _plugins(cfg)  # plugin settings are part of the config: [plugins.<name>] tables
    print(f"{cfg.source or '(defaults)'}: ok", file=sys.stderr)
    return 0


def cmd_make_test_model(args: argparse.Namespace) -> int:
    from daemon.testmodel import make_test_model

    out = make_test_model(args.dir)
    print(out)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """Whole pipeline on a generated clip with the tiny offline model, in a temporary folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from daemon.config import parse_config
    from daemon.synth import make_video
    from daemon.testmodel import make_test_model

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framewatch-selftest-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        model = make_test_model(root / "model")
        clip = make_video(
            root / "clip.mp4",
            seconds=12.0,
            size=(320, 180),
            scenes=[(0.0, (200, 30, 30)), (4.0, (30, 200, 30)), (8.0, (30, 30, 200))],
        )
        cfg = parse_config(
            {
                "storage": {"url": f"sqlite:///{root / 'selftest.db'}"},
                "model": {"name": str(model), "max_new_tokens": 96},
                "chunking": {"seconds": 6, "overlap_seconds": 1},
                "sampling": {"fps": 1, "max_side": 128},
                "analysis": {"max_events": 2, "label_chars": 16, "description_chars": 40},
            }
        )
        result, summary = analyze_path(cfg, str(clip))
        problems = []
        if result["recording"]["status"] != "done":
            problems.append(f"recording ended {result['recording']['status']}: {result['recording']['reason']}")
        if len(result["chunks"]) != 3 or any(c["status"] != "done" for c in result["chunks"]):
            problems.append(f"expected 3 done chunks, got {[c['status'] for c in result['chunks']]}")
        for e in result["events"]:
            if not 0 <= e["start_s"] <= e["end_s"] <= 12.0:
                problems.append(f"event outside the clip: {e}")
        again, summary2 = analyze_path(cfg, str(clip))
        if "already analysed" not in summary2:
            problems.append("second run was not a no-op")
    took = time.perf_counter() - t0
    report = {"ok": not problems, "problems": problems, "seconds": round(took, 1), "summary": summary}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"selftest {'ok' if not problems else 'FAILED'} in {took:.1f} s: {summary}")
        for p in problems:
            print(f"  - {p}")
    return 0 if not problems else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="framewatch", description=__doc__)
    p.add_argument("--version", action="version", version=f"framewatch {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", help="config.toml (default: $FRAMEWATCH_CONFIG, else built-in defaults)")
        return sp

    a = with_config(sub.add_parser("analyze", help="analyse one recording now"))
    a.add_argument("file")
    a.add_argument("--json", action="store_true", help="print the result as one JSON object")
    a.add_argument("--profile", help="prompt profile for this file (default: analysis.profile)")
    a.set_defaults(func=cmd_analyze, log_level="WARNING")

    e = with_config(sub.add_parser("events", help="list stored events"))
    e.add_argument("--recording", help="only this file's events")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_events, log_level="WARNING")

    rn = with_config(sub.add_parser("run", help="the service: watch folders, analyse finished files (systemd runs this)"))
    rn.set_defaults(func=cmd_run, log_level="INFO")

    wk = with_config(sub.add_parser("worker", help="analyse only: take chunks from the shared queue (several GPU boxes)"))
    wk.set_defaults(func=cmd_worker, log_level="INFO")

    se = with_config(sub.add_parser("search", help="find events in every recording (full-text, ranked)"))
    se.add_argument("query", help='words (all must occur), "a phrase", -excluded, a or b')
    se.add_argument("--recording", metavar="PATH", help="only this file's events")
    se.add_argument("--since", type=_since, metavar="DATE", help="only recordings whose file was modified since DATE")
    se.add_argument("--label", action="append", metavar="L", help="only events with this label (repeatable)")
    se.add_argument("--limit", type=int, default=20, help="at most this many hits (default 20)")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search, log_level="WARNING")

    sv = with_config(sub.add_parser("serve", help="the read-only web API, timeline pages and /metrics"))
    sv.add_argument("--host", help="listen address (default: [plugins.web] host, else 127.0.0.1)")
    sv.add_argument("--port", type=int, help="TCP port (default: [plugins.web] port, else 8765)")
    sv.set_defaults(func=cmd_serve, log_level="INFO")

    s = with_config(sub.add_parser("status", help="recordings, their state and failures"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status, log_level="WARNING")

    pl = with_config(sub.add_parser("plugins", help="list plugins, their versions and hooks"))
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins, log_level="WARNING")

    r = with_config(sub.add_parser("replay", help="deliver a recording's notifications to plugins again"))
    r.add_argument("recording", nargs="?", help="the recording's file (or its id)")
    r.add_argument("--plugin", help="only this plugin")
    r.add_argument("--all", action="store_true", help="every recording (back-fill a newly enabled plugin)")
    r.set_defaults(func=cmd_replay, log_level="WARNING")

    pn = with_config(sub.add_parser("plan", help="show a file's chunks and their estimated GPU memory"))
    pn.add_argument("file")
    pn.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    pn.set_defaults(func=cmd_plan, log_level="WARNING")

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    cc = with_config(csub.add_parser("check", help="validate a config file: exit 0, or print each error"))
    cc.set_defaults(func=cmd_config_check, log_level="WARNING")

    m = sub.add_parser("make-test-model", help="write a tiny random Qwen3-VL checkpoint (offline)")
    m.add_argument("dir")
    m.set_defaults(func=cmd_make_test_model, log_level="WARNING")

    t = sub.add_parser("selftest", help="run the whole pipeline offline on a generated clip")
    t.add_argument("--keep", metavar="DIR", help="keep the clip, model and database in DIR")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_selftest, log_level="WARNING")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from daemon.log import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: args.log_level, 1: "INFO"}.get(args.verbose, "DEBUG")
    setup_logging(level)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        for key, value, msg in exc.errors:
            print(f"framewatch: config error: {exc.path or ''}: {key}: {msg} (got {value!r})", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"framewatch: error: {exc}", file=sys.stderr)
        return exc.code
    except GpuLeaseBusy as exc:
        print(f"framewatch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CudaFault as exc:
        print(f"framewatch: CUDA error, exiting so the chunk runs again in a fresh process: {exc}", file=sys.stderr)
        return EXIT_CUDA
    except KeyboardInterrupt:
        print("framewatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
