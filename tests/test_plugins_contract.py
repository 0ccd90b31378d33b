"""The analyzer contract, held at the boundary: throw-away third-party plugins installed through
an entry point (a dist-info folder on PYTHONPATH), written as a new user would from the README,
run through `framewatch analyze` and `framewatch run` in subprocesses.

- an analyzer with only `analyze()` works: `name` and `provenance` have defaults naming the plugin;
- an analyzer without `analyze` is refused once, in one line naming the plugin (exit 3 for
  `analyze`; `run` stops with that line, exit 3);
- an analyzer that raises fails its chunks with a reason naming the plugin, retried a bounded
  number of times, and the daemon keeps going;
- an analyzer that answers something other than a list fails the chunk for good.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from daemon.store import Store
from tests.daemon_proc import Daemon, install_plugin, run_cli, status_json, wait_until, write_config
from tests.media import make_video

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = """
from daemon.hookspecs import hookimpl


class Analyzer:
{body}


@hookimpl
def make_analyzer(config):
    return Analyzer()
"""

ONLY_ANALYZE = """
    def analyze(self, chunk):
        return [{"start_s": chunk.start_s, "end_s": chunk.end_s, "label": "seen", "description": "x"}]
"""
NO_ANALYZE = """
    name = "nothing"
"""
RAISES = """
    def analyze(self, chunk):
        raise ValueError("boom in chunk %d" % chunk.index)
"""
NOT_A_LIST = """
    def analyze(self, chunk):
        return {"events": []}
"""


def plugin_site(tmp_path: Path, name: str, body: str) -> Path:
    return install_plugin(
        tmp_path / f"site-{name}", name, f"fw_contract_{name}", PLUGIN.format(body=body)
    )


def config(tmp_path: Path, **daemon: float) -> Path:
    return write_config(
        tmp_path / "config.toml",
        {
            "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
            "chunking": {"seconds": 2, "overlap_seconds": 0.5},
            "sampling": {"fps": 1, "max_side": 64},
            "daemon": {"queue_poll_s": 1, **daemon},
        },
        [{"path": "in", "settle_seconds": 0.5}],
    )


def analyze(tmp_path: Path, site: Path, clip: Path) -> subprocess.CompletedProcess[str]:
    args = ("analyze", str(clip), "--json", "--config", str(config(tmp_path)))
    return run_cli(*args, env={"PYTHONPATH": str(site)}, timeout=120)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_video(tmp_path / "clip.mp4", seconds=3.0, fps=4, size=(64, 48))


def test_an_analyzer_with_only_analyze_works_with_default_name_and_provenance(
    tmp_path: Path, clip: Path
) -> None:
    out = analyze(tmp_path, plugin_site(tmp_path, "onlyanalyze", ONLY_ANALYZE), clip)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["recording"]["status"] == "done"
    assert result["events"] and all(e["label"] == "seen" for e in result["events"])
    prov = result["events"][0]["provenance"]
    assert prov["model"] == "onlyanalyze"  # the default name is the plugin's
    assert "Traceback" not in out.stderr


def test_an_analyzer_without_analyze_is_refused_in_one_line_by_analyze_and_run(
    tmp_path: Path, clip: Path
) -> None:
    site = plugin_site(tmp_path, "noanalyze", NO_ANALYZE)
    out = analyze(tmp_path, site, clip)
    assert out.returncode == 3
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("framewatch: error: plugin 'noanalyze': make_analyzer returned Analyzer")
    assert "no analyze(chunk) method" in line and "Traceback" not in out.stderr

    (tmp_path / "in").mkdir()
    daemon = Daemon(config(tmp_path), env={"PYTHONPATH": str(site)})
    assert daemon.wait_exit(60) == 3
    assert any(
        "plugin 'noanalyze'" in line and "no analyze(chunk) method" in line for line in daemon.raw
    )


def test_an_analyzer_that_raises_fails_its_chunks_naming_the_plugin(
    tmp_path: Path, clip: Path
) -> None:
    out = analyze(tmp_path, plugin_site(tmp_path, "raises", RAISES), clip)
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["recording"]["status"] == "failed"
    reason = result["recording"]["reason"]
    assert "the analyzer of plugin 'raises' raised ValueError: boom in chunk 0" in reason
    assert all("plugin 'raises'" in c["error"] for c in result["chunks"])
    assert "Traceback" not in out.stderr


def test_an_analyzer_that_answers_no_list_fails_the_chunk_for_good(
    tmp_path: Path, clip: Path
) -> None:
    out = analyze(tmp_path, plugin_site(tmp_path, "notalist", NOT_A_LIST), clip)
    assert out.returncode == 1
    reason = json.loads(out.stdout)["recording"]["reason"]
    assert "the analyzer of plugin 'notalist' returned dict, not a list of events" in reason


def test_run_retries_a_raising_analyzer_a_bounded_number_of_times_and_keeps_going(
    tmp_path: Path,
) -> None:
    site = plugin_site(tmp_path, "raises", RAISES)
    (tmp_path / "in").mkdir()
    cfg = config(tmp_path, max_attempts=2, retry_backoff_s=0.5, reap_interval_s=1)
    daemon = Daemon(cfg, env={"PYTHONPATH": str(site)}).started()
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    try:
        clip = make_video(tmp_path / "in" / "a.mp4", seconds=3.0, fps=4, size=(64, 48))
        wait_until(
            lambda: (
                (r := store.recordings.find(str(clip))) is not None
                and r.status == "failed"
                and all(c.attempts == 2 and c.status == "failed" for c in store.chunks.of(r.id))
            ),
            90,
            what="the recording failed after its attempts",
        )
        time.sleep(3)  # long enough for several more retry rounds, had they not been bounded
        rec = store.recordings.find(str(clip))
        assert (
            rec is not None and rec.status == "failed" and "plugin 'raises'" in (rec.reason or "")
        )
        assert all(c.attempts == 2 for c in store.chunks.of(rec.id))
        assert daemon.proc.poll() is None  # the daemon keeps going
        row = next(r for r in status_json(cfg)["recordings"] if r["path"] == str(clip))
        assert row["status"] == "failed" and "plugin 'raises'" in row["reason"]
    finally:
        daemon.kill()
        store.close()


COMMAND_PLUGIN = """
from pydantic import BaseModel

from daemon.hookspecs import hookimpl


class Settings(BaseModel):
    greeting: str = "hello"


@hookimpl
def register_settings():
    return {"greeter": Settings}


@hookimpl
def register_commands(commands):
    sub = commands.add("greet", "say hello with the plugin's settings", greet)
    sub.add_argument("name")


def greet(args, context):
    settings = context.settings or Settings()
    store = context.open_store()
    try:
        print(f"{settings.greeting}, {args.name}: {len(store.recordings.list())} recordings")
    finally:
        store.close()
    return 7
"""


def test_hook_register_commands_adds_a_subcommand_with_its_settings(tmp_path: Path) -> None:
    site = install_plugin(tmp_path / "site", "greeter", "fw_greeter", COMMAND_PLUGIN)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[storage]\nurl = "sqlite:///{tmp_path / "fw.db"}"\n[plugins.greeter]\ngreeting = "howdy"\n'
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={"PYTHONPATH": str(site)}, timeout=60)

    listed = cli("--help")
    assert listed.returncode == 0 and "greet" in listed.stdout and "say hello" in listed.stdout
    assert "serve" in listed.stdout  # the built-in web plugin's command comes the same way
    out = cli("greet", "ada", "--config", str(cfg))
    assert out.returncode == 7, out.stderr
    assert out.stdout.strip() == "howdy, ada: 0 recordings"
