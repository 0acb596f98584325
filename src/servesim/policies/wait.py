"""WAIT and Nested WAIT: threshold batching under a KV memory limit (Ao, Luo, Simchi-Levi, Wang).

Both policies sort the requests in the engine into *groups* and *stages*:

- **WAIT** (known types): a group is a request class (``Requests.class_id``); stage 0 is the
  queue of a class, and a running request that has generated k tokens is at decode stage k + 1.
  A class is *eligible* when its queue holds at least its threshold n_j. An iteration takes
  min(n_j, n_jk) requests from every stage of the class: n_j new prompts from the queue if it is
  eligible, and at most n_j of the running ones at each decode stage (oldest first).
- **Nested WAIT** (unknown output lengths): a group is a segment of output progress, with
  boundaries a_1 < a_2 < ...; every request enters segment 1 through the queue, and a survivor
  that has generated a_(s-1) tokens waits at the entry of segment s. Gate s is met when its entry
  holds at least n_s requests; an iteration opens the largest prefix of segments whose gates are
  all met and takes min(n_s, n_sk) requests from every stage.

Choices the reference leaves open, made here and documented in docs/architecture.md:

- a request past the entry of its group keeps moving every iteration (at most n per stage), so
  a cohort once started never holds KV memory while it waits for new arrivals;
- the policy never idles the engine: if the rule above serves nothing while requests wait, the
  gate with the largest inventory/threshold ratio opens anyway (otherwise the last requests of a
  run, below every threshold, would never finish);
- the oldest running request is never held at a gate (Nested WAIT), so it always progresses,
  as the engine never preempts it unless it runs alone;
- prefills are chunked within the token budget after the decode tokens (decode-first, as
  Sarathi), and the engine's KV check and preemption apply unchanged.

Practical thresholds: n_g = B * rho_g / L_g, rounded down to whole requests (at least 1), so
the fluid batch stays within the memory B was sized for. For WAIT, g = j,
rho_j = lambda_j / sum(lambda) and L_j = l'_j + 1 (the reference's rule). For Nested WAIT, which
the reference gives no practical rule for, rho_s = P(D > a_(s-1)) / sum_s P(D > a_(s-1)) (the
share of arrivals that reach segment s) and L_s = E[min(D, a_s) - a_(s-1) | D > a_(s-1)] (+1 in
segment 1 for the prefill), the iterations a request spends in the segment. The rates, mean
lengths and output survival are those of the run's requests. B defaults to the KV capacity
divided by the mean KV a request holds while present, sum_j rho_j (l_j + l'_j/2).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.policies.batching import Policy, StepPlan, _chunk

__all__ = ["NestedWait", "Wait", "practical_thresholds"]


def practical_thresholds(shares: np.ndarray, iterations: np.ndarray,
                         budget_B: float) -> np.ndarray:
    """n_g = B * rho_g / L_g with rho_g = shares_g / sum(shares); groups with no share get 1."""
    shares = np.asarray(shares, dtype=float)
    rho = shares / shares.sum()
    return np.where(rho > 0, budget_B * rho / np.asarray(iterations, dtype=float), 1.0)


def _whole(values: Any) -> list[int]:
    # Rounding down keeps the fluid batch within the memory B was sized for.
    return [max(1, math.floor(v + 1e-9)) for v in values]


def _default_budget(config: Any, mean_kv_tokens: float) -> float:
    kv = config.kv
    if kv.blocks >= 1 << 40:
        raise ConfigError("engine.wait.memory_budget", None,
                          "a number > 0: the KV cache is unlimited, so B cannot be derived "
                          "from it")
    capacity = (kv.blocks - kv.watermark_blocks) * kv.block_tokens
    return capacity / max(mean_kv_tokens, 1.0)


class _Threshold(Policy):
    """The stage bookkeeping both policies share; subclasses say what a group is."""

    chunked = True
    explicit_decoders = True

    def __init__(self) -> None:
        self.n: list[int] = []

    # -- what subclasses define -----------------------------------------------------------
    def group(self, req: Any) -> int:  # pragma: no cover - interface
        """The group of a waiting request (its class, or segment 0)."""
        raise NotImplementedError

    def position(self, req: Any) -> tuple[int, bool]:  # pragma: no cover - interface
        """A decoder's group and whether it sits at that group's entry (gated)."""
        raise NotImplementedError

    def open_gates(self, entry: Counter) -> set[int]:  # pragma: no cover - interface
        """The groups whose entries may advance, from the entry inventories."""
        raise NotImplementedError

    def queued(self, waiting: list) -> Counter:
        """The waiting requests per group."""
        return Counter(self.group(r) for r in waiting)

    # -- the plan ---------------------------------------------------------------------------
    def plan(self, view: Any) -> StepPlan:
        waiting = list(view.waiting)
        entry = self.queued(waiting)
        gated: dict[int, list] = defaultdict(list)
        stages: dict[tuple[int, int], list] = defaultdict(list)
        decoders = view.decoders
        # The oldest running request is never held at a gate: gated requests keep their KV,
        # and with recompute preemption the requests behind them could otherwise take turns
        # evicting each other forever (the engine spares the oldest from preemption likewise).
        head = view.running[0] if view.running else None
        for r in decoders:
            g, at_entry = self.position(r)
            if at_entry and r is not head:
                gated[g].append(r)
                entry[g] += 1
            else:
                stages[(g, r.generated)].append(r)
        gates = self.open_gates(entry)
        plan = self._build(view, decoders, waiting, gated, stages, gates)
        if plan.decode or plan.chunks or not (waiting or gated):
            return plan
        # Nothing moves: open the fullest gate rather than idle below every threshold.
        fullest = max((g for g in entry if entry[g]), key=lambda g: entry[g] / self.n[g])
        return self._build(view, decoders, waiting, gated, stages, gates | {fullest})

    def _build(self, view: Any, decoders: list, waiting: list, gated: dict, stages: dict,
               gates: set[int]) -> StepPlan:
        chosen: list = []
        for (g, _), reqs in stages.items():
            chosen += reqs[: self.n[g]]
        for g in gates:
            chosen += gated.get(g, [])[: self.n[g]]
        order = {id(r): i for i, r in enumerate(decoders)}
        chosen.sort(key=lambda r: order[id(r)])
        chosen = chosen[: view.budget]
        B = view.block_tokens
        need = sum(1 for r in chosen if r.computed % B == 0)
        chunks: list = []
        self._prefill(view, waiting, gates, view.budget - len(chosen),
                      view.free_blocks - need, chunks)
        return StepPlan(len(chosen), chunks, decoders=chosen)

    def _prefill(self, view: Any, waiting: list, gates: set[int], left: int, avail: int,
                 chunks: list) -> None:
        """Chunks for running prefills first, then up to n_g admissions per open gate (FCFS
        within the gate, stopping at the first request memory or budget cannot take).

        A prefill split over several iterations stays at stage 0 until it completes; n_g
        counts the prompts a gate admits per iteration, as in the unchunked model where a
        prefill takes one iteration."""
        B, limit = view.block_tokens, view.chunk_limit
        started: Counter = Counter()
        for r in view.prefilling:
            if left <= 0:
                return
            x, avail = _chunk(r, left, avail, True, limit, B)
            if x <= 0:
                return
            chunks.append((r, x))
            left -= x
        avail -= view.watermark_blocks
        room = view.max_batch - view.n_running
        for r in waiting:
            g = self.group(r)
            if g not in gates or started[g] >= self.n[g]:
                continue
            if left <= 0 or room <= 0:
                return
            x, avail = _chunk(r, left, avail, True, limit, B)
            if x <= 0:
                return
            chunks.append((r, x))
            started[g] += 1
            left -= x
            room -= 1


class Wait(_Threshold):
    """WAIT: one group per request class, thresholds n_j (``engine.wait``)."""

    name = "wait"

    def prepare(self, config: Any, requests: Any) -> None:
        self.type_of = np.asarray(requests.class_id, dtype=np.int64)
        k = len(requests.class_names)
        th = config.wait.thresholds
        if th == "practical":
            counts = np.bincount(self.type_of, minlength=k).astype(float)
            out = _class_means(requests.output_tokens, self.type_of, k)
            prompt = _class_means(requests.prompt_tokens, self.type_of, k)
            budget = config.wait.memory_budget
            if budget is None:
                rho = counts / max(counts.sum(), 1.0)
                budget = _default_budget(config, float(rho @ (prompt + out / 2)))
            th = practical_thresholds(counts if counts.sum() else np.ones(k), out + 1, budget)
        elif len(th) != k:
            names = ", ".join(requests.class_names)
            raise ConfigError("engine.wait.thresholds", list(th),
                              f"{k} number(s), one per request class ({names})")
        self.n = _whole(th)

    def group(self, req: Any) -> int:
        return int(self.type_of[req.id])

    def position(self, req: Any) -> tuple[int, bool]:
        return int(self.type_of[req.id]), False

    def open_gates(self, entry: Counter) -> set[int]:
        return {g for g, count in entry.items() if count >= self.n[g]}


def _class_means(values: np.ndarray, cls: np.ndarray, k: int) -> np.ndarray:
    total = np.bincount(cls, weights=np.asarray(values, float), minlength=k)
    count = np.bincount(cls, minlength=k)
    return np.divide(total, count, out=np.zeros(k), where=count > 0)


class NestedWait(_Threshold):
    """Nested WAIT: groups are segments of output progress (``engine.wait.segments``)."""

    name = "nested_wait"

    def prepare(self, config: Any, requests: Any) -> None:
        self.bounds = [0, *config.wait.segments]
        m = len(self.bounds)
        th = config.wait.thresholds
        if th == "practical":
            out = np.asarray(requests.output_tokens, dtype=float)
            if not len(out):
                out = np.ones(1)
            shares, iters = segment_shares(out, config.wait.segments)
            budget = config.wait.memory_budget
            if budget is None:
                mean_kv = float(np.mean(requests.prompt_tokens)) if len(requests) else 1.0
                budget = _default_budget(config, mean_kv + float(out.mean()) / 2)
            th = practical_thresholds(shares, iters, budget)
        elif len(th) != m:
            raise ConfigError("engine.wait.thresholds", list(th),
                              f"{m} number(s), one per segment (segments has {m - 1} "
                              "boundaries)")
        self.n = _whole(th)

    def group(self, req: Any) -> int:
        return 0

    def queued(self, waiting: list) -> Counter:
        # Every waiting request is at segment 0: a count, not a pass over the queue, per plan.
        return Counter({0: len(waiting)})

    def position(self, req: Any) -> tuple[int, bool]:
        k = req.generated
        # bisect on the plain list: called per decoder per iteration, where np.searchsorted's
        # list-to-array conversion dominates.
        s = bisect.bisect_right(self.bounds, k) - 1
        return s, s > 0 and k == self.bounds[s]

    def open_gates(self, entry: Counter) -> set[int]:
        gates: set[int] = set()
        for s in range(len(self.bounds)):
            if entry[s] < self.n[s]:
                break
            gates.add(s)
        return gates


def segment_shares(outputs: np.ndarray, segments: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each segment s: P(D > a_(s-1)) and E[min(D, a_s) - a_(s-1) | D > a_(s-1)]
    (+1 in segment 1 for the prefill iteration), from a sample of output lengths D."""
    d = np.asarray(outputs, dtype=float)
    lows = [0, *segments]
    highs = [*segments, math.inf]
    shares, iters = [], []
    for s, (a, b) in enumerate(zip(lows, highs, strict=True)):
        alive = d[d > a]
        shares.append(len(alive) / len(d))
        stay = float(np.mean(np.minimum(alive, b) - a)) if len(alive) else 1.0
        iters.append(stay + (1.0 if s == 0 else 0.0))
    return np.array(shares), np.array(iters)
