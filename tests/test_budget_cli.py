"""`framewatch plan` in a subprocess on a generated clip: JSON shape, budget, refusal, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media import make_video
from tests.qwen_configs import QWEN3_VL_2B

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("plan")
    make_video(d / "clip.mp4", seconds=40, fps=5, size=(640, 360))
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text(json.dumps(QWEN3_VL_2B))
    return d


def _write_config(d: Path, device: str, budget: float | None) -> Path:
    gpu = f"memory_budget_gib = {budget}\n" if budget is not None else ""
    p = d / f"c-{device}-{budget}.toml"
    p.write_text(
        f'[storage]\nurl = "sqlite:///fw.db"\n[model]\nname = "./model"\ndevice = "{device}"\n'
        "[chunking]\nseconds = 20\noverlap_seconds = 2\n[sampling]\nfps = 4\nmax_side = 640\n"
        f"[gpu]\n{gpu}min_chunk_seconds = 10\n"
    )
    return p


def _plan(d: Path, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # Runs `framewatch plan` and reports afterwards whether torch got imported along the way.
    code = (
        "import sys; from daemon.cli import main; rc = main(sys.argv[1:]); "
        "print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr); "
        "sys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "plan", str(d / "clip.mp4"), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_plan_json_fits_the_budget_without_torch(setup: Path) -> None:
    out = _plan(setup, _write_config(setup, "cuda", 6.0), "--json")
    assert out.returncode == 0, out.stderr
    assert "torch not imported" in out.stderr
    r = json.loads(out.stdout)
    assert {"model", "budget_gib", "weights_gib", "chunks"} <= set(r)
    assert r["model"] == str(setup / "model") and r["budget_gib"] == 6.0
    assert r["weights_gib"] == pytest.approx(3.96, rel=0.02)
    assert r["stepped_down"]  # 80 frames of 640x352 do not fit 6 GiB on 2B
    # The summary's text pass is planned too: its batches fit the same budget.
    assert r["summary"]["batch_tokens"] <= 6000 and r["summary"]["est_peak_gib"] <= 6.0
    assert [c["index"] for c in r["chunks"]] == list(range(len(r["chunks"])))
    for c in r["chunks"]:
        assert set(c) == {
            "index",
            "start_s",
            "end_s",
            "frames",
            "width",
            "height",
            "visual_tokens",
            "prompt_tokens",
            "est_peak_gib",
        }
        assert c["est_peak_gib"] <= 6.0
        pairs = -(-c["frames"] // 2)
        assert c["visual_tokens"] == pairs * (c["width"] // 32) * (c["height"] // 32)
        assert c["prompt_tokens"] > c["visual_tokens"] + 8 * pairs
    assert r["chunks"][-1]["end_s"] == pytest.approx(40.0, abs=0.2)


def test_plan_text_and_a_larger_budget_steps_nothing_down(setup: Path) -> None:
    out = _plan(setup, _write_config(setup, "cuda", 40.0))
    assert out.returncode == 0, out.stderr
    assert "budget  40.00 GiB (gpu.memory_budget_gib)" in out.stdout
    assert "3.96 GiB weights" in out.stdout and "stepped down" not in out.stdout
    assert "640x352" in out.stdout


def test_plan_refuses_when_the_weights_do_not_fit(setup: Path) -> None:
    out = _plan(setup, _write_config(setup, "cuda", 3.0))
    assert out.returncode == 3
    assert "model alone needs" in out.stderr and "What would fit" in out.stderr
    assert "gpu.memory_budget_gib" in out.stderr and "model.quantization" in out.stderr


def test_plan_on_cpu_is_estimate_only(setup: Path) -> None:
    out = _plan(setup, _write_config(setup, "cpu", None), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["budget_gib"] is None and r["budget_source"] == "no GPU: estimate only"
    assert r["dtype"] == "float32" and r["weights_gib"] == pytest.approx(2 * 3.96, rel=0.02)
    assert all(c["width"] == 640 and c["frames"] == 80 for c in r["chunks"][:-1])  # as configured


def test_plan_unreadable_model_config_is_a_clear_error(setup: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[model]\nname = "{tmp_path / "missing"}"\ndevice = "cuda"\n[gpu]\nmemory_budget_gib = 20\n'
    )
    out = _plan(setup, cfg)
    assert out.returncode == 3
    assert "config.json does not exist" in out.stderr


def test_plan_without_a_gpu_but_with_a_budget_is_for_the_gpu(setup: Path) -> None:
    """A config written on a laptop (device auto, no GPU here) with a GPU budget is planned as the
    GPU box will run it: bfloat16 against the budget, every chunk fitting it, and a note saying so."""
    out = _plan(setup, _write_config(setup, "auto", 6.0), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["device"] == "cuda:0" and r["dtype"] == "bfloat16" and r["budget_gib"] == 6.0
    assert "no GPU on this machine" in r["note"]
    assert r["stepped_down"] and all(c["est_peak_gib"] <= 6.0 for c in r["chunks"])
    text = _plan(setup, _write_config(setup, "auto", 6.0))
    assert (
        text.returncode == 0
        and "OVER" not in text.stdout
        and "no GPU on this machine" in text.stdout
    )


def test_plan_on_cpu_says_a_gpu_budget_does_not_apply(setup: Path) -> None:
    out = _plan(setup, _write_config(setup, "cpu", 6.0))
    assert out.returncode == 0, out.stderr
    assert "model.device is cpu: gpu.memory_budget_gib does not apply" in out.stdout
    assert "OVER" not in out.stdout and "budget  no GPU: estimate only" in out.stdout
