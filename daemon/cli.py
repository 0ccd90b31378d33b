"""The `framewatch` command: parse the arguments, call the library, print the result.

Nothing heavy is imported at start-up (each command imports what it uses; torch loads only to
analyse), and plugins are loaded only for a command framewatch does not define itself.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon import __version__
from daemon.exits import EXIT_CUDA, EXIT_FAILED, EXIT_MODEL, EXIT_OK, EXIT_USAGE
from daemon.models import alert_json, event_json, hms, speech_json

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.pluginhost.manager import PluginManager
    from daemon.store import Store

# The commands framewatch itself defines; any other first word may be a plugin's command
# (register_commands), which is only then looked up, so these start without loading plugins.
CORE_COMMANDS = frozenset(
    {
        "analyze",
        "alerts",
        "events",
        "run",
        "worker",
        "search",
        "status",
        "plugins",
        "replay",
        "plan",
        "config",
        "make-test-model",
        "selftest",
    }
)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace) -> Config:
    from daemon.config import load_config

    path = args.config or os.environ.get("FRAMEWATCH_CONFIG")
    return load_config(path)


def _store(cfg: Config, read_only: bool = False) -> Store:
    from daemon.store import Store

    return Store(cfg.storage_url(), read_only=read_only)


def _plugins(cfg: Config) -> PluginManager:
    from daemon.pluginhost.manager import load_plugins

    return load_plugins(cfg)


def cmd_analyze(args: argparse.Namespace) -> int:
    from daemon.analysis import analyze_path
    from daemon.engine.analyzer import ModelLoadError

    cfg = _config(args)
    path = os.path.abspath(args.file)
    if not os.path.exists(path):
        raise CliError(f"{args.file}: no such file")
    bar = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=None, unit="chunk", desc=Path(path).name, file=sys.stderr)

    def on_chunk(done: Any) -> None:
        if bar is not None:
            bar.total = done.chunk.chunks_total
            bar.update(1)
            bar.set_postfix_str(
                f"chunk {done.chunk.index + 1}/{done.chunk.chunks_total} {done.status}"
            )

    try:
        result, summary = analyze_path(cfg, path, profile=args.profile, on_chunk=on_chunk)
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for e in result["events"]:
            print(f"[{hms(e['start_s'])}] {e['label']}: {e['description']}")
    failed = result["recording"]["status"] == "failed"
    print(("framewatch: error: " if failed else "") + summary, file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = os.path.abspath(args.recording) if args.recording else None
    if args.json:
        store = _store(cfg)
        rec = store.recordings.find(path) if path else None
        if path and rec is None:
            return 0
        rows = store.events.with_paths()
        if rec is not None:
            rows = [(e, p) for e, p in rows if e.recording_id == rec.id]
        items = [
            (e.recording_id, e.start_s, {**event_json(e), "kind": "event", "recording": p})
            for e, p in rows
        ]
        items += [
            (s.recording_id, s.start_s, {**speech_json(s), "kind": "speech", "recording": p})
            for s, p in store.speech.with_paths(rec.id if rec is not None else None)
        ]
        # Events and what was said, by recording and time; speech is marked "kind": "speech".
        items.sort(key=lambda item: item[:2])
        print(json.dumps([item for _, _, item in items], indent=2))
        return 0
    # The plain listing reads through SQLAlchemy Core (daemon/store/listing.py), not the Store:
    # no ORM to import, one read-only snapshot, rows as the driver gives them, one write
    # (bench/RESULTS.md, store: `framewatch events` over 100,000 events).
    from daemon.store import listing
    from daemon.store.db import open_engine, read_only

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
    # each second is formatted once.
    clock = functools.cache(hms)
    lines = [
        f"{p} [{clock(int(a))}-{clock(int(b))}] {label}: {desc}" for p, a, b, label, desc in rows
    ]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """Stored alerts: each rule's candidates and what became of them."""
    cfg = _config(args)
    store = _store(cfg)
    recording_id = None
    if args.recording:
        rec = store.recordings.find(os.path.abspath(args.recording))
        if rec is None:
            raise CliError(f"{args.recording}: no such recording in the store")
        recording_id = rec.id
    rows = store.alerts.with_paths(recording_id, args.rule)
    if args.outcome:
        rows = [(a, p) for a, p in rows if a.state in args.outcome]
    if args.json:
        print(json.dumps([alert_json(a, p) for a, p in rows], indent=2))
        return 0
    for a, p in rows:
        mark = " fired" if a.fired else ""
        print(
            f"{p} [{hms(a.start_s)}-{hms(a.end_s)}] {a.rule} ({a.severity}) {a.state}{mark}: "
            f"{a.reason or a.why}"
        )
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
        rec = store.recordings.find(os.path.abspath(args.recording))
        if rec is None:
            raise CliError(f"{args.recording}: no such recording in the store")
        recording_id = rec.id
    hits = store.events.search(
        args.query,
        recording_id=recording_id,
        since=args.since,
        labels=args.label or (),
        limit=args.limit,
    )
    if args.json:
        print(json.dumps([h.as_dict() for h in hits], indent=2))
        return 0
    if not hits:
        print(f"no events or speech match {args.query!r}", file=sys.stderr)
    for h in hits:
        if h.speech is not None:
            print(f'{h.recording_path} {h.hms} speech: "{h.speech.text}"')
            print(f"    {h.link}  (speech model {h.speech.provenance.get('model', '?')})")
            continue
        e = h.event
        assert e is not None
        prov = e.provenance
        source = ", ".join(
            f"{k} {str(prov[k])[:12] if k == 'prompt_hash' else prov[k]}"
            for k in ("model", "prompt_hash")
            if prov.get(k)
        )
        print(f"{h.recording_path} {h.hms} {e.label}: {e.description}")
        print(f"    {h.link}" + (f"  ({source})" if source else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    store = _store(cfg)
    recs = store.recordings.list()
    current = None
    # The chunk on the GPU now (the oldest running one when several processes share the store).
    running = {
        rid: (index, owner, started)
        for rid, index, owner, started in reversed(store.chunks.running())
    }
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
        "deliveries": store.outbox.counts(),
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
        print(
            f"deliveries: {d['pending']} pending, {d['failed']} failed (retrying), {d['dead']} dead"
        )
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
    from daemon.pluginhost.dispatch import Dispatcher

    if args.alerts and args.all:
        raise CliError("replay --alerts takes a RECORDING, or none for every recording's alerts")
    if not args.alerts and args.all == bool(args.recording):
        raise CliError("replay: give a RECORDING, or --all with --plugin (or --alerts)")
    if args.all and not args.plugin:
        raise CliError("replay --all needs --plugin NAME (it back-fills one plugin)")
    cfg = _config(args)
    plugins = _plugins(cfg)
    store = _store(cfg)
    ids: list[int] | None = None
    if args.recording:
        rec = store.recordings.find(os.path.abspath(args.recording))
        if rec is None and args.recording.isdigit():
            try:
                rec = store.recordings.get(int(args.recording))
            except KeyError:
                rec = None
        if rec is None:
            raise CliError(f"{args.recording}: no such recording in the store")
        ids = [rec.id]
    dispatcher = Dispatcher(store, plugins, cfg)
    try:
        queued = dispatcher.replay(ids, args.plugin, alerts=args.alerts)
    except LookupError as exc:
        raise CliError(str(exc)) from None
    delivered = dispatcher.deliver_all()
    counts = store.outbox.counts()
    print(
        f"queued {queued} notifications, delivered {delivered}; "
        f"{counts['pending'] + counts['failed']} waiting for a retry, {counts['dead']} dead",
        file=sys.stderr,
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """The chunk plan of one file with its memory estimate; arithmetic only (no torch)."""
    from daemon.engine.analyzer import ModelLoadError
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
    from daemon.engine.analyzer import ModelLoadError

    cfg = _config(args)
    try:
        return run(cfg)
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None


def cmd_worker(args: argparse.Namespace) -> int:
    """Analyse only: take chunk jobs from the shared queue (queue.backend = "redis"), or from the
    store's queue, until SIGTERM; watch nothing (another box runs `framewatch run`)."""
    from daemon.app import run
    from daemon.engine.analyzer import ModelLoadError

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
    if args.speech:
        from daemon.selftest.testwhisper import make_test_whisper

        try:
            out = make_test_whisper(args.dir)
        except FileNotFoundError as exc:
            raise CliError(str(exc), EXIT_FAILED) from None
    else:
        from daemon.selftest.testmodel import make_test_model

        out = make_test_model(args.dir)
    print(out)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """Whole pipeline on a generated clip with the tiny offline model, in a temporary folder."""
    from daemon.selftest import run_selftest

    report = run_selftest(args.keep)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        state = "ok" if report["ok"] else "FAILED"
        print(f"selftest {state} in {report['seconds']:.1f} s: {report['summary']}")
        print(f"  speech: {report['speech']}")
        for p in report["problems"]:
            print(f"  - {p}")
    return EXIT_OK if report["ok"] else EXIT_FAILED


def build_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The parser of framewatch's own commands, and its subparsers (plugins add theirs there)."""
    p = argparse.ArgumentParser(
        prog="framewatch", description="Watch folders of recordings and analyse them with Qwen3-VL."
    )
    p.add_argument("--version", action="version", version=f"framewatch {__version__}")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--config",
            "-c",
            help="config.toml (default: $FRAMEWATCH_CONFIG, else built-in defaults)",
        )
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

    rn = with_config(
        sub.add_parser(
            "run", help="the service: watch folders, analyse finished files (systemd runs this)"
        )
    )
    rn.set_defaults(func=cmd_run, log_level="INFO")

    wk = with_config(
        sub.add_parser(
            "worker", help="analyse only: take chunks from the shared queue (several GPU boxes)"
        )
    )
    wk.set_defaults(func=cmd_worker, log_level="INFO")

    al = with_config(
        sub.add_parser("alerts", help="list alerts: each rule's candidates and their outcome")
    )
    al.add_argument("--recording", metavar="PATH", help="only this file's alerts")
    al.add_argument("--rule", help="only this rule's alerts")
    al.add_argument(
        "--outcome",
        action="append",
        choices=["candidate", "confirmed", "rejected", "unverified", "suppressed"],
        help="only alerts with this outcome (repeatable)",
    )
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_alerts, log_level="WARNING")

    se = with_config(
        sub.add_parser("search", help="find events in every recording (full-text, ranked)")
    )
    se.add_argument("query", help='words (all must occur), "a phrase", -excluded, a or b')
    se.add_argument("--recording", metavar="PATH", help="only this file's events")
    se.add_argument(
        "--since",
        type=_since,
        metavar="DATE",
        help="only recordings whose file was modified since DATE",
    )
    se.add_argument(
        "--label", action="append", metavar="L", help="only events with this label (repeatable)"
    )
    se.add_argument("--limit", type=int, default=20, help="at most this many hits (default 20)")
    se.add_argument("--json", action="store_true")
    se.set_defaults(func=cmd_search, log_level="WARNING")

    s = with_config(sub.add_parser("status", help="recordings, their state and failures"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status, log_level="WARNING")

    pl = with_config(sub.add_parser("plugins", help="list plugins, their versions and hooks"))
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins, log_level="WARNING")

    r = with_config(
        sub.add_parser("replay", help="deliver a recording's notifications to plugins again")
    )
    r.add_argument("recording", nargs="?", help="the recording's file (or its id)")
    r.add_argument("--plugin", help="only this plugin")
    r.add_argument(
        "--all", action="store_true", help="every recording (back-fill a newly enabled plugin)"
    )
    r.add_argument(
        "--alerts",
        action="store_true",
        help="the alerts that fired instead (of RECORDING, or of every recording)",
    )
    r.set_defaults(func=cmd_replay, log_level="WARNING")

    pn = with_config(
        sub.add_parser("plan", help="show a file's chunks and their estimated GPU memory")
    )
    pn.add_argument("file")
    pn.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    pn.set_defaults(func=cmd_plan, log_level="WARNING")

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    cc = with_config(
        csub.add_parser("check", help="validate a config file: exit 0, or print each error")
    )
    cc.set_defaults(func=cmd_config_check, log_level="WARNING")

    m = sub.add_parser("make-test-model", help="write a tiny random Qwen3-VL checkpoint (offline)")
    m.add_argument("dir")
    m.add_argument(
        "--speech",
        action="store_true",
        help="a tiny random Whisper for faster-whisper instead ([speech] model = DIR)",
    )
    m.set_defaults(func=cmd_make_test_model, log_level="WARNING")

    t = sub.add_parser("selftest", help="run the whole pipeline offline on a generated clip")
    t.add_argument("--keep", metavar="DIR", help="keep the clip, model and database in DIR")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_selftest, log_level="WARNING")
    return p, sub


def _plugin_commands(sub: Any) -> None:
    """Every plugin's commands (register_commands), each run with its plugin's settings."""
    from daemon.hookspecs import CommandContext
    from daemon.pluginhost.manager import add_plugin_commands

    def bind(plugin: str, run: Any) -> Any:
        def call(args: argparse.Namespace) -> int:
            cfg = _config(args)
            settings = _plugins(cfg).settings.get(plugin)

            def open_store(read_only: bool = False) -> Store:
                return _store(cfg, read_only)

            return int(run(args, CommandContext(cfg, settings, open_store)) or 0)

        return call

    add_plugin_commands(sub, bind)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = build_parser()
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in CORE_COMMANDS:  # help, a plugin's command, or a typo: ask the plugins
        _plugin_commands(sub)
    args = parser.parse_args(argv)
    # After parsing: --help and usage errors exit before paying for the logging stack.
    from daemon.log import setup_logging

    level = {0: args.log_level, 1: "INFO"}.get(args.verbose, "DEBUG")
    setup_logging(level)
    from daemon.config import ConfigError
    from daemon.gpu import CudaFault, GpuLeaseBusy
    from daemon.hookspecs import CommandFailed

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        # The values are redacted (ConfigError): a secret is never printed, nor a URL's password.
        for key, value, msg in exc.errors:
            print(
                f"framewatch: config error: {exc.path or ''}: {key}: {msg} (got {value!r})",
                file=sys.stderr,
            )
        return EXIT_USAGE
    except (CliError, CommandFailed) as exc:
        print(f"framewatch: error: {exc}", file=sys.stderr)
        return exc.code
    except GpuLeaseBusy as exc:
        print(f"framewatch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CudaFault as exc:
        print(
            f"framewatch: CUDA error, exiting so the chunk runs again in a fresh process: {exc}",
            file=sys.stderr,
        )
        return EXIT_CUDA
    except KeyboardInterrupt:
        print("framewatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
