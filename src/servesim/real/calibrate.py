"""``servesim calibrate``: fit the cost model to designed probes of a live server.

Three kinds of probe, each giving rows of the profile that ``engine/cost_fit.py`` fits
(prefill tokens, decode tokens, context tokens, seconds per iteration):

- prefill: one request at a time with ``max_tokens = 1``; its TTFT is the iteration that
  prefills the whole prompt (``first_token = "prefill"``, vLLM v1), or that iteration plus one
  decode step (``"decode"``: the decode step is predicted from the decode rows and taken off).
  The TTFT also holds the server's per-request overhead, which the report estimates.
- decode: B requests at once with equal prompts and long outputs; while all B decode, every
  gap between a request's consecutive tokens is one iteration of B decoders whose context is
  the sum of their KV lengths. Gaps are pooled into a few rows per (B, prompt) by median.
- mixed: B decoders streaming while a one-token request of P prompt tokens arrives; the
  decoders' gap that ends with (``"prefill"``) or just before (``"decode"``) its first token
  is an iteration of P prefill tokens beside B decoders.

Times are divided by ``time_scale`` (an emulator run with ``--time-scale``), so the fit is in
the emulated engine's seconds. Files written into the output folder: ``profile.csv`` (the rows
the fit used), ``cost.toml`` (the ``[engine.cost]`` table), ``fit_report.json`` and
``fit_report.txt``, and ``probes.json`` (every row with its kind).
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.progress import Progress
from servesim.real.calibrate_probe import Prober, open_prober
from servesim.real.calibrate_rows import Row, decode_rows, mixed_row, prefill_rows

__all__ = ["CalibrationPlan", "CalibrationResult", "Row", "decode_rows", "mixed_row",
           "predicted_rel_errors", "run_calibration"]


@dataclass(frozen=True)
class CalibrationPlan:
    """What to probe. Every list is a fixed design, so the request count is bounded."""

    prefill_prompts: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    prefill_repeats: int = 5
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    decode_prompts: tuple[int, ...] = (32, 256)
    decode_output: int = 32
    mixed_batches: tuple[int, ...] = (2, 8)
    mixed_prompts: tuple[int, ...] = (64, 256)
    mixed_decoder_prompt: int = 32
    mixed_decoder_output: int = 64
    mixed_repeats: int = 2
    warmup: int = 4
    first_token: str = "prefill"
    timeout_s: float = 120.0
    max_time_s: float = 1800.0
    time_scale: float = 1.0

    @classmethod
    def default(cls, *, max_prompt_tokens: int = 512, max_batch: int = 16,
                first_token: str = "prefill", timeout_s: float = 120.0,
                time_scale: float = 1.0) -> CalibrationPlan:
        """The default design cut to prompts up to ``max_prompt_tokens`` (keep it within the
        server's token budget) and batches up to ``max_batch``."""
        if first_token not in ("prefill", "decode"):
            raise ConfigError("--first-token", first_token, "prefill or decode",
                              choices=("prefill", "decode"))
        if not time_scale > 0:
            raise ConfigError("--time-scale", time_scale, "a number > 0")
        base = cls()
        prompts = tuple(p for p in base.prefill_prompts if p < max_prompt_tokens) \
            + (max_prompt_tokens,)
        batches = tuple(b for b in base.decode_batches if b < max_batch) + (max_batch,)
        mixed_b = tuple(sorted({min(b, max_batch) for b in base.mixed_batches}))
        mixed_p = tuple(sorted({max(8, min(p, max_prompt_tokens - max(mixed_b)))
                                for p in base.mixed_prompts}))
        return cls(prefill_prompts=prompts, decode_batches=batches,
                   decode_prompts=tuple(sorted({min(p, max_prompt_tokens)
                                                for p in base.decode_prompts})),
                   mixed_batches=mixed_b, mixed_prompts=mixed_p, first_token=first_token,
                   timeout_s=timeout_s, time_scale=time_scale)

    @property
    def requests(self) -> int:
        """Probe requests the plan sends."""
        return (self.warmup + len(self.prefill_prompts) * self.prefill_repeats
                + sum(self.decode_batches) * len(self.decode_prompts)
                + sum(b + self.mixed_repeats for b in self.mixed_batches)
                * len(self.mixed_prompts))


@dataclass
class CalibrationResult:
    """The fitted model, its rows and report; ``text`` is what the command prints."""

    fitted: Any
    rows: list[Row]
    report: dict[str, Any]
    text: str
    files: list[Path] = field(default_factory=list)


# -- probing ----------------------------------------------------------------------------------


async def _probe(prober: Prober, plan: CalibrationPlan,
                 progress: Progress | None) -> tuple[list[Row], list[str]]:
    groups = (1 + len(plan.decode_prompts) * len(plan.decode_batches)
              + len(plan.mixed_prompts) * len(plan.mixed_batches))
    done = 0

    def note(what: str) -> None:
        nonlocal done
        if progress is not None:
            progress(what, done, groups)
        done += 1

    problems: list[str] = []
    # Warm the server's paths for every prompt size first (the first requests of a fresh
    # process, or of a new shape, run slow).
    for i in range(plan.warmup):
        await prober.one(plan.prefill_prompts[i % len(plan.prefill_prompts)], 4)
    note(f"prefill probes: prompts {list(plan.prefill_prompts)} x {plan.prefill_repeats}")
    singles = [await prober.one(n, 1) for n in plan.prefill_prompts
               for _ in range(plan.prefill_repeats)]
    problems += [f"prefill probe of {p.prompt_tokens} tokens: {p.status} {p.error}".rstrip()
                 for p in singles if not p.ok]
    rows = prefill_rows(singles, plan.time_scale)
    for prompt in plan.decode_prompts:
        for b in plan.decode_batches:
            note(f"decode probes: {b} at once, prompt {prompt}, output {plan.decode_output}")
            found = decode_rows(await prober.batch(prompt, plan.decode_output, b),
                                plan.first_token, plan.time_scale)
            if not found:
                problems.append(f"decode probe B={b} prompt={prompt}: no span with all {b} "
                                "decoding (a request failed, or the server runs fewer at once)")
            rows += found
    for prompt in plan.mixed_prompts:
        for b in plan.mixed_batches:
            note(f"mixed probes: {b} decoders, a {prompt}-token prompt arrives")
            decoders, probes = await prober.mixed(b, plan.mixed_decoder_prompt,
                                                  plan.mixed_decoder_output, prompt,
                                                  plan.mixed_repeats)
            for p in probes:
                row = mixed_row(decoders, p, plan.first_token, plan.time_scale)
                if row is None:
                    problems.append(f"mixed probe B={b} prompt={prompt}: its step was not "
                                    "found in the decoders' streams")
                else:
                    rows.append(row)
    if progress is not None:
        progress("fitting", groups, groups)
    return rows, problems


async def _probe_endpoint(endpoint: str, model: str | None, plan: CalibrationPlan,
                          progress: Progress | None) -> tuple[list[Row], list[str], Any]:
    http, prober = await open_prober(endpoint, model, plan.timeout_s)
    try:
        async with asyncio.timeout(plan.max_time_s):
            rows, problems = await _probe(prober, plan, progress)
    except TimeoutError:
        raise ConfigError("--endpoint", endpoint, f"a server that answers the {plan.requests} "
                          f"probes within {plan.max_time_s:g} s") from None
    finally:
        await http.aclose()
    return rows, problems, prober


# -- fitting and writing ----------------------------------------------------------------------


def _adjust_prefill(rows: list[Row], first_token: str) -> list[str]:
    """Under "decode", take the predicted one-decoder step off each prefill row's TTFT."""
    if first_token != "decode":
        return []
    dec = [r for r in rows if r.kind == "decode"]
    if len(dec) < 3:
        return ["too few decode rows to take the decode step off the prefill TTFTs"]
    x = np.array([[1.0, r.decode_tokens, r.context_tokens] for r in dec])
    coef = np.linalg.lstsq(x, np.array([r.seconds for r in dec]), rcond=None)[0]
    for r in rows:
        if r.kind == "prefill":
            r.seconds = max(r.seconds - float(coef @ [1.0, 1.0, r.prefill_tokens]),
                            0.05 * r.seconds)
    return []


def _by_kind(rows: list[Row], fitted: Any) -> dict[str, Any]:
    out = {}
    for kind in ("prefill", "decode", "mixed"):
        mine = [r for r in rows if r.kind == kind]
        if not mine:
            continue
        pred = np.array([fitted.iteration_s(r.prefill_tokens, r.decode_tokens, r.context_tokens)
                         for r in mine])
        meas = np.array([r.seconds for r in mine])
        rel = (pred - meas) / meas
        out[kind] = {"rows": len(mine), "mean_rel_error": float(np.mean(rel)),
                     "max_abs_rel_error": float(np.max(np.abs(rel)))}
    return out


def _take_overhead(rows: list[Row]) -> float | None:
    """Estimate the server's per-request overhead that a TTFT holds and an inter-token gap
    does not (least squares with a prefill-row indicator beside the four features), and take
    it off the prefill rows; returns it (None: too few rows to tell)."""
    if sum(r.kind == "prefill" for r in rows) < 2 or sum(r.kind != "prefill" for r in rows) < 3:
        return None
    x = np.array([[1.0, r.prefill_tokens, r.decode_tokens, r.context_tokens,
                   float(r.kind == "prefill")] for r in rows])
    coef = np.linalg.lstsq(x, np.array([r.seconds for r in rows]), rcond=None)[0]
    overhead = float(coef[-1])
    if overhead > 0:
        for r in rows:
            if r.kind == "prefill":
                r.seconds = max(r.seconds - overhead, 0.05 * r.seconds)
    return overhead


def fit(rows: list[Row], first_token: str, out_dir: Path
        ) -> tuple[Any, list[str], float | None, list[Row]]:
    """Write ``profile.csv`` and fit it with the profile fit; returns (model, warnings, the
    per-request overhead taken off the prefill rows, the rows dropped as outliers).

    A shared machine stalls now and then, and a stall inflates a whole probe's gaps: rows
    whose relative residual is far beyond the rest (over 4 median absolute deviations and
    over 25%) are dropped once and the rest refitted, so ``profile.csv`` holds the rows of
    the final fit.
    """
    warnings = _adjust_prefill(rows, first_token)
    overhead = _take_overhead(rows)
    fitted = _fit_file(rows, out_dir)
    rel = np.array([(fitted.iteration_s(r.prefill_tokens, r.decode_tokens, r.context_tokens)
                     - r.seconds) / r.seconds for r in rows])
    spread = float(np.median(np.abs(rel - np.median(rel))))
    bad = (np.abs(rel) > 0.25) & (np.abs(rel - np.median(rel)) > 4 * spread)
    dropped = [r for r, b in zip(rows, bad, strict=True) if b]
    if dropped and len(rows) - len(dropped) >= 8:
        rows[:] = [r for r, b in zip(rows, bad, strict=True) if not b]
        fitted = _fit_file(rows, out_dir)
        warnings.append(f"dropped {len(dropped)} outlier rows ("
                        + "; ".join(f"{r.kind} {r.note}" for r in dropped[:4])
                        + (", ..." if len(dropped) > 4 else "") + ")")
    else:
        dropped = []
    return fitted, warnings, overhead, dropped


def _fit_file(rows: list[Row], out_dir: Path) -> Any:
    from servesim.engine.cost_fit import fit_profile

    profile = out_dir / "profile.csv"
    lines = ["prefill_tokens,decode_tokens,context_tokens,seconds"]
    lines += [f"{r.prefill_tokens},{r.decode_tokens},{r.context_tokens},{r.seconds!r}"
              for r in rows]
    _write(profile, "\n".join(lines) + "\n")
    return fit_profile(profile, field="calibration profile")


def _write(path: Path, text: str) -> None:
    from servesim.experiments.outputs import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _cost_toml(fitted: Any, profile: Path, endpoint: str, model: str) -> str:
    c = fitted.fit_report["coefficients"]
    return (f"# Fitted by servesim calibrate against {endpoint} (model {model}).\n"
            "# t = intercept + prefill_s * prefill + decode_s * decode + context_s * context:\n"
            f"#   intercept {c['intercept'] * 1e3:.6g} ms, prefill {c['prefill_tokens'] * 1e3:.6g}"
            f" ms/token, decode {c['decode_tokens'] * 1e3:.6g} ms/request, context "
            f"{c['context_tokens'] * 1e3:.6g} ms/token\n"
            "# The path is absolute; beside a committed scenario, copy profile.csv next to it\n"
            "# and write path = \"profile.csv\" (relative paths resolve against the scenario).\n"
            "[engine.cost]\nkind = \"fitted\"\n"
            f"path = {json.dumps(str(profile.resolve()))}\n")


def _text(report: dict[str, Any]) -> str:
    c = report["fit"]["coefficients"]
    lines = [f"calibrated {report['endpoint']} (model {report['model']}): "
             f"{report['probe_requests']} probe requests, {len(report['rows'])} profile rows",
             f"  intercept   {c['intercept'] * 1e3:10.4f} ms per iteration",
             f"  prefill     {c['prefill_tokens'] * 1e3:10.6f} ms per prefill token",
             f"  decode      {c['decode_tokens'] * 1e3:10.6f} ms per decoding request",
             f"  context     {c['context_tokens'] * 1e3:10.6f} ms per context token",
             f"  fit: r2 {report['fit']['r2']:.4f}, mean |rel error| "
             f"{report['fit']['mean_rel_error']:.2%}, max {report['fit']['max_rel_error']:.2%}"]
    for kind, k in report["by_kind"].items():
        lines.append(f"  {kind:8s} {k['rows']:3d} rows, mean rel error "
                     f"{k['mean_rel_error']:+.2%}, max |rel error| {k['max_abs_rel_error']:.2%}")
    if report["request_overhead_s"] is not None:
        lines.append(f"  per-request overhead in TTFT: about "
                     f"{report['request_overhead_s'] * 1e3:.3g} ms (taken off the prefill "
                     "rows; the simulator does not model it)")
    lines += [f"  warning: {w}" for w in report["warnings"]]
    lines.append(f"wrote {', '.join(report['files'])}")
    return "\n".join(lines)


def run_calibration(endpoint: str, out_dir: str | Path, plan: CalibrationPlan | None = None, *,
                    model: str | None = None,
                    progress: Progress | None = None) -> CalibrationResult:
    """Probe ``endpoint`` as ``plan`` says, fit, and write the files into ``out_dir``.
    ``progress`` hears each probe group as it starts, ``(what, done, total)``.

    Raises ConfigError if the server cannot be reached, the probes outlast ``plan.max_time_s``
    or give too few rows to fit.
    """
    from servesim.metrics.summary import jsonable

    plan = plan or CalibrationPlan()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", str(out), f"a folder that can be written ({e.strerror or e})"
                          ) from None
    rows, problems, prober = asyncio.run(_probe_endpoint(endpoint, model, plan, progress))
    if len(rows) < 4:
        raise ConfigError("--endpoint", endpoint, "a server whose probes give at least 4 "
                          f"profile rows; they gave {len(rows)} ({'; '.join(problems[:3])})")
    fitted, warnings, overhead, dropped = fit(rows, plan.first_token, out)
    warnings = problems + warnings + list(fitted.fit_report.get("warnings", ()))
    if not prober.tokenize:
        warnings.append("the server has no /tokenize: prompts were sized by word count")
    files = [out / n for n in ("profile.csv", "cost.toml", "fit_report.json", "fit_report.txt",
                               "probes.json")]
    report = jsonable({
        "endpoint": endpoint, "model": prober.model, "first_token": plan.first_token,
        "time_scale": plan.time_scale, "plan": asdict(plan), "probe_requests": prober.sent,
        "prompt_token_mismatches": prober.mismatches, "fit": dict(fitted.fit_report),
        "by_kind": _by_kind(rows, fitted), "request_overhead_s": overhead,
        "rows": [asdict(r) for r in rows], "dropped_rows": [asdict(r) for r in dropped],
        "warnings": warnings,
        "files": [str(f) for f in files],
    })
    text = _text(report)
    _write(files[1], _cost_toml(fitted, files[0], endpoint, prober.model))
    _write(files[2], json.dumps(report, indent=2, allow_nan=False) + "\n")
    _write(files[3], text + "\n")
    _write(files[4], json.dumps(report["rows"], indent=2) + "\n")
    return CalibrationResult(fitted, rows, report, text, files)


def predicted_rel_errors(fitted: Any, truth: Any, points: list[tuple[int, int, int]]
                         ) -> list[float]:
    """(fitted - truth) / truth of the iteration time at each (prefill, decode, context)."""
    out = []
    for p, d, c in points:
        t = float(truth.iteration_s(p, d, c))
        out.append((float(fitted.iteration_s(p, d, c)) - t) / t if t > 0 else math.nan)
    return out
