"""The default analyzer and the analyzer contract every plugin's analyzer is held to.

The default is a trylast `make_analyzer`: Qwen3-VL through transformers, or through an
OpenAI-compatible server when model.backend = "openai". Whatever `make_analyzer` returns is
checked once, when it is made (`check_analyzer`), and every answer at the boundary
(`PluginAnalyzer`), so a plugin written from the README either works or is refused in one line
that names it:

- `analyze(chunk) -> list[dict]` is required; anything but a list back fails that chunk for good
  (with a reason naming the plugin); an exception raised inside it fails the chunk with a reason
  naming the plugin, retried like any failed chunk (bounded by daemon.max_attempts /
  queue.max_deliveries);
- `name` is optional (default: the plugin's name), and must be a non-empty string;
- `provenance() -> dict` is optional (default: {"model": name, "plugin": ..., "plugin_version":
  ...} from the plugin's distribution); it must return a JSON object;
- alert rules: when `chunk.rules` is not empty, a dict in the answer whose `rule` names one of
  them is a rule hit; one without a numeric `start_s` is refused (logged in one line naming the
  plugin) and the chunk goes on;
- `verify(request) -> dict` is optional: without it every candidate stays unverified, saying so;
  an answer without a boolean `happened` (or an exception) makes that one alert unverified with
  a reason naming the plugin, never a retry loop;
- `summarize(request) -> dict` is optional (a text-only pass over a recording's stored events,
  `daemon.models.SummaryInput`): without it a recording simply has no summary, and the log and
  `framewatch summarize` say why; an exception or an answer that is not a dict makes that one
  summary fail (logged, naming the plugin), never the recording. `count_tokens(text) -> int` is
  optional too: without it the summary's batches are cut by a character estimate.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from daemon.engine.alerts import finite
from daemon.engine.analyzer import AnalyzerFailed, AnalyzerRefused
from daemon.gpu import is_cuda_fault, is_oom
from daemon.hookspecs import hookimpl
from daemon.log import get_logger

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.engine.analyzer import Analyzer
    from daemon.models import ChunkInput, SummaryInput, VerifyInput

log = get_logger(__name__)

# The host's own analyzer is not a stranger: its errors (a server's HTTP error, a load failure)
# pass through unchanged.
HOST_PLUGIN = "qwen3vl"


@hookimpl(trylast=True)
def make_analyzer(config: Config) -> Analyzer:
    if config.model.backend == "openai":
        # An OpenAI-compatible server (vLLM) runs the model; this process never imports torch.
        from daemon.engine.backends.openai import OpenAIAnalyzer

        return OpenAIAnalyzer.from_config(config)
    # Imported here: loading torch and transformers is the price of analysing, not of starting.
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    return QwenAnalyzer.from_config(config)


def _json_object(value: Any) -> bool:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return False
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class PluginAnalyzer:
    """A checked analyzer: what the worker calls. Answers are checked here, at the boundary."""

    def __init__(self, inner: Any, plugin: str, version: str | None, name: str):
        self.inner = inner
        self.plugin = plugin
        self.version = version
        self.name = name
        self._stranger = plugin != HOST_PLUGIN

    @property
    def last_stats(self) -> dict[str, Any]:
        stats = getattr(self.inner, "last_stats", None)
        return dict(stats) if isinstance(stats, dict) else {}

    def analyze(self, chunk: ChunkInput) -> list[Any]:
        raw = self._call("analyze", chunk, "")
        if not isinstance(raw, list):
            raise AnalyzerFailed(
                f"the analyzer of plugin {self.plugin!r} returned {type(raw).__name__}, "
                "not a list of events (return [] for an unusable answer)",
                permanent=True,
            )
        if chunk.rules and self._stranger:
            raw = self._checked_hits(raw, {r.name for r in chunk.rules})
        return raw

    def _call(self, method: str, request: Any, what: str) -> Any:
        """Call the inner analyzer's `method`; an exception raised inside a plugin's analyzer
        becomes AnalyzerFailed naming the plugin (`what`: which call, for the message). Out of
        memory and CUDA faults are the GPU's, whoever raised them: the worker steps down or ends
        the process, so they pass unchanged, as does everything from framewatch's own."""
        try:
            return getattr(self.inner, method)(request)
        except Exception as exc:
            if not self._stranger or is_oom(exc) or is_cuda_fault(exc):
                raise
            raise AnalyzerFailed(
                f"the analyzer of plugin {self.plugin!r}{what} raised {type(exc).__name__}: {exc}",
                permanent=False,
            ) from exc

    def _checked_hits(self, raw: list[Any], asked: set[str]) -> list[Any]:
        out = []
        for item in raw:
            if (
                isinstance(item, dict)
                and item.get("rule") in asked
                and not finite(item.get("start_s"))
            ):
                log.warning(
                    "rule_hit_refused",
                    reason=f"the analyzer of plugin {self.plugin!r} answered rule "
                    f'{item["rule"]!r} without a numeric start_s (README, "Your own model")',
                )
                continue
            out.append(item)
        return out

    @property
    def can_verify(self) -> bool:
        """Whether the analyzer offers the optional second look (`verify`)."""
        return callable(getattr(self.inner, "verify", None))

    def verify(self, request: VerifyInput) -> dict[str, Any]:
        """The analyzer's answer to one candidate's yes/no question, checked: a dict with a
        boolean `happened` (and a `reason`), or {"error": why} when it cannot be used."""
        raw = self._call("verify", request, ": verify()")
        if not isinstance(raw, dict) or not (
            isinstance(raw.get("happened"), bool) or isinstance(raw.get("error"), str)
        ):
            what = type(raw).__name__ if not isinstance(raw, dict) else "an object"
            raise AnalyzerFailed(
                f"the analyzer of plugin {self.plugin!r}: verify() returned {what} without a "
                'boolean "happened" (README, "Your own model")',
                permanent=True,
            )
        return raw

    @property
    def can_summarize(self) -> bool:
        """Whether the analyzer offers the optional text-only pass (`summarize`)."""
        return callable(getattr(self.inner, "summarize", None))

    def summarize(self, request: SummaryInput) -> dict[str, Any]:
        """The analyzer's summary answer, checked: a dict (engine/summary.py repairs what is in
        it), or {"error": why}. Raises AnalyzerFailed naming the plugin when it raised or broke
        the contract."""
        raw = self._call("summarize", request, ": summarize()")
        if not isinstance(raw, dict):
            raise AnalyzerFailed(
                f"the analyzer of plugin {self.plugin!r}: summarize() returned "
                f"{type(raw).__name__}, not a JSON object",
                permanent=True,
            )
        return raw

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` by the analyzer's own tokenizer; None when it has none (or fails)."""
        own = getattr(self.inner, "count_tokens", None)
        if not callable(own):
            return None
        try:
            n = own(text)
        except Exception as exc:
            if not self._stranger:
                raise
            log.warning(
                "analyzer_count_tokens_failed",
                plugin=self.plugin,
                error=f"{type(exc).__name__}: {exc}",
                action="sizing the summary's batches by estimate",
            )
            return None
        return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None

    def provenance(self) -> dict[str, Any]:
        """The plugin's provenance, or a default naming the plugin; stored with every event."""
        own = getattr(self.inner, "provenance", None)
        if own is None:
            return {"model": self.name, "plugin": self.plugin, "plugin_version": self.version}
        try:
            found = own()
        except Exception as exc:
            if not self._stranger:
                raise
            raise AnalyzerFailed(
                f"the analyzer of plugin {self.plugin!r}: provenance() raised {type(exc).__name__}: {exc}",
                permanent=False,
            ) from exc
        if not _json_object(found):
            raise AnalyzerFailed(
                f"the analyzer of plugin {self.plugin!r}: provenance() returned "
                f"{type(found).__name__}, not a JSON object",
                permanent=True,
            )
        if self._stranger:
            found = {"plugin": self.plugin, "plugin_version": self.version, **found}
        return dict(found)


def check_analyzer(made: Any, plugin: str, version: str | None) -> PluginAnalyzer:
    """What `make_analyzer` of `plugin` returned, checked against the contract (module doc), as
    the analyzer the worker calls. Raises AnalyzerRefused naming the plugin and what is wrong."""
    what = type(made).__name__

    def refuse(problem: str) -> AnalyzerRefused:
        return AnalyzerRefused(
            f'plugin {plugin!r}: make_analyzer returned {what}, {problem} (README, "Your own model")'
        )

    if not callable(getattr(made, "analyze", None)):
        raise refuse("which has no analyze(chunk) method")
    name = getattr(made, "name", None)
    if name is None:
        name = plugin
    elif not isinstance(name, str) or not name.strip():
        raise refuse(f"whose name is {name!r}, not a non-empty string")
    provenance = getattr(made, "provenance", None)
    if provenance is not None and not callable(provenance):
        raise refuse("whose provenance is not a method")
    for optional in ("verify", "summarize", "count_tokens"):
        method = getattr(made, optional, None)
        if method is not None and not callable(method):
            raise refuse(f"whose {optional} is not a method")
    checked = PluginAnalyzer(made, plugin, version, name)
    if provenance is not None:
        try:
            checked.provenance()
        except AnalyzerFailed as exc:
            raise AnalyzerRefused(f'{exc} (README, "Your own model")') from None
    return checked
