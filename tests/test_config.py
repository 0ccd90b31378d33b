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


# -- secrets are never printed (issue 14, item 7) --------------------------------------------------

SECRETS = ("tok-SEKRIT-1", "SEKRIT2", "pw-SEKRIT-3", "SEKRIT-4", "SEKRIT-5", "SEKRIT-6", "SEKRIT-7")


def _checked(path: Path, text: str) -> list[str]:
    path.write_text(text)
    r = _cli("config", "check", "--config", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith("framewatch: config error:") for line in lines), lines
    for secret in (*SECRETS, "SEKRIT"):
        assert secret not in r.stderr and secret not in r.stdout, secret
    return lines


def test_config_check_never_prints_a_secret(tmp_path: Path) -> None:
    """Every way a secret used to reach the error lines: a SecretStr field's bad value, a whole
    table echoed by a table-level check (token and token_file), a table of a plugin that is not
    installed, a misspelt secret key, credentials in a URL, a secret in a list. (The core
    sections are checked before the plugins' tables, so they are two files.)"""
    core = "\n".join(
        _checked(
            tmp_path / "core.toml",
            """
[queue]
backend = "redis"
url = ["redis://:pw-SEKRIT-3@queue:6379/0"]
password = "SEKRIT-8"
lease_seconds = -1
""",
        )
    )
    assert "queue.url: Input should be a valid string (got ['redis://…@queue:6379/0'])" in core
    assert "queue.password: unknown key (got <secret, not shown>)" in core
    assert "queue.lease_seconds: Input should be greater than 0 (got -1)" in core

    joined = "\n".join(
        _checked(
            tmp_path / "plugins.toml",
            """
[plugins.web]
token = "tok-SEKRIT-1"
token_file = "/etc/framewatch/web-token"

[plugins.webhook]
url = "ftp://hooks.example/h?apikey=SEKRIT-4"
secret = "whsec_SEKRIT2"
secert = "SEKRIT-5"

[plugins.notinstalled]
api_key = "SEKRIT-6"
endpoint = {url = "https://u:SEKRIT-7@x.example/", tokens = ["SEKRIT-7"]}
""",
        )
    )
    # Still each key path, and what is not secret: the token file's path, the URL's host.
    for key in (
        "plugins.web: Value error, set token or token_file, not both",
        "(got 'ftp://hooks.example/h?…')",
        "plugins.webhook.secret: Value error, must be base64",
        "plugins.webhook.secert: unknown key (got <secret, not shown>)",
        "plugins.notinstalled: no such plugin is installed",
    ):
        assert key in joined, key
    assert "'token_file': '/etc/framewatch/web-token'" in joined
    assert "'token': <secret, not shown>" in joined
    assert "'api_key': <secret, not shown>" in joined and "https://…@x.example/" in joined


def test_config_error_values_are_redacted_in_the_exception_too(tmp_path: Path) -> None:
    from tests.outbox import make_config, manager

    with pytest.raises(ConfigError) as ei:
        manager(make_config(tmp_path, {"webhook": {"url": "http://x/", "secret": "whsec_SEKRIT"}}))
    assert "SEKRIT" not in str(ei.value) and "SEKRIT" not in repr(ei.value.errors)
    with pytest.raises(ConfigError) as ei:
        parse_config({"storage": {"url": "postgresql://fw:SEKRIT@db/fw", "urll": 1}})
    assert "SEKRIT" not in str(ei.value)


WEBHOOK_SECRET = "whsec_" + "ZnJhbWV3YXRjaC10ZXN0LXNlY3JldC0zMi1ieXRlcyE="


def test_config_check_warns_of_inline_secrets_others_may_read_or_change(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(
        f'[plugins.webhook]\nurl = "http://127.0.0.1:9/hook"\nsecret = "{WEBHOOK_SECRET}"\n'
        '[plugins.web]\ntoken = "web-token-value-0123456789"\n'
    )
    for mode, word in ((0o666, "writable by others"), (0o644, "readable by anyone")):
        p.chmod(mode)
        r = _cli("config", "check", "--config", str(p))
        assert r.returncode == 0, r.stderr
        warning = r.stderr.splitlines()[0]
        assert warning.startswith("framewatch: warning: ") and word in warning
        assert "plugins.webhook.secret" in warning and "plugins.web.token" in warning
        assert WEBHOOK_SECRET not in r.stderr and "web-token-value" not in r.stderr
    p.chmod(0o640)  # group-readable is how the unit's group reads it: no warning
    r = _cli("config", "check", "--config", str(p))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    # Secrets in files (secret_file) are not inline: a world-readable config is then fine.
    q = tmp_path / "d.toml"
    q.write_text('[plugins.webhook]\nurl = "http://127.0.0.1:9/hook"\nsecret_file = "s"\n')
    q.chmod(0o666)
    assert "warning" not in _cli("config", "check", "--config", str(q)).stderr
