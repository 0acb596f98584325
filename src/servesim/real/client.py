"""The HTTP side of ``observe``: one streamed request to an OpenAI-compatible server, its
server-sent events read as they arrive, and the probes around a run (models, tokenize, metrics).

A request's ``Outcome`` is filled in while its stream runs, so a run interrupted mid-way keeps
what each request had received. Statuses: "finished" (the stream ended with ``[DONE]`` or a
finish reason), "failed" (an HTTP error, an error event, a malformed event, or a stream closed
before its end, with what arrived kept), "timeout" (the request outlived ``timeout_s``),
"refused" (the connection was refused or reset before any token arrived).

Output length is forced the way vLLM accepts: ``max_tokens`` and ``min_tokens`` both set to the
requested count, plus ``ignore_eos``. Token counts come from the final ``usage`` chunk
(``stream_options.include_usage``); each chunk that carries text is taken to carry at least one
token, and ``spread_tokens`` places any tokens the chunks do not account for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from servesim.core.errors import ConfigError

__all__ = ["API_PATHS", "Client", "Outcome", "get_metrics", "parse_metrics", "pick_model",
           "probe_models", "spread_tokens", "tokenize_count", "warm_connections"]

API_PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
ERROR_BODY_CHARS = 300
"""Characters of an error response's body kept in the record's ``error``."""


@dataclass
class Outcome:
    """What one request gave, filled in as its stream arrives.

    Attributes:
        status: "" while in flight, then finished, failed, timeout or refused.
        error: "" when none, else one line saying what went wrong.
        http_status: the response's status code (0: no response).
        sent_s: when the request was sent, seconds from the run start (NaN: not yet).
        chunk_times_s: arrival time of every chunk that carried text.
        chunk_chars: characters of text each of those chunks carried.
        completion_tokens: ``usage.completion_tokens`` (-1: the server did not say).
        prompt_tokens_server: ``usage.prompt_tokens`` (-1: the server did not say).
        finish_reason: the last finish reason the server gave ("" none).
    """

    status: str = ""
    error: str = ""
    http_status: int = 0
    sent_s: float = float("nan")
    chunk_times_s: list[float] = field(default_factory=list)
    chunk_chars: list[int] = field(default_factory=list)
    completion_tokens: int = -1
    prompt_tokens_server: int = -1
    finish_reason: str = ""

    def token_times_s(self) -> list[float]:
        """Every output token's arrival time (``spread_tokens`` over the chunks)."""
        n = self.completion_tokens if self.completion_tokens >= 0 else len(self.chunk_times_s)
        return spread_tokens(self.chunk_times_s, self.chunk_chars, n)


def spread_tokens(times_s: list[float], chars: list[int], n_tokens: int) -> list[float]:
    """``n_tokens`` token times from the chunks that carried text (``times_s``, ``chars``).

    One token per chunk when the counts agree (vLLM streams one chunk per engine step, one
    token each). With more tokens than chunks, every chunk keeps one and the rest are shared
    out in proportion to each chunk's text length (largest remainders first), since a chunk
    that carried more text most likely carried more tokens. With fewer tokens than chunks the
    chunks with the least text are dropped (a token can decode to several chunks only in
    servers that split text). No chunk at all: no token time is known, the list is empty.
    """
    k = len(times_s)
    if k == 0 or n_tokens <= 0:
        return []
    if n_tokens == k:
        return list(times_s)
    if n_tokens < k:
        keep = sorted(sorted(range(k), key=lambda i: (-chars[i], i))[:n_tokens])
        return [times_s[i] for i in keep]
    extra = n_tokens - k
    total = sum(chars)
    weights = [c / total for c in chars] if total > 0 else [1.0 / k] * k
    shares = [extra * w for w in weights]
    counts = [1 + int(s) for s in shares]
    left = n_tokens - sum(counts)
    order = sorted(range(k), key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in order[:left]:
        counts[i] += 1
    return [t for t, c in zip(times_s, counts, strict=True) for _ in range(c)]


def _one_line(text: str, limit: int = ERROR_BODY_CHARS) -> str:
    return " ".join(str(text).split())[:limit]


class Client:
    """Streamed requests to one server.

    ``clock()`` gives seconds from the run start; every time recorded is read from it when the
    event is parsed. ``api`` is "completions" or "chat".
    """

    def __init__(self, http: httpx.AsyncClient, model: str, api: str, timeout_s: float,
                 clock: Callable[[], float], vllm_extras: bool = True) -> None:
        self.http = http
        self.model = model
        self.api = api
        self.path = API_PATHS[api]
        self.timeout_s = timeout_s
        self.clock = clock
        self.vllm_extras = vllm_extras

    def body(self, text: str, output_tokens: int) -> dict[str, Any]:
        """The request body: streamed, with the output length forced."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": int(output_tokens),
                                "stream": True, "stream_options": {"include_usage": True}}
        if self.vllm_extras:
            body.update({"min_tokens": int(output_tokens), "ignore_eos": True})
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text
        return body

    async def send(self, text: str, output_tokens: int, out: Outcome) -> None:
        """Send one request and fill ``out`` as its stream arrives; never raises for a server
        or network problem (they become the outcome's status and error)."""
        out.sent_s = self.clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._stream(self.body(text, output_tokens), out)
        except TimeoutError:
            out.status = "timeout"
            out.error = f"no complete answer within {self.timeout_s:g} s " \
                        f"({len(out.chunk_times_s)} chunks received)"
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            out.status = "refused"
            out.error = f"connection failed: {_one_line(e) or type(e).__name__}"
        except (httpx.TransportError, httpx.StreamError) as e:
            out.status = "failed" if out.chunk_times_s else "refused"
            out.error = f"stream closed after {len(out.chunk_times_s)} chunks: " \
                        f"{type(e).__name__} {_one_line(e)}".rstrip()

    async def _stream(self, body: dict[str, Any], out: Outcome) -> None:
        async with self.http.stream("POST", self.path, json=body) as resp:
            out.http_status = resp.status_code
            if resp.status_code >= 400:
                text = (await resp.aread()).decode("utf-8", "replace")
                out.status = "failed"
                out.error = f"HTTP {resp.status_code}: {_one_line(text)}"
                return
            async for line in resp.aiter_lines():
                now = self.clock()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    out.status = "finished"
                    return
                if not self._event(data, now, out):
                    return
        if out.finish_reason:
            out.status = "finished"   # a server that ends the stream without [DONE]
        else:
            out.status = "failed"
            out.error = f"stream closed after {len(out.chunk_times_s)} chunks, before its end"

    def _event(self, data: str, now: float, out: Outcome) -> bool:
        """Record one event; False when it ends the request as failed."""
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            out.status = "failed"
            out.error = f"malformed event: {_one_line(data, 120)}"
            return False
        if not isinstance(event, dict):
            return True
        if "error" in event or event.get("object") == "error":
            out.status = "failed"
            out.error = f"error event: {_one_line(json.dumps(event.get('error', event)))}"
            return False
        usage = event.get("usage")
        if isinstance(usage, dict):
            out.completion_tokens = int(usage.get("completion_tokens", -1) or 0)
            out.prompt_tokens_server = int(usage.get("prompt_tokens", -1) or -1)
        for choice in event.get("choices") or ():
            text = choice.get("text") if self.api == "completions" else \
                (choice.get("delta") or {}).get("content")
            if text:
                out.chunk_times_s.append(now)
                out.chunk_chars.append(len(text))
            if choice.get("finish_reason"):
                out.finish_reason = str(choice["finish_reason"])
        return True


# -- probes around a run --------------------------------------------------------------------------


async def probe_models(http: httpx.AsyncClient, endpoint: str) -> list[dict[str, Any]]:
    """The server's ``GET /v1/models`` list.

    Raises ConfigError on ``--endpoint`` (one line) if the server cannot be reached or does not
    answer like an OpenAI-compatible one.
    """
    expected = "a reachable OpenAI-compatible server answering GET /v1/models"
    try:
        resp = await http.get("/v1/models")
    except httpx.HTTPError as e:
        raise ConfigError("--endpoint", endpoint,
                          f"{expected} ({type(e).__name__}: {_one_line(e, 160)})") from None
    if resp.status_code != 200:
        raise ConfigError("--endpoint", endpoint,
                          f"{expected} (it answered HTTP {resp.status_code})")
    try:
        models = resp.json().get("data")
    except (ValueError, AttributeError):
        models = None
    if not isinstance(models, list) or not models:
        raise ConfigError("--endpoint", endpoint, f"{expected} (no model listed)")
    return [m for m in models if isinstance(m, dict)]


def pick_model(models: list[dict[str, Any]], model: str | None, endpoint: str) -> str:
    """``model`` if the server lists it (or lists no ids), else the first model listed when
    ``model`` is None.

    Raises ConfigError on ``--model`` for a model the server does not list.
    """
    ids = [str(m.get("id")) for m in models if m.get("id") is not None]
    if model is None:
        if not ids:
            raise ConfigError("--model", None, f"a model name: {endpoint} lists none with an id")
        return ids[0]
    if ids and model not in ids:
        raise ConfigError("--model", model, f"a model the server lists: {', '.join(ids)}",
                          choices=ids)
    return model


async def warm_connections(http: httpx.AsyncClient, n: int) -> None:
    """Open ``n`` keep-alive connections before the clock starts, so the first requests do not
    pay for connecting (a few ms each: enough to split requests sent together into two engine
    iterations)."""
    async def one() -> None:
        with contextlib.suppress(httpx.HTTPError):
            await http.get("/v1/models")

    await asyncio.gather(*(one() for _ in range(n)))


async def get_metrics(http: httpx.AsyncClient) -> dict[str, Any] | None:
    """What ``GET /metrics`` says (``parse_metrics``), or None when it does not answer."""
    try:
        resp = await http.get("/metrics")
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    return parse_metrics(resp.text)


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, Any]:
    """The Prometheus text of a server's ``/metrics``: ``config`` (the labels of vLLM's
    ``*_config_info`` gauges, such as the cache config's block size and block count) and
    ``counters`` (every sample whose name ends in ``_total``, summed over labels)."""
    config: dict[str, str] = {}
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0]
        if name.endswith("_config_info"):
            config.update(dict(_LABEL.findall(head[len(name):])))
        elif name.endswith("_total"):
            try:
                counters[name] = counters.get(name, 0.0) + float(value)
            except ValueError:
                continue
    return {"config": config, "counters": counters}


async def tokenize_count(http: httpx.AsyncClient, model: str, api: str, text: str) -> int | None:
    """Tokens the server counts for ``text`` as a prompt (vLLM's ``POST /tokenize``; for chat,
    with the chat template applied), or None when it has no such endpoint."""
    body: dict[str, Any] = {"model": model}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    try:
        resp = await http.post("/tokenize", json=body)
        if resp.status_code != 200:
            return None
        data = resp.json()
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("count"), int):
        return int(data["count"])
    if isinstance(data, dict) and isinstance(data.get("tokens"), list):
        return len(data["tokens"])
    return None
