"""systemd/framewatch.service: `systemd-analyze verify` accepts it without a single warning, and
`systemd-analyze security --offline=true` rates its exposure low. The unit is copied into a temporary
folder with ExecStart pointing at this venv's framewatch, because verify checks the binary exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "framewatch.service"
INSTALLED = "/opt/framewatch/.venv/bin/framewatch"
# Measured 1.7 with systemd 252 (0 = locked down, 10 = unprotected); a change that weakens the
# sandbox noticeably fails here instead of slipping through.
MAX_EXPOSURE = 2.5

analyze = shutil.which("systemd-analyze")


@pytest.fixture(autouse=True)
def _needs_systemd_analyze() -> None:
    if analyze is None:
        pytest.fail(
            "systemd-analyze is not installed (Debian package systemd; install.sh installs it)"
        )


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} run --config /etc/framewatch/config.toml" in text
    framewatch = Path(sys.executable).parent / "framewatch"
    assert framewatch.exists(), framewatch
    out = tmp_path / "framewatch.service"
    out.write_text(text.replace(f"ExecStart={INSTALLED}", f"ExecStart={framewatch}"))
    return out


def run(*args: str) -> subprocess.CompletedProcess[str]:
    assert analyze is not None
    return subprocess.run(
        [analyze, *args], check=False, capture_output=True, text=True, timeout=120
    )


def test_verify_accepts_the_unit_without_warnings(unit: Path) -> None:
    result = run("verify", str(unit))
    output = (result.stdout + result.stderr).strip()
    # verify exits 0 on unknown keys too, only printing them: any output is a finding.
    assert result.returncode == 0 and output == "", output


def test_security_exposure_is_low(unit: Path) -> None:
    result = run("security", "--offline=true", "--no-pager", str(unit))
    assert result.returncode == 0, result.stderr
    m = re.search(r"Overall exposure level for framewatch\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert m, result.stdout[-2000:]
    assert float(m.group(1)) <= MAX_EXPOSURE, result.stdout[-3000:]


def test_the_unit_keeps_the_settings_the_daemon_relies_on() -> None:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    assert keys["Type"] == ["notify"] and keys["Restart"] == ["on-failure"]
    assert "WatchdogSec" in keys and "StateDirectory" in keys and keys["DevicePolicy"] == ["closed"]
    assert "MemoryDenyWriteExecute" not in keys  # CUDA's JIT needs writable+executable pages
    # A hard memory cap, so a hostile file that gets past the probe's checks (issue 14) is killed
    # inside the unit, not the machine: a size with a unit suffix, documented in the README.
    (cap,) = keys["MemoryMax"]
    assert cap[:-1].isdigit() and cap[-1] in "KMGT"
    assert "MemoryMax" in (UNIT.parent.parent / "README.md").read_text()
    stop = keys["TimeoutStopSec"][0]
    assert stop.endswith("s") and int(stop[:-1]) > 60  # longer than daemon.stop_timeout_s
