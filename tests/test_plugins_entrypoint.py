"""A real third-party plugin: a tiny package built and installed with pip into a target folder
(the venv stays clean), found through the `framewatch` entry-point group, configured from its
own `[plugins.<name>]` table, listed by `framewatch plugins`, and called by the dispatcher."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import ConfigError
from daemon.pluginhost.dispatch import Dispatcher
from daemon.pluginhost.manager import load_plugins
from daemon.store import Store
from tests.outbox import analysed, ev, make_config

PLUGIN = '''
"""A framewatch plugin in a few lines: append every chunk's labels to a file."""
from pathlib import Path

from pydantic import BaseModel

from daemon.hookspecs import hookimpl

__version__ = "1.2.3"


class Settings(BaseModel):
    out: Path


@hookimpl
def register_settings():
    return {"hello": Settings}


@hookimpl
def events_found(recording, chunk, events, settings):
    with settings.out.open("a") as f:
        f.write(f"{Path(recording.path).name} {chunk.index} {[e.label for e in events]}\\n")
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("thirdparty")
    src = root / "src"
    src.mkdir()
    (src / "fw_hello.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "framewatch-hello"
            version = "1.2.3"

            [project.entry-points.framewatch]
            hello = "fw_hello"

            [tool.setuptools]
            py-modules = ["fw_hello"]
            """
        )
    )
    target = root / "site"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-t",
            str(target),
            str(src),
        ],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    assert list(target.glob("framewatch_hello-1.2.3.dist-info"))
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("fw_hello", None)
        importlib.invalidate_caches()


def test_entry_point_plugin_is_found_configured_and_called(installed: Path, tmp_path: Path) -> None:
    out = tmp_path / "hello.log"
    cfg = make_config(tmp_path, {"hello": {"out": str(out)}})
    pm = load_plugins(cfg)
    (entry,) = [e for e in pm.entries() if e.name == "hello"]
    assert (entry.version, entry.source, entry.active) == (
        "1.2.3",
        "entry point framewatch-hello",
        True,
    )
    assert entry.hooks == ("events_found", "register_settings")
    assert pm.subscribers("events_found") == ["hello"]

    store = Store(cfg.storage_url())
    analysed(store, pm, tmp_path / "clip.mp4", [[ev(1, 2, "door")], []])
    assert Dispatcher(store, pm, cfg).deliver_all() == 2
    assert out.read_text().splitlines() == ["clip.mp4 0 ['door']", "clip.mp4 1 []"]


def test_entry_point_plugin_settings_are_validated_and_it_can_be_disabled(
    installed: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as ei:
        load_plugins(make_config(tmp_path))
    assert [k for k, _, _ in ei.value.errors] == ["plugins.hello.out"]  # required setting missing
    pm = load_plugins(make_config(tmp_path, {"disabled": ["hello"]}))
    assert "hello" not in pm.names()
    assert [e.reason for e in pm.entries() if e.name == "hello"] == ["disabled in [plugins]"]


def test_plugins_command_shows_it(
    installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[plugins.hello]\nout = "hello.log"\n')
    assert main(["plugins", "--json", "--config", str(conf)]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["hello"]["version"] == "1.2.3" and listed["hello"]["active"]
