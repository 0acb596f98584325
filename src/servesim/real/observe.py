"""Drive a live OpenAI-compatible server with a scenario's workload and record what happened.

Open loop: the requests are the ones ``servesim.api.simulate`` runs on the same scenario and seed
(``Workload.generate`` on ``Streams(seed)``: the first ``run.requests``, or every arrival before
``run.horizon_s``), each sent at its arrival time measured from the run start. Closed loop
(``servesim.workload.closed``): ``clients`` tasks each send a request at t = 0, then the next one
when the last finishes (or fails), after its think time; request k, the k-th sent, takes the
k-th lengths of the workload's streams and is followed by the k-th think time, as in the
simulator; the run sends ``run.requests`` requests, or those it can send before
``run.horizon_s``.

``concurrency`` caps the requests in flight on the client: an open-loop request that finds the
cap full waits for a slot, and its wait counts in its latency, since it had arrived (its
``sent_s`` says when it left). Every request planned is recorded, whatever became of it. An
interruption (the ``StopFlag`` a signal sets, or a cancelled run) stops sending, and the requests
in flight are recorded as they were: "running" once sent, "waiting" before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.engine.stop import StopFlag
from servesim.real.client import (
    Client,
    Outcome,
    get_metrics,
    pick_model,
    probe_models,
    warm_connections,
)
from servesim.real.prompts import Fitter, PromptFile, server_fitter
from servesim.scenario import Scenario

__all__ = ["FIT_MODES", "ObservedRun", "Record", "observe", "observe_async"]

FIT_MODES = ("auto", "on", "off")
PROBE_TIMEOUT_S = 10.0
STOP_POLL_S = 0.05
WARM_CONNECTIONS = 64
LOOKAHEAD_PER_CLIENT = 4
"""Closed loop to a horizon: prompts prepared ahead per client, so fitting (a server call)
does not delay a client's next request."""

Progress = Callable[[int, int | None], None]


@dataclass
class Record:
    """One planned request and what became of it.

    Attributes:
        id: the request's id (its index in the workload, or the order of sending when closed).
        class_name: its workload class.
        arrival_s: when it arrived, seconds from the run start (NaN: a closed-loop request not
            sent yet).
        prompt_tokens: the prompt length the workload asked for (for a prompt file, the file's
            or the local count).
        output_tokens: the output length asked for.
        text: the prompt text sent.
        fitted_tokens: the server's count of ``text`` from its tokenize endpoint (None: unknown).
        outcome: what the server answered, filled in while it streams.
    """

    id: int
    class_name: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    text: str = ""
    fitted_tokens: int | None = None
    outcome: Outcome = field(default_factory=Outcome)


@dataclass
class ObservedRun:
    """Everything ``observe`` measured, for ``servesim.real.observed`` to tabulate.

    Attributes:
        records: every request planned (open loop) or sent (closed loop), by id.
        scenario, seed: the scenario run and the seed its requests were drawn with.
        endpoint, model, api: where, what and how it was asked.
        end_s: when the last request ended (or the interruption), seconds from the start.
        interrupted: False, or the signal number that stopped the run (None: a plain
            KeyboardInterrupt or cancellation).
        loop: "open" or "closed".
        prompts: where the prompt text came from ("synthetic", "synthetic, fitted", a path).
        server: what the server said about itself (models, metrics before and after).
        load_average: this machine's 1, 5 and 15 minute load at the start and the end.
        started_at: the wall-clock start, UTC, ISO 8601.
        warnings: one line each.
    """

    records: list[Record]
    scenario: Scenario
    seed: int
    endpoint: str
    model: str
    api: str
    end_s: float
    interrupted: int | None | bool
    loop: str
    prompts: str
    server: dict[str, Any]
    load_average: dict[str, list[float]]
    started_at: str
    warnings: list[str]
    concurrency: int
    timeout_s: float


def observe(scenario: Scenario, endpoint: str, **kwargs: Any) -> ObservedRun:
    """``observe_async`` run to completion on a fresh event loop (see it for the arguments)."""
    return asyncio.run(observe_async(scenario, endpoint, **kwargs))


async def observe_async(scenario: Scenario, endpoint: str, *, model: str | None = None,
                        prompts: PromptFile | None = None, api: str = "completions",
                        concurrency: int = 256, timeout_s: float = 600.0, fit: str = "auto",
                        seed: int | None = None, stop: StopFlag | None = None,
                        progress: Progress | None = None, vllm_extras: bool = True,
                        on_ready: Callable[[], None] | None = None) -> ObservedRun:
    """Run ``scenario``'s workload against the server at ``endpoint`` and record every request.

    ``fit``: "on" fits synthetic prompts to the server's tokenizer (its ``/tokenize``), "auto"
    does when the server has that endpoint, "off" never. ``progress(done, total)`` is called as
    requests end (total None when a closed loop runs to a horizon). ``vllm_extras`` adds
    ``min_tokens`` and ``ignore_eos`` to every request. ``on_ready()`` is called once the
    server answered its probes, before the first request is prepared.

    Raises ConfigError (one line) for an unreachable endpoint, a model the server does not
    list when it lists others, ``fit="on"`` without a tokenize endpoint, or bad arguments.
    """
    _check_args(api, concurrency, timeout_s, fit)
    seed = scenario.run.seed if seed is None else seed
    streams = Streams(seed)
    endpoint = endpoint.rstrip("/")
    load_start = list(os.getloadavg())
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    warnings: list[str] = []
    async with httpx.AsyncClient(base_url=endpoint, timeout=PROBE_TIMEOUT_S) as probe_http:
        models = await probe_models(probe_http, endpoint)
        model = pick_model(models, model, endpoint)
        server: dict[str, Any] = {"models": models, "metrics_before": await get_metrics(probe_http)}
        fitter = None if prompts is not None else \
            await server_fitter(probe_http, model, api, fit)
        if on_ready is not None:
            on_ready()
        limits = httpx.Limits(max_connections=concurrency + 4,
                              max_keepalive_connections=concurrency)
        timeout = httpx.Timeout(None, connect=min(timeout_s, PROBE_TIMEOUT_S))
        async with httpx.AsyncClient(base_url=endpoint, limits=limits, timeout=timeout) as http:
            run = _Run(scenario, streams, concurrency, stop, progress, prompts, fitter)
            run.client = Client(http, model, api, timeout_s, run.clock, vllm_extras)
            await warm_connections(http, min(concurrency, WARM_CONNECTIONS))
            await run.execute()
        server["metrics_after"] = await get_metrics(probe_http)
    warnings += run.warnings
    source = str(prompts.path) if prompts is not None else \
        "synthetic, fitted to the server's tokenizer" if fitter is not None else "synthetic"
    return ObservedRun(records=run.records, scenario=scenario, seed=seed, endpoint=endpoint,
                       model=model, api=api, end_s=run.end_s, interrupted=run.interrupted,
                       loop=run.loop, prompts=source, server=server,
                       load_average={"start": load_start, "end": list(os.getloadavg())},
                       started_at=started_at, warnings=warnings, concurrency=concurrency,
                       timeout_s=timeout_s)


def _check_args(api: str, concurrency: int, timeout_s: float, fit: str) -> None:
    if api not in ("completions", "chat"):
        raise ConfigError("--api", api, "completions or chat", choices=["completions", "chat"])
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError("--concurrency", concurrency, "an integer >= 1")
    if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ConfigError("--timeout-s", timeout_s, "a number of seconds > 0")
    if fit not in FIT_MODES:
        raise ConfigError("--fit-prompts", fit, "one of auto, on, off", choices=FIT_MODES)


class _Run:
    """One run's clock, records and loops."""

    def __init__(self, scenario: Scenario, streams: Streams, concurrency: int,
                 stop: StopFlag | None, progress: Progress | None, prompts: PromptFile | None,
                 fitter: Fitter | None) -> None:
        self.scenario, self.streams = scenario, streams
        self.slots = asyncio.Semaphore(concurrency)
        self.stop, self.progress = stop, progress
        self.prompts, self.fitter = prompts, fitter
        self.client: Client | None = None
        self.records: list[Record] = []
        self.warnings: list[str] = []
        self.done = 0
        self.total: int | None = None
        self.t0 = time.monotonic()
        self.end_s = 0.0
        self.interrupted: int | None | bool = False
        self.loop = "open"

    def clock(self) -> float:
        return time.monotonic() - self.t0

    async def execute(self) -> None:
        from servesim.workload.closed import closed_loop_of

        closed = closed_loop_of(self.scenario)
        if closed is None:
            await self._plan_open()
            main = self._open
        else:
            self.loop = "closed"
            await self._plan_closed(closed)
            main = lambda: self._closed(closed)   # noqa: E731
        self._report()
        self.t0 = time.monotonic()
        task = asyncio.ensure_future(main())
        watcher = asyncio.ensure_future(self._watch(task))
        try:
            await task
        except asyncio.CancelledError:
            if self.interrupted is False:
                self.interrupted = None
        finally:
            watcher.cancel()
        self.end_s = self.clock() if self.interrupted is not False else self._last_event_s()
        self._settle()

    async def _watch(self, task: asyncio.Future) -> None:
        """Cancel the run when the stop flag is set (a signal during the run)."""
        if self.stop is None:
            return
        while self.stop.signum is None:
            await asyncio.sleep(STOP_POLL_S)
        self.interrupted = self.stop.signum
        task.cancel()

    # -- open loop -------------------------------------------------------------------------------

    async def _plan_open(self) -> None:
        run = self.scenario.run
        workload = self.scenario.workload
        requests = workload.generate(self.streams, n_requests=run.requests,
                                     horizon_s=run.horizon_s)
        names = workload.class_names
        self.records = [Record(i, names[int(c)], float(a), int(p), int(d)) for i, (a, p, d, c)
                        in enumerate(zip(requests.arrival_s, requests.prompt_tokens,
                                         requests.output_tokens, requests.class_id,
                                         strict=True))]
        self.total = len(self.records)
        # Every prompt is ready before the clock starts: fitting asks the server.
        await asyncio.gather(*(self._prepare(r) for r in self.records))

    async def _open(self) -> None:
        tasks: list[asyncio.Task] = []
        try:
            for rec in self.records:
                delay = rec.arrival_s - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(self._send(rec)))
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            await _cancel_all(tasks)
            raise

    # -- closed loop -----------------------------------------------------------------------------

    async def _plan_closed(self, closed: Any) -> None:
        """Set up the closed loop's draws and prepare its first prompts before the clock
        starts: all of them with ``run.requests``, a lookahead of a few per client with a
        horizon (a background task keeps it filled while the run goes)."""
        run = self.scenario.run
        n = run.requests
        field_name, value = ("run.requests", n) if n is not None else ("run.horizon_s",
                                                                       run.horizon_s)
        self.lengths = closed.length_draws(self.streams, field_name, value)
        self.thinks = _Indexed(closed.think_draws(self.streams))
        self.total = n
        ahead = n if n is not None else LOOKAHEAD_PER_CLIENT * closed.clients
        self.ready: asyncio.Queue[Record] = asyncio.Queue(maxsize=max(1, ahead))
        self.next_k = 0
        while self.next_k < ahead:
            await self.ready.put(await self._next_closed())

    async def _next_closed(self) -> Record:
        k = self.next_k
        self.next_k += 1
        class_id, prompt, output = self.lengths.get(k)
        rec = Record(k, self.scenario.workload.class_names[int(class_id)], math.nan,
                     int(prompt), int(output))
        await self._prepare(rec)
        return rec

    async def _refill(self) -> None:
        while True:
            await self.ready.put(await self._next_closed())

    async def _closed(self, closed: Any) -> None:
        horizon_s = self.scenario.run.horizon_s

        async def client() -> None:
            while not self.ready.empty() or horizon_s is not None:
                if horizon_s is not None and self.clock() >= horizon_s:
                    return
                rec = await self.ready.get()
                rec.arrival_s = self.clock()
                self.records.append(rec)
                await self._send(rec)
                think_s = self.thinks.get(rec.id)
                if think_s > 0:
                    await asyncio.sleep(think_s)

        tasks = [asyncio.ensure_future(client()) for _ in range(closed.clients)]
        if horizon_s is not None:
            tasks.append(asyncio.ensure_future(self._refill()))
        try:
            await asyncio.gather(*tasks[:closed.clients])
        except asyncio.CancelledError:
            await _cancel_all(tasks)
            raise
        await _cancel_all(tasks[closed.clients:])

    # -- one request -----------------------------------------------------------------------------

    async def _prepare(self, rec: Record) -> None:
        from servesim.real.text import synthetic_prompt

        if self.prompts is not None:
            rec.text, rec.prompt_tokens = self.prompts.get(rec.id)
            output = self.prompts.output_tokens(rec.id)
            rec.output_tokens = rec.output_tokens if output is None else output
            if rec.id == len(self.prompts.texts):
                self.warnings.append(f"{len(self.prompts.texts)} prompts in "
                                     f"{self.prompts.path} for more requests: they repeat")
        elif self.fitter is not None:
            rec.text, rec.fitted_tokens = await self.fitter.fit(rec.prompt_tokens, rec.id)
        else:
            rec.text = synthetic_prompt(rec.prompt_tokens, rec.id)

    async def _send(self, rec: Record) -> None:
        assert self.client is not None
        async with self.slots:
            await self.client.send(rec.text, rec.output_tokens, rec.outcome)
        self.done += 1
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _last_event_s(self) -> float:
        ends = [_end_s(r.outcome) for r in self.records]
        return max([0.0, *(e for e in ends if not math.isnan(e))])

    def _settle(self) -> None:
        """Requests cut short by an interruption: "running" once sent, "waiting" before (due,
        not sent: the concurrency cap held them)."""
        self.records.sort(key=lambda r: r.id)
        for rec in self.records:
            out = rec.outcome
            if not out.status:
                out.status = "running" if not math.isnan(out.sent_s) else "waiting"
                out.error = "interrupted before the request ended"
        # A request not due yet when the run stopped never arrived (the simulator's
        # interrupted runs hold the arrived ones too).
        self.records = [r for r in self.records
                        if not math.isnan(r.arrival_s) and r.arrival_s <= self.end_s]


def _end_s(out: Outcome) -> float:
    times = out.chunk_times_s
    return times[-1] if times else out.sent_s


class _Indexed:
    """Draw k of a sequential stream of draws, whatever order the k are asked in."""

    def __init__(self, draws: Any) -> None:
        self.draws = draws
        self.values: list[float] = []

    def get(self, k: int) -> float:
        while len(self.values) <= k:
            self.values.append(float(self.draws.next()))
        return self.values[k]


async def _cancel_all(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

