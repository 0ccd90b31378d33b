"""The parts of the published Qwen3-VL config.json files that GPU memory depends on, as fixtures.

Copied by hand from the model cards' config.json (Qwen/Qwen3-VL-{2B,4B,8B}-Instruct); the tests
check that the parameter counts derived from them land on the published sizes, so a wrong number
here shows up as a failed test, not as a wrong budget. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

_SHARED_TEXT = {"num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936}
_SHARED_VISION = {
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "num_heads": 16,
}
_SMALL_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "deepstack_visual_indexes": [5, 11, 17],
}


def _config(text: dict[str, Any], vision: dict[str, Any], tie: bool) -> dict[str, Any]:
    return {
        "model_type": "qwen3_vl",
        "tie_word_embeddings": tie,
        "text_config": {**_SHARED_TEXT, **text, "tie_word_embeddings": tie},
        "vision_config": {**_SHARED_VISION, **vision},
    }


QWEN3_VL_2B = _config(
    {
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
    },
    {**_SMALL_VISION, "out_hidden_size": 2048},
    tie=True,
)
QWEN3_VL_4B = _config(
    {
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
    },
    {**_SMALL_VISION, "out_hidden_size": 2560},
    tie=True,
)
QWEN3_VL_8B = _config(
    {
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
    },
    {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "out_hidden_size": 4096,
        "deepstack_visual_indexes": [8, 16, 24],
    },
    tie=False,
)

# model -> (config, parameters, bf16 GiB, KV KiB per token), the reference figures of issue #5.
REFERENCE = {
    "2B": (QWEN3_VL_2B, 2.13e9, 3.96, 112),
    "4B": (QWEN3_VL_4B, 4.44e9, 8.27, 144),
    "8B": (QWEN3_VL_8B, 8.77e9, 16.33, 144),
}
