"""Several GPU boxes, played by separate processes on this machine: one `framewatch run` (watcher
and analyser) and three `framewatch worker`s share a PostgreSQL store and a Redis Streams queue,
with the tiny Qwen3-VL checkpoint analysing for real.

One session of processes runs every scenario of issue #6 in turn, so the model loads once per
process: every chunk analysed once, events stored once, one webhook per event id; a worker killed
with SIGKILL in the middle of a chunk (another takes it after the lease); a chunk three times
longer than the lease on a live worker (not stolen); a poison chunk (dead letter after
max_deliveries, the rest finish); Redis stopped for 10 s and started again without its data (the
run completes). Slow and poison chunks come from tests/gpu_stand_in.py, which wraps the real
analyzer and stands in for a slow GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.selftest.clips import make_video
from daemon.store import Store
from daemon.work.streams import RedisQueue
from tests import gpu_stand_in
from tests.daemon_proc import ROOT, unique_copies, wait_until
from tests.services import (
    PrivateRedis,
    Receiver,
    postgres_available,
    postgres_database,
    redis_prefix,
)
from tests.test_webhook import SECRET, verified

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    if not postgres_available():
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (.ci/run starts it)")


LEASE_S = 3.0
MAX_DELIVERIES = 2
LONG_S = 3.5 * LEASE_S  # a chunk on a slow GPU, longer than three leases
VICTIM_S = 8.0  # long enough to be killed in the middle of


class Proc:
    """One framewatch subprocess; its JSON log lines are collected by a reader thread."""

    def __init__(self, command: str, config: Path, env: dict[str, str], name: str):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", command, "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line.rstrip("\n"))
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                self.logs.append(entry)

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in list(self.logs)
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


def config_text(
    db_url: str, redis_url: str, prefix: str, model: Path, watch: Path, hook: str
) -> str:
    return f"""
[storage]
url = "{db_url}"
[queue]
backend = "redis"
url = "{redis_url}"
prefix = "{prefix}"
lease_seconds = {LEASE_S}
max_deliveries = {MAX_DELIVERIES}
[summary]
enabled = false
[model]
name = "{model}"
max_new_tokens = 24
device = "cpu"
[chunking]
seconds = 4
overlap_seconds = 1
[sampling]
fps = 1
max_side = 64
[analysis]
max_events = 1
label_chars = 8
description_chars = 16
[daemon]
deliver_interval_s = 0.5
reap_interval_s = 2
stop_timeout_s = 20
[plugins.webhook]
url = "{hook}"
secret = "{SECRET}"
[plugins.gpu_stand_in]
slow = {{ long = {LONG_S}, victim = {VICTIM_S} }}
poison = ["poison"]
ensure_event = true
[[watch]]
path = "{watch}"
settle_seconds = 0.3
"""


@pytest.fixture
def fleet_env(tmp_path: Path, tiny_model: Path) -> Iterator[dict[str, Any]]:
    redis_srv = PrivateRedis(tmp_path)
    redis_srv.start()
    receiver = Receiver()
    watch = tmp_path / "incoming"
    watch.mkdir()
    site = gpu_stand_in.install(tmp_path / "site")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Four processes on two cores: one thread each keeps them from fighting over the cores.
        "OMP_NUM_THREADS": "1",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": f"{site}{os.pathsep}{ROOT}",
    }
    with postgres_database() as db_url:
        prefix = redis_prefix()
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text(db_url, redis_srv.url, prefix, tiny_model, watch, receiver.url))
        procs: list[Proc] = []
        try:
            yield {
                "config": cfg,
                "env": env,
                "watch": watch,
                "db": db_url,
                "redis": redis_srv,
                "prefix": prefix,
                "receiver": receiver,
                "procs": procs,
                "tmp": tmp_path,
            }
        finally:
            logs = Path(os.environ.get("FRAMEWATCH_TEST_LOGS", tmp_path))
            for p in procs:
                p.kill(signal.SIGTERM if p.proc.poll() is None else signal.SIGKILL)
                (logs / f"{p.name}.log").write_text("\n".join(p.raw))
            receiver.close()
            redis_srv.stop()


def drop(watch: Path, name: str, data: bytes) -> None:
    """A finished file appears in the watched folder at once (written aside, then renamed in)."""
    tmp = watch.parent / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, watch / name)


def settled(store: Store, names: list[str]) -> bool:
    recs = {Path(r.path).name: r for r, _, _ in store.recordings.list()}
    return all(n in recs and recs[n].status in ("done", "failed") for n in names)


def test_four_boxes_share_the_work(fleet_env: dict[str, Any], tmp_path: Path) -> None:
    env, cfg, watch = fleet_env["env"], fleet_env["config"], fleet_env["watch"]
    procs: list[Proc] = fleet_env["procs"]
    base = make_video(tmp_path / "base.mp4", seconds=12.0, size=(96, 64), fps=4)
    copies = iter(unique_copies(base.read_bytes(), 12))
    store = Store(fleet_env["db"])

    procs.append(Proc("run", cfg, env, "watcher"))
    procs += [Proc("worker", cfg, env, f"worker{i}") for i in range(3)]
    t0 = time.monotonic()
    wait_until(
        lambda: all(p.find("daemon_started") for p in procs), 180, what="all four processes ready"
    )
    started_s = time.monotonic() - t0

    # -- phase 1: normal, long, poison and victim recordings --------------------------------------
    names = ["a.mp4", "b.mp4", "c.mp4", "long.mp4", "poison.mp4", "victim.mp4"]
    t1 = time.monotonic()
    for n in names:
        drop(watch, n, next(copies))

    def holder_of_victim() -> Proc | None:
        for p in procs:
            for e in p.find("chunk_started", chunk=0):
                if e.get("path", "").endswith("victim.mp4"):
                    return p
        return None

    victim_holder = wait_until(holder_of_victim, 120, what="victim chunk started")
    time.sleep(1.0)  # well inside the chunk
    victim_holder.kill(signal.SIGKILL)
    # A box that dies is restarted by its service manager; it comes back as a new consumer.
    replacement = Proc(
        "run" if victim_holder.name == "watcher" else "worker",
        cfg,
        env,
        victim_holder.name + "-new",
    )
    procs.append(replacement)

    wait_until(lambda: settled(store, names), 240, interval=0.5, what="phase 1 recordings settled")
    phase1_s = time.monotonic() - t1
    print(f"\nstart {started_s:.1f}s, phase 1 {phase1_s:.1f}s", flush=True)
    recs = {Path(r.path).name: r for r, _, _ in store.recordings.list()}
    assert recs["poison.mp4"].status == "failed" and "deliveries" in (
        recs["poison.mp4"].reason or ""
    )
    for n in names:
        if n != "poison.mp4":
            assert recs[n].status == "done", (n, recs[n].reason)

    # Every chunk analysed exactly once, except the victim's chunk 0 (killed mid-way, once more)
    # and the poison chunk (tried max_deliveries times).
    analysed = Counter()
    for p in procs:
        for e in p.find("chunk_analyzed"):
            analysed[(e["recording_id"], e["chunk"])] += 1
    total_chunks = 0
    for n in names:
        rid = recs[n].id
        for c in store.chunks.of(rid):
            total_chunks += 1
            key = (rid, c.index)
            if n == "poison.mp4" and c.index == 1:
                assert c.status == "failed" and key not in analysed
                continue
            assert c.status == "done", (n, c.index, c.status, c.error)
            assert analysed[key] == 1, (n, c.index, analysed[key])
    victim_rid, long_rid = recs["victim.mp4"].id, recs["long.mp4"].id
    # The victim's chunk went to another box after the lease; the long one never left its box.
    takeovers = [e for p in procs for e in p.find("queue_job_taken_over")]
    assert (
        any(e.get("recording_id") == victim_rid and e.get("chunk") == 0 for e in takeovers)
        or store.chunks.of(victim_rid)[0].attempts == 2
    )
    assert not [e for e in takeovers if e.get("recording_id") == long_rid]
    assert store.chunks.of(long_rid)[0].attempts == 1
    long_took = [e for p in procs for e in p.find("chunk_analyzed", recording_id=long_rid, chunk=0)]
    assert len(long_took) == 1

    q = RedisQueue(fleet_env["redis"].url, prefix=fleet_env["prefix"])
    dead = q.dead_letters()
    assert [(d["recording"], d["chunk"]) for d in dead] == [(str(recs["poison.mp4"].id), "1")]
    assert int(dead[0]["deliveries"]) == MAX_DELIVERIES

    # -- phase 2: Redis away for 10 s with work in flight; it comes back empty ---------------------
    more = ["d.mp4", "e.mp4"]
    for n in more:
        drop(watch, n, next(copies))
    wait_until(
        lambda: {Path(r.path).name for r, _, _ in store.recordings.list()} >= set(more),
        60,
        what="d, e seen",
    )
    fleet_env["redis"].stop()
    time.sleep(10)
    fleet_env["redis"].start()
    wait_until(
        lambda: settled(store, names + more), 180, interval=0.5, what="phase 2 recordings settled"
    )
    recs = {Path(r.path).name: r for r, _, _ in store.recordings.list()}
    for n in more:
        assert recs[n].status == "done", (n, recs[n].reason)
        assert all(c.status == "done" for c in store.chunks.of(recs[n].id))
    assert any(p.find("queue_lost_its_data") or p.find("queue_rebuilt") for p in procs)

    # -- stored once, announced once ----------------------------------------------------------------
    events = store.events.of()
    per_chunk = Counter((e.recording_id, e.chunk_index) for e in events)
    assert all(n <= 1 for n in per_chunk.values()), per_chunk  # analysis.max_events = 1
    assert len(events) >= 20  # every done chunk has its one event (see gpu_stand_in.ensure_event)
    receiver: Receiver = fleet_env["receiver"]

    def all_delivered() -> bool:
        c = store.outbox.counts()
        return c["pending"] + c["failed"] == 0

    wait_until(all_delivered, 60, what="every webhook delivered")
    found = [verified(r) for r in list(receiver.requests)]
    ids = [
        ev["id"]
        for body in found
        if body["type"] == "events.found"
        for ev in body["data"]["events"]
    ]
    assert len(ids) == len(set(ids)), Counter(ids).most_common(3)
    assert set(ids) == {e.id for e in events}
    finished = Counter(
        b["data"]["recording"]["path"] for b in found if b["type"] == "recording.finished"
    )
    assert all(n == 1 for n in finished.values()) and len(finished) == len(names) + len(more) - 1

    for p in procs:
        if p.proc.poll() is None:
            p.kill(signal.SIGTERM)
            assert p.proc.returncode == 0, (p.name, p.raw[-10:])
    print(
        f"\nfleet: start {started_s:.1f}s, phase 1 {phase1_s:.1f}s for {total_chunks} chunks, "
        f"{len(events)} events"
    )
    store.close()
