"""The emulator's ``/metrics``: Prometheus text format under vLLM's metric names, prefixed
``servesim:`` instead of ``vllm:``, plus the emulator's own lateness.

- ``servesim:num_requests_running`` / ``servesim:num_requests_waiting`` (gauges): requests in
  the batch (finishing ones until their iteration ends) and waiting (queued, swapped out, or
  arrived during the iteration under way).
- ``servesim:kv_cache_usage_perc`` (gauge): the fraction of KV blocks in use, 0 to 1 (as vLLM's).
- ``servesim:num_preemptions_total``, ``servesim:prompt_tokens_total``,
  ``servesim:generation_tokens_total``, ``servesim:request_success_total``,
  ``servesim:request_aborted_total`` (counters).
- ``servesim:iteration_tokens_total`` (histogram, as vLLM's): tokens (prefill + decode) per
  iteration.
- ``servesim:emulator_lateness_seconds`` (gauge): how late, in wall seconds, the last
  iteration's tokens went out against the simulated schedule; ``..._max_seconds`` the largest
  so far; ``servesim:emulator_lateness_seconds_total`` their sum and
  ``servesim:emulator_iterations_total`` the count, so the mean is their ratio. The
  ``servesim:emulator_write_lateness_*`` series measure the same when a stream's handler wrote
  the tokens (the engine's wake-up plus the wait for the handler's turn on the event loop).
- ``servesim:emulator_simulated_seconds`` (gauge): the simulated end of the last iteration.
- ``servesim:cache_config_info`` and ``servesim:engine_config_info`` (info gauges, value 1):
  block size and count; batching system, token budget (max_num_batched_tokens), batch cap
  (max_num_seqs), time scale.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

__all__ = ["ITERATION_TOKEN_BUCKETS", "Histogram", "render_metrics"]

ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Histogram:
    """Counts per upper bound (cumulated when rendered), a sum and a count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            running += n
            le = bound if isinstance(bound, str) else f"{float(bound):g}"
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:g}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric(out: list[str], name: str, kind: str, help_text: str, lines: list[str]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    out.extend(lines)


def render_metrics(engine: Any, model: str) -> str:
    """The Prometheus text of a ``ClockedEngine`` serving ``model``."""
    labels = f'model_name="{_label(model)}"'
    stats = engine.stats
    cfg = engine.engine.cfg
    out: list[str] = []
    simple = (
        ("servesim:num_requests_running", "gauge", "Requests in the running batch.",
         engine.n_running),
        ("servesim:num_requests_waiting", "gauge", "Requests waiting to be scheduled.",
         engine.n_waiting),
        ("servesim:kv_cache_usage_perc", "gauge", "KV-cache usage, 1 means 100 percent.",
         engine.kv_usage),
        ("servesim:num_preemptions_total", "counter", "Preemptions so far.", stats.preemptions),
        ("servesim:prompt_tokens_total", "counter", "Prompt tokens received.",
         stats.prompt_tokens),
        ("servesim:generation_tokens_total", "counter", "Output tokens generated.",
         stats.generation_tokens),
        ("servesim:request_success_total", "counter", "Requests finished.", stats.finished),
        ("servesim:request_aborted_total", "counter",
         "Requests aborted because their client went away.", stats.aborted),
        ("servesim:emulator_lateness_seconds", "gauge",
         "Wall seconds the last iteration's tokens went out after their scheduled time.",
         stats.late_s),
        ("servesim:emulator_lateness_max_seconds", "gauge", "Largest lateness so far.",
         stats.late_max_s),
        ("servesim:emulator_lateness_seconds_total", "counter", "Sum of iteration lateness.",
         stats.late_sum_s),
        ("servesim:emulator_iterations_total", "counter", "Iterations run.", stats.iterations),
        ("servesim:emulator_write_lateness_max_seconds", "gauge",
         "Largest delay of a stream's write after its tokens' scheduled time.",
         stats.write_late_max_s),
        ("servesim:emulator_write_lateness_seconds_total", "counter",
         "Sum of stream write delays.", stats.write_late_sum_s),
        ("servesim:emulator_writes_total", "counter", "Stream writes.", stats.writes),
        ("servesim:emulator_simulated_seconds", "gauge",
         "Simulated end time of the last iteration.", stats.sim_s),
    )
    for name, kind, help_text, value in simple:
        _metric(out, name, kind, help_text, [f"{name}{{{labels}}} {float(value):g}"])
    _metric(out, "servesim:iteration_tokens_total", "histogram",
            "Tokens (prefill and decode) per iteration.",
            stats.iteration_hist.lines("servesim:iteration_tokens_total", labels))
    kv = cfg.kv
    cache = f'block_size="{kv.block_tokens}",num_gpu_blocks="{kv.blocks}"'
    _metric(out, "servesim:cache_config_info", "gauge", "KV cache configuration.",
            [f"servesim:cache_config_info{{{labels},{cache}}} 1"])
    chunk = cfg.chunk_limit if cfg.chunk_limit is not None else 0
    engine_info = (f'batching="{_label(cfg.batching)}",max_num_batched_tokens="{cfg.token_budget}",'
                   f'max_num_seqs="{cfg.max_batch_size}",chunk_tokens="{chunk}",'
                   f'max_model_len="{engine.max_total_tokens}",time_scale="{engine.scale:g}"')
    _metric(out, "servesim:engine_config_info", "gauge", "Engine configuration.",
            [f"servesim:engine_config_info{{{labels},{engine_info}}} 1"])
    return "\n".join(out) + "\n"
