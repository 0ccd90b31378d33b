"""The annotated config.toml loads; unknown keys and bad values fail with their key paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daemon.config import Config, ConfigError, load_config, parse_config
from tests.daemon_proc import run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_annotated_example_loads() -> None:
    cfg = load_config(ROOT / "config.toml")
    assert cfg.model.name == "Qwen/Qwen3-VL-2B-Instruct"
    assert cfg.chunking.seconds == 300 and cfg.chunking.overlap_seconds == 5
    assert cfg.sampling.fps == 2


def test_defaults() -> None:
    cfg = Config()
    assert cfg.storage_url().startswith("sqlite:///") and cfg.storage_url().endswith(
        "framewatch.db"
    )


def test_unknown_key_and_bad_values_reported_with_paths(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[model]\nnmae = "x"\ndevice = "tpu"\n[chunking]\nseconds = -1\n')
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    keys = {k for k, _, _ in ei.value.errors}
    assert {"model.nmae", "model.device", "chunking.seconds"} <= keys
    assert "unknown key" in str(ei.value)


def test_hwaccel_values() -> None:
    assert parse_config({}).sampling.hwaccel == "none"
    assert parse_config({"sampling": {"hwaccel": "cuda:1"}}).sampling.hwaccel == "cuda:1"
    assert parse_config(
        {"sampling": {"hwaccel": "vaapi:/dev/dri/renderD128"}}
    ).sampling.hwaccel.startswith("vaapi")
    with pytest.raises(ConfigError) as ei:
        parse_config({"sampling": {"hwaccel": "nvdec"}})
    assert [k for k, _, _ in ei.value.errors] == ["sampling.hwaccel"]


def test_overlap_must_be_below_length() -> None:
    with pytest.raises(ConfigError):
        parse_config({"chunking": {"seconds": 5, "overlap_seconds": 5}})


def test_relative_paths_resolve_against_config_file(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "c.toml"
    p.parent.mkdir()
    p.write_text('[storage]\nurl = "sqlite:///state/fw.db"\n[model]\nname = "./model"\n')
    cfg = load_config(p)
    assert cfg.storage_url() == f"sqlite:///{tmp_path / 'sub' / 'state' / 'fw.db'}"
    assert cfg.model_name() == str(tmp_path / "sub" / "model")


def test_not_toml(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=120)


def test_config_check_command_accepts_the_example() -> None:
    r = _cli("config", "check", "--config", str(ROOT / "config.toml"))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stderr


def test_config_check_command_lists_each_error_with_its_key_path(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[sampling]\nfps = 0\nmax_sid = 3\n[chunking]\noverlap_seconds = "five"\n')
    r = _cli("config", "check", "--config", str(p))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("framewatch: config error:") for line in lines)
    joined = "\n".join(lines)
    assert "sampling.fps" in joined and "sampling.max_sid: unknown key" in joined
    assert "chunking.overlap_seconds" in joined and "Traceback" not in r.stderr
