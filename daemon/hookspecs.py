"""The public plugin API: pluggy markers, hook specifications and the errors a plugin may raise.

A plugin imports only this module and `daemon.models`. Every hook receives frozen data objects,
never database rows. Every hook except `register_settings` and `register_commands` may also take
`settings`: that plugin's own validated `[plugins.<name>]` settings (an instance of the model it
registered, or None; a command receives them in its CommandContext). An implementation may take fewer arguments than its spec, so specs can grow without breaking
plugins.

Notifications (`events_found`, `recording_finished`, `recording_failed`, `alert_fired`) are not called while the
recording is analysed: they are written to the outbox with the events they announce and delivered
later, one plugin at a time, retried with backoff until they succeed. They therefore also take
`delivery_id`, the same on every retry of one notification (an idempotency key).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pluggy
from pydantic import AfterValidator, BaseModel, SecretStr, ValidationInfo

from daemon.log import get_logger as _get_logger

# Re-exported for plugins: a URL as it may be logged or stored (no credentials, no query string).
from daemon.redact import redact_url as redact_url

hookspec = pluggy.HookspecMarker("framewatch")
hookimpl = pluggy.HookimplMarker("framewatch")

get_logger = _get_logger
"""A structlog logger for a plugin module (`log = get_logger(__name__)`), imported on first use:
its lines go through framewatch's logging, with the recording and chunk bound when there is one."""

if TYPE_CHECKING:
    import argparse

    from daemon.config import Config
    from daemon.engine.analyzer import Analyzer
    from daemon.models import (
        AlertInfo,
        ChunkInfo,
        DigestInfo,
        EventInfo,
        RecordingInfo,
        SpeechSegment,
        StaticSpan,
        Summary,
    )


class RetryLater(Exception):
    """Raise from a notification to have it retried no sooner than `retry_after` seconds
    (an HTTP 429/503 with Retry-After); None lets the dispatcher's backoff decide. The wait is
    kept within the backoff's range: at least 15 s, at most an hour."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Gone(Exception):
    """Raise from a notification when the destination is gone for good (HTTP 410): this and every
    other undelivered notification for the plugin become dead, and new ones are not attempted
    until the plugin's settings change or `framewatch replay --plugin NAME` re-enables it."""


class CommandFailed(Exception):
    """Raise from a plugin's command: framewatch prints `framewatch: error: <message>` and exits
    with `code`."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a plugin's command receives besides its parsed arguments: the validated config, the
    plugin's own validated settings (None when its `[plugins.<name>]` table is absent), and a way
    to open the store (the caller closes it). `open_store(read_only=True)` opens a store that is
    already at this framewatch's schema without migrating it, over connections that cannot
    write; it raises RuntimeError with a one-line reason when that store cannot be read."""

    config: Config
    settings: BaseModel | None
    open_store: Callable[..., Any]


class Commands:
    """Handed to `register_commands`: `add` makes one `framewatch` subcommand."""

    def __init__(self, subparsers: Any, bind: Callable[[Callable[..., int]], Callable[[Any], int]]):
        self._subparsers = subparsers
        self._bind = bind

    def add(
        self, name: str, help: str, run: Callable[[argparse.Namespace, CommandContext], int]
    ) -> argparse.ArgumentParser:
        """Add `framewatch <name>` (with `--config`); returns its argparse parser for the
        command's own arguments. `run(args, context)` returns the exit code."""
        sub = self._subparsers.add_parser(name, help=help)
        sub.add_argument(
            "--config",
            "-c",
            help="config.toml (default: $FRAMEWATCH_CONFIG, else built-in defaults)",
        )
        sub.set_defaults(func=self._bind(run), log_level="INFO")
        return sub  # type: ignore[no-any-return]


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    # Relative paths in config.toml mean "next to config.toml", as for storage.url and model.name.
    if value is None:
        return None
    value = value.expanduser()
    base = (info.context or {}).get("config_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path setting: `~` expanded, relative paths resolved against the config file's folder."""


def read_secret(
    inline: SecretStr | None, file: Path | None, credential: str
) -> tuple[str, str] | None:
    """A plugin's secret and where it came from: the setting itself, else its file, else
    systemd's credentials folder (`$CREDENTIALS_DIRECTORY/<credential>`, from LoadCredential=).
    None when none is set. Secrets never need to sit inline in config.toml."""
    if inline is not None:
        return inline.get_secret_value(), "the config"
    path = file
    if path is None and os.environ.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(os.environ["CREDENTIALS_DIRECTORY"]) / credential
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    return Path(path).read_text(encoding="utf-8"), str(path)


@hookspec
def register_settings() -> dict[str, type[BaseModel]]:  # type: ignore[empty-body]
    """Declare settings models for `[plugins.<name>]` tables.

    Returns: a mapping of plugin name to a pydantic model class. At start-up each plugin's table
    (an empty one when absent) is validated against its model; errors are reported with key paths
    such as `plugins.webhook.url` and stop the start. The validated instance is what the plugin's
    other hooks receive as `settings`.
    """


@hookspec
def register_commands(commands: Commands) -> None:
    """Add subcommands to the `framewatch` command line.

    commands: `commands.add(name, help, run)` adds one and returns its argparse parser;
    `run(args, context)` gets the parsed arguments and a CommandContext, and returns the exit
    code (raise CommandFailed to fail with a message). Called for every installed and built-in
    plugin whether or not it is active, so a command exists even without its table.
    Returns: nothing.
    """


@hookspec
def startup(app: Any, settings: BaseModel | None) -> None:
    """The daemon is starting, after the config and every plugin's settings were validated.

    app: the running daemon (its `config` attribute is the Config).
    settings: this plugin's validated settings, or None.
    Returns: nothing. An exception stops the start.
    """


@hookspec
def shutdown(app: Any, settings: BaseModel | None) -> None:
    """The daemon is stopping; release what `startup` acquired.

    app: the daemon being stopped.
    settings: this plugin's validated settings, or None.
    Returns: nothing. An exception is logged and the shutdown goes on.
    """


@hookspec(firstresult=True)
def accept_recording(path: str, config: Config, settings: BaseModel | None) -> bool | None:
    """Decide whether a file found in a watched folder should be analysed.

    path: absolute path of the finished file.
    config: the whole validated Config.
    settings: this plugin's validated settings, or None.
    Returns: True to analyse it, False to skip it, None to leave the decision to other plugins
    (and finally to the watcher's own rules). Stops at first non-None result.
    """


@hookspec(firstresult=True)
def make_analyzer(config: Config, settings: BaseModel | None) -> Analyzer | None:
    """Build the Analyzer that turns a chunk's frames into events (called once, lazily, when the
    first chunk needs analysing).

    config: the whole validated Config.
    settings: this plugin's validated settings, or None.
    Returns: an object with `name`, `analyze(chunk: daemon.models.ChunkInput) -> list[dict]` and
    `provenance() -> dict`, or None to let another plugin decide; the built-in default (tried
    last) loads the transformers Qwen3-VL backend. Stops at first non-None result.
    """


@hookspec
def events_found(
    recording: RecordingInfo,
    chunk: ChunkInfo,
    events: list[EventInfo],
    speech: list[SpeechSegment],
    settings: BaseModel | None,
    delivery_id: str,
) -> None:
    """A chunk was analysed and its events committed (called for every chunk, also one without
    events, so alerts come early rather than after a two-hour file).

    recording: the recording as it is now (`status` may already be done).
    chunk: the committed chunk (`chunk.provenance["speech"]` says what its audio gave, when
    speech is on).
    events: the events stored for that chunk, by start time.
    speech: what was said in that chunk (`[speech]` on), stored with its events, by start time;
    a segment both overlapping chunks heard comes with one of them. Empty with speech off.
    settings: this plugin's validated settings, or None.
    delivery_id: stable across retries of this notification.
    Returns: nothing. Raise to have it retried (RetryLater to set the delay, Gone to give up).
    """


@hookspec
def recording_finished(
    recording: RecordingInfo,
    events: list[EventInfo],
    static_spans: list[StaticSpan],
    alerts: list[AlertInfo],
    speech: list[SpeechSegment],
    summary: Summary | None,
    settings: BaseModel | None,
    delivery_id: str,
) -> None:
    """Every chunk of a recording was analysed; reports and subtitle files are written here.

    recording: the finished recording (status "done", duration, model and settings).
    events: every event of the recording, by start time.
    static_spans: the spans not sent to the model (or sent at a floor rate) because nothing
    changed in them, by time, each with its reason; empty unless `[sampling] skip_static` is on.
    alerts: every alert of the recording ([[alerts]] rules), decided, by start time; empty
    without rules.
    speech: every speech segment of the recording, by start time (`[speech]` on; empty when it
    is off, the file has no audio stream or nothing was said: `recording.settings["speech"]`
    is there when speech was on, with `audio` false for a file without an audio stream).
    summary: the recording's summary and chapters (`[summary]`), or None when summaries are
    off or the text pass failed (the reason is in the log; the recording is still done).
    settings: this plugin's validated settings, or None.
    delivery_id: stable across retries of this notification.
    Returns: nothing. Raise to have it retried (RetryLater to set the delay, Gone to give up).
    """


@hookspec
def recording_failed(
    recording: RecordingInfo,
    error: str,
    settings: BaseModel | None,
    delivery_id: str,
) -> None:
    """A recording could not be analysed (unsupported media, failed chunks).

    recording: the failed recording.
    error: why, as a person should read it (also `recording.reason`).
    settings: this plugin's validated settings, or None.
    delivery_id: stable across retries of this notification.
    Returns: nothing. Raise to have it retried (RetryLater to set the delay, Gone to give up).
    """


@hookspec
def alert_fired(
    recording: RecordingInfo,
    alert: AlertInfo,
    settings: BaseModel | None,
    delivery_id: str,
) -> None:
    """An alert rule fired: its candidate was confirmed by the second look (or is delivered
    unverified because its rule says `verify = false` or `deliver_unverified = true`).

    recording: the recording it happened in.
    alert: the alert: rule, severity, outcome ("confirmed" or "unverified") and its reason,
    start_s/end_s, the first answer's `why`, the second look (`verification`), a JPEG thumbnail
    and provenance; `daemon.models.alert_json(alert, recording.path)` is its JSON form. Called
    once per alert id and plugin (at least once: `delivery_id` tells retries apart), only for
    the plugins its rule names (all that implement this hook when it names none).
    settings: this plugin's validated settings, or None.
    delivery_id: stable across retries of this notification.
    Returns: nothing. Raise to have it retried (RetryLater to set the delay, Gone to give up).
    """


@hookspec
def digest_ready(digest: DigestInfo, settings: BaseModel | None) -> None:
    """A digest was written (`framewatch digest`, or the daily one with `[digest] schedule`).

    digest: the file (`path`) and its Markdown text, the period (`since`, `until`, seconds
    since the epoch), the folder when only one counted, and every recording finished in the
    period with its summary (None when it has none).
    settings: this plugin's validated settings, or None.
    Returns: nothing. Called directly, once per plugin (not through the outbox: a digest belongs
    to no recording): an exception is logged, not retried; `framewatch digest` for the same
    period sends it again.
    """


NOTIFICATION_HOOKS = ("events_found", "recording_finished", "recording_failed", "alert_fired")
"""Hooks delivered through the outbox, one plugin at a time."""
