"""`framewatch summarize` (a recording's summary made again from its stored events, no video
decoded) and `framewatch digest` (one Markdown file over the recordings finished in a period)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from daemon.cli.common import CliError, config_of, plugins_of, store_of
from daemon.exits import EXIT_FAILED, EXIT_MODEL, EXIT_OK
from daemon.models import hms, summary_json


def cmd_summarize(args: argparse.Namespace) -> int:
    from daemon.engine.analyzer import ModelLoadError
    from daemon.engine.summary import SummaryFailed
    from daemon.summarizing import NoSummary, summarize_stored
    from daemon.worker import Worker

    cfg = config_of(args)
    store = store_of(cfg)
    try:
        rec = store.recordings.find(os.path.abspath(args.file))
        if rec is None:
            raise CliError(f"{args.file}: not in the store (framewatch analyze it first)")
        if rec.status != "done":
            raise CliError(f"{args.file}: recording {rec.id} is {rec.status}, not done")
        plugins = plugins_of(cfg)
        # The worker's GPU lease and memory budget; only stored text reaches the model.
        worker = Worker(store, cfg, plugins.make_analyzer)
        try:
            if not worker.ready():
                raise CliError("stopped while waiting for the GPU", EXIT_FAILED)
            made = summarize_stored(
                store,
                cfg,
                worker.analyzer,
                rec.id,
                prompt=args.prompt,
                memory=worker.memory,
                force=True,
            )
        except ModelLoadError as exc:
            raise CliError(str(exc), EXIT_MODEL) from None
        except (NoSummary, SummaryFailed) as exc:
            raise CliError(f"{args.file}: no summary: {exc}", EXIT_FAILED) from None
        finally:
            worker.close()
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary_json(made), indent=2))
    else:
        print(f"# {made.title}\n\n{made.text}\n")
        for c in made.chapters:
            print(f"[{hms(c.start_s)}-{hms(c.end_s)}] {c.title}")
        if made.key_events:
            print("key events: " + ", ".join(f"#{i}" for i in made.key_events))
    p = made.provenance
    print(
        f"{args.file}: summary made from {p.get('events', 0)} events in {p.get('batches', 1)} "
        f"batches ({p.get('merge_passes', 0)} merge passes); `framewatch replay {args.file}` "
        "rewrites the reports with it",
        file=sys.stderr,
    )
    return EXIT_OK


def parse_when(value: str) -> float:
    """A date or time (ISO 8601, local time) as seconds since the epoch."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        ) from None


def cmd_digest(args: argparse.Namespace) -> int:
    from daemon.digest import make_digest, notify_digest

    cfg = config_of(args)
    store = store_of(cfg)
    try:
        until = args.until if args.until is not None else time.time()
        if until <= args.since:
            raise CliError("--until must be after --since")
        digest = make_digest(store, cfg, args.since, until, folder=args.folder)
    finally:
        store.close()
    told = notify_digest(plugins_of(cfg), digest)
    out: dict[str, Any] = {
        "path": digest.path,
        "since": digest.since,
        "until": digest.until,
        "recordings": [
            {
                "id": r.id,
                "path": r.path,
                "summary": summary_json(s) if s is not None else None,
            }
            for r, s in digest.recordings
        ],
        "notified": told,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(digest.path)
    print(
        f"framewatch: digest of {len(digest.recordings)} recordings written to {digest.path}",
        file=sys.stderr,
    )
    return EXIT_OK


def add_parsers(sub: Any, with_config: Any) -> None:
    sm = with_config(
        sub.add_parser(
            "summarize",
            help="make a recording's summary again from its stored events (no video decode)",
        )
    )
    sm.add_argument("file", help="the recording's file (as analysed)")
    sm.add_argument("--prompt", help="the task for this summary (default: summary.prompt)")
    sm.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    sm.set_defaults(func=cmd_summarize, log_level="WARNING")

    dg = with_config(
        sub.add_parser(
            "digest", help="one Markdown file summarising every recording finished in a period"
        )
    )
    dg.add_argument("--since", required=True, type=parse_when, metavar="DATE", help="period start")
    dg.add_argument("--until", type=parse_when, metavar="DATE", help="period end (default: now)")
    dg.add_argument("--folder", metavar="PATH", help="only recordings under this folder")
    dg.add_argument("--json", action="store_true")
    dg.set_defaults(func=cmd_digest, log_level="WARNING")
