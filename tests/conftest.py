"""Fixtures for the whole suite: offline Hugging Face settings, a tiny Qwen3-VL checkpoint and a
tiny Whisper."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from daemon.store import Store

# Before any test imports huggingface_hub or transformers, which read these once: nothing in the
# suite may reach a model hub, and a test that tries must fail instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen3-VL checkpoint directory, built once per session (per xdist worker)."""
    from daemon.selftest.testmodel import make_test_model

    return make_test_model(tmp_path_factory.mktemp("tiny-qwen3vl"))


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Whisper in CTranslate2's format (`framewatch make-test-model --speech`),
    built once per session (per xdist worker): `[speech] model` for tests."""
    from daemon.selftest.testwhisper import make_test_whisper

    return make_test_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL: a SQLite file and, as a second run of the test, a private PostgreSQL database
    (dropped afterwards)."""
    from tests.services import store_url_for

    with store_url_for(request.param, tmp_path) as u:
        yield u


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    """A store at `url` (SQLite, then PostgreSQL). A test module may define its own `store` to
    override it."""
    from daemon.store import Store

    st = Store(url)
    try:
        yield st
    finally:
        st.close()
