"""Chunks per second with 1, 2, 3 ... `framewatch worker` processes sharing one PostgreSQL store and
one Redis queue, on the tiny checkpoint with tiny sampling (the issue-6 settings).

    .venv/bin/python bench/fleet.py --model /tmp/tiny --workers 1 2 3 --recordings 8

Needs PostgreSQL (trust auth, user postgres) and Redis on 127.0.0.1; uses a private database and key
prefix per round. Every recording is planned before the clock starts; each worker first
analyses one warm-up recording; the clock runs from enqueueing the measured recordings until every
one of them is settled.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_round(n_workers: int, model: Path, n_recordings: int, tmp: Path) -> dict[str, float]:
    from daemon.config import load_config
    from daemon.selftest.clips import make_video
    from daemon.store import Store
    from daemon.work.redis import make_queue
    from daemon.worker import Worker
    from tests.daemon_proc import unique_copies
    from tests.services import REDIS_URL, drop_prefix, postgres_database, redis_prefix

    with postgres_database() as db:
        prefix = redis_prefix()
        cfg_path = tmp / f"bench{n_workers}.toml"
        cfg_path.write_text(
            f'[storage]\nurl = "{db}"\n[queue]\nbackend = "redis"\nurl = "{REDIS_URL}"\nprefix = "{prefix}"\n'
            f'lease_seconds = 30\n[model]\nname = "{model}"\nmax_new_tokens = 24\ndevice = "cpu"\n'
            "[chunking]\nseconds = 4\noverlap_seconds = 1\n[sampling]\nfps = 1\nmax_side = 64\n"
            "[analysis]\nmax_events = 1\nlabel_chars = 8\ndescription_chars = 16\n"
        )
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "worker", "-c", str(cfg_path)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(n_workers)
        ]
        ready = threading.Semaphore(0)

        def read(p: subprocess.Popen[str]) -> None:
            assert p.stderr is not None
            for line in p.stderr:
                if '"daemon_started"' in line:
                    ready.release()

        for p in procs:
            threading.Thread(target=read, args=(p,), daemon=True).start()
        for _ in procs:
            if not ready.acquire(timeout=300):
                raise RuntimeError("a worker did not start")
        cfg = load_config(cfg_path)
        store = Store(cfg.storage_url())
        worker = Worker(store, cfg, lambda: None)  # type: ignore[arg-type,return-value]  (plans only)
        queue = make_queue(cfg)
        queue.ensure_group()
        base = make_video(tmp / "base.mp4", seconds=12.0, size=(96, 64), fps=4)
        batches: list[list[int]] = [[], []]
        for i, data in enumerate(unique_copies(base.read_bytes(), n_recordings + n_workers)):
            path = tmp / f"r{n_workers}-{i}.mp4"
            path.write_bytes(data)
            rec, _ = worker.ingest(str(path))
            worker.prepare(rec.id)
            # The first recording per worker warms it up (first generate() pays one-off costs).
            batches[0 if i < n_workers else 1].append(rec.id)

        def run(ids: list[int]) -> None:
            for rid in ids:
                queue.enqueue_many((rid, c.index) for c in store.chunks.of(rid))
            while any(store.recordings.get(i).status not in ("done", "failed") for i in ids):
                time.sleep(0.05)

        run(batches[0])
        ids = batches[1]
        t0 = time.perf_counter()
        run(ids)
        took = time.perf_counter() - t0
        n_chunks = sum(len(store.chunks.of(i)) for i in ids)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        store.close()
        queue.close()
        drop_prefix(REDIS_URL, prefix)
        return {
            "workers": n_workers,
            "chunks": n_chunks,
            "seconds": round(took, 2),
            "chunks_per_s": round(n_chunks / took, 2),
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--model", type=Path, required=True, help="tiny checkpoint (framewatch make-test-model DIR)"
    )
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--recordings", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            print(json.dumps(one_round(n, args.model, args.recordings, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
