"""The built-in default analyzer, as a trylast make_analyzer: Qwen3-VL through transformers, or
through an OpenAI-compatible server when model.backend = "openai"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.hookspecs import hookimpl

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.engine.backends import Analyzer


@hookimpl(trylast=True)
def make_analyzer(config: Config) -> Analyzer:
    if config.model.backend == "openai":
        # An OpenAI-compatible server (vLLM) runs the model; this process never imports torch.
        from daemon.engine.backends.openai import OpenAIAnalyzer

        return OpenAIAnalyzer.from_config(config)
    # Imported here: loading torch and transformers is the price of analysing, not of starting.
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    return QwenAnalyzer.from_config(config)
