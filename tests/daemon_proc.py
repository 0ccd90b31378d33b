"""Helpers for tests that run the real `framewatch run` as a subprocess: config files, the test
analyzer plugin installed through an entry point, the daemon's JSON log read as it comes, a fake
systemd notify socket, and a look into the store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.media import make_video

ROOT = Path(__file__).resolve().parent.parent


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(
    path: Path, tables: dict[str, dict[str, Any]], watches: list[dict[str, Any]]
) -> Path:
    """A config.toml from {table: {key: value}} and a list of [[watch]] tables."""
    lines: list[str] = []
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    for w in watches:
        lines.append("[[watch]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in w.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def install_plugin(site: Path, name: str, module: str, source: str | None = None) -> Path:
    """A dist-info folder whose entry point registers `module` as plugin `name` (with `source`
    written as `site/<module>.py` first, when given); put `site` on PYTHONPATH and framewatch
    loads it like any installed plugin."""
    site.mkdir(parents=True, exist_ok=True)
    if source is not None:
        (site / f"{module}.py").write_text(source)
    info = site / f"framewatch_test_{name}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: framewatch-test-{name}\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[framewatch]\n{name} = {module}\n")
    return site


def install_fake_plugin(site: Path) -> Path:
    """tests.fake_analyzer installed as plugin `fake`."""
    return install_plugin(site, "fake", "tests.fake_analyzer")


def unique_copies(base: bytes, n: int) -> list[bytes]:
    """`n` different files with the same pictures: a distinct top-level `free` box appended to an
    MP4 (legal ISO-BMFF, ignored by players) changes the content fingerprint and nothing else."""
    return [base + (24).to_bytes(4, "big") + b"free" + i.to_bytes(16, "big") for i in range(n)]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`framewatch ARGS` in a subprocess of this checkout (offline), its output captured."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=timeout,
    )


class Daemon:
    """One `framewatch run` subprocess; its JSON log lines are collected by a reader thread."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None):
        self.config = config
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.raw.append(line.rstrip("\n"))
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                if isinstance(entry, dict):
                    entry["_t"] = _epoch(entry.get("timestamp"))
                    self.logs.append(entry)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e
                for e in self.logs
                if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(
        self, event: str, timeout: float = 60.0, count: int = 1, **fields: Any
    ) -> list[dict[str, Any]]:
        """Block until `count` log lines of `event` (with `fields`) arrived."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    e
                    for e in self.logs
                    if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
                ]
                if len(found) >= count:
                    return found
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no {count}x {event} {fields} within {timeout}s (exit {self.proc.poll()}); log tail:\n"
                        + "\n".join(self.raw[-25:])
                    )
                self._cond.wait(min(left, 0.5))

    def started(self, timeout: float = 120.0) -> Daemon:
        self.wait_for("daemon_started", timeout)
        return self

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout}s; log tail:\n" + "\n".join(self.raw[-25:])
            ) from None
        self._reader.join(5)
        return rc

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._reader.join(5)


@contextmanager
def running(
    config: Path, *, env: dict[str, str] | None = None, timeout: float = 120.0
) -> Iterator[Daemon]:
    """A started daemon, killed at the end if the test has not stopped it."""
    d = Daemon(config, env=env)
    try:
        yield d.started(timeout)
    finally:
        d.kill()


class NotifySocket:
    """A stand-in for systemd's notify socket in the abstract namespace ('@name')."""

    def __init__(self) -> None:
        self.name = f"@framewatch-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in data.decode().splitlines():
                self.messages.append((now, line))

    def env(self, watchdog_s: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.name}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return env

    def times(self, message: str) -> list[float]:
        return [t for t, m in list(self.messages) if m == message]

    def starting(self, prefix: str) -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def wait_until(
    check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> Any:
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def status_json(config: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "status", "--json", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Inbox:
    """A watched folder ("in") for tests of the real `framewatch run`: a staging folder beside
    it ("outside"), the fake analyzer plugin (tests/fake_analyzer.py) installed, an SQLite store
    URL, and clips that are each different (same bytes would be the same recording)."""

    def __init__(self, root: Path, clip_seconds: float = 5.0):
        self.root = root
        self.inbox = root / "in"
        self.inbox.mkdir()
        self.outside = root / "outside"
        self.outside.mkdir()
        self.site = install_fake_plugin(root / "site")
        self.url = f"sqlite:///{root / 'fw.db'}"
        self.clip_seconds = clip_seconds
        self.clips = 0

    def config(
        self,
        name: str = "config.toml",
        *,
        fake: dict[str, Any] | None = None,
        extra: dict[str, dict[str, Any]] | None = None,
        **daemon: Any,
    ) -> Path:
        """Two-second chunks overlapping by 0.5 s (a 5 s clip: [0, 2], [1.5, 3.5], [3, 5])."""
        return write_config(
            self.root / name,
            {
                "storage": {"url": self.url},
                "chunking": {"seconds": 2, "overlap_seconds": 0.5},
                "sampling": {"fps": 1, "max_side": 64},
                "daemon": {"queue_poll_s": 2, **daemon},
                "plugins.fake": fake or {},
                **(extra or {}),
            },
            [{"path": "in", "settle_seconds": 0.5}],
        )

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": f"{self.site}{os.pathsep}{ROOT}"}

    def start(self, config: Path, env: dict[str, str] | None = None) -> Daemon:
        return Daemon(config, env={**self.env(), **(env or {})}).started()

    def clip(self, name: str, where: Path | None = None, seconds: float | None = None) -> Path:
        """A new clip, made under a plain name and moved into `where` (the inbox) as `name`."""
        self.clips += 1
        colour = ((self.clips * 53) % 256, (self.clips * 101) % 256, 64)
        staged = make_video(
            self.outside / f"clip{self.clips}.mp4",
            seconds=self.clip_seconds if seconds is None else seconds,
            fps=2,
            size=(32, 32),
            scenes=[(0.0, colour)],
        )
        target = (where or self.inbox) / name
        os.rename(staged, target)
        return target


# Measures in a grandchild: Linux keeps a process's peak RSS across exec, and a child spawned
# straight from this (large) test process would report this process's peak as its own.
_MEASURE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
print(f"\\nchild_rss {os.waitstatus_to_exitcode(status)} {usage.ru_maxrss // 1024}")
"""


def child_rss(*args: str) -> tuple[int, str, int]:
    """Run `python ARGS` in this checkout; (exit code, stdout+stderr, peak RSS in MiB) from
    wait4's rusage of that process alone, spawned by a small Python in between."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    text, _, last = out.rstrip().rpartition("\n")
    word, code, rss = last.split()
    assert word == "child_rss", out
    return int(code), text, int(rss)
