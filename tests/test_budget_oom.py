"""Out-of-memory handling, GPU contention and calibration, driven through the real Worker on a real
generated video and a real SQLite store.

There is no GPU on the test machine, so the analyzers here are stand-ins: `OomAnalyzer` raises the
real `torch.cuda.OutOfMemoryError` (constructible without CUDA) whenever a chunk has more visual
tokens than a threshold, the way a GPU of that size would; and `FakeGpu` stands in for
torch.cuda.mem_get_info. Everything else (planning, sampling, stepping down, the store) is real.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from daemon.analysis import analyze_recording
from daemon.config import parse_config
from daemon.engine.budget import calibration_key, estimator_for, visual_tokens
from daemon.engine.prompts import build_prompt, instructions
from daemon.gpu import CudaFault, GpuRuntime
from daemon.models import ChunkInput
from daemon.store import Store
from daemon.worker import Worker
from tests.media import BLUE, RED, make_video
from tests.qwen_configs import QWEN3_VL_2B


class OomAnalyzer:
    """Stand-in for a GPU analyzer: out of memory above `threshold` visual tokens per chunk.

    Each failed try leaves `blob_mib` of memory in a reference cycle reachable from the exception's
    traceback, as tensors held by a failed forward pass are, so only a worker that releases memory
    (gc.collect outside the except block) gets it back."""

    name = "oom-stand-in"

    def __init__(self, threshold: int | dict[int, int], blob_mib: int = 4):
        self.threshold = threshold
        self.blob_mib = blob_mib
        self.ooms = 0
        self.ran: list[tuple[int, int]] = []  # (chunk index, visual tokens) of successful tries
        self.last_stats: dict[str, Any] = {}

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        h, w = chunk.frames[0].image.shape[:2]
        tokens = visual_tokens(len(chunk.frames), w, h)
        limit = (
            self.threshold
            if isinstance(self.threshold, int)
            else self.threshold.get(chunk.index, 10**9)
        )
        if tokens > limit:
            self.ooms += 1
            held: dict[str, Any] = {"activations": bytearray(b"\x01") * (self.blob_mib << 20)}
            held["self"] = held  # a cycle: refcounting alone never frees it
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {tokens} tokens"
            )
        self.ran.append((chunk.index, tokens))
        return [
            {
                "start_s": chunk.frames[0].t_s,
                "end_s": chunk.frames[-1].t_s,
                "label": "scene",
                "description": "a colour",
            }
        ]

    def provenance(self) -> dict[str, Any]:
        return {"model": "stand-in", "backend": "test"}


def _config(tmp_path: Path, **over: Any) -> Any:
    data: dict[str, Any] = {
        "storage": {"url": f"sqlite:///{tmp_path / 'fw.db'}"},
        "model": {"device": "cpu", "name": str(tmp_path / "model")},
        "chunking": {"seconds": 4, "overlap_seconds": 1},
        "sampling": {"fps": 2, "max_side": 640},
        "gpu": {"min_side": 224, "min_fps": 0.5},
    }
    for section, values in over.items():
        data[section] = {**data.get(section, {}), **values}
    return parse_config(data)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 10 s of 640x360: chunks [0,4] [3,7] [6,10], each 8 frames of 640x352 = 880 visual tokens.
    return make_video(
        tmp_path_factory.mktemp("clip") / "clip.mp4",
        seconds=10,
        fps=10,
        size=(640, 360),
        scenes=[(0.0, RED), (5.0, BLUE)],
    )


def _run(worker: Worker, path: Path, retry_failed: bool = False) -> Any:
    rec, _ = worker.ingest(str(path))
    return analyze_recording(worker, rec.id, retry_failed=retry_failed)


def _used_tokens(prov: dict[str, Any]) -> int:
    s = prov["sampling"]
    return visual_tokens(s["frames"], s["width"], s["height"])


def test_oom_steps_down_and_the_recording_completes(tmp_path: Path, clip: Path) -> None:
    cfg = _config(tmp_path)
    store = Store(cfg.storage_url())
    analyzer = OomAnalyzer(threshold=300)
    rec = _run(Worker(store, cfg, lambda: analyzer), clip)
    assert rec.status == "done", rec.reason
    chunks = store.chunks.of(rec.id)
    assert [c.status for c in chunks] == ["done"] * 3
    assert analyzer.ooms >= 3 and all(t <= 300 for _, t in analyzer.ran)
    for c in chunks:
        mem = c.provenance["memory"]
        assert _used_tokens(c.provenance) <= 300
        assert mem["planned"] == {"frames": 8, "width": 640, "height": 352}
        assert mem["stepped_down"] and all(s["why"] == "out_of_memory" for s in mem["stepped_down"])
        assert "max_side" in mem["stepped_down"][0]  # frame size goes first
        used = c.provenance["sampling"]
        assert max(used["width"], used["height"]) >= 224 and used["frames"] >= 2
    assert len(store.events.of(rec.id)) >= 1  # events stored as for any chunk


def test_after_the_floor_the_chunk_fails_and_the_recording_goes_on(
    tmp_path: Path, clip: Path
) -> None:
    cfg = _config(tmp_path)
    store = Store(cfg.storage_url())
    analyzer = OomAnalyzer(threshold={1: 0})  # chunk 1 never fits, even at the floor
    rec = _run(Worker(store, cfg, lambda: analyzer), clip)
    chunks = store.chunks.of(rec.id)
    assert [c.status for c in chunks] == ["done", "failed", "done"]
    assert "out of GPU memory at the floor" in (chunks[1].error or "")
    assert "224x128" in (chunks[1].error or "")
    assert rec.status == "failed" and "chunk 1" in (rec.reason or "")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_returns_to_baseline_after_100_ooms(tmp_path: Path, clip: Path) -> None:
    cfg = _config(tmp_path)
    store = Store(cfg.storage_url())
    analyzer = OomAnalyzer(threshold=0, blob_mib=4)  # every try runs out of memory
    worker = Worker(store, cfg, lambda: analyzer)
    # Automatic collection off: only the worker's own release can free the cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _run(worker, clip)  # warm-up: imports, decoder, SQLite pages, allocator arenas
        gc.collect()
        baseline, start = _rss_mib(), analyzer.ooms
        while analyzer.ooms - start < 100:
            rec = _run(worker, clip, retry_failed=True)
        after = _rss_mib()
    finally:
        if was_enabled:
            gc.enable()
    assert rec.status == "failed"
    assert analyzer.ooms - start >= 100
    # 100 leaked tries would hold 400 MiB; allow for noise.
    assert after - baseline < 40, (baseline, after)


class FaultAnalyzer(OomAnalyzer):
    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_cuda_fault_ends_the_run_and_hands_the_chunk_back(tmp_path: Path, clip: Path) -> None:
    cfg = _config(tmp_path)
    store = Store(cfg.storage_url())
    worker = Worker(store, cfg, lambda: FaultAnalyzer(0))
    rec, _ = worker.ingest(str(clip))
    with pytest.raises(CudaFault, match="illegal memory access"):
        analyze_recording(worker, rec.id)
    first = store.chunks.of(rec.id)[0]
    assert first.status == "pending" and first.attempts == 0  # run again after the restart


# -- with a stand-in GPU: contention and calibration ------------------------------------------------


class FakeGpu:
    """torch.cuda.mem_get_info stand-in: room (GiB) per call from a list, the last one repeating."""

    def __init__(self, rooms: list[float]):
        self.rooms = rooms
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.rooms[min(self.calls - 1, len(self.rooms) - 1)]


def _gpu_config(tmp_path: Path, **gpu: Any) -> Any:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text(json.dumps(QWEN3_VL_2B))
    return _config(
        tmp_path,
        model={"device": "cuda"},
        gpu={"memory_budget_gib": 12, "busy_poll_seconds": 0.01, **gpu},
    )


def _estimator(cfg: Any) -> Any:
    from daemon.engine.budget import ModelSpec

    prompt = build_prompt(
        instructions(cfg.analysis.profile, None), 0.0, 0.0, cfg.analysis.max_events
    )
    return estimator_for(cfg, ModelSpec.from_config(QWEN3_VL_2B), "cuda:0", prompt=prompt)


def test_busy_gpu_step_down(tmp_path: Path, clip: Path) -> None:
    cfg = _gpu_config(tmp_path, when_busy="step_down")
    est = _estimator(cfg)
    planned, floor = est.peak_gib(8, 640, 352), est.peak_gib(2, 224, 128)
    room = (planned + floor) / 2 - est.context_gib  # another process holds the rest
    gpu = GpuRuntime("cuda:0", "Fake GPU", 80.0, FakeGpu([room]))
    store = Store(cfg.storage_url())
    rec = _run(Worker(store, cfg, lambda: OomAnalyzer(10**9), gpu=gpu), clip)
    assert rec.status == "done", rec.reason
    for c in store.chunks.of(rec.id):
        mem = c.provenance["memory"]
        assert mem["stepped_down"][0]["why"] == "gpu_busy"
        assert mem["est_peak_gib"] <= room + est.context_gib
        assert _used_tokens(c.provenance) < 880


def test_busy_gpu_wait_then_run_as_planned(tmp_path: Path, clip: Path) -> None:
    cfg = _gpu_config(tmp_path, when_busy="wait")
    rooms = FakeGpu([1.0] * 5 + [70.0])
    gpu = GpuRuntime("cuda:0", "Fake GPU", 80.0, rooms)
    store = Store(cfg.storage_url())
    rec = _run(Worker(store, cfg, lambda: OomAnalyzer(10**9), gpu=gpu), clip)
    assert rec.status == "done"
    assert rooms.calls >= 6
    for c in store.chunks.of(rec.id):
        assert c.provenance["memory"]["stepped_down"] == []
        assert _used_tokens(c.provenance) == 880


def test_calibration_is_recorded_per_chunk_and_used(tmp_path: Path, clip: Path) -> None:
    cfg = _gpu_config(tmp_path)
    est = _estimator(cfg)
    estimated = est.chunk(8, 640, 352).allocated_gib

    class Measured(OomAnalyzer):
        def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
            # What the Qwen backend reports on CUDA: torch.cuda.max_memory_allocated in GiB.
            self.last_stats = {"peak_gib": round(estimated * 1.3, 3)}
            return super().analyze(chunk)

    store = Store(cfg.storage_url())
    gpu = GpuRuntime("cuda:0", "Fake GPU", 80.0, FakeGpu([70.0]))
    worker = Worker(store, cfg, lambda: Measured(10**9), gpu=gpu)
    assert _run(worker, clip).status == "done"
    ratio = store.calibration.ratio(calibration_key(cfg, "cuda:0"), "Fake GPU")
    assert ratio == pytest.approx(1.3, rel=1e-3)
    # A later worker plans with it.
    later = Worker(store, cfg, lambda: Measured(10**9), gpu=gpu)
    memory = later.memory.budget()
    assert memory is not None and memory[0].ratio == pytest.approx(1.3, rel=1e-3)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path, clip: Path) -> None:
    from daemon.engine.budget import BudgetError

    cfg = _gpu_config(tmp_path, memory_budget_gib=3)
    store = Store(cfg.storage_url())
    worker = Worker(
        store,
        cfg,
        lambda: OomAnalyzer(10**9),
        gpu=GpuRuntime("cuda:0", "Fake GPU", 80.0, FakeGpu([70.0])),
    )
    rec, _ = worker.ingest(str(clip))
    with pytest.raises(BudgetError, match="model alone.*What would fit.*quantization"):
        analyze_recording(worker, rec.id)
    assert store.recordings.get(rec.id).status == "queued"  # not the recording's fault


def test_unreadable_model_config_runs_unfitted_on_a_gpu(tmp_path: Path, clip: Path) -> None:
    # A plugin's analyzer (or a checkpoint without config.json): no estimate, so no fitting and no
    # refusal; the out-of-memory retries still protect each chunk.
    cfg = _config(
        tmp_path,
        model={"device": "cuda", "name": str(tmp_path / "missing")},
        gpu={"memory_budget_gib": 12},
    )
    store = Store(cfg.storage_url())
    worker = Worker(
        store,
        cfg,
        lambda: OomAnalyzer(10**9),
        gpu=GpuRuntime("cuda:0", "Fake GPU", 80.0, FakeGpu([70.0])),
    )
    assert _run(worker, clip).status == "done"
    assert worker.memory.budget() is None
