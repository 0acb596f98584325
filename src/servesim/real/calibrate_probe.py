"""The probes of ``servesim calibrate``: streamed requests of exact prompt lengths to a live
OpenAI-compatible server, one at a time, B at once, or B running while another arrives.

Prompts are ``text.synthetic_prompt`` texts, each with its own salt so that a prefix cache never
serves one probe from another, resized until the server's ``/tokenize`` counts the length asked
for (a server without it is taken at the emulator's word count). The prompt length recorded is
the server's own (``usage.prompt_tokens``) when it reports one. Every request has a timeout, and
the number of requests is fixed by the plan, so a probe run is bounded.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import httpx

from servesim.real.client import Client, Outcome, probe_models, tokenize_count
from servesim.real.text import synthetic_prompt

__all__ = ["ProbeResult", "Prober", "open_prober"]

_RESIZE_TRIES = 6


@dataclass
class ProbeResult:
    """One probe request: its prompt length (server's count when known), the output length
    asked for, when it was sent and its tokens' times (seconds on the prober's clock)."""

    prompt_tokens: int
    output_tokens: int
    sent_s: float
    token_times_s: list[float]
    status: str
    error: str

    @property
    def ok(self) -> bool:
        return self.status == "finished" and len(self.token_times_s) == self.output_tokens

    @property
    def ttft_s(self) -> float:
        return self.token_times_s[0] - self.sent_s if self.token_times_s else math.nan


class Prober:
    """Sends probes through one ``Client``; ``clock`` is seconds since the prober started."""

    def __init__(self, http: httpx.AsyncClient, model: str, timeout_s: float) -> None:
        self.http = http
        self.model = model
        self.start = time.perf_counter()
        self.client = Client(http, model, "completions", timeout_s, self.clock)
        self.salt = 0
        self.tokenize = True     # until the server shows it has no /tokenize
        self.mismatches = 0      # prompts whose server count differs from the length asked
        self.sent = 0

    def clock(self) -> float:
        return time.perf_counter() - self.start

    async def prompt(self, n_tokens: int) -> str:
        """A fresh prompt the server counts as ``n_tokens`` tokens (as near as it gets)."""
        self.salt += 1
        words = n_tokens
        text = synthetic_prompt(words, self.salt)
        for _ in range(_RESIZE_TRIES if self.tokenize else 0):
            count = await tokenize_count(self.http, self.model, "completions", text)
            if count is None:
                self.tokenize = False
                break
            if count == n_tokens:
                break
            words = max(1, words + n_tokens - count)
            text = synthetic_prompt(words, self.salt)
        return text

    async def one(self, prompt_tokens: int, output_tokens: int) -> ProbeResult:
        """Send one probe and wait for its answer."""
        text = await self.prompt(prompt_tokens)
        out = Outcome()
        await self._send(text, output_tokens, out)
        return self._result(prompt_tokens, output_tokens, out)

    async def _send(self, text: str, output_tokens: int, out: Outcome) -> None:
        self.sent += 1
        await self.client.send(text, output_tokens, out)

    def _result(self, asked: int, output_tokens: int, out: Outcome) -> ProbeResult:
        prompt = out.prompt_tokens_server if out.prompt_tokens_server > 0 else asked
        self.mismatches += prompt != asked
        return ProbeResult(prompt, output_tokens, out.sent_s, out.token_times_s(), out.status,
                           out.error)

    async def batch(self, prompt_tokens: int, output_tokens: int, size: int) -> list[ProbeResult]:
        """``size`` probes sent at once, each with its own prompt of the same length."""
        texts = [await self.prompt(prompt_tokens) for _ in range(size)]
        outs = [Outcome() for _ in range(size)]
        await asyncio.gather(*(self._send(t, output_tokens, o)
                               for t, o in zip(texts, outs, strict=True)))
        return [self._result(prompt_tokens, output_tokens, o) for o in outs]

    async def mixed(self, decoders: int, decoder_prompt: int, decoder_output: int,
                    probe_prompt: int, probes: int) -> tuple[list[ProbeResult], list[ProbeResult]]:
        """``decoders`` long requests; once each streams, ``probes`` one-token requests of
        ``probe_prompt`` tokens, one after another. Returns (decoders, probes)."""
        texts = [await self.prompt(decoder_prompt) for _ in range(decoders)]
        probe_texts = [await self.prompt(probe_prompt) for _ in range(probes)]
        outs = [Outcome() for _ in range(decoders)]
        tasks = [asyncio.ensure_future(self._send(t, decoder_output, o))
                 for t, o in zip(texts, outs, strict=True)]
        results = []
        try:
            while not all(len(o.chunk_times_s) >= 3 or o.status for o in outs):
                await asyncio.sleep(0.002)
            for text in probe_texts:
                out = Outcome()
                await self._send(text, 1, out)
                results.append(self._result(probe_prompt, 1, out))
                # Let the decoders run a few steps alone between probes.
                before = len(outs[0].chunk_times_s)
                while len(outs[0].chunk_times_s) < before + 2 and not outs[0].status:
                    await asyncio.sleep(0.002)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return [self._result(decoder_prompt, decoder_output, o) for o in outs], results


async def open_prober(endpoint: str, model: str | None, timeout_s: float
                      ) -> tuple[httpx.AsyncClient, Prober]:
    """An HTTP client on ``endpoint`` and a prober for ``model`` (default: the first model the
    server lists). Raises ConfigError on ``--endpoint`` if the server does not answer."""
    # An OpenAI-style base URL ending in /v1 names the same server.
    base = endpoint.rstrip("/").removesuffix("/v1")
    http = httpx.AsyncClient(base_url=base,
                             timeout=httpx.Timeout(timeout_s, connect=10.0),
                             limits=httpx.Limits(max_connections=256,
                                                 max_keepalive_connections=256))
    try:
        models = await probe_models(http, endpoint)
    except BaseException:
        await http.aclose()
        raise
    name = model if model is not None else str(models[0].get("id", ""))
    return http, Prober(http, name, timeout_s)
