"""Speech benchmark (issue #18): transcription speed and memory on a 10-minute clip of espeak-ng
speech, and what speech adds to `framewatch analyze` per chunk.

    python bench/speech.py [--model DIR]    # DIR: a Whisper for faster-whisper (default: the
                                            # tiny random one, built here with make-test-model)

Each measurement runs in a fresh interpreter (peak RSS from /proc/self/status, as bench/run.py
does). Writes bench/RESULTS-speech.md and prints one JSON object as its last line. Needs
espeak-ng (the clip) and, for the default model, openai-whisper (its tokenizer file).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import MEDIA, machine, peak_rss_mb  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS-speech.md"
CLIP_S = 600.0
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Framewatch analyses long recordings in overlapping chunks.",
    "Entropy never decreases in a closed system.",
    "Please open the second exercise sheet.",
    "The next slide shows the results of the experiment.",
    "Are there any questions about the derivation?",
    "We will continue after a short break.",
    "This curve rises slowly and then flattens out.",
)
# What tests use (random text stops at 16 tokens) and the defaults a user gets (beam 5, up to
# 224 tokens: a random model always runs to the limit, a real one stops at the sentence's end).
SETTINGS = {
    "test settings": {"beam_size": 1, "max_new_tokens": 16},
    "defaults": {},
}


def make_clip(path: Path) -> tuple[Path, int]:
    """10 minutes of sentences with 0.7-3 s pauses between them; returns the clip and how many."""
    from tests.speech_media import mux, speech_track

    rng = random.Random(18)
    items, t, i = [], 1.0, 0
    while t < CLIP_S - 6:
        items.append((t, SENTENCES[i % len(SENTENCES)]))
        t += 2.2 + len(SENTENCES[i % len(SENTENCES)]) / 16 + rng.uniform(0.7, 3.0)
        i += 1
    track, _ = speech_track(CLIP_S, items)
    return mux(path, track, video_s=CLIP_S), len(items)


def child(kind: str, **args: Any) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(args)]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"{kind}: exit {run.returncode}: {run.stderr.strip()[-500:]}")
    return {
        **json.loads(run.stdout.strip().splitlines()[-1]),
        "process_s": time.perf_counter() - t0,
    }


def child_transcribe(args: dict[str, Any]) -> dict[str, Any]:
    """Every chunk of the clip's default plan (300 s, 5 s overlap), as the worker transcribes."""
    from daemon.config import parse_config
    from daemon.engine.planner import plan_windows
    from daemon.engine.speech import Transcriber

    cfg = parse_config(
        {"speech": {"mode": "on", "model": args["model"], "cpu_threads": 2, **args["speech"]}}
    )
    imported = peak_rss_mb()
    t0 = time.perf_counter()
    asr = Transcriber.from_config(cfg)
    loaded_s = time.perf_counter() - t0
    loaded = peak_rss_mb()
    segments, chunks = 0, []
    t1 = time.perf_counter()
    for a, b in plan_windows(CLIP_S, 300.0, 5.0):
        tr = asr.transcribe(args["clip"], a, b, CLIP_S)
        assert tr.error is None, tr.error
        segments += len(tr.utterances)
        chunks.append({"window": [a, b], **tr.stats})
    seconds = time.perf_counter() - t1
    return {
        "seconds": seconds,
        "rtf": seconds / CLIP_S,
        "load_s": loaded_s,
        "rss_imported_mb": imported,
        "rss_loaded_mb": loaded,
        "rss_mb": peak_rss_mb(),
        "segments": segments,
        "chunks": chunks,
    }


def child_analyze(args: dict[str, Any]) -> dict[str, Any]:
    """`framewatch analyze` of the clip with the tiny Qwen3-VL, speech off or on."""
    from daemon.analysis import analyze_path
    from daemon.config import parse_config
    from daemon.store import Store

    db = Path(args["db"])
    db.unlink(missing_ok=True)
    cfg = parse_config(
        {
            "storage": {"url": f"sqlite:///{db}"},
            "model": {"name": args["qwen"], "max_new_tokens": 48},
            "sampling": {"fps": 0.5, "max_side": 64},
            "analysis": {"max_events": 2, "label_chars": 16, "description_chars": 40},
            "speech": {
                "mode": args["mode"],
                "model": args["model"],
                "cpu_threads": 2,
                **args["speech"],
            },
        }
    )
    t0 = time.perf_counter()
    result, _ = analyze_path(cfg, args["clip"])
    seconds = time.perf_counter() - t0
    assert result["recording"]["status"] == "done", result["recording"]
    store = Store(cfg.storage_url())
    chunks = [
        {k: c.provenance.get(k) for k in ("decode_s", "analyze_s")}
        | {"speech": c.provenance.get("speech")}
        for c in store.chunks.of(result["recording"]["id"])
    ]
    return {
        "seconds": seconds,
        "rss_mb": peak_rss_mb(),
        "chunks": chunks,
        "speech": len(result["speech"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument(
        "--model", help="a CTranslate2 Whisper directory (default: the tiny random one)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        body = {"transcribe": child_transcribe, "analyze": child_analyze}[args.child]
        print(json.dumps(body(json.loads(args.child_args or "{}"))))
        return 0
    MEDIA.mkdir(parents=True, exist_ok=True)
    from daemon.selftest.testmodel import make_test_model
    from daemon.selftest.testwhisper import make_test_whisper

    model = args.model or str(make_test_whisper(MEDIA / "tiny-whisper"))
    qwen = str(make_test_model(MEDIA / "tiny-qwen3vl"))
    clip, spoken = make_clip(MEDIA / "speech-10min.mp4")
    mach = machine()
    rows = {}
    for name, speech in SETTINGS.items():
        rows[name] = child("transcribe", clip=str(clip), model=model, speech=speech)
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "chunks"}), flush=True)
    common = {"clip": str(clip), "model": model, "qwen": qwen, "db": str(MEDIA / "speech.db")}
    off = child("analyze", mode="off", speech={}, **common)
    on = child("analyze", mode="on", speech=SETTINGS["test settings"], **common)
    n = len(on["chunks"])
    summary = {
        "clip_s": CLIP_S,
        "utterances": spoken,
        "model": model,
        **{
            f"{k} ({name})": round(rows[name][key], 3)
            for name in SETTINGS
            for k, key in (("rtf", "rtf"), ("peak_rss_mb", "rss_mb"), ("segments", "segments"))
        },
        "analyze_off_s": round(off["seconds"], 2),
        "analyze_on_s": round(on["seconds"], 2),
        "chunks": n,
        "overhead_per_chunk_s": round((on["seconds"] - off["seconds"]) / n, 2),
        "speech_work_per_chunk_s": round(
            sum(
                sum(c["speech"].get(k, 0) for k in ("decode_s", "vad_s", "asr_s"))
                for c in on["chunks"]
            )
            / n,
            2,
        ),
        "analyze_peak_rss_mb": [round(off["rss_mb"]), round(on["rss_mb"])],
    }
    text = report(mach, rows, off, on, summary)
    RESULTS.write_text(text)
    print(text)
    print(json.dumps(summary))
    return 0


def report(
    mach: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    off: dict[str, Any],
    on: dict[str, Any],
    summary: dict[str, Any],
) -> str:
    lines = [
        "# Speech benchmark",
        "",
        f"`python bench/speech.py` on {mach['cpu']} x{mach['cores']}, {mach['os']}, Python "
        f"{mach['python']}, PyAV {mach['pyav']}. {summary['utterances']} espeak-ng sentences in "
        f"{CLIP_S:.0f} s with 0.7-3 s pauses; model `{summary['model']}`; int8 on the CPU, "
        "2 threads. Measured while other work shared the machine: treat times as upper bounds.",
        "",
        "## Transcription of the 10-minute clip (the default plan: 300-s chunks, 30 s context)",
        "",
        "| settings | seconds | real-time factor | model load s | RSS after imports MB | after load MB | peak RSS MB | segments |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['seconds']:.1f} | {r['rtf']:.3f} | {r['load_s']:.2f} | "
            f"{r['rss_imported_mb']:.0f} | {r['rss_loaded_mb']:.0f} | {r['rss_mb']:.0f} | {r['segments']} |"
        )
    lines += ["", "Per chunk (test settings): decode, voice activity detection, recognition:", ""]
    lines += ["| window | decode s | VAD s | ASR s | spans |", "|---|---|---|---|---|"]
    for c in rows["test settings"]["chunks"]:
        lines.append(
            f"| {c['window'][0]:.0f}-{c['window'][1]:.0f} | {c.get('decode_s', 0):.2f} | "
            f"{c.get('vad_s', 0):.2f} | {c.get('asr_s', 0):.2f} | {c.get('spans', 0)} |"
        )
    lines += [
        "",
        "## What speech adds to `framewatch analyze` (tiny Qwen3-VL, 0.5 fps, 64 px)",
        "",
        "| speech | wall s | chunks | peak RSS MB |",
        "|---|---|---|---|",
        f"| off | {off['seconds']:.1f} | {len(off['chunks'])} | {off['rss_mb']:.0f} |",
        f"| on (test settings) | {on['seconds']:.1f} | {len(on['chunks'])} | {on['rss_mb']:.0f} |",
        "",
        f"Per chunk: {summary['overhead_per_chunk_s']} s more wall time; the transcription work "
        f"itself (decode + VAD + ASR, from the chunks' provenance) is {summary['speech_work_per_chunk_s']} s "
        "per chunk, part of it on the prefetch thread while the model runs the previous chunk.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
