"""Qwen3-VL behind an OpenAI-compatible server (vLLM): a chunk's frames go out as JPEG images with
their times in the text, the answer comes back constrained by the events JSON schema.

Only the standard library speaks HTTP here: no SDK, no torch in this process (a box may run the
server on its GPU and framewatch beside it, or several boxes may share one server).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.engine import prompts
from daemon.engine.alerts import parse_verdicts, rule_answer_tokens
from daemon.engine.analyzer import ModelLoadError, new_stats
from daemon.engine.prompts import parse_events
from daemon.engine.summary import summary_schema

if TYPE_CHECKING:
    import numpy as np

    from daemon.config import Config
    from daemon.models import ChunkInput, SummaryInput, VerifyInput

log = structlog.get_logger(__name__)

CREDENTIAL = "framewatch-api-key"  # default file name under $CREDENTIALS_DIRECTORY
FRAMES_INTRO = (
    "The images are frames of one video, in order; the text before each image is that frame's "
    "time in seconds from the start of the recording."
)


class ServerError(RuntimeError):
    """The server failed to answer (unreachable, 5xx, 4xx): the chunk fails and is retried."""


def jpeg_data_url(image: np.ndarray, quality: int = 90) -> str:
    """An RGB frame as a `data:image/jpeg;base64,...` URL, the form OpenAI-style servers accept."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def frame_label(t_s: float) -> str:
    """A frame's time as the text before its image (the transformers processor's own notation)."""
    return f"<{t_s:.1f} seconds>"


def read_api_key(config: Config) -> str | None:
    """The API key: model.api_key_file (a bare name is looked up in $CREDENTIALS_DIRECTORY), else
    the variable named by model.api_key_env, else the credential `framewatch-api-key` when
    systemd provides one; None when the server needs none."""
    m = config.model
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    path: Path | None = None
    if m.api_key_file is not None:
        path = m.api_key_file
        if not path.is_absolute():
            base = (
                Path(creds)
                if creds and len(path.parts) == 1
                else (config.source.parent if config.source else Path.cwd())
            )
            path = base / path
    elif os.environ.get(m.api_key_env):
        return os.environ[m.api_key_env].strip()
    elif creds and (Path(creds) / CREDENTIAL).is_file():
        path = Path(creds) / CREDENTIAL
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ModelLoadError(
            f"cannot read model.api_key_file {path}: {exc.strerror or exc}"
        ) from None


class OpenAIAnalyzer:
    """Chat completions against `base_url` (…/v1), one request per chunk."""

    name = "qwen3vl-openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        schema: dict[str, Any],
        max_new_tokens: int = 1024,
        timeout_s: float = 600.0,
        bounds: tuple[int, int, int] | None = None,
        reason_chars: int = 160,
        verify_max_new_tokens: int = 256,
    ):
        self.bounds = bounds
        self.reason_chars = reason_chars
        self.verify_max_new_tokens = verify_max_new_tokens
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.schema = schema
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s
        self.last_stats: dict[str, Any] = {}
        self._server_model: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> OpenAIAnalyzer:
        m, a = config.model, config.analysis
        if not m.base_url:
            raise ModelLoadError('model.backend = "openai" needs model.base_url')
        return cls(
            m.base_url,
            m.name,
            api_key=read_api_key(config),
            schema=prompts.event_schema(a.max_events, a.label_chars, a.description_chars),
            max_new_tokens=m.max_new_tokens,
            timeout_s=m.request_timeout_s,
            bounds=(a.max_events, a.label_chars, a.description_chars),
            reason_chars=config.alerting.reason_chars,
            verify_max_new_tokens=config.alerting.verify_max_new_tokens,
        )

    def request_body(self, chunk: ChunkInput | VerifyInput) -> dict[str, Any]:
        """One chat completion for a chunk (the events schema, with its alert rules when asked)
        or for a second look (`VerifyInput`: the yes/no schema)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": FRAMES_INTRO}]
        for f in chunk.frames:
            # The daemon's clock (PTS) in the text: the model can only report times it is shown.
            content.append({"type": "text", "text": frame_label(f.t_s)})
            content.append({"type": "image_url", "image_url": {"url": jpeg_data_url(f.image)}})
        content.append({"type": "text", "text": chunk.prompt})
        name, schema, max_tokens = "events", self.schema, self.max_new_tokens
        rules = getattr(chunk, "rules", ())
        if not hasattr(chunk, "index"):  # a second look
            name, schema = "verdict", prompts.verify_schema(self.reason_chars)
            max_tokens = self.verify_max_new_tokens
        elif rules and self.bounds is not None:
            schema = prompts.event_schema(
                *self.bounds, rules=[r.name for r in rules], reason_chars=self.reason_chars
            )
            max_tokens += rule_answer_tokens(rules, self.reason_chars)
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            # Greedy, as the transformers backend: the same chunk gives the same events.
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            },
        }

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise ServerError(f"{self.base_url} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"cannot reach {self.base_url}: {reason}") from None
        except json.JSONDecodeError as exc:
            raise ServerError(
                f"{self.base_url} answered something that is not JSON: {exc.msg}"
            ) from None

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        """Events for one chunk; [] when the answer is cut off or not the schema's JSON. Raises
        ServerError when the server cannot answer (the chunk fails and is retried)."""
        started = time.perf_counter()
        stats = new_stats(len(chunk.frames))
        self.last_stats = stats
        if not chunk.frames:
            stats["parse_error"] = "no frames"
            return []
        answer = self._post(self.request_body(chunk))
        self._server_model = answer.get("model") or self._server_model
        usage = answer.get("usage") or {}
        stats["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
        stats["generated_tokens"] = int(usage.get("completion_tokens") or 0)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ServerError(
                f"{self.base_url} answered without choices[0].message.content"
            ) from None
        if choice.get("finish_reason") == "length":
            stats["truncated"] = True
            events, error = [], f"cut off at model.max_new_tokens ({self.max_new_tokens})"
        else:
            events, error = parse_events(text)
            if chunk.rules and error is None:
                events = events + parse_verdicts(json.loads(text), chunk.rules)
        stats["parse_error"] = error
        stats["seconds"] = round(time.perf_counter() - started, 3)
        if error:
            log.warning("answer_unusable", chunk=chunk.index, error=error, tail=text[-200:])
        return events

    def verify(self, request: VerifyInput) -> dict[str, Any]:
        """The second look at one alert candidate: {"happened": bool, "reason": str}, or
        {"error": why} when the answer is unusable. Raises ServerError when the server cannot
        answer (the alert is then unverified, with that reason)."""
        started = time.perf_counter()
        stats: dict[str, Any] = {"frames": len(request.frames), "parse_error": None}
        self.last_stats = stats
        if not request.frames:
            return {"error": "no frames in the window"}
        answer = self._post(self.request_body(request))
        usage = answer.get("usage") or {}
        stats["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
        stats["generated_tokens"] = int(usage.get("completion_tokens") or 0)
        stats["seconds"] = round(time.perf_counter() - started, 3)
        try:
            choice = answer["choices"][0]
            data = json.loads(choice["message"]["content"] or "")
        except (KeyError, IndexError, TypeError, json.JSONDecodeError):
            stats["parse_error"] = "no JSON verdict in choices[0].message.content"
            return {"error": stats["parse_error"]}
        if choice.get("finish_reason") == "length" or not isinstance(data, dict):
            stats["parse_error"] = "cut off or not an object"
            return {"error": stats["parse_error"]}
        if not isinstance(data.get("happened"), bool):
            return {"error": 'no boolean "happened"'}
        return {"happened": data["happened"], "reason": str(data.get("reason", ""))}

    def summarize(self, request: SummaryInput) -> dict[str, Any]:
        """A text-only chat completion constrained by the summary schema: {"title", "summary",
        "chapters", "key_events"}, or {"error": why} when the answer is unusable. Raises
        ServerError when the server cannot answer."""
        started = time.perf_counter()
        stats: dict[str, Any] = new_stats(0)
        self.last_stats = stats
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "max_tokens": request.max_new_tokens,
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "summary",
                    "schema": summary_schema(request),
                    "strict": True,
                },
            },
        }
        answer = self._post(body)
        self._server_model = answer.get("model") or self._server_model
        usage = answer.get("usage") or {}
        stats["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
        stats["generated_tokens"] = int(usage.get("completion_tokens") or 0)
        stats["seconds"] = round(time.perf_counter() - started, 3)
        try:
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return {"error": "no choices[0].message.content"}
        if choice.get("finish_reason") == "length":
            stats["truncated"] = True
            return {"error": f"cut off at summary.max_new_tokens ({request.max_new_tokens})"}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return {"error": f"not JSON: {exc.msg}"}
        return data if isinstance(data, dict) else {"error": "not a JSON object"}

    def provenance(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": "openai",
            "base_url": self.base_url,
            "server_model": self._server_model,
            "decoding": "greedy",
            "max_new_tokens": self.max_new_tokens,
        }
