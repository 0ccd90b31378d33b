"""Alert rules through the real transformers Qwen3-VL path on the tiny random checkpoint: stage 1
(the rules asked in the chunk's own schema-constrained answer) and stage 2 (the second look's
yes/no answer), stored. Random weights may well answer "no" to every rule; what is checked is
the shape, the grammar and what is stored, not the model's judgement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.analysis import analyze_recording
from daemon.config import parse_config
from daemon.engine import prompts
from daemon.models import ChunkInput, Frame, RuleHit, RuleQuestion, VerifyInput
from daemon.store import Store
from daemon.store.alerts import insert_candidates
from daemon.worker import Worker
from tests.media import make_video
from tests.outbox import manager

RULES = [
    {"name": "fence", "when": "a person climbs the fence"},
    {"name": "fall", "when": "someone falls and stays down", "min_duration_s": 2},
]


def _config(tmp: Path, model: Path, rules: list[dict[str, Any]] = RULES) -> Any:
    return parse_config(
        {
            "storage": {"url": f"sqlite:///{tmp / 'fw.db'}"},
            "model": {"name": str(model), "device": "cpu", "max_new_tokens": 48},
            "chunking": {"seconds": 4, "overlap_seconds": 1},
            "sampling": {"fps": 1, "max_side": 64},
            "analysis": {"max_events": 1, "label_chars": 8, "description_chars": 16},
            "alerts": rules,
            # The text pass is tested in test_summary.py; here it would only cost time.
            "summary": {"enabled": False},
            "alerting": {
                "reason_chars": 24,
                "verify_fps": 2,
                "verify_max_side": 96,
                "verify_max_frames": 8,
                "verify_max_new_tokens": 64,
                "margin_s": 1,
            },
        },
        tmp / "config.toml",
    )


@pytest.fixture(scope="module")
def analyzer(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    return QwenAnalyzer.from_config(_config(tmp_path_factory.mktemp("cfg"), tiny_model))


def test_stage1_answer_holds_one_verdict_per_rule(analyzer: Any) -> None:
    import numpy as np
    import xgrammar as xgr

    from daemon.engine.backends.qwen3vl import event_grammar

    rng = np.random.default_rng(1)
    frames = tuple(
        Frame(t, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for t in (0, 1, 2, 3)
    )
    rules = (RuleQuestion("fence", "a person climbs the fence"), RuleQuestion("fall", "x falls", 2))
    prompt = prompts.build_prompt("Describe.", 0.0, 4.0, 1, rules)
    chunk = ChunkInput("clip.mp4", 0, 0.0, 4.0, prompt, frames, rules)
    answer = analyzer.analyze(chunk)
    stats = analyzer.last_stats
    assert stats["truncated"] is False and stats["parse_error"] is None, stats
    hits = [a for a in answer if "rule" in a]
    assert all(
        h["rule"] in ("fence", "fall") and isinstance(h["start_s"], float | int) for h in hits
    )
    # The grammar admits exactly the schema's shapes: a verdict per rule, in order.
    grammar = analyzer._rules_grammar(rules)

    def accepts(text: str) -> bool:
        m = xgr.GrammarMatcher(grammar)
        return m.accept_string(text) and m.is_completed()

    no = '{"happened": false}'
    yes = '{"happened": true, "start_s": 1.5, "end_s": 2, "why": "over the fence"}'
    assert accepts(f'{{"events": [], "rules": {{"fence": {no}, "fall": {yes}}}}}')
    assert not accepts(f'{{"events": [], "rules": {{"fence": {no}}}}}')  # a rule left out
    assert not accepts(f'{{"events": [], "rules": {{"fall": {no}, "fence": {no}}}}}')
    assert not accepts(f'{{"events": [], "rules": {{"fence": {no}, "fall": {no}, "x": {no}}}}}')
    assert "rules" in event_grammar(1, 8, 16, rules=("fence", "fall"), reason_chars=24)
    # Without rules the same analyzer answers with the events-only grammar, as before.
    plain = ChunkInput(
        "clip.mp4", 0, 0.0, 4.0, prompts.build_prompt("Describe.", 0.0, 4.0, 1), frames
    )
    assert all("rule" not in a for a in analyzer.analyze(plain))
    assert analyzer.last_stats["prompt_tokens"] < stats["prompt_tokens"]


def test_stage2_verify_answers_yes_or_no_with_a_reason(analyzer: Any) -> None:
    import numpy as np

    rng = np.random.default_rng(2)
    frames = tuple(
        Frame(0.5 * i, rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)) for i in range(6)
    )
    q = RuleQuestion("fence", "a person climbs the fence")
    request = VerifyInput(
        "clip.mp4", "fence", q.when, 0.0, 1.0, 2.0, 0.0, 2.5,
        prompts.verify_prompt(q, 1.0, 2.0, 0.0, 2.5), frames,
    )  # fmt: skip
    answer = analyzer.verify(request)
    assert set(answer) == {"happened", "reason"}, answer
    assert isinstance(answer["happened"], bool) and isinstance(answer["reason"], str)
    assert len(answer["reason"]) <= 24
    assert analyzer.last_stats["prompt_tokens"] > 0 and analyzer.last_stats["truncated"] is False
    assert analyzer.verify(request) == answer, "greedy: the same look gives the same answer"


def test_both_stages_stored_through_the_worker(tiny_model: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, tiny_model)
    video = make_video(tmp_path / "yard.mp4", seconds=4, fps=10, size=(192, 108), counter=True)
    pm = manager(cfg)
    store = Store(cfg.storage_url())
    worker = Worker(store, cfg, pm.make_analyzer, subscribers=pm.subscribers)
    rec, _ = worker.ingest(str(video))
    rec = analyze_recording(worker, rec.id)
    assert rec.status == "done"
    chunk = store.chunks.get(rec.id, 0)
    asked = chunk.provenance["alerts"]
    assert asked["asked"] == ["fence", "fall"] and asked["refused"] == 0
    stats = chunk.provenance["analyzer"]
    assert stats["parse_error"] is None and stats["truncated"] is False, stats
    found = store.alerts.of(rec.id)
    assert [a.rule for a in found] == asked["hits"]  # stored as the answer said
    if not found:
        # Random weights said "no" to both: store a candidate as a "yes" would have, so the
        # second look still runs on the real model.
        with store.db.session() as s:
            insert_candidates(
                s, rec.id, 0, [RuleHit("fence", 1.0, 2.0, "test-made")], {"fence": "warning"}, {}
            )
    assert worker.verify_due(rec.id) >= 0
    for a in store.alerts.of(rec.id):
        assert a.state in ("confirmed", "rejected", "suppressed"), (a.state, a.reason)
        if a.state != "suppressed":
            v = a.verification
            assert isinstance(v["happened"], bool) and v["frames"] > 0
            assert v["fps"] >= 2 and max(v["width"], v["height"]) == 96
            assert v["provenance"]["backend"] == "transformers"
            assert a.thumbnail is not None and a.thumbnail_s is not None
            json.dumps(v)
    worker.close()
