"""GPU memory estimate for one chunk, from the model's own config.json (no weights), and calibration.

Everything here is arithmetic on published config numbers; nothing imports torch, so `framewatch
plan` can run on any machine. docs/memory.md explains the formula and its assumptions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.engine.analyzer import ModelLoadError

if TYPE_CHECKING:
    from daemon.config import Config

GIB = 2**30

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

# bitsandbytes stores the language model's nn.Linear weights as int8 with one fp32 scale per output
# row (8bit), or as 4-bit NF4 with one fp32 absmax per block of 64 (4bit, without double quant).
# Embeddings, norms, lm_head, MoE expert tensors and the vision tower stay in the compute dtype.
QUANT_BYTES = {"8bit": 1.0 + 4 / 1024, "4bit": 0.5 + 4 / 64}

# The processor writes `<t seconds>` plus the vision start/end markers before each pair of frames:
# about 8 text tokens per pair (measured on transformers 5.23, see NOTES-qwen3vl.md).
TIMESTAMP_TOKENS_PER_PAIR = 8
# Chat template around the prompt (role markers, outer vision markers, generation prompt).
TEMPLATE_TOKENS = 24
# Qwen's tokenizer averages about 4 characters per token on English prose; 3 over-counts on purpose.
CHARS_PER_TOKEN = 3.0

# The processor hands pixel_values_videos over as float32, and the backend moves them to the GPU
# as they are; they stay alive for the whole generate() call.
PIXEL_BYTES = 4

# CUDA context, cuBLAS workspace and kernels: held by the process, but not counted by
# torch.cuda.max_memory_allocated; typical for recent drivers.
CUDA_CONTEXT_GIB = 0.5

DEFAULT_SLACK = 0.15

# Published bf16 weight sizes, only used to suggest a smaller model when one does not fit.
KNOWN_MODELS_GIB = {
    "Qwen/Qwen3-VL-2B-Instruct": 3.96,
    "Qwen/Qwen3-VL-4B-Instruct": 8.27,
    "Qwen/Qwen3-VL-8B-Instruct": 16.33,
}


class BudgetError(ModelLoadError):
    """The model or its plan does not fit the memory budget, or its config cannot be read.

    A ModelLoadError, so every caller that reports load failures reports this one the same way."""


# -- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The numbers of a Qwen3-VL config.json that memory depends on."""

    model_type: str
    # language model
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    # vision tower
    vision_depth: int
    vision_hidden_size: int
    vision_intermediate_size: int
    out_hidden_size: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    deepstack_visual_indexes: tuple[int, ...]
    vision_num_heads: int = 16
    in_channels: int = 3
    num_position_embeddings: int = 2304
    attention_bias: bool = False
    # mixture of experts (qwen3_vl_moe); 0 experts: dense
    num_experts: int = 0
    moe_intermediate_size: int = 0
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> ModelSpec:
        """From a parsed config.json; raises BudgetError naming a missing field."""
        text = data.get("text_config") or {}
        vision = data.get("vision_config") or {}

        def need(section: dict[str, Any], where: str, key: str) -> Any:
            if key not in section:
                raise BudgetError(f"config.json has no {where}.{key}: not a Qwen3-VL checkpoint?")
            return section[key]

        t = lambda k: need(text, "text_config", k)  # noqa: E731
        v = lambda k: need(vision, "vision_config", k)  # noqa: E731
        heads = int(t("num_attention_heads"))
        hidden = int(t("hidden_size"))
        # Older configs carry tie_word_embeddings at the top only, newer ones in text_config too.
        tie = text.get("tie_word_embeddings", data.get("tie_word_embeddings", False))
        return cls(
            model_type=str(data.get("model_type", "qwen3_vl")),
            hidden_size=hidden,
            intermediate_size=int(t("intermediate_size")),
            num_hidden_layers=int(t("num_hidden_layers")),
            num_attention_heads=heads,
            num_key_value_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            vocab_size=int(t("vocab_size")),
            tie_word_embeddings=bool(tie),
            vision_depth=int(v("depth")),
            vision_hidden_size=int(v("hidden_size")),
            vision_intermediate_size=int(v("intermediate_size")),
            out_hidden_size=int(v("out_hidden_size")),
            patch_size=int(vision.get("patch_size", 16)),
            temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
            spatial_merge_size=int(vision.get("spatial_merge_size", 2)),
            deepstack_visual_indexes=tuple(vision.get("deepstack_visual_indexes") or ()),
            vision_num_heads=int(vision.get("num_heads", 16)),
            in_channels=int(vision.get("in_channels", 3)),
            num_position_embeddings=int(vision.get("num_position_embeddings", 2304)),
            attention_bias=bool(text.get("attention_bias", False)),
            num_experts=int(text.get("num_experts") or 0),
            moe_intermediate_size=int(text.get("moe_intermediate_size") or 0),
            decoder_sparse_step=int(text.get("decoder_sparse_step") or 1),
            mlp_only_layers=tuple(text.get("mlp_only_layers") or ()),
        )

    @property
    def factor(self) -> int:
        """Pixels per merged visual token along one side (32 for Qwen3-VL)."""
        return self.patch_size * self.spatial_merge_size

    def _sparse(self, layer: int) -> bool:
        return (
            self.num_experts > 0
            and layer not in self.mlp_only_layers
            and (layer + 1) % self.decoder_sparse_step == 0
        )

    def param_counts(self) -> dict[str, int]:
        """Parameters by part: `text_linear` (what 4/8-bit quantizes), `text_other`, `vision`."""
        h, hd = self.hidden_size, self.head_dim
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        attn = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attn += q + 2 * kv + h
        dense_mlp = 3 * h * self.intermediate_size
        linear = other = 0
        for layer in range(self.num_hidden_layers):
            linear += attn
            other += 2 * hd + 2 * h  # q/k norms, two RMSNorms
            if self._sparse(layer):
                # Experts are 3-D parameters, not nn.Linear: bitsandbytes leaves them alone.
                other += (
                    self.num_experts * 3 * h * self.moe_intermediate_size + self.num_experts * h
                )
            else:
                linear += dense_mlp
        other += self.vocab_size * h + h  # embeddings, final norm
        if not self.tie_word_embeddings:
            other += self.vocab_size * h  # lm_head

        vh, vi, m2 = (
            self.vision_hidden_size,
            self.vision_intermediate_size,
            self.spatial_merge_size**2,
        )
        patch = self.in_channels * self.temporal_patch_size * self.patch_size**2
        block = 4 * vh + (3 * vh * vh + 3 * vh) + (vh * vh + vh) + (vh * vi + vi) + (vi * vh + vh)
        mh = vh * m2

        def merger(norm_dim: int) -> int:
            return (
                2 * norm_dim + (mh * mh + mh) + (mh * self.out_hidden_size + self.out_hidden_size)
            )

        vision = (
            patch * vh
            + vh
            + self.num_position_embeddings * vh
            + self.vision_depth * block
            + merger(vh)
            + len(self.deepstack_visual_indexes) * merger(mh)
        )
        return {"text_linear": linear, "text_other": other, "vision": vision}

    def num_parameters(self) -> int:
        return sum(self.param_counts().values())

    def weights_bytes(self, dtype: str, quantization: str | None = None) -> float:
        c = self.param_counts()
        b = DTYPE_BYTES[dtype]
        linear = QUANT_BYTES[quantization] if quantization else b
        return c["text_linear"] * linear + (c["text_other"] + c["vision"]) * b

    def kv_bytes_per_token(self, dtype: str) -> int:
        """Keys and values of every layer for one token."""
        return (
            2
            * self.num_hidden_layers
            * self.num_key_value_heads
            * self.head_dim
            * DTYPE_BYTES[dtype]
        )


def read_model_config(
    name: str, revision: str | None = None, *, allow_download: bool = True
) -> dict[str, Any]:
    """The parsed config.json of a local checkpoint directory or of a hub id.

    A hub id is looked up in the local Hugging Face cache first (huggingface_hub, which unlike
    transformers does not import torch); only config.json is downloaded when it is missing and
    `allow_download`. Raises BudgetError with what to change."""
    path = Path(name).expanduser()
    if name.startswith(("/", ".", "~")) or path.is_dir():
        file = path / "config.json"
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BudgetError(
                f"{file} does not exist: model.name must be a directory with a Qwen3-VL checkpoint"
            ) from None
        except (OSError, ValueError) as exc:
            raise BudgetError(f"cannot read {file}: {exc}") from None
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for local_only in (True, False) if allow_download else (True,):
        try:
            found = hf_hub_download(
                name, "config.json", revision=revision, local_files_only=local_only
            )
            return json.loads(Path(found).read_text(encoding="utf-8"))
        except Exception as exc:  # huggingface_hub raises many types for "not there"; say which
            last = exc
    raise BudgetError(
        f"cannot read config.json of {name!r} ({type(last).__name__}: {str(last).splitlines()[0] if str(last) else ''}); "
        "the memory estimate needs it: download the model once, or set model.name to a local directory"
    )


def load_model_spec(
    name: str, revision: str | None = None, *, allow_download: bool = True
) -> ModelSpec:
    return ModelSpec.from_config(read_model_config(name, revision, allow_download=allow_download))


# -- tokens ---------------------------------------------------------------------------------------


def round_side(x: float, factor: int = 32) -> int:
    """A frame side as the vision tower takes it (Qwen3-VL: patch 16 merged 2x2): the nearest
    multiple of `factor`, at least one. The one copy of this rule (planner, backend, estimate)."""
    return max(factor, int(round(x / factor)) * factor)


def visual_tokens(
    frames: int, width: int, height: int, factor: int = 32, temporal_patch: int = 2
) -> int:
    """Merged visual tokens for `frames` frames of width x height (an odd count is padded)."""
    if frames <= 0:
        return 0
    pairs = math.ceil(frames / temporal_patch)
    return pairs * (round_side(height, factor) // factor) * (round_side(width, factor) // factor)


def text_tokens(prompt: str) -> int:
    """An over-estimate of the prompt's text tokens, without loading a tokenizer."""
    return TEMPLATE_TOKENS + math.ceil(len(prompt) / CHARS_PER_TOKEN)


def prompt_tokens(
    frames: int, width: int, height: int, text: int, factor: int = 32, temporal_patch: int = 2
) -> int:
    """All prompt tokens: visual tokens, the per-pair timestamps and the text."""
    pairs = math.ceil(frames / temporal_patch) if frames > 0 else 0
    return (
        visual_tokens(frames, width, height, factor, temporal_patch)
        + TIMESTAMP_TOKENS_PER_PAIR * pairs
        + text
    )


# -- the estimate ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    """One chunk's memory, in GiB. `allocated_gib` is what torch.cuda.max_memory_allocated
    measures; `peak_gib` is what must fit the budget."""

    frames: int
    width: int
    height: int
    visual_tokens: int
    prompt_tokens: int
    weights_gib: float
    kv_prompt_gib: float
    kv_generated_gib: float
    vision_gib: float  # pixels, vision-tower activations and its outputs
    prefill_gib: float  # language-model activations of one prefill step
    inputs_gib: float  # pixel values and visual features alive through generate()
    allocated_gib: float
    slack_gib: float
    context_gib: float
    peak_gib: float


@dataclass(frozen=True, slots=True)
class Estimator:
    """The memory model for one model, dtype and generation setting; call it per chunk."""

    spec: ModelSpec
    dtype: str = "bfloat16"
    quantization: str | None = None
    max_new_tokens: int = 1024
    prefill_chunk_size: int | None = None
    attn_implementation: str | None = None
    slack: float = DEFAULT_SLACK
    ratio: float = 1.0  # measured / estimated allocation, from calibration
    text_tokens: int = 256
    context_gib: float = CUDA_CONTEXT_GIB
    # The speech recogniser on the same GPU (engine/speech/memory.py): its weights and working
    # set, outside torch's allocator, so never scaled by the calibration ratio.
    asr_gib: float = 0.0

    def weights_gib(self) -> float:
        return self.spec.weights_bytes(self.dtype, self.quantization) / GIB

    def fixed_gib(self) -> float:
        """Paid before the first chunk: weights, the CUDA context and the speech recogniser."""
        return self.weights_gib() * self.ratio + self.context_gib + self.asr_gib

    def tokens(self, frames: int, width: int, height: int) -> tuple[int, int]:
        s = self.spec
        return (
            visual_tokens(frames, width, height, s.factor, s.temporal_patch_size),
            prompt_tokens(frames, width, height, self.text_tokens, s.factor, s.temporal_patch_size),
        )

    def chunk(self, frames: int, width: int, height: int) -> Estimate:
        s = self.spec
        b = DTYPE_BYTES[self.dtype]
        vis, prompt = self.tokens(frames, width, height)
        gen = self.max_new_tokens
        kv_tok = s.kv_bytes_per_token(self.dtype)

        # Vision tower: all patches of the chunk at once (generate() encodes the video before the
        # chunked prefill starts, so prefill_chunk_size does not bound this part).
        patches = vis * s.spatial_merge_size**2
        vh, vi = s.vision_hidden_size, s.vision_intermediate_size
        pixels = patches * s.in_channels * s.temporal_patch_size * s.patch_size**2 * PIXEL_BYTES
        # Outputs: the merged features plus one per deepstack layer, kept until generation ends.
        features = vis * s.out_hidden_size * b * (1 + len(s.deepstack_visual_indexes))
        # Per patch inside a block, at its widest: the MLP (residual, norm, fc1 out, activation
        # out) or attention (residual, norm, qkv, output, rotary's float32 q/k copies).
        per_patch = max((2 * vh + 2 * vi) * b, 7 * vh * b + 2 * vh * 4)
        scores = 0
        if self.attn_implementation == "eager":
            per_pair = (
                s.spatial_merge_size**2 * vis // max(1, math.ceil(frames / s.temporal_patch_size))
            )
            scores = s.vision_num_heads * per_pair**2 * 4
        vision_phase = pixels + features + patches * per_patch + scores

        # Language model prefill: one step of `prefill_chunk_size` tokens (the whole prompt
        # without it) through a layer: residual, norm, q/k/v/o, then gate, up and their product.
        h, i = s.hidden_size, s.intermediate_size if not s.num_experts else s.moe_intermediate_size
        step = min(prompt, self.prefill_chunk_size or prompt)
        q = s.num_attention_heads * s.head_dim
        act = step * ((3 * h + 2 * q + 2 * s.num_key_value_heads * s.head_dim) * b + 3 * i * b)
        if self.attn_implementation == "eager":
            act += s.num_attention_heads * step * prompt * (b + 4)
        elif step < prompt:
            act += step * prompt  # boolean mask of a chunk against the whole cache
        # Logits of the last position only (generate passes logits_to_keep=1), float32, twice.
        act += 2 * s.vocab_size * 4
        # The cache grows by concatenation: one layer is briefly held twice.
        kv_total = kv_tok * (prompt + gen)
        act += kv_total / s.num_hidden_layers
        lm_phase = pixels + features + kv_total + act

        weights = s.weights_bytes(self.dtype, self.quantization)
        dynamic = max(vision_phase, lm_phase)
        allocated = (weights + dynamic) * self.ratio / GIB
        slack = dynamic * self.ratio * self.slack / GIB
        peak = allocated + slack + self.context_gib + self.asr_gib
        return Estimate(
            frames=frames,
            width=width,
            height=height,
            visual_tokens=vis,
            prompt_tokens=prompt,
            weights_gib=weights / GIB,
            kv_prompt_gib=kv_tok * prompt / GIB,
            kv_generated_gib=kv_tok * gen / GIB,
            vision_gib=(vision_phase - pixels - features) / GIB,
            prefill_gib=act / GIB,
            inputs_gib=(pixels + features) / GIB,
            allocated_gib=allocated,
            slack_gib=slack,
            context_gib=self.context_gib,
            peak_gib=peak,
        )

    def peak_gib(self, frames: int, width: int, height: int) -> float:
        return self.chunk(frames, width, height).peak_gib

    def calibrated(self, ratio: float) -> Estimator:
        return replace(self, ratio=ratio)


def text_pass_tokens(
    est: Estimator, budget_gib: float, max_new_tokens: int, ceiling: int, floor: int = 512
) -> int:
    """The most prompt tokens a text-only request (a recording's summary: no frames) may have
    so that its peak fits `budget_gib`, at most `ceiling`; `floor` when not even that fits (the
    request then runs unfitted, as a chunk without a budget does, protected by its OOM
    handling). The summary's batches are cut to it (engine/summary.py)."""
    text = replace(est, max_new_tokens=max_new_tokens)

    def fits(n: int) -> bool:
        return replace(text, text_tokens=n).chunk(0, 32, 32).peak_gib <= budget_gib

    if fits(ceiling):
        return ceiling
    lo, hi = floor, ceiling
    if not fits(lo):
        return floor
    while hi - lo > 16:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def resolve_dtype(setting: str, device: str, bf16_supported: bool = True) -> str:
    """model.dtype as the backend loads it and the planner budgets it: auto is bfloat16 on a GPU
    that supports it, else float32 (CPUs and pre-Ampere GPUs run bfloat16 slowly or emulate it;
    float32 is always right). The one copy of this rule."""
    if setting != "auto":
        return setting
    return "bfloat16" if device.startswith("cuda") and bf16_supported else "float32"


def estimator_for(
    config: Config,
    spec: ModelSpec,
    device: str,
    *,
    ratio: float = 1.0,
    prompt: str = "",
    bf16_supported: bool = True,
) -> Estimator:
    """The Estimator for a config on `device` ("cpu" or "cuda[:N]"). With speech on, the prompt
    counts speech.prompt_tokens of transcript, and a recogniser on the same GPU its memory."""
    from daemon.engine.speech.memory import asr_memory

    m = config.model
    on_gpu = device.startswith("cuda")
    text = text_tokens(prompt) if prompt else 256
    asr = asr_memory(config)
    if config.speech.mode != "off":
        text += config.speech.prompt_tokens
    same_gpu = asr is not None and on_gpu and _gpu_index(asr.device) == _gpu_index(device)
    return Estimator(
        spec=spec,
        dtype=resolve_dtype(m.dtype, device, bf16_supported),
        quantization=m.quantization,
        max_new_tokens=m.max_new_tokens,
        prefill_chunk_size=m.prefill_chunk_size,
        attn_implementation=m.attn_implementation,
        slack=config.gpu.slack_fraction,
        ratio=ratio,
        text_tokens=text,
        context_gib=CUDA_CONTEXT_GIB if on_gpu else 0.0,
        asr_gib=asr.total / GIB if same_gpu and asr is not None else 0.0,
    )


def _gpu_index(device: str) -> int | None:
    """ "cuda" and "cuda:0" are one GPU; None for the CPU."""
    if not device.startswith("cuda"):
        return None
    return int(device.partition(":")[2] or 0)


def calibration_key(config: Config, device: str, bf16_supported: bool = True) -> str:
    """What a calibration ratio belongs to, besides the GPU: the model, dtype and quantization."""
    m = config.model
    dtype = resolve_dtype(m.dtype, device, bf16_supported)
    return f"{config.model_name()}@{dtype}" + (f"+{m.quantization}" if m.quantization else "")


def budget_from(config: Config, total_gib: float | None) -> tuple[float | None, str]:
    """(budget in GiB, where it came from): gpu.memory_budget_gib, else memory_fraction of the
    device's memory, else None (no GPU: estimate only)."""
    g = config.gpu
    if g.memory_budget_gib is not None:
        return g.memory_budget_gib, "gpu.memory_budget_gib"
    if total_gib is not None:
        return (
            g.memory_fraction * total_gib,
            f"gpu.memory_fraction {g.memory_fraction:g} of {total_gib:.2f} GiB",
        )
    return None, "no GPU: estimate only"


def what_would_fit(
    est: Estimator, budget_gib: float, floor: tuple[int, int, int], model_name: str = ""
) -> str:
    """One sentence per way out when the floor plan `floor` (frames, width, height) does not fit."""
    need = est.peak_gib(*floor)
    ways = [f"a budget of at least {math.ceil(need * 10) / 10:g} GiB (gpu.memory_budget_gib)"]
    if est.quantization != "4bit":
        for q in ("8bit", "4bit") if est.quantization is None else ("4bit",):
            qpeak = replace(
                est, quantization=q, dtype="bfloat16" if est.dtype == "float32" else est.dtype
            ).peak_gib(*floor)
            if qpeak <= budget_gib:
                ways.append(f'model.quantization = "{q}" (about {qpeak:.1f} GiB at the floor)')
                break
    own = est.weights_gib()
    smaller = [
        n
        for n, w in sorted(KNOWN_MODELS_GIB.items(), key=lambda kv: kv[1])
        if w < own * 0.95 and n != model_name
    ]
    for n in smaller:
        # Same activations per token within a family, to first order: swap the weights only.
        if KNOWN_MODELS_GIB[n] + (need - own * est.ratio) <= budget_gib:
            ways.append(f"a smaller model such as {n} ({KNOWN_MODELS_GIB[n]:.2f} GiB of weights)")
            break
    return "; or ".join(ways)
