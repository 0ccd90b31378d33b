"""Typed configuration: `load_config(path) -> Config`, every error reported with its key path.

The sections live beside this module, one owner each: `sections` (storage, model, chunking,
sampling, analysis, watch folders, daemon, plugins, GPU, queue), `alerts`, `speech`,
`summary` (summaries and digests). Everything is
re-exported here, so `from daemon.config import AlertRule` keeps working.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError

from daemon.config.alerts import SEVERITIES, AlertingConfig, AlertRule
from daemon.config.sections import (
    DEFAULT_INCLUDE,
    DEFAULT_MODEL,
    PROFILES,
    AnalysisConfig,
    ChunkingConfig,
    DaemonConfig,
    GpuConfig,
    ModelConfig,
    PluginsConfig,
    QueueConfig,
    SamplingConfig,
    StorageConfig,
    WatchConfig,
    _Section,
    default_state_dir,
)
from daemon.config.speech import DEFAULT_SPEECH_MODEL, SpeechConfig
from daemon.config.summary import DigestConfig, SummaryConfig
from daemon.redact import SECRET, is_secret_key, redact_value

__all__ = [
    "DEFAULT_INCLUDE",
    "DEFAULT_MODEL",
    "DEFAULT_SPEECH_MODEL",
    "PROFILES",
    "SEVERITIES",
    "AlertRule",
    "AlertingConfig",
    "AnalysisConfig",
    "ChunkingConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "DigestConfig",
    "GpuConfig",
    "ModelConfig",
    "PluginsConfig",
    "QueueConfig",
    "SamplingConfig",
    "SpeechConfig",
    "StorageConfig",
    "SummaryConfig",
    "WatchConfig",
    "apply_overrides",
    "default_state_dir",
    "load_config",
    "parse_config",
    "parse_override",
]


class Config(_Section):
    storage: StorageConfig = StorageConfig()
    model: ModelConfig = ModelConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    sampling: SamplingConfig = SamplingConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    gpu: GpuConfig = GpuConfig()
    plugins: PluginsConfig = PluginsConfig()
    watch: list[WatchConfig] = Field(default_factory=list, description="[[watch]] folders.")
    daemon: DaemonConfig = DaemonConfig()
    queue: QueueConfig = QueueConfig()
    alerts: list[AlertRule] = Field(default_factory=list, description="[[alerts]] rules.")
    alerting: AlertingConfig = AlertingConfig()
    speech: SpeechConfig = SpeechConfig()
    summary: SummaryConfig = SummaryConfig()
    digest: DigestConfig = DigestConfig()
    source: Path | None = Field(None, exclude=True, description="The file this was loaded from.")
    warnings: tuple[str, ...] = Field(
        (), exclude=True, description="What `config check` and start-up warn of (file mode)."
    )

    def rules_for(self, path: str | os.PathLike[str], profile: str | None) -> list[AlertRule]:
        """The [[alerts]] rules that apply to a recording at `path` analysed with `profile`, in
        config order."""
        target = Path(os.path.abspath(Path(path).expanduser()))
        base = self.source.parent if self.source else Path.cwd()
        out = []
        for rule in self.alerts:
            if rule.profiles is not None and profile not in rule.profiles:
                continue
            if rule.folders is not None:
                roots = [
                    Path(os.path.abspath(f if f.is_absolute() else base / f.expanduser()))
                    for f in rule.folders
                ]
                if not any(target.is_relative_to(r) for r in roots):
                    continue
            out.append(rule)
        return out

    def rule(self, name: str) -> AlertRule | None:
        """The [[alerts]] rule called `name`, or None (a rule removed since its alert was found)."""
        return next((r for r in self.alerts if r.name == name), None)

    def storage_url(self) -> str:
        """The store's SQLAlchemy URL, with defaults and relative SQLite paths resolved."""
        url = self.storage.url
        if not url:
            path = default_state_dir() / "framewatch.db"
            return f"sqlite:///{path}"
        prefix = "sqlite:///"
        if (
            url.startswith(prefix)
            and not url.startswith(prefix + "/")
            and url != "sqlite:///:memory:"
        ):
            rel = url[len(prefix) :]
            base = self.source.parent if self.source else Path.cwd()
            return prefix + str((base / rel).resolve())
        return url

    def media_dir(self) -> Path:
        """storage.media_dir made absolute; by default `media` beside a SQLite store's file, else
        `media/<database>-<digest of the store's address>` in the state directory (systemd's
        StateDirectory): two stores never share a folder, so one never prunes the other's."""
        if self.storage.media_dir is not None:
            path = self.storage.media_dir.expanduser()
            base = self.source.parent if self.source else Path.cwd()
            return Path(os.path.abspath(path if path.is_absolute() else base / path))
        url, prefix = self.storage_url(), "sqlite:///"
        if url.startswith(prefix) and url != prefix + ":memory:":
            return Path(url[len(prefix) :].split("?")[0]).parent / "media"
        # The address without credentials: scheme, host, port and database name.
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", parts.path.strip("/"))[:40] or "store"
        digest = hashlib.sha256(where.encode()).hexdigest()[:10]
        return default_state_dir() / "media" / f"{name}-{digest}"

    def watch_path(self, watch: WatchConfig) -> Path:
        """watch.path made absolute (relative to the config file), `~` expanded."""
        path = watch.path.expanduser()
        if not path.is_absolute():
            path = (self.source.parent if self.source else Path.cwd()) / path
        return Path(os.path.abspath(path))

    def watch_for(self, path: str | os.PathLike[str]) -> WatchConfig | None:
        """The [[watch]] folder `path` lies in (the deepest, when folders nest), or None."""
        target = Path(os.path.abspath(Path(path).expanduser()))
        best: tuple[int, WatchConfig] | None = None
        for watch in self.watch:
            root = self.watch_path(watch)
            if target.is_relative_to(root) and (best is None or len(root.parts) > best[0]):
                best = (len(root.parts), watch)
        return best[1] if best else None

    def summary_for(self, path: str | os.PathLike[str]) -> tuple[bool, str | None]:
        """(whether a recording at `path` gets a summary, the task prompt or None for the
        default): [summary] with its [[watch]] folder's `summary` / `summary_prompt`."""
        watch = self.watch_for(path)
        on = self.summary.enabled
        prompt = self.summary.prompt
        if watch is not None:
            on = on if watch.summary is None else watch.summary
            prompt = watch.summary_prompt or prompt
        return on, prompt

    def digest_dir(self) -> Path:
        """digest.dir made absolute; default: digests/ beside an SQLite store file, else under
        the state directory."""
        d = self.digest.dir
        if d is not None:
            d = d.expanduser()
            base = self.source.parent if self.source else Path.cwd()
            return d if d.is_absolute() else (base / d).resolve()
        url = self.storage_url()
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            return Path(url[len("sqlite:///") :]).parent / "digests"
        return default_state_dir() / "digests"

    def model_name(self) -> str:
        """model.name, with a relative local directory resolved against the config file."""
        return self._model_path(self.model.name)

    def speech_model(self) -> str:
        """speech.model, with a relative local directory resolved against the config file."""
        return self._model_path(self.speech.model)

    def _model_path(self, name: str) -> str:
        if name.startswith((".", "/", "~")):
            base = self.source.parent if self.source else Path.cwd()
            return str((base / Path(name).expanduser()).resolve())
        return name


class ConfigError(Exception):
    """The config is unusable; `errors` holds (key path, value, message) triples. The values are
    kept as they may be shown (daemon.redact): a secret-looking key's value, and every such value
    inside an echoed table, is SECRET; URLs lose their credentials and query strings. Callers that
    know more secret fields (a plugin's SecretStr settings) redact those before."""

    def __init__(self, path: str | None, errors: list[tuple[str, Any, str]]):
        self.path = path
        self.errors = [(key, _shown(key, value), msg) for key, value, msg in errors]
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per error: `<file>: <key path>: <message> (got <value>)`."""
        where = f"{self.path}: " if self.path else ""
        return [f"{where}{key}: {msg} (got {value!r})" for key, value, msg in self.errors]


def _shown(key: str, value: Any) -> Any:
    """A config error's value as it may be printed: SECRET under a secret-looking key (any part
    of the key path but a plugin's name: `plugins.<name>.api_keys.0`), else redacted inside."""
    parts = key.split(".")
    if parts[0] == "plugins":
        parts = parts[2:]
    if any(is_secret_key(p) for p in parts):
        return SECRET
    return redact_value(value)


def _errors_from(exc: ValidationError) -> list[tuple[str, Any, str]]:
    out = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append((key, err.get("input"), msg))
    return out


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate a config mapping (as read from TOML)."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(source) if source else None, _errors_from(exc)) from None
    seen: dict[str, int] = {}
    duplicates = []
    for i, rule in enumerate(cfg.alerts):
        if rule.name in seen:
            duplicates.append(
                (
                    f"alerts.{i}.name",
                    rule.name,
                    f"duplicate rule name (also alerts.{seen[rule.name]})",
                )
            )
        seen.setdefault(rule.name, i)
    if duplicates:
        raise ConfigError(str(source) if source else None, duplicates)
    return cfg.model_copy(update={"source": source.resolve() if source else None})


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` (`--set`) as (key path, value): the value is read as a TOML value
    (1, 0.5, true, "x", [1, 2]) and, when it is not one, taken as a string (model.name=Qwen/...)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(None, [("--set", text, "expected key.path=value")])
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of a config mapping with each (dotted key, value) set, tables made as needed."""
    out = copy.deepcopy(data)
    for key, value in overrides:
        parts = key.split(".")
        table = out
        for i, part in enumerate(parts[:-1]):
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(None, [(key, value, f"{where} is not a table")])
            table = nxt
        table[parts[-1]] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None, overrides: Sequence[tuple[str, Any]] = ()
) -> Config:
    """Read and validate a TOML config file; None gives the defaults. `overrides`: (dotted key,
    value) pairs set on top of the file before validation (`framewatch eval --set`)."""
    if path is None:
        return parse_config(apply_overrides({}, overrides)) if overrides else Config()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), [("(file)", str(p), "config file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [("(file)", str(p), f"cannot read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [("(file)", str(p), f"not valid TOML: {exc}")]) from None
    cfg = parse_config(apply_overrides(data, overrides), p)
    exposed = exposed_secrets(p, data)
    return cfg.model_copy(update={"warnings": (exposed,)}) if exposed else cfg


def exposed_secrets(path: Path, data: dict[str, Any]) -> str | None:
    """A warning when the config file holds secrets inline (a webhook secret, a web token, a
    password in a URL) and others than its owner (and group) may read it, or anyone but its owner
    may change it; None otherwise. Only the keys are named, never a value."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    loose = mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IROTH)
    keys = _inline_secrets(data)
    if not loose or not keys:
        return None
    return (
        f"{path} (mode {stat.S_IMODE(mode):04o}) holds secrets ({', '.join(keys)}) and is "
        f"{'writable by others than its owner' if mode & (stat.S_IWGRP | stat.S_IWOTH) else 'readable by anyone'}"
        f": chmod 0640 (or 0600) it, or move the secrets to *_file settings"
    )


def _inline_secrets(data: Any, prefix: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}{k}"
            if isinstance(v, str) and v and (is_secret_key(k) or _url_password(v)):
                found.append(key)
            else:
                found += _inline_secrets(v, key + ".")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _inline_secrets(v, f"{prefix}{i}.")
    return found


def _url_password(text: str) -> bool:
    head = text.split("://", 1)
    return len(head) == 2 and ":" in head[1].split("/", 1)[0].rpartition("@")[0]
