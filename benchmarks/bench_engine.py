"""Performance benchmark of servesim: wall time, requests per wall second and peak RSS per case.

Run from anywhere (the installed ``servesim`` is imported, the peer is found next to the repo)::

    python benchmarks/bench_engine.py [--quick] [--peer-python PATH] [--report PATH] [--repeat N]

Cases (see benchmarks/README.md):

  (a)  Sarathi, Poisson at 0.9 lambda*, 129/112 tokens, b_max 512, staircase cost, KV ample,
       100k requests; compared with the peer pyserq 0.1.4 on the same workload (target >= 10x
       its requests per wall second).
  (b)  Azure-conversation lengths at Poisson 4 req/s, Llama-2-7B / A100-80GB roofline, KV derived
       from GPU memory, Sarathi and vLLM, 100k requests each (report only).
  (c)  (a) with 224 output tokens at equal token load (target: time per request <= 1.3x (a)'s).
  (d)  (a) with 1M requests (target: <= 15 s wall and < 1 GB peak RSS).
  (e)  Orca in overload: (a)'s system at 1.3 lambda* with no batch-size cap, a fixed horizon of
       600 s and run.max_in_system 20000 (report only: wall time per simulated second). Orca's
       partial decodes keep thousands of decoders sitting out every iteration.

Every case runs in a fresh subprocess (this file with ``--child``), so the peak RSS
(``ru_maxrss``) belongs to that case alone. The timed region is the public pipeline
``simulate(scenario_from_dict(table))``: validation, workload generation, the engine, the
request records and the summary. Engine-only time is ``run_engine`` on the same requests,
pre-built, measured afterwards in the same child. ``--quick`` runs every case 10x smaller and
enforces no target. The exit status is 0 even when a target is missed: this is a report.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO.parent / "shared" / "peers"
DATA = REPO.parent / "shared" / "data"
AZURE_CONV = DATA / "azure_llm_2023_conv.csv"
PEER_RUNNER = "run_pyserq.py"
PEER_PROGRAM = "fig1_sarathi.sq"
PEER_ENV = "SERVESIM_PEER_PYTHON"
MARK = "BENCH_RESULT "

# The Fig. 1 system: staircase c + a*ceil(b/b0), b_max 512, 129 prompt + 112 output tokens.
C_MS, A_MS, B0, B_MAX = 11.28, 35.47, 128, 512
PROMPT, OUTPUT = 129, 112
BATCH_S = (C_MS + A_MS * math.ceil(B_MAX / B0)) / 1000.0      # 0.15316 s for a full batch
TOKEN_CAPACITY = B_MAX / BATCH_S                                 # mu*, tokens per second
LOAD = 0.9
OVERLOAD = 1.3             # (e): Orca above capacity
OVERLOAD_HORIZON_S = 600.0
OVERLOAD_CAP = 20_000
PEER_RATE = 12.48          # fig1_sarathi.sq: poisson(0.0001248) per 10 us
PEER_TIME_UNIT_S = 1e-5    # pyserq time unit, 10 us

# Targets (full mode only).
TARGET_PEER_RATIO = 10.0
TARGET_C_OVER_A = 1.3
TARGET_D_WALL_S = 15.0
TARGET_D_RSS_MB = 1000.0   # 1 GB = 10^9 bytes

VIDUR_MS_PER_REQUEST = 2.3  # peers README: Vidur, 10k Azure-conv requests at 4 req/s, Sarathi


# -- scenarios ----------------------------------------------------------------------------------


def staircase_table(n: int | None, output: int = OUTPUT, rate: float | None = None,
                    horizon_s: float | None = None, seed: int = 1) -> dict[str, Any]:
    """The Fig. 1 scenario: Sarathi on the staircase, deterministic lengths, KV ample."""
    if rate is None:
        rate = LOAD * TOKEN_CAPACITY / (PROMPT + output)   # equal token load 0.9 mu*
    run: dict[str, Any] = {"seed": seed}
    if horizon_s is None:
        run["requests"] = n
    else:
        run["horizon_s"] = horizon_s
    return {
        "run": run,
        "workload": {
            "arrival": {"kind": "poisson", "rate_per_s": rate},
            "prompt_tokens": {"kind": "deterministic", "value": PROMPT},
            "output_tokens": {"kind": "deterministic", "value": output},
        },
        "engine": {
            "batching": "sarathi",
            "token_budget": B_MAX,
            "cost": {"kind": "staircase", "c_ms": C_MS, "a_ms": A_MS, "b0": B0},
        },
    }


def overload_table(horizon_s: float) -> dict[str, Any]:
    """(e): Orca on (a)'s system at 1.3 lambda*, stopped at the horizon (or the in-system cap)."""
    table = staircase_table(None, rate=OVERLOAD * TOKEN_CAPACITY / (PROMPT + OUTPUT),
                            horizon_s=horizon_s)
    table["run"]["max_in_system"] = OVERLOAD_CAP
    table["engine"]["batching"] = "orca"
    return table


def azure_table(n: int, batching: str, token_budget: int) -> dict[str, Any]:
    """Azure-conversation lengths (file order, looped) with synthetic Poisson 4 req/s arrivals;
    Llama-2-7B on one A100-80GB (roofline); KV cache derived from GPU memory at 0.9."""
    return {
        "run": {"seed": 1, "requests": n},
        "workload": {
            "arrival": {"kind": "poisson", "rate_per_s": 4.0},
            "trace": {"format": "azure", "path": str(AZURE_CONV), "loop": True},
        },
        "engine": {
            "batching": batching,
            "token_budget": token_budget,
            "kv": {"gpu_memory_utilization": 0.9},
            "cost": {"kind": "roofline", "model": "llama-2-7b", "gpu": "a100-80gb"},
        },
    }


def longest_prompt(path: Path) -> int:
    """The largest ContextTokens of an Azure trace file."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        return max(int(row["ContextTokens"]) for row in rows)


# -- the child: one measured case in a fresh process ----------------------------------------------


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6   # bytes on macOS


def _run_metrics(result: Any, window_s: float | None) -> dict[str, Any]:
    """Counts, mean response time and time-averaged number in system over [0, window]
    (window: the horizon, or the last arrival in request-count mode)."""
    import numpy as np

    req = result.requests
    arrival = req["arrival_s"].to_numpy(np.float64)
    finish = req["finish_s"].to_numpy(np.float64)
    status = req["status"].astype(str).to_numpy()
    window = window_s if window_s is not None else float(arrival.max())
    live = (arrival < window) & (status != "rejected") & (status != "pending")
    end = np.where(np.isnan(finish), window, np.minimum(finish, window))
    s = result.summary
    return {
        "arrived": s["arrived"],
        "completed": s["completed"],
        "rejected": s["rejected"],
        "preemptions": s["preemptions"],
        "iterations": s["iterations"],
        "kv_blocks": s["kv_capacity_blocks"],
        "sim_end_s": s["end_s"],
        "mean_response_s": s["e2e_s"]["mean"],
        "mean_in_system": float((end[live] - arrival[live]).sum() / window),
        "window_s": window,
        "stop_reason": s.get("stop_reason"),
    }


def child_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the public pipeline on one scenario table, then the engine alone."""
    import numpy as np

    from servesim import Requests, run_engine, scenario_from_dict, simulate

    rss_import = _peak_rss_mb()
    table = spec["scenario"]
    c0, t0 = time.process_time(), time.perf_counter()
    scenario = scenario_from_dict(table)
    t1 = time.perf_counter()
    result = simulate(scenario)
    t2, c2 = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {"wall_s": t2 - t0, "cpu_s": c2 - c0, "load_s": t1 - t0,
                           "rss_mb": _peak_rss_mb(), "rss_import_mb": rss_import}
    out.update(_run_metrics(result, scenario.run.horizon_s))
    if spec.get("engine_only", True):
        req = result.requests
        names, class_id = np.unique(req["class"].astype(str).to_numpy(), return_inverse=True)
        requests = Requests(arrival_s=req["arrival_s"].to_numpy(np.float64).copy(),
                            prompt_tokens=req["prompt_tokens"].to_numpy(np.int64).copy(),
                            output_tokens=req["output_tokens"].to_numpy(np.int64).copy(),
                            class_id=class_id.astype(np.int32),
                            class_names=tuple(str(x) for x in names))
        del result, req
        c3, t3 = time.process_time(), time.perf_counter()
        run_engine(requests, scenario.engine, scenario.cost, until_s=scenario.run.until_s,
                   max_in_system=scenario.run.max_in_system)
        out["engine_s"] = time.perf_counter() - t3
        out["engine_cpu_s"] = time.process_time() - c3
    return out


def child_agree(spec: dict[str, Any]) -> dict[str, Any]:
    """The peer's workload in horizon mode, one run per (horizon, seed): times and output
    metrics. Run alone in a fresh process, the first run is timed like the peer's."""
    from servesim import scenario_from_dict, simulate

    runs = []
    for horizon, seed in spec["runs"]:
        c0, t0 = time.process_time(), time.perf_counter()
        scenario = scenario_from_dict(staircase_table(None, rate=PEER_RATE, horizon_s=horizon,
                                                      seed=seed))
        result = simulate(scenario)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        runs.append({"horizon_s": horizon, "seed": seed, "wall_s": wall, "cpu_s": cpu,
                     **_run_metrics(result, horizon)})
        del result
    return {"runs": runs, "rss_mb": _peak_rss_mb()}


def child_main(raw: str) -> int:
    spec = json.loads(raw)
    out = child_agree(spec) if spec["kind"] == "agree" else child_case(spec)
    print(MARK + json.dumps(out), flush=True)
    return 0


def run_child(spec: dict[str, Any], timeout_s: float = 1800.0,
              script: str | Path = __file__) -> dict[str, Any]:
    """Run ``script --child SPEC`` in a fresh interpreter and return the result it printed;
    raise RuntimeError with its stderr on failure."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"child exited with status {proc.returncode}:\n{tail}")


# -- the peer ----------------------------------------------------------------------------------


def find_peer(option: str | None) -> tuple[Path | None, str]:
    """The peer interpreter, or None and the reason it is skipped."""
    value = option or os.environ.get(PEER_ENV)
    if not value:
        return None, (f"no peer interpreter given (pass --peer-python PATH or set {PEER_ENV} to "
                      "the python of a venv with pyserq==0.1.4; see benchmarks/README.md)")
    exe = Path(value).expanduser()
    if exe.is_dir():
        exe = exe / "bin" / "python"
    if not exe.is_file():
        return None, f"peer interpreter {exe} does not exist"
    missing = [name for name in (PEER_RUNNER, PEER_PROGRAM) if not (PEERS / name).is_file()]
    if missing:
        return None, f"peer files {', '.join(missing)} not found in {PEERS}"
    return exe, ""


def run_peer(exe: Path, horizon_units: float, timeout_s: float = 600.0) -> dict[str, Any]:
    """One pyserq run of the Fig. 1 program via the shared runner; its JSON line."""
    cmd = [str(exe), PEER_RUNNER, PEER_PROGRAM, f"{horizon_units:g}"]
    proc = subprocess.run(cmd, cwd=PEERS, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
    raise RuntimeError(f"pyserq runner exited with status {proc.returncode}:\n{tail}")


# -- tables ------------------------------------------------------------------------------------


class Table:
    """A titled table of strings, rendered with rich on the terminal and as markdown."""

    def __init__(self, title: str, columns: Sequence[str]) -> None:
        self.title, self.columns, self.rows = title, list(columns), []

    def add(self, *cells: Any) -> None:
        self.rows.append(["" if c is None else str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                  for row in self.rows]
        return "\n".join(lines)

    def show(self) -> None:
        try:
            from rich.console import Console
            from rich.table import Table as RichTable
        except ImportError:
            print(self.markdown())
            return
        t = RichTable(title=self.title, title_justify="left")
        for c in self.columns:
            t.add_column(c, overflow="fold")
        for row in self.rows:
            styled = []
            for cell in row:
                if cell.startswith("MISS"):
                    cell = f"[bold red]{cell}[/]"
                elif cell.startswith("PASS"):
                    cell = f"[green]{cell}[/]"
                styled.append(cell)
            t.add_row(*styled)
        console = Console()
        if not console.is_terminal:
            console = Console(width=140)
        console.print(t)


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def rate_k(x: float) -> str:
    return f"{x / 1000:.1f}k"


def verdict(ok: bool | None, enforced: bool) -> str:
    if not enforced:
        return "not enforced (--quick)"
    if ok is None:
        return "SKIPPED"
    return "PASS" if ok else "MISS"


# -- the benchmark -------------------------------------------------------------------------------


def say(msg: str) -> None:
    print(msg, flush=True)


def best(runs: list[dict[str, Any]], key: str) -> float:
    return min(r[key] for r in runs if r.get(key) is not None)


def measure_once(label: str, scenario: dict[str, Any], i: int = 0,
                 repeat: int = 1) -> dict[str, Any] | None:
    """One fresh-process run of a case, or None (and a message) if it failed."""
    try:
        r = run_child({"kind": "case", "scenario": scenario})
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        say(f"  {label}: FAILED: {e}")
        return None
    say(f"  {label} run {i + 1}/{repeat}: pipeline {r['wall_s']:.3f} s (CPU "
        f"{r['cpu_s']:.3f} s), engine only {r['engine_s']:.3f} s (CPU "
        f"{r['engine_cpu_s']:.3f} s), peak RSS {r['rss_mb']:.0f} MB")
    return r


def combine(runs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The best times and the largest peak RSS of a case's runs (None if any run failed)."""
    if not runs or any(r is None for r in runs):
        return None
    out = dict(runs[0])
    for key in ("wall_s", "engine_s", "cpu_s", "engine_cpu_s"):
        out[key] = best(runs, key)
    out["rss_mb"] = max(r["rss_mb"] for r in runs)
    out["walls"] = [r["wall_s"] for r in runs]
    out["n"] = out["arrived"]
    return out


def children_cpu_s() -> float:
    """CPU seconds used so far by finished child processes."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def peer_startup_cpu_s(exe: Path) -> float:
    """CPU seconds of starting the peer interpreter and importing pyserq (no simulation)."""
    c0 = children_cpu_s()
    try:
        subprocess.run([str(exe), "-c", "import json, sys, time, pyserq"], capture_output=True,
                       timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0.0
    return children_cpu_s() - c0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="10x smaller cases, for smoke-testing; no target is enforced")
    ap.add_argument("--peer-python", metavar="PATH",
                    help=f"python of a venv with pyserq==0.1.4 (or the venv folder); default: "
                         f"${PEER_ENV}; without either the peer comparison is skipped")
    ap.add_argument("--report", metavar="PATH",
                    help="also write the summary as markdown to this file (nothing else is "
                         "written)")
    ap.add_argument("--repeat", type=int, default=None, metavar="N",
                    help="rounds of (a), (c), the peer and servesim on the peer's workload, run "
                         "interleaved; the best time of each is kept (default 5; 1 with --quick)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)

    started = time.perf_counter()
    quick = args.quick
    enforced = not quick
    scale = 10 if quick else 1
    repeat = args.repeat if args.repeat is not None else (1 if quick else 5)
    load_before = os.getloadavg()
    repeat = max(1, repeat)
    n_a = 100_000 // scale
    n_d = 1_000_000 // scale
    peer_units = 1e8 / scale                 # 1000 s (100 s with --quick)
    lam_a = LOAD * TOKEN_CAPACITY / (PROMPT + OUTPUT)
    lam_c = LOAD * TOKEN_CAPACITY / (PROMPT + 2 * OUTPUT)
    notes: list[str] = []

    say(f"servesim benchmark ({'quick' if quick else 'full'}), python {sys.executable}")
    say(f"lambda* = {TOKEN_CAPACITY / (PROMPT + OUTPUT):.4f} req/s; (a) rate {lam_a:.4f} req/s; "
        f"(c) rate {lam_c:.4f} req/s")

    results: dict[str, dict[str, Any] | None] = {}
    peer_exe, why = find_peer(args.peer_python)
    if peer_exe is None:
        msg = f"peer comparison skipped: {why}"
        say(msg)
        notes.append(msg)
    horizon = peer_units * PEER_TIME_UNIT_S

    # (a), (c), the peer and servesim on the peer's workload run interleaved, so that load from
    # other processes on the machine hits all of them alike; the best of each is kept.
    say(f"(a) Sarathi fig. 1, {n_a:,} requests; (c) the same with {2 * OUTPUT} output tokens at "
        f"equal token load" + ("" if peer_exe is None else
                               f"; pyserq {PEER_PROGRAM} horizon {peer_units:g} "
                               f"({horizon:g} s) via {peer_exe}")
        + f"; interleaved, {repeat} round(s)")
    runs_a: list[dict[str, Any] | None] = []
    runs_c: list[dict[str, Any] | None] = []
    runs_p: list[dict[str, Any]] = []
    runs_same: list[dict[str, Any]] = []
    startup = peer_startup_cpu_s(peer_exe) if peer_exe is not None else 0.0
    peer_failed = False
    for i in range(repeat):
        runs_a.append(measure_once("(a)", staircase_table(n_a), i, repeat))
        runs_c.append(measure_once("(c)", staircase_table(n_a, output=2 * OUTPUT), i, repeat))
        if peer_exe is not None and not peer_failed:
            try:
                c0 = children_cpu_s()
                runs_p.append(run_peer(peer_exe, peer_units))
                runs_p[-1]["cpu_s"] = max(0.0, children_cpu_s() - c0 - startup)
                say(f"  pyserq run {i + 1}/{repeat}: {runs_p[-1]['wall_s']:.3f} s (process CPU "
                    f"less start-up ≈ {runs_p[-1]['cpu_s']:.3f} s), "
                    f"{runs_p[-1]['arrivals']} arrivals")
                same = run_child({"kind": "agree", "runs": [(horizon, 1)]})["runs"][0]
                runs_same.append(same)
                say(f"  servesim on the same workload run {i + 1}/{repeat}: "
                    f"{same['wall_s']:.3f} s (CPU {same['cpu_s']:.3f} s), "
                    f"{same['arrived']} arrivals")
            except (OSError, RuntimeError, subprocess.TimeoutExpired,
                    json.JSONDecodeError) as e:
                msg = f"peer comparison skipped: pyserq failed: {e}"
                say(msg)
                notes.append(msg)
                peer_failed = True
                runs_p = []
    results["a"] = combine(runs_a)
    results["c"] = combine(runs_c)

    if AZURE_CONV.is_file():
        vllm_budget = max(8192, 1 << (longest_prompt(AZURE_CONV) - 1).bit_length())
        for name, batching, budget in (("b-sarathi", "sarathi", B_MAX),
                                       ("b-vllm", "vllm", vllm_budget)):
            say(f"(b) Azure conv, {batching}, token_budget {budget}, {n_a:,} requests")
            results[name] = combine([measure_once(f"(b) {batching}",
                                                  azure_table(n_a, batching, budget))])
            if results[name] is not None:
                results[name]["token_budget"] = budget
    else:
        msg = f"(b) skipped: data file {AZURE_CONV} not found"
        say(msg)
        notes.append(msg)
        results["b-sarathi"] = results["b-vllm"] = None

    say(f"(d) (a) with {n_d:,} requests")
    results["d"] = combine([measure_once("(d)", staircase_table(n_d))])

    horizon_e = OVERLOAD_HORIZON_S / scale
    say(f"(e) Orca at {OVERLOAD:g} lambda*, horizon {horizon_e:g} s")
    results["e"] = combine([measure_once("(e)", overload_table(horizon_e))])

    # -- the peer's output metrics, and servesim's on the same workload over several seeds
    peer: dict[str, Any] | None = None
    peer_long: dict[str, Any] | None = None
    same_best: dict[str, Any] | None = None
    if runs_p:
        peer = dict(runs_p[0])
        peer["wall_s"] = min(r["wall_s"] for r in runs_p)
        peer["cpu_s"] = min(r["cpu_s"] for r in runs_p)
        peer["walls"] = [r["wall_s"] for r in runs_p]
        peer["rps"] = peer["arrivals"] / peer["wall_s"]
        peer["version"] = runs_p[0].get("pyserq")
        if runs_same:
            same_best = dict(runs_same[0])
            same_best["wall_s"] = min(r["wall_s"] for r in runs_same)
            same_best["cpu_s"] = min(r["cpu_s"] for r in runs_same)
        if not quick:
            say(f"pyserq long run, horizon {10 * peer_units:g} ({10 * horizon:g} s), for the "
                "metric comparison")
            try:
                peer_long = run_peer(peer_exe, 10 * peer_units)
                say(f"  pyserq long run: {peer_long['wall_s']:.3f} s")
            except (OSError, RuntimeError, subprocess.TimeoutExpired,
                    json.JSONDecodeError) as e:
                say(f"  pyserq long run failed: {e}")

    seeds = list(range(1, 6))
    agree_runs = [(horizon, s) for s in seeds]
    if not quick:
        agree_runs += [(10 * horizon, s) for s in seeds]
    say(f"servesim on the peer's workload (rate {PEER_RATE}/s), horizon {horizon:g} s"
        + ("" if quick else f" and {10 * horizon:g} s") + f", seeds {seeds[0]}..{seeds[-1]}")
    try:
        agree = run_child({"kind": "agree", "runs": agree_runs})
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        say(f"  FAILED: {e}")
        agree = None

    # -- tables
    main_table = Table("Cases (pipeline = simulate(scenario_from_dict(...)); best of runs)",
                       ["case", "requests", "pipeline s", "pipeline CPU s", "req / wall s",
                        "engine-only s", "µs / request", "peak RSS MB", "iterations",
                        "mean response s"])
    details: list[str] = []
    labels = {
        "a": f"(a) Sarathi, {PROMPT}/{OUTPUT}",
        "b-sarathi": "(b) Azure, Sarathi",
        "b-vllm": "(b) Azure, vLLM",
        "c": f"(c) Sarathi, {PROMPT}/{2 * OUTPUT}",
        "d": f"(d) Sarathi, {PROMPT}/{OUTPUT}",
        "e": f"(e) Orca, {OVERLOAD:g} λ*, {PROMPT}/{OUTPUT}",
    }
    for key in ("a", "b-sarathi", "b-vllm", "c", "d", "e"):
        r = results.get(key)
        if r is None:
            main_table.add(labels[key], "—", "—", "—", "—", "—", "—", "—", "—",
                           "skipped" if key.startswith("b") else "failed")
            continue
        extra = []
        if key.startswith("b"):
            extra.append(f"token_budget {r['token_budget']}, KV {r['kv_blocks']:,} blocks of 16 "
                         f"tokens (from GPU memory at 0.9), rejected {r['rejected']}, "
                         f"preemptions {r['preemptions']:,}")
        if len(r["walls"]) > 1:
            extra.append("pipeline runs " + ", ".join(f"{w:.3f}" for w in r["walls"]) + " s")
        extra.append(f"simulated {r['sim_end_s']:,.0f} s")
        if key == "e":
            extra.append(f"{1e3 * r['wall_s'] / r['sim_end_s']:.2f} ms per simulated second "
                         f"(CPU {1e3 * r['cpu_s'] / r['sim_end_s']:.2f} ms; engine only "
                         f"{1e3 * r['engine_s'] / r['sim_end_s']:.2f} ms); "
                         f"{r['arrived'] - r['completed'] - r['rejected']:,} in system at the "
                         f"end; stop reason {r['stop_reason']}")
        details.append(f"{labels[key]}: " + "; ".join(extra))
        main_table.add(labels[key], f"{r['n']:,}", f"{r['wall_s']:.3f}", f"{r['cpu_s']:.3f}",
                       rate_k(r["n"] / r["wall_s"]), f"{r['engine_s']:.3f}",
                       f"{1e6 * r['wall_s'] / r['n']:.1f}", f"{r['rss_mb']:.0f}",
                       f"{r['iterations']:,}", fmt(r["mean_response_s"], 4))

    peer_table = Table(f"Peer comparison: {PEER_PROGRAM}, horizon {horizon:g} s "
                       f"(best of {repeat}, interleaved with servesim's runs)",
                       ["simulator", "requests", "wall s", "CPU s", "req / wall s",
                        "ratio to pyserq"])
    a = results.get("a")
    ratio_a = None
    if peer is not None:
        peer_table.add(f"pyserq {peer['version']} (serve admission)", f"{peer['arrivals']:,}",
                       f"{peer['wall_s']:.3f}", f"≈ {peer['cpu_s']:.3f}", rate_k(peer["rps"]),
                       "1")
        if same_best is not None:
            rps = same_best["arrived"] / same_best["wall_s"]
            peer_table.add(f"servesim, same workload ({horizon:g} s, seed 1, fresh process)",
                           f"{same_best['arrived']:,}", f"{same_best['wall_s']:.3f}",
                           f"{same_best['cpu_s']:.3f}", rate_k(rps),
                           f"{rps / peer['rps']:.1f}×")
        if a is not None:
            rps = a["n"] / a["wall_s"]
            ratio_a = rps / peer["rps"]
            peer_table.add(f"servesim (a), {a['n']:,} requests, pipeline", f"{a['n']:,}",
                           f"{a['wall_s']:.3f}", f"{a['cpu_s']:.3f}", rate_k(rps),
                           f"{ratio_a:.1f}×")
            rps_e = a["n"] / a["engine_s"]
            peer_table.add(f"servesim (a), {a['n']:,} requests, engine only", f"{a['n']:,}",
                           f"{a['engine_s']:.3f}", f"{a['engine_cpu_s']:.3f}", rate_k(rps_e),
                           f"{rps_e / peer['rps']:.1f}×")
    else:
        peer_table.add("pyserq", "—", "—", "—", "—", "skipped")

    agree_table = Table("Same system? Output metrics (mean response = arrival to last token; "
                        "in system = time average over [0, horizon])",
                        ["simulator", "horizon s", "arrivals", "ended", "mean response s",
                         "mean in system", "in system ÷ arrival rate, s"])
    if peer is not None:
        for p, h in ((peer, horizon), (peer_long, 10 * horizon)):
            if p is None:
                continue
            agree_table.add(f"pyserq {peer['version']}, seed 1", f"{h:g}", f"{p['arrivals']:,}",
                            f"{p['ended']:,}", f"{p['mean_response_s']:.3f}",
                            f"{p['mean_in_system']:.1f}",
                            f"{p['mean_in_system'] / (p['arrivals'] / h):.3f}")
    if agree is not None:
        import statistics as st

        for h in sorted({r["horizon_s"] for r in agree["runs"]}):
            rs = [r for r in agree["runs"] if r["horizon_s"] == h]

            def ms(key: str, d: int, rs=rs) -> str:
                xs = [r[key] for r in rs]
                return f"{st.mean(xs):.{d}f} ± {st.stdev(xs):.{d}f}" if len(xs) > 1 \
                    else f"{xs[0]:.{d}f}"

            norm = [r["mean_in_system"] / (r["arrived"] / h) for r in rs]
            agree_table.add(f"servesim, seeds {rs[0]['seed']}..{rs[-1]['seed']} (mean ± sd)",
                            f"{h:g}", ms("arrived", 0), ms("completed", 0),
                            ms("mean_response_s", 3), ms("mean_in_system", 1),
                            f"{st.mean(norm):.3f} ± {st.stdev(norm):.3f}" if len(norm) > 1
                            else f"{norm[0]:.3f}")
    d = results.get("d")
    if d is not None:
        h = d["window_s"]
        agree_table.add(f"servesim (d), {d['n']:,} requests, 0.9 λ* (not 12.48/s)",
                        f"{h:,.0f} (last arrival)", f"{d['arrived']:,}", f"{d['completed']:,}",
                        f"{d['mean_response_s']:.3f}", f"{d['mean_in_system']:.1f}",
                        f"{d['mean_in_system'] / (d['arrived'] / h):.3f}")

    target_table = Table("Targets", ["target", "measured", "result"])
    if peer is not None and ratio_a is not None:
        cpu_ratio = (a["n"] / a["cpu_s"]) / (peer["arrivals"] / peer["cpu_s"]) \
            if peer["cpu_s"] > 0 else math.nan
        target_table.add(f"(a) ≥ {TARGET_PEER_RATIO:g}× pyserq req / wall s",
                         f"{ratio_a:.1f}× ({rate_k(a['n'] / a['wall_s'])} vs "
                         f"{rate_k(peer['rps'])} req/s; per CPU second ≈ {cpu_ratio:.1f}×)",
                         verdict(ratio_a >= TARGET_PEER_RATIO, enforced))
    else:
        target_table.add(f"(a) ≥ {TARGET_PEER_RATIO:g}× pyserq req / wall s",
                         "no peer measurement" if a is not None else "(a) failed",
                         verdict(None, enforced))
    c = results.get("c")
    if a is not None and c is not None:
        q = (c["wall_s"] / c["n"]) / (a["wall_s"] / a["n"])
        qc = (c["cpu_s"] / c["n"]) / (a["cpu_s"] / a["n"])
        qe = (c["engine_s"] / c["n"]) / (a["engine_s"] / a["n"])
        target_table.add(f"(c) time per request ≤ {TARGET_C_OVER_A:g}× (a)",
                         f"{q:.2f}× (CPU {qc:.2f}×; engine only {qe:.2f}×)",
                         verdict(q <= TARGET_C_OVER_A, enforced))
    else:
        target_table.add(f"(c) time per request ≤ {TARGET_C_OVER_A:g}× (a)", "failed",
                         verdict(None, enforced))
    if d is not None:
        target_table.add(f"(d) {d['n']:,} requests in ≤ {TARGET_D_WALL_S:g} s",
                         f"{d['wall_s']:.2f} s", verdict(d["wall_s"] <= TARGET_D_WALL_S,
                                                        enforced))
        target_table.add(f"(d) peak RSS < {TARGET_D_RSS_MB:g} MB (10^9 bytes)",
                         f"{d['rss_mb']:.0f} MB", verdict(d["rss_mb"] < TARGET_D_RSS_MB,
                                                         enforced))
    else:
        target_table.add("(d) wall and RSS", "failed", verdict(None, enforced))

    for key in ("b-sarathi",):
        r = results.get(key)
        if r is not None:
            us = 1e3 * r["wall_s"] / r["n"]
            notes.append(f"(b) Sarathi: {us:.3f} ms per request, against about "
                         f"{VIDUR_MS_PER_REQUEST} ms per request for Vidur on 10k requests of "
                         "the same lengths and rate (peers README, measured elsewhere; not run "
                         "here)")
    if a is not None:
        notes.append(f"peak RSS includes the interpreter with numpy and pandas imported: "
                     f"{a['rss_import_mb']:.0f} MB before any simulation")
    notes = details + notes
    notes.append("pyserq's `serve admission` is its fast Sarathi rule; per the peers README it "
                 "leaves about 0.5% more requests in system than the paper's rule, which servesim "
                 "implements; a single pyserq path (fixed seed 1) cannot resolve 0.5%")
    total = time.perf_counter() - started

    header = [
        f"servesim benchmark, {'quick (10× smaller, targets not enforced)' if quick else 'full'}"
        f", {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        "command: " + " ".join(["python", "benchmarks/bench_engine.py",
                                *(argv if argv is not None else sys.argv[1:])]),
        f"benchmark wall time: {total:.0f} s; load average (1 min) {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (wall times are best of runs; CPU time is the "
        "process's own)",
    ]
    legend = [
        f"(a) Sarathi, Poisson at 0.9 λ* = {lam_a:.4f} req/s, {PROMPT} prompt / {OUTPUT} output "
        f"tokens, b_max {B_MAX}, staircase {C_MS} ms + {A_MS} ms·⌈b/{B0}⌉, KV unlimited, "
        f"{n_a:,} requests",
        f"(b) Azure-conversation lengths (file order, looped), Poisson 4 req/s, Llama-2-7B on "
        f"A100-80GB roofline, KV from GPU memory, {n_a:,} requests per system",
        f"(c) as (a) with {2 * OUTPUT} output tokens at {lam_c:.4f} req/s (equal token load), "
        f"{n_a:,} requests",
        f"(d) as (a) with {n_d:,} requests",
        f"(e) Orca on (a)'s system at {OVERLOAD:g} λ*, no batch-size cap, horizon "
        f"{OVERLOAD_HORIZON_S / scale:g} s, run.max_in_system {OVERLOAD_CAP:,} (report only)",
    ]
    tables = [main_table, peer_table, agree_table, target_table]
    say("")
    for line in header + legend:
        say(line)
    for t in tables:
        say("")
        t.show()
    say("")
    for n in notes:
        say(f"note: {n}")
    misses = [row[0] for row in target_table.rows if row[2].startswith("MISS")]
    if misses:
        say("TARGETS MISSED: " + "; ".join(misses))

    if args.report:
        md = ["# servesim benchmark report", "", *(f"- {line}" for line in header), "",
              *(f"- {line}" for line in legend), ""]
        for t in tables:
            md += [t.markdown(), ""]
        md += [f"- note: {n}" for n in notes]
        if misses:
            md += ["", "**Targets missed:** " + "; ".join(misses)]
        write_report(args.report, md)
    return 0


def write_report(path: str, lines: list[str]) -> None:
    """Write the markdown report, the only file a benchmark writes; say so, or why not."""
    try:
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
        say(f"report written to {path}")
    except OSError as e:
        say(f"could not write the report to {path}: {e}")


if __name__ == "__main__":
    sys.exit(main())
