"""`framewatch eval`: score the configured pipeline against a truth file (daemon/evaluation.py),
under other settings side by side (--set), or write a planted-event set (--make-synthetic)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from daemon.cli.common import CliError
from daemon.exits import EXIT_FAILED, EXIT_MODEL, EXIT_OK, EXIT_USAGE

SET_HELP = (
    "run the truth again with KEY=VALUE (a dotted config key: sampling.fps=1, "
    "chunking.seconds=10, chunking.overlap_seconds=0, sampling.max_side=448, "
    "analysis.profile=surveillance, model.name=...), in a temporary store; repeatable: each "
    "--set is one more run beside the baseline; several keys in one run: "
    "--set sampling.fps=1,chunking.seconds=10"
)


def add_parser(sub: Any, with_config: Any) -> None:
    ev = with_config(
        sub.add_parser(
            "eval",
            help="measure accuracy: analyse the recordings of a truth file and score the events",
        )
    )
    ev.add_argument(
        "truth",
        nargs="?",
        help='truth file: JSON {"recordings": [{"path", "events": [{"start_s", "end_s", '
        '"label"}]}]} or CSV path,start_s,end_s,label (paths relative to it)',
    )
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    ev.add_argument(
        "--tolerance",
        type=float,
        default=None,
        metavar="S",
        help="a prediction within S seconds of a truth event (same label) may match it "
        "(default 1.0)",
    )
    ev.add_argument(
        "--synonyms",
        metavar="FILE",
        help='JSON {"label": ["other name", ...]}: names that count as the same label',
    )
    ev.add_argument(
        "--fresh",
        action="store_true",
        help="analyse the baseline into a temporary store too (the configured store is left "
        "alone, and recordings it already holds are analysed again)",
    )
    ev.add_argument(
        "--make-synthetic",
        metavar="DIR",
        help="write a planted-event set (clips of coloured scenes and truth.json) to DIR",
    )
    ev.set_defaults(func=cmd_eval, log_level="WARNING")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.make_synthetic:
        if args.truth or args.set:
            raise CliError("--make-synthetic DIR writes a set; give no TRUTH or --set with it")
        from daemon.selftest.planted import write_planted

        path = write_planted(args.make_synthetic)
        print(path)
        print(f"framewatch eval {path} --config CONFIG", file=sys.stderr)
        return EXIT_OK
    if not args.truth:
        raise CliError("give a TRUTH file (or --make-synthetic DIR)")
    from daemon.engine.analyzer import ModelLoadError
    from daemon.engine.scoring import DEFAULT_TOLERANCE_S
    from daemon.engine.truth import TruthError, load_synonyms, load_truth
    from daemon.evaluation import RunSpec, evaluate_runs, missing_files, parse_set, report

    tolerance = DEFAULT_TOLERANCE_S if args.tolerance is None else args.tolerance
    if tolerance < 0:
        raise CliError(f"--tolerance must be >= 0, got {tolerance:g}")
    try:
        truth = load_truth(args.truth)
        synonyms = load_synonyms(args.synonyms) if args.synonyms else {}
    except TruthError as exc:
        raise CliError("truth file unusable:\n  " + "\n  ".join(exc.lines()), EXIT_USAGE) from None
    missing = missing_files(truth)
    if missing:
        raise CliError(f"{args.truth}: no such recording: " + ", ".join(missing), EXIT_USAGE)
    specs = [RunSpec("baseline"), *(parse_set(s) for s in args.set)]
    config_path = args.config or os.environ.get("FRAMEWATCH_CONFIG")

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        runs = evaluate_runs(
            config_path,
            truth,
            specs,
            fresh=args.fresh,
            tolerance_s=tolerance,
            synonyms=synonyms,
            say=say,
        )
    except ModelLoadError as exc:
        raise CliError(str(exc), EXIT_MODEL) from None
    out = report(runs, truth, tolerance)
    if args.json:
        print(json.dumps(out, indent=2, default=str))  # default: a TOML date given to --set
    else:
        print(format_recordings(runs[0]))
        if len(runs) > 1:
            print()
            print(format_runs(runs))
    reused = sum(r["reused"] for r in runs[0]["recordings"])
    if reused:
        say(
            f"framewatch: note: {reused} recording(s) were already in the configured store and "
            "were scored as stored, not analysed again (--fresh analyses them anew)"
        )
    failed = sum(r["failed"] for r in runs)
    if failed:
        say(f"framewatch: error: {failed} recording(s) failed to analyse (see `reason`)")
    unloaded = [r for r in runs if r.get("error")]
    for r in unloaded:
        say(f"framewatch: error: run {r['run']}: {r['error']}")
    return EXIT_MODEL if unloaded else EXIT_FAILED if failed else EXIT_OK


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(a: Any, b: Any) -> str:
    return f"{_f(a)}/{_f(b)}"


def format_recordings(run: dict[str, Any]) -> str:
    """The baseline per recording and overall: counts, recall, precision, errors, duplicates."""
    head = (
        "recording",
        "truth",
        "found",
        "match",
        "recall",
        "precision",
        "start err med/p90",
        "end err med/p90",
        "dup",
        "wall s",
    )
    rows = [head]
    for r in [*run["recordings"], {**run, "path": "(all)", "status": "done"}]:
        name = os.path.basename(r["path"]) if r["path"] != "(all)" else "(all)"
        if r["status"] != "done":
            name += f" [{r['status']}]"
        rows.append(
            (
                name,
                str(r["truth_events"]),
                str(r["predicted_events"]),
                str(r["matched"]),
                _f(r["recall"]),
                _f(r["precision"]),
                _pair(r["median_start_error_s"], r["p90_start_error_s"]),
                _pair(r["median_end_error_s"], r["p90_end_error_s"]),
                str(r["duplicates"]),
                "reused" if r.get("reused") else _f(r["wall_s"], 1),
            )
        )
    return _table(rows)


FIGURES = (
    ("recall", "recall"),
    ("precision", "precision"),
    ("median_start_error_s", "median start error s"),
    ("p90_start_error_s", "p90 start error s"),
    ("median_end_error_s", "median end error s"),
    ("p90_end_error_s", "p90 end error s"),
    ("start_bias_s", "start bias s (+ late)"),
    ("duplicates", "duplicates"),
    ("matched", "matched / truth"),
    ("predicted_events", "predicted events"),
    ("failed", "failed recordings"),
    ("wall_s", "wall s"),
)


def format_runs(runs: list[dict[str, Any]]) -> str:
    """Every run's overall figures side by side, one column a run."""
    rows = [("", *(r["run"] for r in runs))]
    for key, name in FIGURES:
        cells = []
        for r in runs:
            v = r[key]
            if key == "matched":
                cells.append(f"{v}/{r['truth_events']}")
            elif isinstance(v, float) or v is None:
                cells.append(_f(v, 1 if key == "wall_s" else 2))
            else:
                cells.append(str(v))
        rows.append((name, *cells))
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )
