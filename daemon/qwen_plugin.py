"""The built-in default analyzer: the transformers Qwen3-VL backend, as a trylast make_analyzer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.hookspecs import hookimpl

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.engine.backends import Analyzer


@hookimpl(trylast=True)
def make_analyzer(config: Config) -> Analyzer:
    # Imported here: loading torch and transformers is the price of analysing, not of starting.
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    return QwenAnalyzer.from_config(config)
