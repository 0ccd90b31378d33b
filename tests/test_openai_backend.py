"""model.backend = "openai" against an OpenAI-compatible server on loopback (tests/openai_server.py)
that answers through the real transformers Qwen3-VL path on the tiny checkpoint: frames as JPEG
data URLs with their times in the text, the events JSON schema as response_format, the API key
from the environment or a credential file, server errors as failed chunks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.analysis import analyze_path
from daemon.config import Config, parse_config
from daemon.engine import prompts
from daemon.engine.backends.openai import OpenAIAnalyzer, read_api_key
from daemon.pluginhost.manager import load_plugins
from daemon.selftest.clips import make_video
from daemon.store import Store
from tests.openai_server import OpenAICompatibleServer

SMALL = {
    "chunking": {"seconds": 4, "overlap_seconds": 1},
    "sampling": {"fps": 1, "max_side": 64},
    "analysis": {"max_events": 1, "label_chars": 8, "description_chars": 16},
    "summary": {"enabled": False},  # test_summary.py tests the text pass
}


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[OpenAICompatibleServer]:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    cfg = parse_config(
        {"model": {"name": str(tiny_model), "max_new_tokens": 24, "device": "cpu"}, **SMALL}
    )
    a = cfg.analysis
    srv = OpenAICompatibleServer(
        QwenAnalyzer.from_config(cfg),
        api_key="sk-test",
        schema=prompts.event_schema(a.max_events, a.label_chars, a.description_chars),
    )
    yield srv
    srv.close()


def client_config(tmp: Path, base_url: str, **model: Any) -> Config:
    return parse_config(
        {
            "storage": {"url": f"sqlite:///{tmp / 'fw.db'}"},
            "model": {
                "backend": "openai",
                "name": "Qwen/Qwen3-VL-2B-Instruct",
                "base_url": base_url,
                "max_new_tokens": 24,
                **model,
            },
            **SMALL,
        },
        tmp / "config.toml",
    )


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("FRAMEWATCH_API_KEY", "sk-test")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_recording_analysed_through_the_server(
    server: OpenAICompatibleServer, tmp_path: Path
) -> None:
    clip = make_video(tmp_path / "clip.mp4", seconds=10.0, size=(96, 64), fps=4)
    cfg = client_config(tmp_path, server.base_url)
    store = Store(cfg.storage_url())
    before = len(server.requests)
    result, _ = analyze_path(
        cfg, str(clip), store=store, plugins=load_plugins(cfg, third_party=False)
    )
    assert result["recording"]["status"] == "done", result["recording"]
    chunks = result["chunks"]
    sent = server.requests[before:]
    assert len(sent) == len(chunks) == 3
    for req, chunk in zip(sent, chunks, strict=True):
        body = req["body"]
        assert req["auth"] == "Bearer sk-test"
        assert body["model"] == "Qwen/Qwen3-VL-2B-Instruct" and body["temperature"] == 0
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == prompts.event_schema(1, 8, 16)
        parts = body["messages"][0]["content"]
        images = [p for p in parts if p["type"] == "image_url"]
        times = [
            float(m.group(1))
            for p in parts
            if p["type"] == "text"
            for m in [re.match(r"^<(\d+\.\d) seconds>$", p["text"])]
            if m
        ]
        assert len(images) == len(times) == chunk["frames"]
        assert all(i["image_url"]["url"].startswith("data:image/jpeg;base64,") for i in images)
        # Absolute times from the recording's start, inside the chunk.
        assert all(chunk["start_s"] - 0.05 <= t <= chunk["end_s"] + 0.05 for t in times)
        assert parts[-1]["type"] == "text" and "events" in parts[-1]["text"].lower()
    with store.db.session() as s:
        from daemon.store.tables import Chunk

        rows = s.exec(__import__("sqlmodel").select(Chunk)).all()
        assert {r.provenance["backend"] for r in rows} == {"openai"}
        assert all(r.provenance["analyzer"]["prompt_tokens"] > 0 for r in rows)
    store.close()


def test_server_error_fails_the_chunk_and_a_rerun_finishes(
    server: OpenAICompatibleServer, tmp_path: Path
) -> None:
    clip = make_video(tmp_path / "clip.mp4", seconds=4.0, size=(96, 64), fps=4)
    cfg = client_config(tmp_path, server.base_url)
    store = Store(cfg.storage_url())
    pm = load_plugins(cfg, third_party=False)
    server.fail_next = 1
    result, _ = analyze_path(cfg, str(clip), store=store, plugins=pm)
    assert result["recording"]["status"] == "failed"
    assert "HTTP 503" in (result["recording"]["reason"] or "")
    store.recordings.set_status(result["recording"]["id"], "queued")
    result, _ = analyze_path(cfg, str(clip), store=store, plugins=pm)
    assert result["recording"]["status"] == "done"
    store.close()


def test_wrong_key_and_unreachable_server_say_so(
    server: OpenAICompatibleServer, tmp_path: Path
) -> None:
    import numpy as np

    from daemon.engine.backends.openai import ServerError
    from daemon.models import ChunkInput, Frame

    chunk = ChunkInput("x", 0, 0.0, 1.0, "say", (Frame(0.0, np.zeros((32, 32, 3), np.uint8)),))
    bad = OpenAIAnalyzer(
        server.base_url, "m", api_key="nope", schema=prompts.event_schema(1, 8, 16)
    )
    with pytest.raises(ServerError, match="HTTP 401"):
        bad.analyze(chunk)
    gone = OpenAIAnalyzer(
        "http://127.0.0.1:9/v1", "m", schema=prompts.event_schema(1, 8, 16), timeout_s=2
    )
    with pytest.raises(ServerError, match="cannot reach"):
        gone.analyze(chunk)


def test_api_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:1/v1"
    assert read_api_key(client_config(tmp_path, url)) == "sk-test"  # $FRAMEWATCH_API_KEY
    (tmp_path / "key.txt").write_text("sk-file\n")
    assert read_api_key(client_config(tmp_path, url, api_key_file="key.txt")) == "sk-file"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "framewatch-api-key").write_text("sk-cred")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.delenv("FRAMEWATCH_API_KEY")
    assert read_api_key(client_config(tmp_path, url)) == "sk-cred"
    with pytest.raises(Exception, match="base_url"):
        parse_config({"model": {"backend": "openai"}})


def test_rules_and_the_second_look_through_the_server(server: OpenAICompatibleServer) -> None:
    import numpy as np

    from daemon.models import ChunkInput, Frame, RuleQuestion, VerifyInput

    cfg = parse_config(
        {"model": {"backend": "openai", "base_url": server.base_url, "max_new_tokens": 24}, **SMALL}
    )
    client = OpenAIAnalyzer.from_config(cfg)
    client.api_key = "sk-test"
    rng = np.random.default_rng(3)
    frames = tuple(
        Frame(t, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for t in (0, 1, 2, 3)
    )
    rules = (RuleQuestion("fence", "a person climbs the fence"),)
    prompt = prompts.build_prompt("Describe.", 0.0, 4.0, 1, rules)
    answer = client.analyze(ChunkInput("clip.mp4", 0, 0.0, 3.0, prompt, frames, rules))
    body = server.requests[-1]["body"]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["rules"]["required"] == ["fence"]
    assert body["max_tokens"] > 24  # room for the verdict
    assert client.last_stats["parse_error"] is None, client.last_stats
    assert all(a.get("rule") in (None, "fence") for a in answer)
    q = rules[0]
    verdict = client.verify(
        VerifyInput("clip.mp4", "fence", q.when, 0.0, 1.0, 2.0, 0.0, 3.0,
                    prompts.verify_prompt(q, 1.0, 2.0, 0.0, 3.0), frames)
    )  # fmt: skip
    body = server.requests[-1]["body"]
    assert body["response_format"]["json_schema"]["name"] == "verdict"
    assert set(verdict) == {"happened", "reason"} and isinstance(verdict["happened"], bool)
