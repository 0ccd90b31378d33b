"""The `framewatch` command: parse the arguments, call the library, print the result.

Nothing heavy is imported at start-up (each command imports what it uses; torch loads only to
analyse), and plugins are loaded only for a command framewatch does not define itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from daemon import __version__
from daemon.cli.common import CliError, config_of, plugins_of, store_of
from daemon.cli.evaluate import add_parser as add_eval_parser
from daemon.cli.query import (
    cmd_alerts,
    cmd_events,
    cmd_plugins,
    cmd_replay,
    cmd_search,
    cmd_status,
    parse_since,
)
from daemon.cli.reports import add_parsers as add_report_parsers
from daemon.cli.service import (
    cmd_analyze,
    cmd_config_check,
    cmd_make_test_model,
    cmd_plan,
    cmd_run,
    cmd_selftest,
    cmd_worker,
)
from daemon.exits import EXIT_CUDA, EXIT_FAILED, EXIT_STORE, EXIT_USAGE
from daemon.files import printable

if TYPE_CHECKING:
    from daemon.store import Store

# The commands framewatch itself defines; any other first word may be a plugin's command
# (register_commands), which is only then looked up, so these start without loading plugins.
CORE_COMMANDS = frozenset(
    {
        "analyze",
        "eval",
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
        "summarize",
        "digest",
    }
)


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

    add_eval_parser(sub, with_config)

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
        type=parse_since,
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

    add_report_parsers(sub, with_config)

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
            cfg = config_of(args)
            settings = plugins_of(cfg).settings.get(plugin)

            def open_store(read_only: bool = False) -> Store:
                return store_of(cfg, read_only)

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
    from sqlalchemy.exc import DBAPIError

    from daemon.config import ConfigError
    from daemon.gpu import CudaFault, GpuLeaseBusy
    from daemon.hookspecs import CommandFailed
    from daemon.store.db import StoreUnavailable

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
    except (DBAPIError, StoreUnavailable) as exc:
        # A corrupt database file, a folder without permission, a server that refuses: one line
        # with the driver's own words, not a traceback (exits.EXIT_STORE).
        orig = getattr(exc, "orig", None) or exc
        why = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        print(f"framewatch: store error: {printable(why)}", file=sys.stderr)
        return EXIT_STORE
    except KeyboardInterrupt:
        print("framewatch: interrupted", file=sys.stderr)
        return 130
