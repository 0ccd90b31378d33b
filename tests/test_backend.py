"""The transformers Qwen3-VL backend on a tiny random checkpoint: loading, tokens, decoding."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from daemon.config import parse_config
from daemon.engine import prompts
from daemon.engine.analyzer import Analyzer, ModelLoadError
from daemon.models import ChunkInput, Frame

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.engine.backends.qwen3vl import QwenAnalyzer

# Small bounds keep the random model's answer short enough to finish inside max_new_tokens.
BOUNDS = {"max_events": 2, "label_chars": 16, "description_chars": 40}


def _frames(times: list[float], height: int, width: int, seed: int = 0) -> tuple[Frame, ...]:
    rng = np.random.default_rng(seed)
    return tuple(Frame(t, rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for t in times)


def _chunk(frames: tuple[Frame, ...], prompt: str = "Describe what happens.") -> ChunkInput:
    return ChunkInput("rec.mp4", 0, frames[0].t_s, frames[-1].t_s, prompt, frames)


def _config(model_dir: Path | str, **model: Any) -> Any:
    return parse_config(
        {
            "model": {"name": str(model_dir), "device": "cpu", "max_new_tokens": 256, **model},
            "analysis": BOUNDS,
        }
    )


def _assert_valid(answer: dict[str, Any], schema: dict[str, Any]) -> None:
    """Checks `prompts.event_schema`'s shape, read from the schema (jsonschema is not installed)."""
    assert set(answer) == set(schema["required"])
    events_schema = schema["properties"]["events"]
    assert len(answer["events"]) <= events_schema["maxItems"]
    item = events_schema["items"]
    for event in answer["events"]:
        assert set(event) == set(item["required"])
        for key, rule in item["properties"].items():
            if rule["type"] == "number":
                assert isinstance(event[key], (int, float)) and not isinstance(event[key], bool)
            else:
                assert isinstance(event[key], str)
                assert re.fullmatch(rule["pattern"], event[key]), (key, event[key])


@pytest.fixture(scope="module")
def analyzer(tiny_model: Path) -> QwenAnalyzer:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    return QwenAnalyzer.from_config(_config(tiny_model))


def test_offline_is_set() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_checkpoint_loads_like_real_weights(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    processor = AutoProcessor.from_pretrained(tiny_model)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (64, 2, 151_936)
    assert model.config.vision_config.out_hidden_size == text.hidden_size
    assert (
        model.get_output_embeddings().weight.data_ptr()
        == model.get_input_embeddings().weight.data_ptr()
    )
    assert model.generation_config.eos_token_id == 151645
    video = processor.video_processor
    assert (video.patch_size, video.temporal_patch_size, video.merge_size) == (16, 2, 2)
    assert list(video.image_mean) == list(video.image_std) == [0.5, 0.5, 0.5]
    assert processor.tokenizer.convert_tokens_to_ids("<|video_pad|>") == 151656

    rendered = processor.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "Hi"}],
            },
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>"
        "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    from daemon.selftest.testmodel import make_test_model

    again = make_test_model(tmp_path / "again")
    digest = [
        hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
        for d in (tiny_model, again)
    ]
    assert digest[0] == digest[1], "the tiny model must be deterministic"


def test_markers_carry_absolute_frame_times(analyzer: QwenAnalyzer) -> None:
    # Uneven spacing, as on a variable-frame-rate source: each marker is its pair's mean PTS.
    frames = _frames([600.0, 600.4, 601.0, 601.6], 64, 96)
    inputs, expected = analyzer.prepare(_chunk(frames))
    assert tuple(inputs["video_grid_thw"][0].tolist()) == expected == (2, 4, 6)

    decoded = analyzer.processor.tokenizer.decode(inputs["input_ids"][0])
    pads = "<|video_pad|>" * (4 // 2 * 6 // 2)
    video = (
        "<|vision_start|>"
        f"<600.2 seconds><|vision_start|>{pads}<|vision_end|>"
        f"<601.3 seconds><|vision_start|>{pads}<|vision_end|>"
        "<|vision_end|>"
    )
    assert (
        decoded
        == f"<|im_start|>user\n{video}Describe what happens.<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    ("count", "height", "width", "grid"),
    [
        (4, 64, 96, (2, 4, 6)),
        (20, 128, 224, (10, 8, 14)),
        (5, 64, 64, (3, 4, 4)),  # odd: the last frame is repeated
        (1, 64, 64, (1, 4, 4)),
        (4, 70, 100, (2, 4, 6)),  # not multiples of 32: rounded, not shrunk
    ],
)
def test_video_grid(
    analyzer: QwenAnalyzer, count: int, height: int, width: int, grid: tuple[int, int, int]
) -> None:
    frames = _frames([10.0 + 0.5 * i for i in range(count)], height, width)
    inputs, expected = analyzer.prepare(_chunk(frames))
    assert tuple(inputs["video_grid_thw"][0].tolist()) == expected == grid
    decoded = analyzer.processor.tokenizer.decode(inputs["input_ids"][0])
    assert len(re.findall(r"<\d+\.\d seconds>", decoded)) == grid[0]


def test_whole_video_pixel_budget_does_not_shrink_frames(
    analyzer: QwenAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = analyzer.processor.video_processor
    # A budget this small stands in for a long chunk under the published 25 M pixel budget.
    monkeypatch.setattr(video, "size", {"shortest_edge": 1024, "longest_edge": 4 * 32 * 32})
    frames = _frames([0.0, 0.5, 1.0, 1.5], 64, 96)
    array = np.stack([f.image for f in frames])
    metadata = {"fps": 1000.0, "frames_indices": [0, 500, 1000, 1500], "total_num_frames": 1501}
    shrunk = video(
        videos=[array],
        video_metadata=[metadata],
        do_sample_frames=False,
        cap_pixels_per_frame=False,
    )
    assert tuple(shrunk["video_grid_thw"][0].tolist()) != (2, 4, 6)  # the default would shrink
    inputs, _ = analyzer.prepare(_chunk(frames))
    assert tuple(inputs["video_grid_thw"][0].tolist()) == (2, 4, 6)


def test_analyze_returns_schema_valid_events(analyzer: QwenAnalyzer) -> None:
    assert isinstance(analyzer, Analyzer)
    chunk = _chunk(_frames([30.0, 30.5, 31.0, 31.5], 64, 64))
    events = analyzer.analyze(chunk)
    stats = analyzer.last_stats
    assert {"prompt_tokens", "generated_tokens", "truncated", "parse_error", "seconds"} <= set(
        stats
    )
    assert isinstance(events, list)
    if stats["truncated"]:
        assert events == []
    else:
        assert stats["parse_error"] is None
        _assert_valid({"events": events}, prompts.event_schema(**BOUNDS))
    assert stats["prompt_tokens"] > 2 * 4  # at least the two frame pairs' visual tokens
    assert analyzer.analyze(chunk) == events, "greedy decoding must be deterministic"


def test_chunked_prefill_gives_the_same_answer(analyzer: QwenAnalyzer) -> None:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    chunked = QwenAnalyzer(
        analyzer.model,
        analyzer.processor,
        analyzer.grammar,
        model_name=analyzer.model_name,
        max_new_tokens=256,
        prefill_chunk_size=64,
    )
    prompt = prompts.build_prompt(prompts.instructions("general", None), 30.0, 31.5, 2)
    chunk = _chunk(_frames([30.0, 30.5, 31.0, 31.5], 64, 64, seed=3), prompt)
    assert chunked.analyze(chunk) == analyzer.analyze(chunk)
    assert analyzer.last_stats["prompt_tokens"] > 64  # so the prefill really was split


def test_truncated_answer_gives_empty_list(analyzer: QwenAnalyzer) -> None:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    short = QwenAnalyzer(
        analyzer.model, analyzer.processor, analyzer.grammar, model_name="tiny", max_new_tokens=8
    )
    assert short.analyze(_chunk(_frames([0.0, 0.5], 64, 64))) == []
    assert short.last_stats["truncated"] is True
    assert "max_new_tokens" in short.last_stats["parse_error"]


def test_grammar_admits_the_schema_layout_and_nothing_unsafe(analyzer: QwenAnalyzer) -> None:
    import xgrammar as xgr

    def accepts(text: str) -> bool:
        matcher = xgr.GrammarMatcher(analyzer.grammar)
        return matcher.accept_string(text) and matcher.is_completed()

    good = {
        "events": [
            {
                "start_s": 12.25,
                "end_s": 14,
                "label": "Door opens",
                "description": "Ein Mann öffnet die Tür.",
            }
        ]
    }
    assert accepts(json.dumps(good, ensure_ascii=False))
    assert accepts('{"events": []}')
    bad_label = json.loads(json.dumps(good))
    bad_label["events"][0]["label"] = "x" * 17
    assert not accepts(json.dumps(bad_label))
    assert not accepts(
        '{"events": [{"start_s": 1, "end_s": 2, "label": "a\nb", "description": ""}]}'
    )
    assert not accepts(
        '{"events": [{"start_s": 1, "end_s": 2, "label": "a\\"b", "description": ""}]}'
    )
    three = {"events": [good["events"][0]] * 3}
    assert not accepts(json.dumps(three, ensure_ascii=False))
    assert not accepts(
        '{"events": [{"start_s": 1.0000000, "end_s": 2, "label": "", "description": ""}]}'
    )


def test_parse_events() -> None:
    from daemon.engine.prompts import parse_events

    assert parse_events('{"events": [{"label": "x"}]}') == ([{"label": "x"}], None)
    assert parse_events('{"events": [')[1].startswith("not JSON")
    assert parse_events("[]")[1] is not None
    assert parse_events('{"events": [1]}')[1] is not None


def test_provenance(analyzer: QwenAnalyzer) -> None:
    prov = analyzer.provenance()
    assert prov["backend"] == "transformers"
    assert (prov["dtype"], prov["device"]) == ("float32", "cpu")
    assert prov["model"] == analyzer.model_name
    json.dumps(prov)


def test_missing_model_dir_names_the_setting(tmp_path: Path) -> None:
    from daemon.engine.backends.qwen3vl import QwenAnalyzer

    with pytest.raises(ModelLoadError, match=r"model\.name"):
        QwenAnalyzer.from_config(_config(tmp_path / "no-such-model"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match=r"not Qwen3-VL.*model\.name"):
        QwenAnalyzer.from_config(_config(tmp_path / "bert"))
    with pytest.raises(ModelLoadError, match=r"model\.name"):
        QwenAnalyzer.from_config(_config(tmp_path))  # a directory without a checkpoint
    with pytest.raises(ModelLoadError, match=r"model\.quantization"):
        QwenAnalyzer.from_config(_config(tmp_path, quantization="8bit"))
