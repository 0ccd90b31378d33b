"""Built-in plugin web: a read-only HTTP API, timeline pages and Prometheus metrics.

Off until a `[plugins.web]` table exists. `startup` serves it from a thread inside the daemon and
`shutdown` stops it; `framewatch serve` (a command this plugin adds) runs the same server in the
foreground, for instance on a box that only reads the shared store. The server only reads the
store, and streams only files that are stored recordings (app.py); server.py holds the settings,
the token and the server.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import BaseModel

from daemon.hookspecs import CommandContext, CommandFailed, Commands, hookimpl
from plugins.web.server import (
    CREDENTIAL,
    LOOPBACK_NAMES,
    WebServer,
    WebSettings,
    build,
    resolve_token,
)

__all__ = ["CREDENTIAL", "LOOPBACK_NAMES", "WebServer", "WebSettings", "build", "resolve_token"]

NAME = "web"

_servers: dict[int, WebServer] = {}  # id(app) -> its server, between startup and shutdown


@hookimpl
def register_settings() -> dict[str, type[BaseModel]]:
    return {NAME: WebSettings}


@hookimpl
def register_commands(commands: Commands) -> None:
    serve = commands.add("serve", "the read-only web API, timeline pages and /metrics", _serve)
    serve.add_argument(
        "--host", help="listen address (default: [plugins.web] host, else 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, help="TCP port (default: [plugins.web] port, else 8765)")


def _serve(args: argparse.Namespace, context: CommandContext) -> int:
    """`framewatch serve`: the API, pages and /metrics in the foreground, over the configured store."""
    settings = context.settings if isinstance(context.settings, WebSettings) else WebSettings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    try:
        # Serving only reads: no migration, nothing created, connections that cannot write, so
        # it also works on a store whose file and folder this user may not write.
        store = context.open_store(read_only=True)
    except RuntimeError as exc:
        raise CommandFailed(str(exc), 2) from None
    try:
        _, server = build(context.config, store, settings)
        print(f"framewatch: serving {server.url}", file=sys.stderr)
        server.run()
    except (RuntimeError, OSError, ValueError) as exc:
        raise CommandFailed(str(exc), 2) from None
    finally:
        store.close()
    return 0


@hookimpl
def startup(app: Any, settings: WebSettings | None) -> None:
    _, server = build(app.config, app.store, settings or WebSettings())
    server.start()
    _servers[id(app)] = server


@hookimpl
def shutdown(app: Any) -> None:
    server = _servers.pop(id(app), None)
    if server is not None:
        server.stop()
