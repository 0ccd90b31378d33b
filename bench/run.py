"""framewatch benchmark (issue #8): decode and sample against its peers, decode/inference overlap,
memory on long files, static-span skipping, store throughput and the end-to-end real-time factor
of `framewatch analyze`, side by side in one run.

    python bench/run.py            # full: 10-min 1080p30 files, a 2-hour 1080p file (slow)
    python bench/run.py --quick    # a few minutes: short 1080p clips, 240p long files

Generates its own media (bench/media/, git-ignored; kept between runs), runs every measurement in
a child process (wall time and peak RSS from wait4), prints a table, writes bench/RESULTS.md and
prints one JSON object as its last line. A peer that is not installed (decord, torchcodec: the
`bench` extra; the ffmpeg CLI) is reported as "not installed", never a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MEDIA = ROOT / "bench" / "media"
RESULTS = ROOT / "bench" / "RESULTS.md"
# The frame size every decode peer is asked for: what the planner makes of 1920x1080 at max_side 640.
OUT_W, OUT_H = 640, 352
CHUNK_S = 300.0  # the default chunk: samples are requested one chunk at a time, like the worker


# -- child processes -----------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    seconds: float | None = None  # of the measured work (inside the child), or the process wall
    rss_mb: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _spawn(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, float, str, str]:
    """Run cmd; (returncode, wall seconds, stdout, stderr). Each child reports its own peak RSS:
    RUSAGE_CHILDREN here would be the maximum over every child so far."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out, err = proc.communicate()
    return proc.returncode, time.perf_counter() - t0, out or "", err or ""


def child(kind: str, **args: Any) -> Run:
    """Run one measurement in a fresh interpreter: `python bench/run.py --child kind json`."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(args)]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    code, wall, out, err = _spawn(cmd, env)
    name = args.get("label", kind)
    if code == -9:
        # What the kernel's OOM killer does (nothing else here sends SIGKILL).
        return Run(name, error="killed (SIGKILL: out of memory)")
    if code != 0:
        last = (err.strip().splitlines() or ["?"])[-1]
        return Run(name, error=f"exit {code}: {last[:200]}")
    data = json.loads(out.strip().splitlines()[-1])
    if "not_installed" in data:
        return Run(name, error="not installed")
    return Run(name, data.pop("seconds", wall), data.pop("rss_mb", None), data)


def tool(name: str, cmd: list[str]) -> Run:
    """Time a non-Python peer (the ffmpeg CLI) and read its peak RSS, from a small child that
    starts it (a process's maxrss starts at its parent's, so this big parent must not)."""
    if shutil.which(cmd[0]) is None:
        return Run(name, error="not installed")
    return child("tool", label=name, cmd=cmd)


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM belongs to the address space exec made, unlike
    ru_maxrss, which starts at the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _windows(duration: float) -> list[tuple[float, float]]:
    from daemon.engine.planner import plan_windows

    return plan_windows(duration, CHUNK_S, 0.0)


def _times(duration: float, fps: float) -> list[list[float]]:
    from daemon.engine.planner import sample_times

    return [list(sample_times(a, b, fps)) for a, b in _windows(duration)]


def child_main(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """The body of one child process; returns what it prints as JSON."""
    path = args.get("path", "")
    fps = args.get("fps", 2.0)
    if kind == "tool":
        import resource

        t0 = time.perf_counter()
        done = subprocess.run(
            args["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(f"{args['cmd'][0]} failed: {done.stderr.strip()[-200:]}")
        return {
            "seconds": time.perf_counter() - t0,
            "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
    if kind in ("ours", "ours_plain"):
        from daemon.engine.probe import probe
        from daemon.engine.sampler import sample_frames

        media = probe(path)
        t0 = time.perf_counter()
        n = 0
        for times in _times(media.duration_s, fps):
            n += len(
                sample_frames(
                    path, times, OUT_W, OUT_H, fast=kind == "ours", hwaccel=args.get("hwaccel")
                )
            )
        return {"seconds": time.perf_counter() - t0, "frames": n, "rss_mb": peak_rss_mb()}
    if kind == "decord":
        try:
            import decord
        except ImportError:
            return {"not_installed": True}
        t0 = time.perf_counter()
        vr = decord.VideoReader(path, width=OUT_W, height=OUT_H, num_threads=0)
        rate, total = vr.get_avg_fps(), len(vr)
        n = 0
        for times in _times(total / rate, fps):
            idx = [min(total - 1, round(t * rate)) for t in times]
            n += len(vr.get_batch(idx).asnumpy())
        return {"seconds": time.perf_counter() - t0, "frames": n, "rss_mb": peak_rss_mb()}
    if kind == "torchcodec":
        try:
            from torchcodec.decoders import VideoDecoder
            from torchcodec.transforms import Resize
        except (ImportError, RuntimeError, OSError):
            return {"not_installed": True}
        t0 = time.perf_counter()
        dec = VideoDecoder(
            path,
            num_ffmpeg_threads=0,
            dimension_order="NHWC",
            transforms=[Resize(size=(OUT_H, OUT_W))],
        )
        duration = float(dec.metadata.duration_seconds or 0)
        n = 0
        for times in _times(duration, fps):
            times = [min(t, duration - 1e-3) for t in times]
            n += len(dec.get_frames_played_at(seconds=times).data.numpy())
        return {"seconds": time.perf_counter() - t0, "frames": n, "rss_mb": peak_rss_mb()}
    if kind == "ffmpeg_cli":
        import numpy as np

        cmd = [
            "ffmpeg",
            "-v",
            "error",
            "-threads",
            "0",
            "-i",
            path,
            "-vf",
            f"fps={fps},scale={OUT_W}:{OUT_H}",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        size, n = OUT_W * OUT_H * 3, 0
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            np.frombuffer(buf, np.uint8).reshape(OUT_H, OUT_W, 3)
            n += 1
        proc.wait()
        import resource

        # The decoding happens in ffmpeg: report the larger of it and this reader (ffmpeg's
        # maxrss starts at this small process's).
        rss = max(peak_rss_mb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        return {"seconds": time.perf_counter() - t0, "frames": n, "rss_mb": rss}
    if kind == "qwen":
        os.environ["FORCE_QWENVL_VIDEO_READER"] = args["backend"]
        try:
            __import__(args["backend"])
            from qwen_vl_utils import vision_process
        except ImportError:
            return {"not_installed": True}
        vision_process.FORCE_QWENVL_VIDEO_READER = args["backend"]
        t0 = time.perf_counter()
        video = vision_process.fetch_video(
            {
                "type": "video",
                "video": path,
                "fps": fps,
                "resized_height": args.get("height", OUT_H),
                "resized_width": args.get("width", OUT_W),
            },
            image_patch_size=16,
        )
        return {
            "seconds": time.perf_counter() - t0,
            "frames": int(video.shape[0]),
            "rss_mb": peak_rss_mb(),
        }
    if kind == "worker":
        return _child_worker(args)
    if kind == "store":
        return _child_store(args)
    raise SystemExit(f"unknown child {kind}")


class _Trivial:
    """A trivial analyzer: answers at once (or after sleep_s, standing in for a GPU), no events."""

    name = "bench"

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s
        self.frames = 0
        self.windows: list[tuple[float, float]] = []

    def analyze(self, chunk: Any) -> list[dict[str, Any]]:
        time.sleep(self.sleep_s)
        self.frames += len(chunk.frames)
        self.windows.append((chunk.start_s, chunk.end_s))
        return []

    def provenance(self) -> dict[str, Any]:
        return {"model": "bench-trivial", "backend": "bench"}


def _child_worker(args: dict[str, Any]) -> dict[str, Any]:
    from daemon.analysis import analyze_recording
    from daemon.config import parse_config
    from daemon.store import Store
    from daemon.worker import Worker

    tmp = Path(tempfile.mkdtemp(prefix="fwbench-"))
    data: dict[str, Any] = {
        "storage": {"url": f"sqlite:///{tmp / 'fw.db'}"},
        "model": {"device": "cpu", "max_new_tokens": 24},
        "chunking": {
            "seconds": args.get("chunk_s", 300.0),
            "overlap_seconds": args.get("overlap_s", 5.0),
        },
        "sampling": {
            "fps": args.get("fps", 2.0),
            "max_side": args.get("max_side", 640),
            **args.get("sampling", {}),
        },
        "analysis": {"max_events": 2, "label_chars": 16, "description_chars": 40},
    }
    analyzer: Any
    if args.get("analyzer") == "tiny":
        from daemon.selftest.testmodel import make_test_model

        data["model"]["name"] = str(make_test_model(tmp / "tiny"))
        from daemon.config import parse_config as _pc
        from daemon.engine.backends.qwen3vl import QwenAnalyzer

        analyzer = QwenAnalyzer.from_config(_pc(data))
    else:
        analyzer = _Trivial(args.get("sleep_s", 0.0))
    cfg = parse_config(data)
    store = Store(cfg.storage_url())
    worker = Worker(store, cfg, lambda: analyzer)
    rec, _ = worker.ingest(args["path"])
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    analyze_recording(worker, rec.id)
    wall = time.perf_counter() - t0
    rows = sorted(store.chunks.of(rec.id), key=lambda r: r.index)
    decodes = [r.provenance.get("decode_s", 0.0) for r in rows]
    infers = [r.provenance.get("analyze_s", 0.0) for r in rows]
    decode, infer = sum(decodes), sum(infers)
    sent = sum(
        r.provenance.get("sampling", {}).get("frames", 0)
        for r in rows
        if not r.provenance.get("skipped_static")
    )
    analysed = [(r.start_s, r.end_s) for r in rows if not r.provenance.get("skipped_static")]
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "seconds": wall,
        "decode_s": decode,
        "analyze_s": infer,
        "chunks": len(rows),
        "ideal_s": pipelined(decodes, infers),
        "planned_frames": sum(r.frames for r in rows),
        "sent_frames": sent,
        "analysed": analysed,
        "skipped": sum(1 for r in rows if r.provenance.get("skipped_static")),
        "rss_mb": peak_rss_mb(),
        "rss_before_mb": rss0,
    }


def pipelined(decodes: list[float], infers: list[float]) -> float:
    """Wall time of a perfect one-ahead pipeline with these per-chunk times: chunk k+1 starts
    decoding when chunk k goes to the analyzer, and waits for a free slot otherwise."""
    a_end = 0.0
    d_end = decodes[0] if decodes else 0.0
    for k, a in enumerate(infers):
        start = max(d_end, a_end)
        a_end = start + a
        if k + 1 < len(decodes):
            d_end = start + decodes[k + 1]
    return a_end


def _child_store(args: dict[str, Any]) -> dict[str, Any]:
    from daemon.models import Candidate, ChunkWindow
    from daemon.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="fwbench-store-"))
    url = f"sqlite:///{tmp / 'fw.db'}"
    store = Store(url)
    n_chunks, per_chunk = args["chunks"], args["per_chunk"]
    rec, _ = store.recordings.register(str(tmp / "x.mp4"), "bench-store", 1, 0.0)
    cfg = tmp / "config.toml"
    cfg.write_text(f'[storage]\nurl = "{url}"\n')
    events_cli = [sys.executable, "-m", "daemon.cli", "events", "--config", str(cfg)]

    def cli_runs(n: int = 5) -> list[float]:
        """Wall seconds of `framewatch events`, n runs: a command of well under a second moves by
        a tenth of a second from run to run on a shared box; the median is the figure."""
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            done = subprocess.run(
                events_cli,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                check=False,
            )
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise RuntimeError(f"framewatch events failed: {done.stderr.strip()[-300:]}")
        return sorted(times)

    # The same command on an empty store: interpreter start and imports, not the events.
    empty = cli_runs()
    windows = [
        ChunkWindow(i, i * 10.0, i * 10.0 + 10.0, (i * 10.0 + 5.0,), 64, 64)
        for i in range(n_chunks)
    ]
    store.chunks.plan(rec.id, windows)
    commit_s: list[float] = []
    for i in range(n_chunks):
        chunk = store.chunks.claim(rec.id, "bench", 600)
        assert chunk is not None
        events = [
            Candidate(
                start_s=i * 10.0 + j * 0.1,
                end_s=i * 10.0 + j * 0.1 + 0.05,
                label=f"label {j % 7}",
                description=f"something happened {j}",
                confidence=0.5,
                evidence_s=i * 10.0 + j * 0.1,
            )
            for j in range(per_chunk)
        ]
        t0 = time.perf_counter()
        store.chunks.commit(
            rec.id,
            chunk.index,
            "bench",
            events,
            {"model": "bench", "prompt_hash": "x"},
            notify=["markdown_export", "webhook"],
        )
        commit_s.append(time.perf_counter() - t0)
    total = n_chunks * per_chunk
    t0 = time.perf_counter()
    rows = store.events.lines()
    query_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.events.with_paths()
    full_s = time.perf_counter() - t0
    full = cli_runs()
    cli_s, empty_s = statistics.median(full), statistics.median(empty)
    k = max(1, n_chunks // 10)
    first, last = sum(commit_s[:k]) / k, sum(commit_s[-k:]) / k
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "seconds": sum(commit_s),
        "events": total,
        "listed": len(rows),
        "events_per_s": total / sum(commit_s),
        "commit_first_ms": first * 1000,
        "commit_last_ms": last * 1000,
        "query_s": query_s,
        "events_with_provenance_s": full_s,
        "cli_events_s": cli_s,
        "cli_events_empty_store_s": empty_s,
        "cli_events_minus_empty_s": cli_s - empty_s,
        "cli_events_runs_s": [round(t, 3) for t in full],
        "cli_events_empty_store_runs_s": [round(t, 3) for t in empty],
        "rss_mb": peak_rss_mb(),
    }


# -- media ---------------------------------------------------------------------------------------


def _ffmpeg_make(
    path: Path, seconds: float, size: str, codec: str, gop: int, rate: int = 30
) -> Path:
    """A busy synthetic recording (moving test pattern plus sensor-like noise) by the ffmpeg CLI."""
    if path.exists():
        return path
    if shutil.which("ffmpeg") is None:
        raise SystemExit("bench media needs the ffmpeg CLI (apt install ffmpeg)")
    enc = (
        ["-c:v", "libx264", "-preset", "veryfast"]
        if codec == "h264"
        else ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"]
    )
    tmp = path.with_suffix(".part" + path.suffix)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s={size}:r={rate},noise=alls=3:allf=t",
            "-t",
            str(seconds),
            *enc,
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-threads",
            "2",
            str(tmp),
        ],
        check=True,
    )
    tmp.rename(path)
    return path


def planted_events(seconds: float, n: int = 20, seed: int = 8) -> list[tuple[float, float, str]]:
    """n short events at known, spread-out times: objects appearing, text flashes, scene changes."""
    import random

    rng = random.Random(seed)
    kinds = ["object", "flash", "object", "scene", "flash"]
    slot = seconds / n
    return [
        (
            round(i * slot + rng.uniform(0.1, 0.8) * slot, 2),
            round(rng.uniform(1.0, 3.0), 2),
            kinds[i % len(kinds)],
        )
        for i in range(n)
    ]


def _concat_make(path: Path, part: Path, times: int) -> Path:
    """`part` played `times` times in one file, by the ffmpeg concat demuxer with stream copy."""
    if path.exists():
        return path
    listing = path.with_suffix(".txt")
    listing.write_text("".join(f"file '{part.resolve()}'\n" for _ in range(times)))
    tmp = path.with_suffix(".part" + path.suffix)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            str(tmp),
        ],
        check=True,
    )
    listing.unlink()
    tmp.rename(path)
    return path


def _static_make(
    path: Path,
    seconds: float,
    size: tuple[int, int],
    fps: int,
    gop: int,
    events: list[tuple[float, float, str]],
) -> Path:
    from daemon.selftest.clips import make_static_scene

    if not path.exists():
        tmp = path.with_suffix(".part" + path.suffix)
        make_static_scene(tmp, seconds=seconds, events=events, fps=fps, size=size, gop=gop)
        tmp.rename(path)
    return path


# -- the targets ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import av

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cli = "not installed"
    if shutil.which("ffmpeg"):
        cli = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, check=False
        ).stdout.split("\n")[0]
    versions = {}
    for mod in ("decord", "torchcodec", "qwen_vl_utils", "torch"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "installed")
        except Exception:
            versions[mod] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg_libs": av.library_versions.get("libavcodec"),
        "ffmpeg_cli": cli,
        **versions,
    }


def hw_decoder(path: str, device: str = "cuda") -> str | None:
    """None when FFmpeg opens `device` to decode `path` here; else why not (the NVDEC row is
    then reported, not run: the sampler would fall back to the CPU)."""
    import av
    import av.error
    from av.codec.hwaccel import HWAccel

    try:
        with av.open(path, hwaccel=HWAccel(device, allow_software_fallback=False)) as c:
            next(c.decode(video=0))
    except (av.error.FFmpegError, StopIteration) as exc:
        return f"no {device} device ({exc})"[:120]
    return None


def bench_decode(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # A minute even when quick: on 12 s clips every reader took about a second, and which one won
    # changed from run to run.
    secs = 60 if quick else 600
    hevc_s = 30 if quick else 120
    files = {
        "h264 1080p30 gop 2 s": _ffmpeg_make(
            MEDIA / f"h264_g2_{secs}.mp4", secs, "1920x1080", "h264", 60
        ),
        "h264 1080p30 gop 8 s": _ffmpeg_make(
            MEDIA / f"h264_g8_{secs}.mp4", secs, "1920x1080", "h264", 240
        ),
        "hevc 1080p30 gop 2 s": _ffmpeg_make(
            MEDIA / f"hevc_g2_{hevc_s}.mkv", hevc_s, "1920x1080", "hevc", 60
        ),
    }
    rows: list[dict[str, Any]] = []
    ratios: dict[str, Any] = {}
    for label, path in files.items():
        p = str(path)
        subprocess.run(
            ["cat", p], stdout=subprocess.DEVNULL, check=False
        )  # page cache warm for every peer alike
        main_file = label.startswith("h264 1080p30 gop 2")
        no_hw = hw_decoder(p)
        for fps in [2.0, 0.25] if main_file else [2.0]:
            # qwen-vl-utils decodes every sampled frame at full size before resizing (about 15 GB
            # for 1200 1080p frames: the numpy batch and its tensor copy), so the full run asks it
            # for the main file only.
            qwen = quick or main_file
            runs = [
                tool(
                    "ffmpeg full decode -threads 0 -f null (limit)",
                    ["ffmpeg", "-v", "error", "-threads", "0", "-i", p, "-f", "null", "-"],
                ),
                child("ffmpeg_cli", label="ffmpeg CLI fps+scale rgb24 pipe", path=p, fps=fps),
                child("ours_plain", label="framewatch (PyAV, plain)", path=p, fps=fps),
                child("ours", label="framewatch (PyAV, fast path)", path=p, fps=fps),
                (
                    Run("framewatch (PyAV, fast path, NVDEC)", error=no_hw)
                    if no_hw
                    else child(
                        "ours",
                        label="framewatch (PyAV, fast path, NVDEC)",
                        path=p,
                        fps=fps,
                        hwaccel="cuda",
                    )
                ),
                child("decord", label="decord get_batch", path=p, fps=fps),
                child("torchcodec", label="torchcodec played_at + Resize", path=p, fps=fps),
                *(
                    [
                        child(
                            "qwen",
                            label="qwen-vl-utils fetch_video (decord)",
                            path=p,
                            fps=fps,
                            backend="decord",
                        ),
                        child(
                            "qwen",
                            label="qwen-vl-utils fetch_video (torchcodec)",
                            path=p,
                            fps=fps,
                            backend="torchcodec",
                        ),
                    ]
                    if qwen
                    else []
                ),
            ]
            by = {r.name: r for r in runs}
            ours = by["framewatch (PyAV, fast path)"].seconds
            for r in runs:
                rows.append(
                    {
                        "file": label,
                        "fps": fps,
                        "reader": r.name,
                        "seconds": r.seconds,
                        "rss_mb": r.rss_mb,
                        "frames": r.info.get("frames"),
                        "error": r.error,
                    }
                )

            def ratio(name: str, by: dict[str, Run] = by, ours: float | None = ours) -> float | str:
                other = by[name]
                if other.error or not other.seconds or not ours:
                    return other.error or "n/a"
                # Speed ratio as the issue defines it: ours over the peer's, higher is better.
                return round(other.seconds / ours, 3)

            ratios[f"{label} @ {fps} fps"] = {
                "vs_ffmpeg": ratio("ffmpeg CLI fps+scale rgb24 pipe"),
                "vs_limit": ratio("ffmpeg full decode -threads 0 -f null (limit)"),
                "vs_torchcodec": ratio("torchcodec played_at + Resize"),
                "vs_decord": ratio("decord get_batch"),
                "vs_plain": ratio("framewatch (PyAV, plain)"),
            }
            print(f"  decode {label} @ {fps} fps: {ratios[f'{label} @ {fps} fps']}", flush=True)
    return rows, ratios


def bench_overlap(quick: bool) -> list[dict[str, Any]]:
    secs = 12 if quick else 600  # quick: four 4 s chunks
    path = str(_ffmpeg_make(MEDIA / f"h264_g2_{secs}.mp4", secs, "1920x1080", "h264", 60))
    chunk = 4.0 if quick else 60.0
    out = []
    for label, extra in (
        (
            "slow analyzer (sleep, GPU stand-in)",
            {"analyzer": "sleep", "sleep_s": 1.5 if quick else 10.0},
        ),
        ("tiny Qwen3-VL (CPU, shares the cores)", {"analyzer": "tiny"}),
    ):
        r = child("worker", label=label, path=path, chunk_s=chunk, overlap_s=1.0, fps=2.0, **extra)
        if r.error:
            out.append({"case": label, "error": r.error})
            continue
        d, a, wall = r.info["decode_s"], r.info["analyze_s"], r.seconds or 0.0
        ideal = r.info["ideal_s"]
        # Share of the time a perfect one-ahead pipeline would save that was saved (the first
        # chunk's decoding can never overlap anything).
        achieved = (d + a - wall) / max(d + a - ideal, 1e-9)
        out.append(
            {
                "case": label,
                "decode_s": d,
                "analyze_s": a,
                "sum_s": d + a,
                "max_s": max(d, a),
                "ideal_s": ideal,
                "wall_s": wall,
                "chunks": r.info["chunks"],
                # wall / (decode + inference): 1.0 means no overlap at all, max/sum the best case
                "wall_over_sum": round(wall / max(d + a, 1e-9), 3),
                "overlap": round(max(0.0, min(1.0, achieved)), 3),
            }
        )
        print(f"  overlap {label}: {out[-1]}", flush=True)
    return out


def bench_memory(quick: bool) -> dict[str, Any]:
    if quick:
        size, fps, note = (
            (424, 240),
            10,
            "quick: 424x240 10 fps synthetic scene with planted events",
        )
        short = _static_make(
            MEDIA / "mem_240p_10min.mp4", 600, size, fps, 250, planted_events(600, 5)
        )
        long = _static_make(
            MEDIA / "mem_240p_2h.mp4", 7200, size, fps, 250, planted_events(7200, 20)
        )
        qw, qh = 416, 224
    else:
        # Encoding 2 h of the busy 1080p pattern would take about an hour on 2 cores; the long
        # file is the 10-minute one joined 12 times by stream copy (timestamps run on).
        note = "full: 1920x1080 30 fps testsrc2 + noise; the 2 h file is the 10 min file x 12 (stream copy)"
        short = _ffmpeg_make(MEDIA / "h264_g2_600.mp4", 600, "1920x1080", "h264", 60)
        long = _concat_make(MEDIA / "h264_g2_7200.mp4", short, 12)
        qw, qh = OUT_W, OUT_H
    out: dict[str, Any] = {"media": note, "runs": []}
    for label, path in (("10 min", short), ("2 h", long)):
        r = child("worker", label=f"framewatch worker, trivial analyzer, {label}", path=str(path))
        out["runs"].append(
            {
                "what": r.name,
                "seconds": r.seconds,
                "rss_mb": r.rss_mb,
                "error": r.error,
                "frames": r.info.get("sent_frames"),
            }
        )
        if not quick and label == "2 h":
            # Not run: fetch_video would hold 14,400 full-size frames twice over before resizing.
            need_gb = 2 * 7200 * 2 * 1920 * 1080 * 3 / 1e9
            out["runs"].append(
                {
                    "what": "qwen-vl-utils fetch_video, 2 h",
                    "seconds": None,
                    "rss_mb": None,
                    "error": f"not run: would hold about {need_gb:.0f} GB of 1080p frames",
                    "frames": None,
                }
            )
            continue
        for backend in ("decord", "torchcodec"):
            q = child(
                "qwen",
                label=f"qwen-vl-utils fetch_video ({backend}), {label}",
                path=str(path),
                fps=2.0,
                backend=backend,
                width=qw,
                height=qh,
            )
            out["runs"].append(
                {
                    "what": q.name,
                    "seconds": q.seconds,
                    "rss_mb": q.rss_mb,
                    "error": q.error,
                    "frames": q.info.get("frames"),
                }
            )
        print(f"  memory {label}: {out['runs'][-3:]}", flush=True)
    ours = [r for r in out["runs"] if r["what"].startswith("framewatch")]
    if all(r["rss_mb"] for r in ours):
        out["rss_long_over_short"] = round(ours[1]["rss_mb"] / ours[0]["rss_mb"], 3)
    return out


def bench_static() -> dict[str, Any]:
    seconds = 7200.0
    events = planted_events(seconds, 20)
    path = _static_make(MEDIA / "static_2h_160x90.mp4", seconds, (160, 90), 5, 600, events)
    cfg = {"skip_static": True, "static_threshold": 0.002, "static_fps": 0.0, "activity_fps": 1.0}
    r = child(
        "worker",
        label="static skip",
        path=str(path),
        chunk_s=20.0,
        overlap_s=2.0,
        fps=2.0,
        max_side=160,
        sampling=cfg,
    )
    if r.error:
        return {"error": r.error}
    analysed = r.info["analysed"]
    covered = sum(1 for t, d, _ in events if any(a <= t and t + d <= b for a, b in analysed))
    out = {
        "media": "2 h, 160x90, 5 fps, keyframe every 120 s, 20 planted events",
        "chunking": "20 s chunks, 2 s overlap, 2 fps",
        "chunks": r.info["chunks"],
        "skipped_chunks": r.info["skipped"],
        "planned_frames": r.info["planned_frames"],
        "sent_frames": r.info["sent_frames"],
        "seconds": r.seconds,
        "static_frames_fraction": round(
            r.info["sent_frames"] / max(1, r.info["planned_frames"]), 4
        ),
        "static_events_covered": f"{covered}/{len(events)}",
        "covered": covered,
        "events": len(events),
    }
    print(f"  static: {out}", flush=True)
    return out


def bench_rtf(quick: bool) -> list[dict[str, Any]]:
    """End to end: `framewatch analyze FILE` on the main 1080p file in a new process, as a user runs
    it (start-up, plugin and model loading, probe, every chunk, the store), timed from outside,
    with that process's peak RSS. With a trivial analyzer plugin (tests/fake_analyzer.py through
    its entry point: the cost of everything but the model) and with the tiny Qwen3-VL on the CPU."""
    from tests.daemon_proc import install_fake_plugin, write_config

    secs = 60 if quick else 600
    path = _ffmpeg_make(MEDIA / f"h264_g2_{secs}.mp4", secs, "1920x1080", "h264", 60)
    tmp = Path(tempfile.mkdtemp(prefix="fwbench-rtf-"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    # An installed plugin's make_analyzer replaces the model: the fake plugin is on the path of
    # its own case only.
    with_fake = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(install_fake_plugin(tmp / "site")), str(ROOT)]),
    }
    tiny = tmp / "tiny"
    subprocess.run(
        [sys.executable, "-m", "daemon.cli", "make-test-model", str(tiny)],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The same chunks and frames for both, so the difference between them is the model's cost.
    same = {
        "chunking": {"seconds": 60, "overlap_seconds": 2},
        "sampling": {"fps": 2, "max_side": 320},
    }
    cases = (
        ("trivial analyzer plugin", with_fake, {**same, "plugins.fake": {}}),
        (
            "tiny Qwen3-VL on the CPU",
            env,
            {**same, "model": {"name": str(tiny), "device": "cpu", "max_new_tokens": 24}},
        ),
    )
    out = []
    for i, (label, case_env, tables) in enumerate(cases):
        db = tmp / f"fw{i}.db"
        cfg = write_config(
            tmp / f"config{i}.toml", {"storage": {"url": f"sqlite:///{db}"}, **tables}, []
        )
        # Output to files, not pipes: the process is reaped by wait4, which gives its own peak RSS.
        with open(tmp / "out.json", "w+b") as so, open(tmp / "err.log", "w+b") as se:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daemon.cli",
                    "analyze",
                    "--json",
                    "--config",
                    str(cfg),
                    str(path),
                ],
                env=case_env,
                cwd=ROOT,
                stdout=so,
                stderr=se,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            so.seek(0)
            se.seek(0)
            stdout, stderr = so.read(), se.read()
        rss = usage.ru_maxrss / 1024
        if proc.returncode != 0:
            out.append(
                {"case": label, "error": f"exit {proc.returncode}: {stderr.decode()[-200:]}"}
            )
            continue
        result = json.loads(stdout)
        # Which analyzer ran, as every chunk's provenance records it.
        with contextlib.closing(sqlite3.connect(db)) as conn:
            backends = sorted(
                {
                    b
                    for (b,) in conn.execute(
                        "SELECT json_extract(provenance, '$.backend') FROM chunk"
                    )
                }
            )
        out.append(
            {
                "case": label,
                "backend": ", ".join(map(str, backends)),
                "seconds": wall,
                "video_s": secs,
                "rtf": round(wall / secs, 4),
                "x_real_time": round(secs / wall, 1),
                "rss_mb": rss,
                "chunks": len(result["chunks"]),
                "events": len(result["events"]),
                "status": result["recording"]["status"],
            }
        )
        print(f"  rtf {label}: {out[-1]}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_store(quick: bool) -> dict[str, Any]:
    r = child("store", chunks=1000, per_chunk=100)
    if r.error:
        return {"error": r.error}
    print(f"  store: {r.info}", flush=True)
    return {"commit_total_s": r.seconds, **r.info}


# -- report --------------------------------------------------------------------------------------


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _table(
    columns: list[str], rows: list[dict[str, Any]], cells: Callable[[dict[str, Any]], list[Any]]
) -> list[str]:
    """A Markdown table of rows named by their "case"; a row that failed shows its error instead."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        body = [r["error"], *[""] * (len(columns) - 2)] if "error" in r else cells(r)
        out.append("| " + " | ".join(str(c) for c in [r["case"], *body]) + " |")
    return out


def report(
    command: str,
    mach: dict[str, Any],
    decode_rows: list[dict[str, Any]],
    ratios: dict[str, Any],
    overlap: list[dict[str, Any]],
    memory: dict[str, Any],
    static: dict[str, Any],
    store: dict[str, Any],
    rtf: list[dict[str, Any]],
    summary: dict[str, Any],
) -> str:
    lines = [
        f"# framewatch bench ({'--quick' if '--quick' in command else 'full'})",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command}`.",
        "",
        "Each peer runs once, in its own process (peak RSS is that process's VmHWM), on a machine that may be shared with other jobs: timings of about a second move by 10-30% from run to run; compare ratios within one run.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in mach.items()]
    lines += [
        "",
        "## 1. Decode and sample (frames at sampling fps, 640x352 RGB)",
        "",
        "| file | fps | reader | seconds | peak RSS MiB | frames |",
        "|---|---|---|---|---|---|",
    ]
    for r in decode_rows:
        sec = r["error"] if r["error"] else _fmt(r["seconds"])
        lines.append(
            f"| {r['file']} | {r['fps']} | {r['reader']} | {sec} | {_fmt(r['rss_mb'], 0)} | {_fmt(r['frames'])} |"
        )
    lines += [
        "",
        "Speed ratios (peer time / framewatch fast path time; above 1 means framewatch is faster):",
        "",
        "| case | vs ffmpeg CLI | vs full decode (limit) | vs torchcodec | vs decord | vs our plain path |",
        "|---|---|---|---|---|---|",
    ]
    for case, r in ratios.items():
        lines.append(
            f"| {case} | {r['vs_ffmpeg']} | {r['vs_limit']} | {r['vs_torchcodec']} | {r['vs_decord']} | {r['vs_plain']} |"
        )
    lines += ["", "## 2. Decode/inference overlap (Worker.process, prefetch one chunk ahead)", ""]
    lines += _table(
        [
            "case",
            "chunks",
            "decode sum s",
            "inference sum s",
            "sum s",
            "max s",
            "ideal pipeline s",
            "wall s",
            "wall / sum",
            "overlap achieved",
        ],
        overlap,
        lambda o: [
            o["chunks"],
            *(_fmt(o[k]) for k in ("decode_s", "analyze_s", "sum_s", "max_s", "ideal_s", "wall_s")),
            o["wall_over_sum"],
            o["overlap"],
        ],
    )
    lines += [
        "",
        (
            "overlap achieved = (sum - wall) / (sum - ideal): the share of what a perfect one-ahead pipeline "
            "saves over running decode and inference in turn (ideal = first chunk's decode, then the slower "
            "stage; computed from the measured per-chunk times). Wall without prefetch would be the sum."
        ),
        "",
        f"## 3. Memory ({memory.get('media')})",
        "",
        "| run | seconds | peak RSS MiB | frames |",
        "|---|---|---|---|",
    ]
    for r in memory.get("runs", []):
        lines.append(
            f"| {r['what']} | {r['error'] or _fmt(r['seconds'])} | {_fmt(r['rss_mb'], 0)} | {_fmt(r['frames'])} |"
        )
    lines += [
        "",
        f"rss_long_over_short (framewatch): {memory.get('rss_long_over_short')}",
        "",
        "## 4. Static-span skipping",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in static.items() if k not in ("covered", "events")]
    lines += [
        "",
        "## 5. Store throughput (SQLite, 1000 chunks x 100 events, 2 deliveries per chunk)",
        "",
    ]
    lines += [f"- {k}: {_fmt(v, 3)}" for k, v in store.items()]
    if "cli_events_s" in store:
        lines += [
            "",
            "cli_events_s: the median of 5 runs of `framewatch events` (a new process each) over the "
            "100,000 events, printing every line; cli_events_empty_store_s: the same command before "
            "any event was written (interpreter start-up and imports).",
        ]
    lines += [
        "",
        "## 6. End to end: `framewatch analyze` on the main file (a new process, timed from outside)",
        "",
        "Both with 60 s chunks (2 s overlap) of frames at 2 fps, 320 px on the long side.",
        "",
    ]
    lines += _table(
        [
            "analyzer",
            "backend (provenance)",
            "video s",
            "wall s",
            "real-time factor",
            "x real time",
            "peak RSS MiB",
            "chunks",
            "events",
        ],
        rtf,
        lambda r: [
            r["backend"],
            r["video_s"],
            _fmt(r["seconds"]),
            r["rtf"],
            r["x_real_time"],
            _fmt(r["rss_mb"], 0),
            r["chunks"],
            r["events"],
        ],
    )
    lines += ["", "## Summary", "", "```json", json.dumps(summary, indent=2), "```", ""]
    return "\n".join(lines)


PARTS = ["decode", "overlap", "memory", "static", "store", "rtf"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a few minutes: short and small media")
    ap.add_argument("--only", action="append", choices=PARTS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child_main(args.child, json.loads(args.child_args or "{}"))))
        return 0
    MEDIA.mkdir(parents=True, exist_ok=True)
    only = set(args.only or PARTS)
    mach = machine()
    print(
        f"framewatch bench {'--quick' if args.quick else '(full)'} on {mach['cpu']} x{mach['cores']}",
        flush=True,
    )
    decode_rows, ratios = bench_decode(args.quick) if "decode" in only else ([], {})
    overlap = bench_overlap(args.quick) if "overlap" in only else []
    memory = bench_memory(args.quick) if "memory" in only else {}
    static = bench_static() if "static" in only else {}
    store = bench_store(args.quick) if "store" in only else {}
    rtf = bench_rtf(args.quick) if "rtf" in only else []

    main_case = next(iter(ratios.values()), {})
    summary: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "decode_vs_ffmpeg": main_case.get("vs_ffmpeg"),
        "decode_vs_limit": main_case.get("vs_limit"),
        "decode_vs_torchcodec": main_case.get("vs_torchcodec"),
        "decode_vs_decord": main_case.get("vs_decord"),
        "decode_vs_plain": main_case.get("vs_plain"),
        "decode_by_case": ratios,
        "rss_long_over_short": memory.get("rss_long_over_short"),
        "static_frames_fraction": static.get("static_frames_fraction"),
        "static_events_covered": static.get("static_events_covered"),
        # wall time over the sum of decode and inference (the definition; lower is better)
        "pipeline_overlap": overlap[0].get("wall_over_sum") if overlap else None,
        "pipeline_overlap_tiny_model": overlap[1].get("wall_over_sum")
        if len(overlap) > 1
        else None,
        # share of the saving a perfect one-ahead pipeline would make that was made
        "pipeline_saving_achieved": overlap[0].get("overlap") if overlap else None,
        "store_events_per_s": round(store["events_per_s"]) if "events_per_s" in store else None,
        "store_commit_ms_first_last": [
            round(store["commit_first_ms"], 2),
            round(store["commit_last_ms"], 2),
        ]
        if "commit_first_ms" in store
        else None,
        "events_query_s": round(store["query_s"], 3) if "query_s" in store else None,
        "events_cli_s": round(store["cli_events_s"], 3) if "cli_events_s" in store else None,
        "events_cli_minus_startup_s": round(store["cli_events_minus_empty_s"], 3)
        if "cli_events_s" in store
        else None,
        # `framewatch analyze` end to end: seconds per second of video (below 1: faster than real time)
        "analyze_rtf_trivial": rtf[0].get("rtf") if rtf else None,
        "analyze_rtf_tiny_model": rtf[1].get("rtf") if len(rtf) > 1 else None,
    }
    command = " ".join(
        [
            "python bench/run.py",
            *(["--quick"] if args.quick else []),
            *(f"--only {o}" for o in args.only or []),
        ]
    )
    text = report(command, mach, decode_rows, ratios, overlap, memory, static, store, rtf, summary)
    # A partial run goes beside the full one: bench/RESULTS-memory.md for --only memory.
    out = RESULTS.with_name(f"RESULTS-{'-'.join(sorted(only))}.md") if args.only else RESULTS
    out.write_text(text)
    print(text)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
