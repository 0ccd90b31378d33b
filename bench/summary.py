"""Summary benchmark (issue 15): wall time and peak RSS of the summary text pass over a recording
with N stored events, on the tiny random Qwen3-VL (CPU) or a real checkpoint.

    python bench/summary.py [--events 500] [--model DIR] [--batch-tokens 6000]

The events are synthetic (a two-hour recording, one event every ~14 s, realistic lengths) and
handed to `engine.summary.summarize` exactly as the worker does, through QwenAnalyzer.summarize
and its tokenizer. The pass runs twice: cold (it compiles the summary grammar once per process)
and warm. Peak RSS is the process's VmHWM, reset (/proc/self/clear_refs) before each pass, so it
is the pass's own peak with the model loaded. With the tiny random model the answer bounds are
the tests' small ones (a random model fills whatever the grammar allows). Appends (replaces) the
"Summary pass" section of bench/RESULTS.md and prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Summary pass (issue 15)"

LABELS = ["person", "car", "door", "dog", "delivery", "bicycle", "light change"]
PLACES = [
    "at the front gate",
    "in the driveway",
    "near the mailbox",
    "on the porch",
    "by the fence",
]


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def synthetic_events(n: int, duration_s: float) -> list[Any]:
    from daemon.models import EventInfo

    step = duration_s / n
    return [
        EventInfo(
            id=i + 1,
            recording_id=1,
            chunk_index=int(i * step // 60),
            start_s=round(i * step, 1),
            end_s=round(i * step + min(step, 6.0), 1),
            label=LABELS[i % len(LABELS)],
            description=f"a {LABELS[(i * 3) % len(LABELS)]} moves {PLACES[i % len(PLACES)]}, "
            f"seen for a few seconds (event {i})",
        )
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--duration", type=float, default=7200.0)
    ap.add_argument("--model", help="a Qwen3-VL checkpoint directory (default: the tiny one)")
    ap.add_argument("--batch-tokens", type=int, default=6000)
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from daemon.config import parse_config
    from daemon.engine.backends.qwen3vl import QwenAnalyzer
    from daemon.engine.summary import SummarySettings, summarize

    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-summary-"))
    tiny = args.model is None
    if tiny:
        from daemon.selftest.testmodel import make_test_model

        model = str(make_test_model(tmp / "model"))
    else:
        model = args.model
    cfg = parse_config({"model": {"name": model, "device": "cpu"}})
    started = time.perf_counter()
    analyzer = QwenAnalyzer.from_config(cfg)
    load_s = time.perf_counter() - started
    events = synthetic_events(args.events, args.duration)
    bounds: dict[str, Any] = (
        {
            "max_new_tokens": 400,
            "text_chars": 80,
            "title_chars": 16,
            "chapter_title_chars": 16,
            "max_chapters": 2,
            "max_key_events": 2,
        }
        if tiny
        else {}
    )
    settings = SummarySettings(batch_tokens=args.batch_tokens, **bounds)
    runs = []
    for label in ("cold", "warm"):
        rss_before = status_kib("VmRSS")
        reset_peak()
        t0 = time.perf_counter()
        s = summarize(
            analyzer.summarize,
            1,
            "/bench/two-hours.mp4",
            args.duration,
            events,
            (),
            settings,
            count_tokens=analyzer.count_tokens,
        )
        wall = time.perf_counter() - t0
        p = s.provenance
        runs.append(
            {
                "run": label,
                "seconds": round(wall, 2),
                "rss_before_mib": round(rss_before / 1024),
                "peak_rss_mib": round(status_kib("VmHWM") / 1024),
                "batches": p["batches"],
                "merge_passes": p["merge_passes"],
                "requests": p["requests"],
                "prompt_tokens": p["prompt_tokens"],
                "largest_prompt_tokens": p["largest_prompt_tokens"],
                "corrections": p["corrections"],
                "chapters": len(s.chapters),
            }
        )
    import torch
    import transformers

    result = {
        "events": args.events,
        "duration_s": args.duration,
        "model": "tiny random Qwen3-VL (make-test-model)" if tiny else model,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch_tokens": args.batch_tokens,
        "load_and_event_grammar_s": round(load_s, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "runs": runs,
    }
    if not args.no_write:
        write(result)
    print(json.dumps(result))


def write(r: dict[str, Any]) -> None:
    lines = [
        SECTION,
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python bench/summary.py "
        f"--events {r['events']}` on {r['model']}, {r['device']} ({r['threads']} torch threads; "
        f"torch {r['torch']}, transformers {r['transformers']}), a {r['duration_s']:.0f} s "
        f"recording with {r['events']} events, summary.batch_tokens = {r['batch_tokens']}. "
        f"Loading the model and compiling its event grammar took {r['load_and_event_grammar_s']}"
        " s (paid once per process, before the pass). The cold pass also compiles the summary "
        "grammar (once per process). Peak RSS is VmHWM reset before each pass (the model "
        "included); the machine is shared, so seconds move by 10-30% between runs.",
        "",
        "| pass | seconds | RSS before MiB | peak RSS MiB | batches | merge passes | requests "
        "| prompt tokens (all) | largest prompt | corrections |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        fixes = ", ".join(f"{k} {v}" for k, v in x["corrections"].items()) or "none"
        lines.append(
            f"| {x['run']} | {x['seconds']} | {x['rss_before_mib']} | {x['peak_rss_mib']} | "
            f"{x['batches']} | {x['merge_passes']} | {x['requests']} | {x['prompt_tokens']} | "
            f"{x['largest_prompt_tokens']} | {fixes} |"
        )
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        tail = rest.split("\n## ", 1)
        text = head + "\n".join(lines) + ("\n\n## " + tail[1] if len(tail) > 1 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
