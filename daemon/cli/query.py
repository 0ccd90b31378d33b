"""The commands that read what is stored and loaded: events, alerts, search, status, plugins
and replay."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from daemon.cli.common import CliError, config_of, plugins_of, recording_id_of, store_of
from daemon.files import printable
from daemon.models import alert_json, event_json, hms, speech_json


def cmd_events(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    path = os.path.abspath(args.recording) if args.recording else None
    if args.json:
        store = store_of(cfg)
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
    # Paths come from whoever wrote the watched folder, labels and descriptions from a model a
    # video can talk to: each line escaped (files.printable) before it reaches a terminal.
    lines = [
        printable(f"{p} [{clock(int(a))}-{clock(int(b))}] {label}: {desc}")
        for p, a, b, label, desc in rows
    ]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """Stored alerts: each rule's candidates and what became of them."""
    cfg = config_of(args)
    store = store_of(cfg)
    recording_id = recording_id_of(store, args.recording) if args.recording else None
    rows = store.alerts.with_paths(recording_id, args.rule)
    if args.outcome:
        rows = [(a, p) for a, p in rows if a.state in args.outcome]
    if args.json:
        print(json.dumps([alert_json(a, p) for a, p in rows], indent=2))
        return 0
    for a, p in rows:
        mark = " fired" if a.fired else ""
        print(
            printable(
                f"{p} [{hms(a.start_s)}-{hms(a.end_s)}] {a.rule} ({a.severity}) {a.state}{mark}: "
                f"{a.reason or a.why}"
            )
        )
    return 0


def parse_since(value: str) -> float:
    """--since: an ISO date or date-time (local time unless it carries an offset) -> Unix time."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(
            f"not a date: {value!r} (e.g. 2025-03-01 or 2025-03-01T14:30)"
        ) from None


def cmd_search(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    store = store_of(cfg)
    recording_id = recording_id_of(store, args.recording) if args.recording else None
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
            print(printable(f'{h.recording_path} {h.hms} speech: "{h.speech.text}"'))
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
        print(printable(f"{h.recording_path} {h.hms} {e.label}: {e.description}"))
        print(f"    {h.link}" + (f"  ({source})" if source else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    store = store_of(cfg)
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
        print(
            f"now: {printable(current['path'])} chunk {current['chunk'] + 1}/{current['chunks_total']}"
        )
    for r, done, total in recs:
        # Names and reasons come from whoever wrote the watched folder: escaped, so an escape
        # sequence or a newline in a file name cannot redraw the terminal or fake a line.
        reason = f" ({printable(r.reason)})" if r.reason else ""
        print(f"{r.id:>5} {r.status:<9} {done}/{total} {printable(r.path)}{reason}")
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
    cfg = config_of(args)
    entries = plugins_of(cfg).entries()
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
    cfg = config_of(args)
    plugins = plugins_of(cfg)
    store = store_of(cfg)
    ids: list[int] | None = None
    if args.recording:
        ids = [recording_id_of(store, args.recording, by_id=True)]
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
