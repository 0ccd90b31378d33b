"""The plugin manager: every plugin from the `framewatch` entry-point group, their settings, and
calls to one plugin at a time.

Plugins of framewatch's own distribution (the built-ins in `plugins/`) are active only when their
`[plugins.<name>]` table exists, so a bare config writes no file and calls no URL; installed
third-party plugins are active once installed. The host's own default analyzer (analyzer.py) is
always there, tried last. pluggy stops a whole hook call at the first exception, so notifications
are never called through `pm.hook.<name>(...)`: the dispatcher calls one plugin's implementation
at a time (`call_one`), and the firstresult hooks walk the implementations here so each receives
its own `settings`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel, ValidationError

from daemon import __version__, hookspecs
from daemon.engine.analyzer import AnalyzerRefused
from daemon.log import get_logger
from daemon.pluginhost import analyzer as default_analyzer
from daemon.pluginhost.analyzer import PluginAnalyzer, check_analyzer
from daemon.redact import SECRET, redact_value, secret_fields

if TYPE_CHECKING:
    from daemon.config import Config

log = get_logger(__name__)

ENTRY_POINT_GROUP = "framewatch"
# Entry points of this distribution are the built-in plugins: opt-in by their table.
OWN_DISTRIBUTION = "framewatch"
# The host's own plugin: the default analyzer (trylast, so any plugin's make_analyzer wins).
DEFAULT_ANALYZER = "qwen3vl"

# In the order hookspecs.py defines them (the README's hook reference follows it).
HOOK_NAMES: tuple[str, ...] = tuple(
    sorted(
        (n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "framewatch_spec")),
        key=lambda n: getattr(hookspecs, n).__code__.co_firstlineno,
    )
)


@dataclass(frozen=True, slots=True)
class PluginEntry:
    """One plugin as `framewatch plugins` lists it."""

    name: str
    version: str | None
    source: str  # "built-in", "entry point <dist>", "registered"
    hooks: tuple[str, ...]
    active: bool
    reason: str | None = None  # why inactive

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "hooks": list(self.hooks),
            "active": self.active,
            "reason": self.reason,
        }


class PluginManager:
    """framewatch's pluggy manager plus what pluggy does not keep: sources, versions, settings."""

    def __init__(self, config: Config):
        self.config = config
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.settings: dict[str, BaseModel | None] = {}
        self._meta: dict[str, tuple[str | None, str]] = {}  # name -> (version, source)
        # name -> (version, source, why, its entry point when it has one)
        self._inactive: dict[
            str, tuple[str | None, str, str, importlib.metadata.EntryPoint | None]
        ] = {}

    # -- loading ------------------------------------------------------------------------------

    def load(self, *, third_party: bool = True, extra: Iterable[tuple[object, str]] = ()) -> None:
        """Register the default analyzer, the plugins of the `framewatch` entry-point group
        (framewatch's own built-ins always, installed ones unless not `third_party`) and `extra`
        (plugin, name) pairs (tests, embedding), then validate every plugin's settings. Raises
        ConfigError (key paths `plugins.<name>...`) for anything a person must fix."""
        tables = self.config.plugins.tables()
        disabled = set(self.config.plugins.disabled)
        errors: list[tuple[str, Any, str]] = []
        if DEFAULT_ANALYZER in disabled:
            self._inactive[DEFAULT_ANALYZER] = (
                __version__,
                "built-in",
                "disabled in [plugins]",
                None,
            )
        else:
            self._register(default_analyzer, DEFAULT_ANALYZER, __version__, "built-in", errors)
        for ep in entry_points():
            dist = ep.dist.name if ep.dist is not None else None
            own = dist == OWN_DISTRIBUTION
            if not own and not third_party:
                continue
            version = __version__ if own else (ep.dist.version if ep.dist is not None else None)
            source = "built-in" if own else f"entry point {dist or ep.value}"
            if ep.name in disabled:
                self._inactive[ep.name] = (version, source, "disabled in [plugins]", ep)
                continue
            if own and ep.name not in tables:
                self._inactive[ep.name] = (version, source, f"no [plugins.{ep.name}] table", ep)
                continue
            if self.pm.has_plugin(ep.name):
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
            except Exception as exc:  # any import error of someone else's code
                errors.append(
                    (
                        f"plugins.{ep.name}",
                        ep.value,
                        f"cannot load plugin: {type(exc).__name__}: {exc}",
                    )
                )
                continue
            self._register(plugin, ep.name, version, source, errors)
        for plugin, name in extra:
            version = getattr(plugin, "__version__", None)
            if name in disabled:
                self._inactive[name] = (version, "registered", "disabled in [plugins]", None)
                continue
            self._register(plugin, name, version, "registered", errors)
        self._check_pending(errors)
        errors += self._validate_settings([n for n, _ in self.pm.list_name_plugin()])
        for name in tables:
            if not self.pm.has_plugin(name) and name not in self._inactive:
                errors.append((f"plugins.{name}", tables[name], "no such plugin is installed"))
        known = set(self._meta) | set(self._inactive)
        for i, rule in enumerate(self.config.alerts):
            for name in rule.plugins or ():
                if name not in known:
                    errors.append((f"alerts.{i}.plugins", name, "no such plugin is installed"))
        if errors:
            raise _config_error(str(self.config.source) if self.config.source else None, errors)
        log.debug("plugins_loaded", active=sorted(self._meta), inactive=sorted(self._inactive))

    def register(self, plugin: object, name: str, *, version: str | None = None) -> None:
        """Register one more plugin (tests, embedding) and validate its settings now."""
        errors: list[tuple[str, Any, str]] = []
        self._register(
            plugin, name, version or getattr(plugin, "__version__", None), "registered", errors
        )
        self._check_pending(errors)
        errors += self._validate_settings([name])
        if errors:
            self.unregister(name)
            raise _config_error(None, errors)

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin, name)
        self._meta.pop(name, None)
        self.settings.pop(name, None)

    def _register(
        self,
        plugin: object,
        name: str,
        version: str | None,
        source: str,
        errors: list[tuple[str, Any, str]],
    ) -> None:
        try:
            self.pm.register(plugin, name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            errors.append((f"plugins.{name}", source, str(exc)))
            return
        self._meta[name] = (version, source)

    def _check_pending(self, errors: list[tuple[str, Any, str]]) -> None:
        # A misspelt hook name would otherwise be silently never called.
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or "?"
            errors.append((f"plugins.{name}", self._meta.get(name, (None, "?"))[1], str(exc)))
            self.unregister(name)

    def _validate_settings(self, names: Iterable[str]) -> list[tuple[str, Any, str]]:
        models: dict[str, type[BaseModel]] = {}
        for result in self.pm.hook.register_settings():
            models.update(result or {})
        tables = self.config.plugins.tables()
        base = self.config.source.parent if self.config.source else None
        errors: list[tuple[str, Any, str]] = []
        for name in names:
            table = tables.get(name, {})
            model = models.get(name)
            if model is None:
                self.settings[name] = None
                errors += [
                    (f"plugins.{name}.{k}", v, "unknown key (the plugin has no settings)")
                    for k, v in table.items()
                ]
                continue
            try:
                self.settings[name] = model.model_validate(table, context={"config_dir": base})
            except ValidationError as exc:
                # The plugin's SecretStr fields are secret whatever they are called; ConfigError
                # hides secret-looking names besides (redact.is_secret_key).
                secrets = secret_fields(model)
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                    value = err.get("input")
                    value = (
                        SECRET
                        if err["loc"] and str(err["loc"][0]) in secrets
                        else redact_value(value, secret_keys=secrets)
                    )
                    errors.append((f"plugins.{name}" + (f".{loc}" if loc else ""), value, msg))
        return errors

    # -- introspection ------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._meta)

    def hooks_of(self, name: str) -> tuple[str, ...]:
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            return ()
        callers = self.pm.get_hookcallers(plugin) or []
        return tuple(sorted(c.name for c in callers))

    def entries(self) -> list[PluginEntry]:
        """Every plugin known, active or not, for `framewatch plugins`."""
        out = [
            PluginEntry(name, version, source, self.hooks_of(name), True)
            for name, (version, source) in self._meta.items()
        ]
        for name, (version, source, why, ep) in self._inactive.items():
            module = (
                default_analyzer
                if name == DEFAULT_ANALYZER
                else ep.load()
                if ep is not None
                else None
            )
            hooks = tuple(
                h for h in HOOK_NAMES if hasattr(getattr(module, h, None), "framewatch_impl")
            )
            out.append(PluginEntry(name, version, source, hooks, False, why))
        return sorted(out, key=lambda e: (not e.active, e.name))

    def subscribers(self, hook: str) -> list[str]:
        """Names of the active plugins that implement notification `hook` (the Worker writes one
        outbox row for each)."""
        return [impl.plugin_name for impl in self._impls(hook)]

    def _impls(self, hook: str) -> list[Any]:
        caller = getattr(self.pm.hook, hook)
        # get_hookimpls() is in registration order with tryfirst/trylast applied; pluggy calls
        # them last-first, and so do we.
        return [
            i
            for i in reversed(caller.get_hookimpls())
            if not (i.hookwrapper or getattr(i, "wrapper", False))
        ]

    # -- calls --------------------------------------------------------------------------------

    def call_one(self, name: str, hook: str, **kwargs: Any) -> Any:
        """Call plugin `name`'s implementation of `hook` alone, with its own settings."""
        for impl in self._impls(hook):
            if impl.plugin_name == name:
                return self._invoke(impl, kwargs)
        raise LookupError(f"plugin {name!r} does not implement {hook}")

    def call_first(self, hook: str, **kwargs: Any) -> Any:
        """A firstresult hook, each implementation with its own settings: the first non-None."""
        for impl in self._impls(hook):
            result = self._invoke(impl, kwargs)
            if result is not None:
                return result
        return None

    def _invoke(self, impl: Any, kwargs: dict[str, Any]) -> Any:
        args = {**kwargs, "settings": self.settings.get(impl.plugin_name)}
        return impl.function(*(args[a] for a in impl.argnames))

    def make_analyzer(self) -> PluginAnalyzer:
        """The Analyzer from the first plugin that makes one (the default Qwen3-VL one last),
        checked against the analyzer contract (analyzer.py): AnalyzerRefused names the plugin
        and what is missing."""
        for impl in self._impls("make_analyzer"):
            name = impl.plugin_name
            try:
                made = self._invoke(impl, {"config": self.config})
            except Exception as exc:
                if name == DEFAULT_ANALYZER:
                    raise  # ModelLoadError says which setting to change
                raise AnalyzerRefused(
                    f"plugin {name!r}: make_analyzer raised {type(exc).__name__}: {exc}"
                ) from exc
            if made is not None:
                return check_analyzer(made, name, self._meta.get(name, (None, ""))[0])
        raise RuntimeError(
            f"no plugin made an analyzer (is the built-in {DEFAULT_ANALYZER} plugin disabled?)"
        )

    def accept_recording(self, path: str) -> bool | None:
        return self.call_first("accept_recording", path=path, config=self.config)  # type: ignore[no-any-return]

    def startup(self, app: Any) -> None:
        for impl in reversed(self._impls("startup")):
            self._invoke(impl, {"app": app})

    def shutdown(self, app: Any) -> None:
        # Reverse of startup; one plugin failing to stop must not keep the others running.
        for impl in self._impls("shutdown"):
            try:
                self._invoke(impl, {"app": app})
            except Exception:
                log.exception("plugin_shutdown_failed", plugin=impl.plugin_name)


def entry_points() -> Sequence[importlib.metadata.EntryPoint]:
    """The `framewatch` entry-point group: built-in plugins (this distribution's) and installed ones."""
    return tuple(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def add_plugin_commands(
    subparsers: Any, bind: Callable[[str, Callable[..., int]], Callable[[Any], int]]
) -> None:
    """Let every plugin of the entry-point group (active or not: a command needs no table) add its
    subcommands (register_commands); `bind(plugin, run)` makes the parser's callable for one."""
    for ep in entry_points():
        try:
            plugin = ep.load()
        except Exception as exc:  # someone else's code: its commands are missing, the rest works
            log.warning(
                "plugin_commands_unavailable", plugin=ep.name, error=f"{type(exc).__name__}: {exc}"
            )
            continue
        hook = getattr(plugin, "register_commands", None)
        if hook is not None and hasattr(hook, "framewatch_impl"):
            hook(hookspecs.Commands(subparsers, lambda run, name=ep.name: bind(name, run)))


def _config_error(path: str | None, errors: list[tuple[str, Any, str]]) -> Exception:
    # Imported here: the config's models cost 60 ms, and `framewatch --help` loads this module
    # (for the plugins' commands) without a config.
    from daemon.config import ConfigError

    return ConfigError(path, errors)


def load_plugins(
    config: Config, *, third_party: bool = True, extra: Iterable[tuple[object, str]] = ()
) -> PluginManager:
    """A plugin manager with the default analyzer, the built-ins, installed plugins (unless not
    `third_party`) and `extra` registered and their settings validated (ConfigError otherwise)."""
    manager = PluginManager(config)
    manager.load(third_party=third_party, extra=extra)
    return manager
