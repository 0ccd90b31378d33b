"""The GPU memory estimate against the published Qwen3-VL figures, and the planner that fits a
plan to a budget. Pure arithmetic: no GPU, no download (the configs are fixtures)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config, parse_config
from daemon.engine.budget import (
    GIB,
    BudgetError,
    Estimator,
    ModelSpec,
    estimator_for,
    prompt_tokens,
    read_model_config,
    text_tokens,
    visual_tokens,
)
from daemon.engine.planner import (
    Floors,
    fit_plan,
    frame_size,
    plan_chunks,
    sample_times,
    step_down_window,
    window_tokens,
)
from daemon.exits import EXIT_CUDA
from daemon.gpu import GpuLease, GpuLeaseBusy, is_cuda_fault, is_oom
from daemon.models import MediaInfo
from daemon.store import Store
from tests.qwen_configs import QWEN3_VL_2B, QWEN3_VL_8B, REFERENCE

ROOT = Path(__file__).resolve().parent.parent
SPEC_2B = ModelSpec.from_config(QWEN3_VL_2B)


# -- the estimate against the reference figures -----------------------------------------------------


@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_weights_within_2_percent(model: str) -> None:
    config, params, gib, _kv = REFERENCE[model]
    spec = ModelSpec.from_config(config)
    assert spec.num_parameters() == pytest.approx(params, rel=0.02)
    assert spec.weights_bytes("bfloat16") / GIB == pytest.approx(gib, rel=0.02)
    assert spec.weights_bytes("float32") == 2 * spec.weights_bytes("bfloat16")


@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_kv_per_token_exact(model: str) -> None:
    config, _params, _gib, kib = REFERENCE[model]
    spec = ModelSpec.from_config(config)
    assert spec.kv_bytes_per_token("bfloat16") == kib * 1024
    assert spec.kv_bytes_per_token("float32") == 2 * kib * 1024


def test_parameter_count_matches_the_architecture() -> None:
    """The formula counts what transformers builds (meta device: no memory, no weights)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    cfg = Qwen3VLConfig(**{k: v for k, v in QWEN3_VL_8B.items() if k != "model_type"})
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(cfg)
    built = sum(p.numel() for p in model.parameters())
    assert ModelSpec.from_config(QWEN3_VL_8B).num_parameters() == built


def test_quantization_shrinks_the_language_model_only() -> None:
    counts = SPEC_2B.param_counts()
    bf16 = SPEC_2B.weights_bytes("bfloat16")
    q8 = SPEC_2B.weights_bytes("bfloat16", "8bit")
    q4 = SPEC_2B.weights_bytes("bfloat16", "4bit")
    assert q4 < q8 < bf16
    # Vision tower and embeddings stay at two bytes a parameter.
    assert q4 > 2 * (counts["vision"] + counts["text_other"])


@pytest.mark.parametrize(
    ("frames", "width", "height", "tokens"),
    [
        (2, 640, 352, 220),
        (60, 640, 352, 6600),
        (600, 640, 352, 66000),
        (3, 640, 352, 440),
        (2, 640, 360, 220),
        (2, 32, 32, 1),
    ],
)
def test_visual_tokens_exact(frames: int, width: int, height: int, tokens: int) -> None:
    assert visual_tokens(frames, width, height) == tokens


def test_640x360_is_352x640_and_220_tokens_per_pair() -> None:
    w, h = frame_size(640, 360, 640)
    assert (h, w) == (352, 640)
    assert visual_tokens(2, w, h) == 220


def test_prompt_tokens_exact() -> None:
    # NOTES-qwen3vl.md: a 30 s clip at 2 fps, 640x360, measured 6,882 prompt tokens with a
    # 42-token text prompt: 30 pairs x (220 + 8).
    assert prompt_tokens(60, 640, 352, 42) == 6882
    assert prompt_tokens(600, 640, 352, 0) == 300 * 228


def test_text_tokens_over_counts() -> None:
    assert text_tokens("x" * 300) >= 300 / 4


@pytest.mark.parametrize(("model", "kv_gib"), [("2B", 7.4), ("4B", 9.5), ("8B", 9.5)])
def test_kv_cache_of_a_300s_chunk(model: str, kv_gib: float) -> None:
    # NOTES-qwen3vl.md: 300 s at 2 fps of 640x360 is about 69 k prompt tokens.
    est = Estimator(
        ModelSpec.from_config(REFERENCE[model][0]), text_tokens=600, max_new_tokens=1024
    )
    e = est.chunk(len(sample_times(0, 300, 2)), 640, 352)
    assert 68_000 <= e.prompt_tokens <= 70_000
    assert e.kv_prompt_gib == pytest.approx(kv_gib, abs=0.15)
    assert e.kv_generated_gib == pytest.approx(1024 * REFERENCE[model][3] / 2**20)


def test_estimate_adds_up_and_grows_with_tokens() -> None:
    est = Estimator(SPEC_2B, slack=0.15, context_gib=0.5)
    e = est.chunk(120, 640, 352)
    assert e.peak_gib == pytest.approx(e.allocated_gib + e.slack_gib + e.context_gib)
    assert e.weights_gib < e.allocated_gib
    assert e.slack_gib == pytest.approx(0.15 * (e.allocated_gib - e.weights_gib))
    peaks = [
        est.peak_gib(f, w, h)
        for f, w, h in [(2, 224, 128), (40, 224, 128), (40, 448, 256), (120, 640, 352)]
    ]
    assert peaks == sorted(peaks) and len(set(peaks)) == 4


def test_chunked_prefill_bounds_activations() -> None:
    whole = Estimator(SPEC_2B).chunk(600, 640, 352)
    chunked = Estimator(SPEC_2B, prefill_chunk_size=1024).chunk(600, 640, 352)
    assert chunked.prefill_gib < whole.prefill_gib / 10
    assert chunked.peak_gib < whole.peak_gib
    # The KV cache is the same: chunking bounds activations, not the cache.
    assert chunked.kv_prompt_gib == whole.kv_prompt_gib


def test_config_json_missing_field_is_named() -> None:
    broken = json.loads(json.dumps(QWEN3_VL_2B))
    del broken["text_config"]["num_hidden_layers"]
    with pytest.raises(BudgetError, match="text_config.num_hidden_layers"):
        ModelSpec.from_config(broken)


def test_read_model_config_local_and_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(QWEN3_VL_2B))
    assert read_model_config(str(tmp_path / "m"))["text_config"]["hidden_size"] == 2048
    with pytest.raises(BudgetError, match="does not exist"):
        read_model_config(str(tmp_path / "nope"))
    # A hub id that is not in the (empty) cache: a clear error, no download (HF_HUB_OFFLINE).
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BudgetError, match="Qwen/Qwen3-VL-2B-Instruct.*local directory"):
        read_model_config("Qwen/Qwen3-VL-2B-Instruct", allow_download=False)


# -- fitting the plan ---------------------------------------------------------------------------------

MEDIA = MediaInfo("x.mp4", 1000.0, 1280, 720, 30.0, 0, "h264")


def _cfg(**gpu: object) -> object:
    return parse_config(
        {
            "model": {"device": "cuda", "max_new_tokens": 1024},
            "chunking": {"seconds": 300, "overlap_seconds": 5},
            "sampling": {"fps": 2, "max_side": 640},
            "gpu": gpu,
        }
    )


def _est(cfg: object, ratio: float = 1.0) -> Estimator:
    return estimator_for(cfg, SPEC_2B, "cuda:0", ratio=ratio, prompt="p" * 600)  # type: ignore[arg-type]


BUDGETS = [round(4.5 + 0.25 * i, 2) for i in range(100)]  # 4.5 .. 29.25 GiB


def test_never_over_budget_and_monotone() -> None:
    """A sweep of budgets: every planned chunk fits; more budget never gives fewer tokens."""
    cfg = _cfg()
    est = _est(cfg)
    last_tokens, last_rate = -1, -1.0
    for budget in BUDGETS:
        plan = fit_plan(MEDIA, cfg, est, budget)  # type: ignore[arg-type]
        if not plan.fits:
            assert not plan.windows and plan.reason
            assert last_tokens == -1, f"{budget} GiB refused after a smaller budget fitted"
            continue
        peaks = [est.peak_gib(len(w.sample_times), w.width, w.height) for w in plan.windows]
        assert max(peaks) <= budget
        assert list(plan.peaks_gib) == peaks
        tokens = max(window_tokens(w) for w in plan.windows)
        rate = plan.rung.fps * plan.rung.max_side
        assert tokens >= last_tokens and rate >= last_rate, budget
        last_tokens, last_rate = tokens, rate
    assert last_tokens == max(
        window_tokens(w) for w in plan_chunks(MEDIA, seconds=300, overlap_s=5, fps=2, max_side=640)
    )


def test_steps_down_size_then_fps_then_length() -> None:
    cfg = _cfg()
    est = _est(cfg)
    seen = []
    for budget in reversed(BUDGETS):
        plan = fit_plan(MEDIA, cfg, est, budget)  # type: ignore[arg-type]
        if not plan.fits:
            break
        keys = tuple(plan.stepped_down)
        if "fps" in keys:
            assert plan.rung.max_side == 224  # the size floor came first
        if "seconds" in keys:
            assert plan.rung.fps == 0.25 and plan.rung.max_side == 224
        seen.append(keys)
    assert (
        ("max_side",) in seen
        and ("max_side", "fps") in seen
        and ("max_side", "fps", "seconds") in seen
    )
    assert seen[0] == ()  # a big budget steps nothing down


def test_floors_are_respected_and_refusal_says_what_fits() -> None:
    cfg = _cfg(min_side=320, min_fps=1, min_chunk_seconds=120)
    est = _est(cfg)
    for budget in BUDGETS:
        plan = fit_plan(MEDIA, cfg, est, budget)  # type: ignore[arg-type]
        if plan.fits:
            assert plan.rung.max_side >= 320 and plan.rung.fps >= 1 and plan.rung.seconds >= 120
            break
    else:
        pytest.fail("no budget fitted")
    low = fit_plan(MEDIA, cfg, est, budget - 0.25)  # type: ignore[arg-type]
    assert not low.fits and "floors" in (low.reason or "") and low.windows == ()
    weights_only = fit_plan(MEDIA, cfg, est, 4.0)  # type: ignore[arg-type]
    assert not weights_only.fits and "model alone" in (weights_only.reason or "")
    from daemon.engine.budget import what_would_fit

    advice = what_would_fit(est, 4.0, weights_only.floor, "Qwen/Qwen3-VL-2B-Instruct")
    assert "gpu.memory_budget_gib" in advice and 'model.quantization = "4bit"' in advice
    advice_8b = what_would_fit(Estimator(ModelSpec.from_config(QWEN3_VL_8B)), 12.0, (40, 224, 128))
    assert "Qwen/Qwen3-VL-2B-Instruct" in advice_8b or "Qwen/Qwen3-VL-4B-Instruct" in advice_8b


@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (640, 360), (500, 500), (4000, 300)])
def test_frame_size_monotone_in_max_side(size: tuple[int, int]) -> None:
    prev = None
    for side in range(4096, 31, -32):
        w, h = frame_size(*size, side)
        if prev is not None:
            assert w <= prev[0] and h <= prev[1]
        prev = (w, h)


def test_step_down_window_keeps_the_window_and_floors() -> None:
    cfg = _cfg(min_side=224, min_fps=0.5)
    floors = Floors.from_config(cfg)  # type: ignore[arg-type]
    (w,) = plan_chunks(
        MediaInfo("x", 20.0, 640, 360, 30.0, 0, "h264"),
        seconds=20,
        overlap_s=0,
        fps=2,
        max_side=640,
    )
    media = MediaInfo("x", 20.0, 640, 360, 30.0, 0, "h264")
    tokens = [window_tokens(w)]
    while (smaller := step_down_window(w, media, floors)) is not None:
        assert (smaller.start_s, smaller.end_s, smaller.index) == (w.start_s, w.end_s, w.index)
        assert (
            window_tokens(smaller) <= 0.8 * tokens[-1] or max(smaller.width, smaller.height) == 224
        )
        tokens.append(window_tokens(smaller))
        w = smaller
    assert max(w.width, w.height) == 224 and len(w.sample_times) == 10  # 0.5 fps x 20 s
    assert tokens == sorted(tokens, reverse=True)


# -- calibration ----------------------------------------------------------------------------------


def test_calibration_from_measured_figures(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fw.db'}")
    cfg = _cfg()
    est = _est(cfg)
    model, gpu = "Qwen/Qwen3-VL-2B-Instruct@bfloat16", "NVIDIA H100 80GB HBM3"
    assert store.calibration.ratio(model, gpu) is None
    # Measured peaks (torch.cuda.max_memory_allocated) of three chunks against their estimates.
    figures = [(600, 640, 352, 1.10), (600, 640, 352, 1.25), (40, 224, 128, 1.05)]
    for frames, w, h, factor in figures:
        estimated = est.chunk(frames, w, h).allocated_gib
        ratio = store.calibration.record(model, gpu, estimated * factor, estimated)
    assert ratio == pytest.approx(1.25)
    assert store.calibration.ratio(model, gpu) == pytest.approx(1.25)
    assert store.calibration.ratio(model, "NVIDIA A10G") is None  # per device
    # A later plan uses it: the calibrated estimate still fits, with fewer tokens.
    budget = 16.0
    plain = fit_plan(MEDIA, cfg, est, budget)  # type: ignore[arg-type]
    calibrated_est = _est(cfg, ratio=store.calibration.ratio(model, gpu) or 1.0)
    calibrated = fit_plan(MEDIA, cfg, calibrated_est, budget)  # type: ignore[arg-type]
    assert calibrated.fits and plain.fits
    assert max(map(window_tokens, calibrated.windows)) < max(map(window_tokens, plain.windows))
    assert max(calibrated.peaks_gib) <= budget
    assert calibrated_est.chunk(600, 640, 352).allocated_gib == pytest.approx(
        1.25 * est.chunk(600, 640, 352).allocated_gib
    )


# -- config and runtime pieces --------------------------------------------------------------------


def test_annotated_config_has_gpu_section() -> None:
    cfg = load_config(ROOT / "config.toml")
    g = cfg.gpu
    assert (g.memory_budget_gib, g.memory_fraction, g.min_side, g.min_fps, g.min_chunk_seconds) == (
        None,
        0.9,
        224,
        0.25,
        30,
    )
    assert g.when_busy == "wait" and g.when_locked == "error" and cfg.model.quantization is None


def test_gpu_config_errors_have_key_paths() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(
            {
                "gpu": {"when_busy": "panic", "memory_fraction": 1.5},
                "model": {"quantization": "3bit"},
            }
        )
    keys = {k for k, _, _ in ei.value.errors}
    assert {"gpu.when_busy", "gpu.memory_fraction", "model.quantization"} <= keys


def test_error_classification() -> None:
    import torch

    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    fault = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert is_cuda_fault(fault) and not is_oom(fault)
    assert not is_cuda_fault(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_cuda_fault(ValueError("bad JSON"))
    assert EXIT_CUDA == 75


def test_gpu_lease_is_one_process_per_device(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from daemon.gpu import GpuLease; from pathlib import Path;"
            f"GpuLease(Path({str(tmp_path)!r}), 'cuda:0').acquire(wait=False); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None
        # structlog writes its own line first
        assert any(line.strip() == "held" for line in iter(holder.stdout.readline, ""))
        lease = GpuLease(tmp_path, "cuda:0")
        with pytest.raises(GpuLeaseBusy, match=f"pid {holder.pid}.*when_locked"):
            lease.acquire(wait=False)
        assert GpuLease(tmp_path, "cuda:1").acquire(wait=False)  # another device is free
        t0 = time.monotonic()
        assert not lease.acquire(
            wait=True, should_stop=lambda: time.monotonic() - t0 > 0.3, poll_s=0.05
        )
    finally:
        holder.kill()
        holder.wait()
    assert lease.acquire(wait=False) and lease.held  # the kernel dropped the dead holder's lock
    lease.release()


def test_the_summary_text_pass_fits_its_batches_to_the_budget() -> None:
    from daemon.engine.budget import text_pass_tokens

    est = Estimator(SPEC_2B, slack=0.15, context_gib=0.5)
    # Plenty of memory: the configured batch size.
    assert text_pass_tokens(est, 40.0, 768, 6000) == 6000
    # Little room above the weights: fewer tokens, and what is chosen fits while 17 more would not.
    room = est.fixed_gib() + 0.3
    n = text_pass_tokens(est, room, 768, 200_000)
    assert 512 < n < 200_000

    def peak(t: int) -> float:
        return replace(est, text_tokens=t, max_new_tokens=768).chunk(0, 32, 32).peak_gib

    assert peak(n) <= room < peak(n + 17)
    # Not even the floor fits: the floor (the request then runs unfitted, like a chunk).
    assert text_pass_tokens(est, 1.0, 768, 6000) == 512
