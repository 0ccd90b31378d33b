"""A tiny randomly initialised Whisper, built offline and converted for faster-whisper.

`framewatch make-test-model DIR --speech` writes it: tests, `framewatch selftest` and anyone
checking an install offline point `[speech] model` at DIR. It runs the real transcription path
(feature extraction, CTranslate2 encoder and decoder, the real multilingual Whisper tokenizer,
language detection) in a fraction of a second per span; its text is random by design, while
segment times come from the voice activity detector and are true.

The tokenizer is Whisper's own, rebuilt from the BPE ranks (`multilingual.tiktoken`) that the
openai-whisper distribution ships; the package is not imported (only that data file is read, so
its numba/tiktoken dependencies are not needed). Nothing is downloaded.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

SEED = 1234

# Whisper's languages in token order (openai-whisper's tokenizer.LANGUAGES): the first 99 are
# every checkpoint's before large-v3 (vocabulary 51865).
_CODES = """
en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no
th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw
gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl
mg as tt haw ln ha ba jw su
"""
LANGUAGES = _CODES.split()
VOCAB_SIZE = 51865
N_MELS = 80
TEXT_TOKENS = 50257  # byte-level BPE ranks; <|endoftext|> comes next
# Special ids of the 99-language layout, checked after the tokenizer is built.
EOT, SOT, NO_TIMESTAMPS, FIRST_TIMESTAMP = 50257, 50258, 50363, 50364


def tiktoken_file() -> Path:
    """multilingual.tiktoken inside the installed openai-whisper package (not imported)."""
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "openai-whisper is not installed; it ships Whisper's tokenizer ranks "
            "(pip install --no-deps openai-whisper==20250625)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "multilingual.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"no {path} in the installed openai-whisper")
    return path


def _special_tokens() -> list[str]:
    # openai-whisper's order; transformers names its <|nospeech|> "<|nocaptions|>" (faster-whisper
    # accepts either).
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{lang}|>" for lang in LANGUAGES],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]


def _ranks(path: Path) -> dict[bytes, int]:
    """A .tiktoken file: one base64 token and its rank per line (read without `tiktoken`)."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _tokenizer(out: Path) -> Any:
    """transformers' WhisperTokenizer with the real vocabulary and special tokens, saved to `out`
    (tokenizer.json is what faster-whisper reads)."""
    from transformers import AddedToken, WhisperTokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return _ranks(Path(tiktoken_url))

    source = str(tiktoken_file())
    vocab, merges = Converter(vocab_file=source).extract_vocab_merges_from_model(source)
    if len(vocab) != TEXT_TOKENS:
        raise RuntimeError(f"{source}: {len(vocab)} ranks, Whisper has {TEXT_TOKENS}")
    tok = WhisperTokenizer(vocab=vocab, merges=merges, add_prefix_space=False)
    # <|endoftext|> is already the unknown, start and end token, and so id 50257.
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(t, normalized=False, special=True) for t in _special_tokens()[1:]
            ]
        }
    )
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in stamps])
    tok.set_prefix_tokens(language="en", task="transcribe", predict_timestamps=False)
    tok.save_pretrained(out)
    ids = [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>")]
    ids += [tok.convert_tokens_to_ids(t) for t in ("<|notimestamps|>", "<|0.00|>")]
    if ids != [EOT, SOT, NO_TIMESTAMPS, FIRST_TIMESTAMP] or len(tok) != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer special ids {ids}, size {len(tok)}: not Whisper's layout")
    return tok


def make_test_whisper(out_dir: str | Path) -> Path:
    """Write a tiny, deterministic, randomly initialised Whisper in CTranslate2's format to
    `out_dir` (model.bin, config.json, vocabulary.json, tokenizer.json,
    preprocessor_config.json): `faster_whisper.WhisperModel(out_dir)` loads it. Returns the
    directory. Raises FileNotFoundError when openai-whisper (the tokenizer ranks) is missing."""
    import tokenizers
    import torch
    from ctranslate2.converters import TransformersConverter
    from faster_whisper.tokenizer import Tokenizer
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="framewatch-whisper-") as tmp:
        hf = Path(tmp)
        tok = _tokenizer(hf)
        # Whisper's suppressed symbols, computed as openai-whisper and faster-whisper do.
        fw = Tokenizer(
            tokenizers.Tokenizer.from_file(str(hf / "tokenizer.json")), True, "transcribe", "en"
        )
        suppress = sorted(set(fw.non_speech_tokens))
        config = WhisperConfig(
            vocab_size=VOCAB_SIZE,
            num_mel_bins=N_MELS,
            d_model=64,
            encoder_layers=2,
            encoder_attention_heads=4,
            decoder_layers=2,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_source_positions=1500,  # 30 s of 10 ms frames, halved by the conv stride
            max_target_positions=448,
            pad_token_id=EOT,
            bos_token_id=EOT,
            eos_token_id=EOT,
            decoder_start_token_id=SOT,
            suppress_tokens=suppress,
            begin_suppress_tokens=[220, EOT],
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = WhisperForConditionalGeneration(config).eval()
        with torch.no_grad():
            # Random weights make the decoder repeat one token, often a special one that
            # decodes to nothing. Zero rows (tied to the output projection) keep every special
            # token's logit at 0, below the best text token's: the model writes random text.
            model.model.decoder.embed_tokens.weight[SOT:] = 0.0
        model.generation_config = GenerationConfig(
            decoder_start_token_id=SOT,
            bos_token_id=EOT,
            eos_token_id=EOT,
            pad_token_id=EOT,
            max_length=448,
            suppress_tokens=suppress,
            begin_suppress_tokens=[220, EOT],
            no_timestamps_token_id=NO_TIMESTAMPS,
            is_multilingual=True,
            # CTranslate2 reads the language ids from here: transformers 5 tokenizers no longer
            # list them where its fallback looks, and detection would then fail (IndexError).
            lang_to_id={f"<|{c}|>": tok.convert_tokens_to_ids(f"<|{c}|>") for c in LANGUAGES},
            task_to_id={
                "translate": tok.convert_tokens_to_ids("<|translate|>"),
                "transcribe": tok.convert_tokens_to_ids("<|transcribe|>"),
            },
            alignment_heads=[[1, h] for h in range(4)],
        )
        model.save_pretrained(hf)
        WhisperFeatureExtractor(feature_size=N_MELS, sampling_rate=16000).save_pretrained(hf)
        TransformersConverter(
            str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]
        ).convert(str(out), force=True)
    (out / "framewatch-test-model.json").write_text(
        json.dumps({"seed": SEED, "note": "random Whisper weights; for tests only"}) + "\n",
        encoding="utf-8",
    )
    log.info("test_speech_model_written", path=str(out))
    return out
