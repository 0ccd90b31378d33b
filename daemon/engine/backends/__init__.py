"""Inference backends, each an Analyzer (daemon/engine/analyzer.py): Qwen3-VL through transformers
in this process (qwen3vl.py), or behind an OpenAI-compatible server such as vLLM (openai.py)."""
