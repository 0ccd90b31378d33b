"""Meta-tests: every hookspec is documented (docstring, README hook reference) and tested, and
the README's example plugin works as printed."""

from __future__ import annotations

import inspect
import re
import types
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daemon import hookspecs
from daemon.pluginhost.dispatch import Dispatcher
from daemon.pluginhost.manager import HOOK_NAMES
from daemon.store import Store
from tests.outbox import analysed, ev, make_config, manager

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
TEST_FILES = [
    *sorted((ROOT / "tests").glob("test_plugins*.py")),
    *(ROOT / "tests" / f for f in ("test_webhook.py", "test_markdown.py", "test_subtitles.py")),
]


def hook_reference() -> list[str]:
    """One Markdown line per hook, from its spec: signature and docstring summary (README's hook
    reference is checked against this)."""
    import inspect

    lines = []
    for name in HOOK_NAMES:
        spec = getattr(hookspecs, name)
        params = ", ".join(inspect.signature(spec).parameters)
        summary = " ".join(inspect.getdoc(spec).split("\n\n")[0].split())  # type: ignore[union-attr]
        first = " (firstresult)" if spec.framewatch_spec.get("firstresult") else ""
        lines.append(f"- `{name}({params})`{first}: {summary}")
    return lines


def test_every_hook_is_found() -> None:
    assert set(HOOK_NAMES) == {
        "register_settings",
        "register_commands",
        "startup",
        "shutdown",
        "accept_recording",
        "make_analyzer",
        "events_found",
        "recording_finished",
        "recording_failed",
        "alert_fired",
        "digest_ready",
    }


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_has_a_test(name: str) -> None:
    tests = [
        m for f in TEST_FILES for m in re.findall(r"^def (test_hook_\w+)", f.read_text(), re.M)
    ]
    assert [t for t in tests if name in t], f"no test_hook_*{name}* test"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_has_a_docstring_and_a_readme_line(name: str) -> None:
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec) or ""
    assert "Returns:" in doc
    if spec.framewatch_spec.get("firstresult"):
        assert "Stops at first non-None result" in doc
    (line,) = [line for line in hook_reference() if line.startswith(f"- `{name}(")]
    assert line in README.splitlines(), (
        f"README's hook reference is out of date for {name}:\n{line}"
    )


def test_readme_example_plugin_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.split("### Writing a plugin", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    assert len(code.strip().splitlines()) <= 30
    module = types.ModuleType("framewatch_slack")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    posted: list[Any] = []
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda req, timeout: posted.append((req.full_url, req.data))
    )

    cfg = make_config(tmp_path, {"slack": {"url": "https://hooks.example/x"}})
    pm = manager(cfg, (module, "slack"))
    store = Store(cfg.storage_url())
    analysed(
        store, pm, tmp_path / "cam.mp4", [[ev(3, 4, "person", "at the door"), ev(5, 6, "cat", "x")]]
    )
    assert Dispatcher(store, pm, cfg).deliver_all() == 1
    ((url, body),) = posted
    assert (
        url == "https://hooks.example/x" and b"person: at the door" in body and b"cat" not in body
    )
