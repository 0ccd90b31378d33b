"""The commands that analyse and serve: analyze, plan, run, worker, plugins, config check,
make-test-model, selftest."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from daemon.cli.common import CliError, config_of, plugins_of, store_of
from daemon.exits import EXIT_BUSY, EXIT_FAILED, EXIT_MODEL, EXIT_OK
from daemon.files import printable
from daemon.models import hms


def cmd_analyze(args: argparse.Namespace) -> int:
    from daemon.analysis import analyze_path
    from daemon.engine.analyzer import ModelLoadError

    cfg = config_of(args)
    path = os.path.abspath(args.file)
    if not os.path.exists(path):
        raise CliError(f"{printable(args.file)}: no such file")
    bar = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=None, unit="chunk", desc=printable(Path(path).name), file=sys.stderr)

    def on_chunk(done: Any) -> None:
        if bar is not None:
            bar.total = done.chunk.chunks_total
            bar.update(1)
            bar.set_postfix_str(
                f"chunk {done.chunk.index + 1}/{done.chunk.chunks_total} {done.status}"
            )

    try:
        result, summary = analyze_path(
            cfg, path, profile=args.profile, on_chunk=on_chunk, store=store_of(cfg)
        )
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
    status = result["recording"]["status"]
    code = {"failed": EXIT_FAILED, "skipped": EXIT_FAILED, "queued": EXIT_BUSY}.get(status, EXIT_OK)
    code = EXIT_BUSY if status == "analyzing" else code
    print(("framewatch: error: " if code else "") + summary, file=sys.stderr)
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    """The chunk plan of one file with its memory estimate; arithmetic only (no torch)."""
    from daemon.engine.analyzer import ModelLoadError
    from daemon.engine.probe import UnsupportedMedia
    from daemon.plan_report import format_report, plan_report

    cfg = config_of(args)
    if not os.path.exists(args.file):
        raise CliError(f"{printable(args.file)}: no such file")
    try:
        report = plan_report(cfg, os.path.abspath(args.file))
    except UnsupportedMedia as exc:
        raise CliError(f"{printable(args.file)}: {exc.reason}", EXIT_FAILED) from None
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The service: watch folders and analyse what lands in them until SIGTERM."""
    from daemon.app import run
    from daemon.engine.analyzer import ModelLoadError

    cfg = config_of(args)
    try:
        return run(cfg)
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None


def cmd_worker(args: argparse.Namespace) -> int:
    """Analyse only: take chunk jobs from the shared queue (queue.backend = "redis"), or from the
    store's queue, until SIGTERM; watch nothing (another box runs `framewatch run`)."""
    from daemon.app import run
    from daemon.engine.analyzer import ModelLoadError

    cfg = config_of(args)
    try:
        return run(cfg, watch=False)
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None


def cmd_config_check(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    plugins_of(cfg)  # plugin settings are part of the config: [plugins.<name>] tables
    for warning in cfg.warnings:
        print(f"framewatch: warning: {warning}", file=sys.stderr)
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
