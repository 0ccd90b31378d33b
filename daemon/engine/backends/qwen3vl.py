"""Qwen3-VL through transformers: loaded once per process, a chunk's frames in, valid events out."""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from daemon.config import DEFAULT_MODEL
from daemon.engine import prompts
from daemon.engine.alerts import parse_verdicts, rule_answer_tokens
from daemon.engine.analyzer import ModelLoadError, new_stats
from daemon.engine.backends.grammar import (
    _compile,
    _compile_grammar,
    event_grammar,
    summary_grammar,
    verify_grammar,
)
from daemon.engine.budget import resolve_dtype, round_side
from daemon.engine.prompts import parse_events
from daemon.engine.summary import summary_schema

__all__ = ["QwenAnalyzer", "event_grammar", "verify_grammar"]

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from daemon.config import Config
    from daemon.models import ChunkInput, Frame, RuleQuestion, SummaryInput, VerifyInput

log = structlog.get_logger(__name__)

# Frame indices on a virtual 1000 fps clock are PTS in milliseconds, so the processor's
# `<t seconds>` markers carry each frame's true absolute time, variable frame rate included.
VIRTUAL_FPS = 1000.0

# qwen3_vl_moe (the 30B-A3B family) shares the processor and the generate() path.
SUPPORTED_MODEL_TYPES = ("qwen3_vl", "qwen3_vl_moe")

_ADVICE = (
    "Set model.name in the config to a local directory with a Qwen3-VL checkpoint, "
    f"or allow network access to download {DEFAULT_MODEL}."
)


def resolve_device(setting: str) -> str:
    """model.device as a torch device string: auto is the GPU when there is one, else the CPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"model.device is {setting!r} but no CUDA GPU is available; "
            "set model.device to auto or cpu."
        )
    return setting


def torch_dtype(setting: str, device: str) -> torch.dtype:
    """model.dtype as a torch dtype, by the planner's rule (budget.resolve_dtype)."""
    import torch

    bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return getattr(torch, resolve_dtype(setting, device, bf16))  # type: ignore[no-any-return]


def video_payload(
    frames: Sequence[Frame], factor: int = 32, temporal_patch: int = 2
) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """The (T, H, W, 3) array, the video metadata and the processor options for one chunk's frames.

    `factor` is the vision patch times the spatial merge (32 for Qwen3-VL). Frames whose sides are
    multiples of it go in untouched; others are rounded to the nearest multiple, never shrunk by the
    processor's whole-video pixel budget. An odd count is padded with the last frame at its own
    time, as the processor would do, but here so the metadata always matches the frames.
    """
    if not frames:
        raise ValueError("a chunk needs at least one frame")
    shapes = {f.image.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"all frames of a chunk must have one size, got {sorted(shapes)}")
    height, width = frames[0].image.shape[:2]
    images = [f.image for f in frames]
    # PTS can start slightly below zero (B-frames, edit lists); a negative index names no frame.
    indices = [max(0, round(f.t_s * VIRTUAL_FPS)) for f in frames]
    while len(images) % temporal_patch:
        images.append(images[-1])
        indices.append(indices[-1])
    video = np.ascontiguousarray(np.stack(images), dtype=np.uint8)
    metadata = {
        "fps": VIRTUAL_FPS,
        "frames_indices": indices,
        "total_num_frames": max(indices) + 1,
        "height": height,
        "width": width,
    }
    options: dict[str, Any] = {
        "do_sample_frames": False,
        # The cap only matters when resizing; passing it silences a per-process deprecation warning.
        "cap_pixels_per_frame": False,
    }
    if height % factor == 0 and width % factor == 0:
        options["do_resize"] = False
    else:
        # The processor's budget is for the whole video; a floor equal to the ceiling pins the size.
        pixels = len(images) * round_side(height, factor) * round_side(width, factor)
        options["do_resize"] = True
        options["size"] = {"shortest_edge": pixels, "longest_edge": pixels}
    return video, metadata, options


# One character of a label or description: anything but a quote, a backslash or a control
# character, so the text is valid JSON without escapes and its length is its character count.
def _placement(device: str, dtype: torch.dtype, quantization: str | None) -> dict[str, Any]:
    """from_pretrained options that put the weights on `device`, quantized when asked."""
    has_accelerate = importlib.util.find_spec("accelerate") is not None
    if quantization is None:
        # Straight onto the GPU; without accelerate, transformers refuses device_map and the
        # weights pass through host memory once on their way (the caller moves them).
        return {"device_map": device} if device != "cpu" and has_accelerate else {}
    if not device.startswith("cuda"):
        raise ModelLoadError(
            f"model.quantization = {quantization!r} needs a CUDA GPU; remove model.quantization "
            "or set model.device to cuda."
        )
    if not has_accelerate or importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"model.quantization = {quantization!r} needs bitsandbytes and accelerate "
            "(pip install 'framewatch[gpu]'); or remove model.quantization."
        )
    from transformers import BitsAndBytesConfig

    # Only the language model's linear layers: the vision tower is small and sensitive to
    # quantization, and daemon.engine.budget counts it (and lm_head) in model.dtype.
    skip = ["visual", "lm_head"]
    if quantization == "8bit":
        bnb = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    else:
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=False,
            llm_int8_skip_modules=skip,
        )
    return {"device_map": device, "quantization_config": bnb}


def _load_error(name: str, exc: BaseException) -> ModelLoadError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("model_load_failed", model=name, error_type=type(exc).__name__, error=str(exc))
    return ModelLoadError(f"cannot load model {name!r}: {reason}. {_ADVICE}")


class QwenAnalyzer:
    """Qwen3-VL on one device; build it once with `from_config` and call `analyze` per chunk."""

    name = "qwen3vl-transformers"

    def __init__(
        self,
        model: Any,
        processor: Any,
        grammar: Any,
        *,
        model_name: str,
        revision: str | None = None,
        max_new_tokens: int = 1024,
        prefill_chunk_size: int | None = None,
        quantization: str | None = None,
        bounds: tuple[int, int, int] | None = None,
        reason_chars: int = 160,
        verify_max_new_tokens: int = 256,
    ) -> None:
        self.model = model
        self.processor = processor
        self.grammar = grammar
        # For the grammars of alert rules and of the second look, compiled when first needed.
        self.bounds = bounds
        self.reason_chars = reason_chars
        self.verify_max_new_tokens = verify_max_new_tokens
        self.model_name = model_name
        self.revision = revision
        self.quantization = quantization
        self.device = model.device
        self.dtype = model.dtype
        self.last_stats: dict[str, Any] = {}
        tokenizer = processor.tokenizer
        video = processor.video_processor
        self._factor = int(video.patch_size * video.merge_size)
        self._temporal = int(video.temporal_patch_size)

        config = copy.deepcopy(model.generation_config)
        # Greedy: the same chunk gives the same events, and sampling settings shipped with a
        # checkpoint (temperature, top_p, top_k) must not leak in.
        config.update(
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max_new_tokens,
            prefill_chunk_size=prefill_chunk_size,
        )
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        config.eos_token_id = sorted(eos_ids)
        if config.pad_token_id is None:
            config.pad_token_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
            )
        self._eos_ids = eos_ids
        self._generation_config = config

    @classmethod
    def from_config(cls, config: Config) -> QwenAnalyzer:
        """Load the model, processor and compiled answer schema named by `config`.

        Raises ModelLoadError, whose message names the setting to change, when the model cannot be
        loaded.
        """
        import torch

        m = config.model
        name = config.model_name()
        device = resolve_device(m.device)
        dtype = torch_dtype(m.dtype, device)
        if name.startswith("/") and not Path(name).is_dir():
            raise ModelLoadError(f"model directory {name} does not exist. {_ADVICE}")

        placement = _placement(device, dtype, m.quantization)
        started = time.perf_counter()
        try:
            from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

            hf_config = AutoConfig.from_pretrained(name, revision=m.revision)
            model_type = getattr(hf_config, "model_type", None)
            if model_type not in SUPPORTED_MODEL_TYPES:
                raise ModelLoadError(
                    f"model {name!r} is a {model_type!r} checkpoint, not Qwen3-VL. {_ADVICE}"
                )
            processor = AutoProcessor.from_pretrained(name, revision=m.revision)
            model = AutoModelForImageTextToText.from_pretrained(
                name,
                revision=m.revision,
                dtype=dtype,
                attn_implementation=m.attn_implementation,
                **placement,
            )
            if "device_map" not in placement:
                model = model.to(device)
        except ModelLoadError:
            raise
        except torch.OutOfMemoryError as exc:
            log.warning(
                "model_load_failed", model=name, error_type="OutOfMemoryError", error=str(exc)
            )
            raise ModelLoadError(
                f"out of memory loading {name!r} on {device}: choose a smaller model.name, "
                "or set model.dtype to bfloat16, or model.device to another GPU."
            ) from None
        except (OSError, ValueError, KeyError, ImportError, TypeError) as exc:
            raise _load_error(name, exc) from None
        if not hasattr(processor, "video_processor") or not hasattr(processor, "tokenizer"):
            raise ModelLoadError(
                f"{name!r} has no Qwen3-VL video processor or tokenizer. {_ADVICE}"
            )
        model.eval()
        loaded = time.perf_counter()

        a = config.analysis
        bounds = (a.max_events, a.label_chars, a.description_chars)
        vocab_size = int(model.get_output_embeddings().weight.shape[0])
        grammar = _compile_grammar(processor.tokenizer, vocab_size, bounds, name, m.revision)
        log.info(
            "model_loaded",
            model=name,
            device=str(model.device),
            dtype=str(model.dtype).removeprefix("torch."),
            load_seconds=round(loaded - started, 2),
            grammar_seconds=round(time.perf_counter() - loaded, 2),
        )
        return cls(
            model,
            processor,
            grammar,
            model_name=name,
            revision=m.revision,
            max_new_tokens=m.max_new_tokens,
            prefill_chunk_size=m.prefill_chunk_size,
            quantization=m.quantization,
            bounds=bounds,
            reason_chars=config.alerting.reason_chars,
            verify_max_new_tokens=config.alerting.verify_max_new_tokens,
        )

    def _vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def _rules_grammar(self, rules: Sequence[RuleQuestion]) -> Any:
        if self.bounds is None:
            raise RuntimeError("this analyzer was built without its bounds; use from_config")
        return _compile_grammar(
            self.processor.tokenizer,
            self._vocab_size(),
            self.bounds,
            self.model_name,
            self.revision,
            tuple(r.name for r in rules),
            self.reason_chars,
        )

    def _verify_grammar(self) -> Any:
        return _compile(
            self.processor.tokenizer,
            self._vocab_size(),
            self.model_name,
            self.revision,
            prompts.schema_key(prompts.verify_schema(self.reason_chars)),
            lambda: verify_grammar(self.reason_chars),
            verify=True,
        )

    def prepare(self, chunk: ChunkInput | VerifyInput) -> tuple[Any, tuple[int, int, int]]:
        """The processor's tensors for one chunk (on the CPU) and the (T, H, W) grid to expect."""
        video, metadata, options = video_payload(chunk.frames, self._factor, self._temporal)
        messages = [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": chunk.prompt}]}
        ]
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        inputs = self.processor(
            text=[text], videos=[video], video_metadata=[metadata], return_tensors="pt", **options
        )
        patch = int(self.processor.video_processor.patch_size)
        t, h, w = video.shape[:3]
        expected = (
            t // self._temporal,
            round_side(h, self._factor) // patch,
            round_side(w, self._factor) // patch,
        )
        return inputs, expected

    def analyze(self, chunk: ChunkInput) -> list[dict[str, Any]]:
        """Events for one chunk, decoded greedily under the answer schema; [] when unusable. With
        `chunk.rules`, the rules that happened follow the events as rule hits ({"rule", "start_s",
        "end_s", "why"})."""
        started = time.perf_counter()
        stats = new_stats(len(chunk.frames))
        self.last_stats = stats
        if not chunk.frames:
            stats["parse_error"] = "no frames"
            stats["seconds"] = 0.0
            log.warning("chunk_without_frames", recording=chunk.recording_path, chunk=chunk.index)
            return []

        inputs, expected_grid = self.prepare(chunk)
        grid = tuple(int(v) for v in inputs["video_grid_thw"][0])
        stats["video_grid_thw"] = grid
        if grid != expected_grid:
            # Frames were rescaled by the processor: the answer is still usable, but the planner's
            # token and memory estimate no longer holds.
            log.warning(
                "video_grid_unexpected", got=grid, expected=expected_grid, chunk=chunk.index
            )
        inputs = inputs.to(self.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        stats["prompt_tokens"] = prompt_tokens

        grammar, config = self.grammar, self._generation_config
        if chunk.rules:
            # Each rule's verdict may lengthen the answer: room for it, so events are not cut.
            grammar = self._rules_grammar(chunk.rules)
            config = copy.deepcopy(config)
            config.max_new_tokens += rule_answer_tokens(chunk.rules, self.reason_chars)
        new_tokens, finished = self._generate(inputs, grammar, config, stats)
        text = self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
        if finished:
            events, error = parse_events(text)
            if chunk.rules and error is None:
                events = events + parse_verdicts(json.loads(text), chunk.rules)
        else:
            stats["truncated"] = True
            events, error = [], f"cut off at model.max_new_tokens ({config.max_new_tokens})"
        stats["parse_error"] = error
        stats["seconds"] = round(time.perf_counter() - started, 3)
        if error:
            log.warning(
                "answer_unusable", chunk=chunk.index, error=error, tail=text[-200:], **_brief(stats)
            )
        else:
            log.debug("answer_parsed", chunk=chunk.index, events=len(events), **_brief(stats))
        return events

    def _generate(
        self, inputs: Any, grammar: Any, config: Any, stats: dict[str, Any]
    ) -> tuple[list[int], bool]:
        """Greedy generation under `grammar`: (new tokens, whether it ended by itself)."""
        import torch
        import xgrammar as xgr
        from transformers import LogitsProcessorList

        prompt_tokens = int(inputs["input_ids"].shape[1])
        on_cuda = self.device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        # The grammar matcher is stateful and cannot be reset after a stop token: one per call.
        constrain = LogitsProcessorList([xgr.contrib.hf.LogitsProcessor(grammar)])
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, generation_config=config, logits_processor=constrain
            )
        new_tokens = output[0, prompt_tokens:].tolist()
        stats["generated_tokens"] = len(new_tokens)
        if on_cuda:
            stats["peak_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        return new_tokens, any(t in self._eos_ids for t in new_tokens)

    def verify(self, request: VerifyInput) -> dict[str, Any]:
        """The second look at one alert candidate: {"happened": bool, "reason": str} decoded
        greedily under its grammar, or {"error": why} when the answer is unusable."""
        started = time.perf_counter()
        stats: dict[str, Any] = {
            "frames": len(request.frames),
            "prompt_tokens": 0,
            "generated_tokens": 0,
            "truncated": False,
            "parse_error": None,
        }
        self.last_stats = stats
        if not request.frames:
            stats["parse_error"] = "no frames"
            return {"error": "no frames in the window"}
        inputs, _ = self.prepare(request)
        inputs = inputs.to(self.device)
        stats["video_grid_thw"] = tuple(int(v) for v in inputs["video_grid_thw"][0])
        stats["prompt_tokens"] = int(inputs["input_ids"].shape[1])
        config = copy.deepcopy(self._generation_config)
        config.max_new_tokens = self.verify_max_new_tokens
        new_tokens, finished = self._generate(inputs, self._verify_grammar(), config, stats)
        text = self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
        stats["seconds"] = round(time.perf_counter() - started, 3)
        if not finished:
            stats["truncated"] = True
            stats["parse_error"] = (
                f"cut off at alerting.verify_max_new_tokens ({config.max_new_tokens})"
            )
            return {"error": stats["parse_error"]}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            stats["parse_error"] = f"not JSON: {exc.msg}"
            return {"error": stats["parse_error"]}
        if not isinstance(data, dict) or not isinstance(data.get("happened"), bool):
            stats["parse_error"] = 'no boolean "happened"'
            return {"error": stats["parse_error"]}
        log.debug("verify_answered", happened=data["happened"], **_brief(stats))
        return {"happened": data["happened"], "reason": str(data.get("reason", ""))}

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with the model's tokenizer (the summary's batches are cut with it)."""
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def summarize(self, request: SummaryInput) -> dict[str, Any]:
        """A text-only pass (no frames): the summary answer, decoded greedily under its grammar
        ({"title", "summary", "chapters", "key_events"}), or {"error": why} when unusable."""
        started = time.perf_counter()
        stats: dict[str, Any] = new_stats(0)
        self.last_stats = stats
        messages = [{"role": "user", "content": [{"type": "text", "text": request.prompt}]}]
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        inputs = self.processor.tokenizer([text], return_tensors="pt").to(self.device)
        stats["prompt_tokens"] = int(inputs["input_ids"].shape[1])
        bounds = (
            request.max_chapters,
            request.max_key_events,
            request.title_chars,
            request.text_chars,
            request.chapter_title_chars,
        )
        grammar = _compile(
            self.processor.tokenizer,
            self._vocab_size(),
            self.model_name,
            self.revision,
            prompts.schema_key(summary_schema(request)),
            lambda: summary_grammar(*bounds),
            summary=True,
        )
        config = copy.deepcopy(self._generation_config)
        config.max_new_tokens = request.max_new_tokens
        new_tokens, finished = self._generate(inputs, grammar, config, stats)
        answer = self.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
        stats["seconds"] = round(time.perf_counter() - started, 3)
        if not finished:
            stats["truncated"] = True
            stats["parse_error"] = f"cut off at summary.max_new_tokens ({config.max_new_tokens})"
            return {"error": stats["parse_error"]}
        try:
            data = json.loads(answer)
        except json.JSONDecodeError as exc:
            stats["parse_error"] = f"not JSON: {exc.msg}"
            return {"error": stats["parse_error"]}
        log.debug("summary_answered", **_brief(stats))
        return data if isinstance(data, dict) else {"error": "not a JSON object"}

    def provenance(self) -> dict[str, Any]:
        """What produced the events, stored with each of them."""
        import transformers

        return {
            "model": self.model_name,
            "revision": self.revision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "backend": "transformers",
            "transformers": transformers.__version__,
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "decoding": "greedy",
            "max_new_tokens": self._generation_config.max_new_tokens,
            "quantization": self.quantization,
        }


def _brief(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats[k] for k in ("prompt_tokens", "generated_tokens", "seconds") if k in stats}
