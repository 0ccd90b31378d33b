"""`framewatch plan`: the chunk plan of one file with each chunk's estimated GPU memory.

Arithmetic only: probe (PyAV), the model's config.json and the budget. It must not import torch
(tests check), so the device is learnt from the config and nvidia-smi, not from torch.cuda. A
config written on a machine without a GPU is planned for the GPU whenever a GPU budget is set; a
plan is printed only when every chunk fits the budget that applies (else BudgetError, exit 3).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.engine.alerts import questions, rule_answer_tokens
from daemon.engine.budget import (
    BudgetError,
    budget_from,
    calibration_key,
    estimator_for,
    load_model_spec,
    text_pass_tokens,
    what_would_fit,
)
from daemon.engine.planner import configured_plan, describe_steps, fit_plan
from daemon.engine.probe import probe
from daemon.engine.prompts import build_prompt, instructions
from daemon.engine.speech.memory import asr_memory
from daemon.gpu import GpuRuntime, device_index, query_nvidia_smi
from daemon.models import hms

if TYPE_CHECKING:
    from daemon.config import Config


# `framewatch plan` prints this many chunks at each end of a long plan and sums up the rest.
SHOWN_AT_EACH_END = 5


def _target(cfg: Config) -> tuple[str, GpuRuntime | None, str | None]:
    """(device planned for, the GPU found there or None, a one-line note on why the plan is what
    it is, or None). A plan is for the GPU whenever one is found or a GPU budget is set, so a
    config written on a laptop is planned as the GPU box will run it."""
    setting = cfg.model.device
    budget_set = cfg.gpu.memory_budget_gib is not None
    if setting == "cpu":
        note = "model.device is cpu: gpu.memory_budget_gib does not apply" if budget_set else None
        return "cpu", None, note
    device = "cuda:0" if setting in ("auto", "cuda") else setting
    found = query_nvidia_smi(device_index(device))
    if found is not None:
        return device, found, None
    if budget_set:
        return (
            device,
            None,
            f"no GPU on this machine: planned for {device} with gpu.memory_budget_gib",
        )
    if setting == "auto":
        return "cpu", None, None
    return (
        device,
        None,
        f"no GPU on this machine and gpu.memory_budget_gib not set: estimate only for {device}",
    )


def _calibration(cfg: Config, device: str, gpu: GpuRuntime | None) -> float:
    """The stored measured/estimated ratio, read without creating a store that is not there."""
    if gpu is None or gpu.name is None:
        return 1.0
    url = cfg.storage_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return 1.0
    from daemon.store import Store

    store = Store(url)
    try:
        return store.calibration.ratio(calibration_key(cfg, device, gpu.bf16), gpu.name) or 1.0
    finally:
        store.close()


def plan_report(cfg: Config, path: str) -> dict[str, Any]:
    """The plan as `framewatch plan --json` prints it. Raises UnsupportedMedia for a bad file and
    BudgetError when the model or its config does not fit or cannot be read."""
    media = probe(path, cfg.chunking.max_duration_s)
    device, gpu, note = _target(cfg)
    name = cfg.model_name()
    spec = load_model_spec(name, cfg.model.revision)
    ratio = _calibration(cfg, device, gpu)
    task = instructions(cfg.analysis.profile, cfg.analysis.prompt)
    rules = questions(cfg.rules_for(path, cfg.analysis.profile))
    prompt = build_prompt(task, 0.0, media.duration_s, cfg.analysis.max_events, rules)
    bf16 = gpu.bf16 if gpu is not None else True
    est = estimator_for(cfg, spec, device, ratio=ratio, prompt=prompt, bf16_supported=bf16)
    if rules:  # each rule's verdict lengthens the answer
        extra = rule_answer_tokens(rules, cfg.alerting.reason_chars)
        est = replace(est, max_new_tokens=est.max_new_tokens + extra)
    on_gpu = device.startswith("cuda")
    budget, source = (
        budget_from(cfg, gpu.total_gib if gpu is not None else None) if on_gpu else (None, "")
    )
    stepped: dict[str, Any] = {}
    if on_gpu and budget is not None:
        fitted = fit_plan(media, cfg, est, budget)
        if not fitted.fits:
            raise BudgetError(
                f"{name}: {fitted.reason}. What would fit: {what_would_fit(est, budget, fitted.floor, name)}"
            )
        windows = list(fitted.windows)
        stepped = {k: list(v) for k, v in fitted.stepped_down.items()}
    else:
        # Nothing to fit to (the CPU's memory is not budgeted; a GPU of unknown size): the
        # configured plan, with its estimate for reference.
        windows = configured_plan(media, cfg)
    chunks = []
    for w in windows:
        e = est.chunk(len(w.sample_times), w.width, w.height)
        chunks.append(
            {
                "index": w.index,
                "start_s": w.start_s,
                "end_s": w.end_s,
                "frames": len(w.sample_times),
                "width": w.width,
                "height": w.height,
                "visual_tokens": e.visual_tokens,
                "prompt_tokens": e.prompt_tokens,
                "est_peak_gib": round(e.peak_gib, 3),
            }
        )
    return {
        "model": name,
        "budget_gib": round(budget, 3) if budget is not None else None,
        "weights_gib": round(est.weights_gib(), 3),
        "chunks": chunks,
        # Beyond the documented keys: how the numbers came about.
        "device": f"{device} ({gpu.name})" if gpu is not None else device,
        "dtype": est.dtype,
        "quantization": est.quantization,
        "fixed_gib": round(est.fixed_gib(), 3),
        "budget_source": source if budget is not None else "no GPU: estimate only",
        "note": note,
        "calibration_ratio": round(ratio, 4),
        "stepped_down": stepped,
        "kv_kib_per_token": spec.kv_bytes_per_token(est.dtype) / 1024,
        "speech": _speech(cfg, est.asr_gib > 0),
        "summary": _summary(cfg, path, est, budget),
    }


def _summary(cfg: Config, path: str, est: Any, budget: float | None) -> dict[str, Any] | None:
    """The summary's text pass (no frames): the prompt tokens one request may have (summary.
    batch_tokens, lowered to what fits the budget) and that request's estimated peak."""
    if not cfg.summary_for(path)[0]:
        return None
    s = cfg.summary
    tokens = s.batch_tokens
    if budget is not None:
        tokens = text_pass_tokens(est, budget, s.max_new_tokens, s.batch_tokens)
    peak = replace(est, text_tokens=tokens, max_new_tokens=s.max_new_tokens).chunk(0, 32, 32)
    return {
        "batch_tokens": tokens,
        "max_new_tokens": s.max_new_tokens,
        "est_peak_gib": round(peak.peak_gib, 3),
        "lowered_by_budget": tokens < s.batch_tokens,
    }


def _speech(cfg: Config, in_budget: bool) -> dict[str, Any] | None:
    """The speech recogniser's part of the plan: its memory and the transcript's tokens."""
    if cfg.speech.mode == "off":
        return None
    out: dict[str, Any] = {
        "mode": cfg.speech.mode,
        "model": cfg.speech_model(),
        "device": cfg.speech.device,
        "prompt_tokens": cfg.speech.prompt_tokens,
        "in_budget": in_budget,
    }
    asr = asr_memory(cfg)
    if asr is None:
        return {**out, "memory": "unknown (no model.bin to read, not a known model name)"}
    gib = 2**30
    return {
        **out,
        "compute_type": asr.compute_type,
        "weights_gib": round(asr.weights / gib, 3),
        "working_gib": round(asr.working / gib, 3),
        "total_gib": round(asr.total / gib, 3),
        "shape_from": asr.source,
    }


def format_report(r: dict[str, Any]) -> str:
    """The report as a table for a person."""
    budget = r["budget_gib"]
    lines = [f"note    {r['note']}"] if r.get("note") else []
    lines += [
        f"model   {r['model']} ({r['dtype']}{', ' + r['quantization'] if r['quantization'] else ''}, {r['device']})",
        f"fixed   {r['weights_gib']:.2f} GiB weights, {r['fixed_gib']:.2f} GiB with the CUDA context"
        if r["device"].startswith("cuda")
        else f"fixed   {r['weights_gib']:.2f} GiB weights",
        f"budget  {budget:.2f} GiB ({r['budget_source']})"
        if budget is not None
        else f"budget  {r['budget_source']}",
    ]
    if r["stepped_down"]:
        lines.append(f"stepped down to fit: {describe_steps(r['stepped_down'])}")
    sp = r.get("speech")
    if sp is not None:
        where = (
            "in the GPU budget"
            if sp["in_budget"]
            else (
                "GPU memory beside the budget's device"
                if sp["device"].startswith("cuda")
                else "CPU memory, not budgeted"
            )
        )
        memory = (
            f"about {sp['total_gib']:.2f} GiB ({sp['weights_gib']:.2f} weights, {sp['compute_type']}), {where}"
            if "total_gib" in sp
            else f"memory {sp['memory']}"
        )
        lines.append(
            f"speech  {sp['model']} on {sp['device']}: {memory}; "
            f"transcript up to {sp['prompt_tokens']} prompt tokens per chunk"
        )
    sm = r.get("summary")
    if sm is not None:
        lowered = ", lowered to fit the budget" if sm["lowered_by_budget"] else ""
        lines.append(
            f"summary text pass: batches of up to {sm['batch_tokens']} prompt tokens{lowered}, "
            f"est. peak {sm['est_peak_gib']:.2f} GiB per request"
        )
    lines.append(
        f"{'chunk':>5}  {'window':<17}  {'frames':>6}  {'size':>9}  {'visual':>7}  {'prompt':>7}  est. peak"
    )
    chunks = r["chunks"]
    if len(chunks) > 2 * SHOWN_AT_EACH_END + 1:
        # A week of recording is thousands of chunks alike: the ends, and the largest estimate.
        top = max(chunks, key=lambda c: c["est_peak_gib"])
        left = len(chunks) - 2 * SHOWN_AT_EACH_END
        chunks = [
            *chunks[:SHOWN_AT_EACH_END],
            {"more": left, "top": top},
            *chunks[-SHOWN_AT_EACH_END:],
        ]
    for c in chunks:
        if "more" in c:
            lines.append(
                f"{'...':>5}  {c['more']} chunks more (largest estimate {c['top']['est_peak_gib']:.2f} "
                f"GiB, chunk {c['top']['index']}; --json lists every chunk)"
            )
            continue
        peak = f"{c['est_peak_gib']:.2f} GiB"
        if budget is not None:
            peak += f" of {budget:.2f}" + (" OVER" if c["est_peak_gib"] > budget else "")
        lines.append(
            f"{c['index']:>5}  {hms(c['start_s'])}-{hms(c['end_s'])}  {c['frames']:>6}  "
            f"{str(c['width']) + 'x' + str(c['height']):>9}  {c['visual_tokens']:>7}  {c['prompt_tokens']:>7}  {peak}"
        )
    return "\n".join(lines)
