"""A small OpenAI-compatible chat-completions server on loopback for tests, answering with the
real transformers Qwen3-VL path (daemon.engine.backends.qwen3vl.QwenAnalyzer on the tiny
checkpoint): the frames come back out of their JPEG data URLs with the times written before them,
and the answer is decoded under the grammar of the JSON schema the request names (the schema must
be the events schema the analyzer compiled, as vLLM's guided decoding would use it)."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import uuid
from typing import Any

import numpy as np
from PIL import Image

from daemon.engine import prompts
from daemon.models import ChunkInput, Frame, RuleQuestion, VerifyInput
from tests.services import LoopbackServer, QuietHandler

_TIME = re.compile(r"^<(\d+(?:\.\d+)?) seconds>$")


class OpenAICompatibleServer(LoopbackServer):
    """`POST /v1/chat/completions`; `requests` keeps every request body; `fail_next` makes the
    next n requests answer 503."""

    def __init__(
        self, analyzer: Any, *, api_key: str | None = None, schema: dict[str, Any] | None = None
    ):
        self.analyzer = analyzer
        self.api_key = api_key
        self.schema = schema
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self._lock = threading.Lock()  # one generate() at a time, as one GPU would
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                status, answer = outer.answer(self.path, self.headers.get("Authorization"), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler, poll_s=0.05)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer(
        self, path: str, auth: str | None, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "bad api key"}}
        if self.fail_next > 0:
            self.fail_next -= 1
            return 503, {"error": {"message": "overloaded"}}
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt.get("type") != "json_schema" or schema is None:
            return 400, {
                "error": {"message": "this server only answers with response_format json_schema"}
            }
        name = fmt["json_schema"].get("name")
        rules = tuple(schema["properties"].get("rules", {}).get("required", ()))
        if self.schema is not None:
            # The schemas the analyzer compiles: events (with the request's rules) or a verdict.
            a = self.analyzer
            expected = (
                prompts.verify_schema(a.reason_chars)
                if name == "verdict"
                else prompts.event_schema(*a.bounds, rules=rules, reason_chars=a.reason_chars)
            )
            if prompts.schema_key(schema) != prompts.schema_key(expected) or (
                not rules and name != "verdict" and schema != self.schema
            ):
                return 400, {"error": {"message": "schema differs from the compiled grammar"}}
        chunk = self._chunk(body["messages"])
        with self._lock:
            if name == "verdict":
                answer = self.analyzer.verify(self._verify(chunk))
                content = json.dumps(answer)
            else:
                asked = tuple(RuleQuestion(r, r) for r in rules)
                items = self.analyzer.analyze(
                    ChunkInput(
                        chunk.recording_path,
                        0,
                        chunk.start_s,
                        chunk.end_s,
                        chunk.prompt,
                        chunk.frames,
                        asked,
                    )
                )
                events = [e for e in items if "rule" not in e]
                verdicts: dict[str, Any] = {r: {"happened": False} for r in rules}
                for h in (e for e in items if "rule" in e):
                    verdicts[h["rule"]] = {
                        "happened": True,
                        **{k: h[k] for k in ("start_s", "end_s", "why")},
                    }
                content = json.dumps({"events": events, **({"rules": verdicts} if rules else {})})
            stats = dict(self.analyzer.last_stats)
        truncated = bool(stats.get("truncated"))
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "" if truncated else content,
                    },
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": stats.get("prompt_tokens", 0),
                "completion_tokens": stats.get("generated_tokens", 0),
            },
        }

    @staticmethod
    def _verify(chunk: ChunkInput) -> VerifyInput:
        return VerifyInput(
            chunk.recording_path, "remote", "", 0.0, chunk.start_s, chunk.end_s,
            chunk.start_s, chunk.end_s, chunk.prompt, chunk.frames,
        )  # fmt: skip

    @staticmethod
    def _chunk(messages: list[dict[str, Any]]) -> ChunkInput:
        """The frames (each after its `<t seconds>` text) and the last text as the prompt."""
        frames: list[Frame] = []
        texts: list[str] = []
        t: float | None = None
        for part in messages[-1]["content"]:
            if part["type"] == "text":
                m = _TIME.match(part["text"])
                if m:
                    t = float(m.group(1))
                else:
                    texts.append(part["text"])
            elif part["type"] == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/jpeg;base64,") and t is not None
                img = np.asarray(
                    Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
                )
                frames.append(Frame(t, img))
                t = None
        times = [f.t_s for f in frames]
        return ChunkInput("(remote)", 0, min(times), max(times), texts[-1], tuple(frames))
