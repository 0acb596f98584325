"""servesim as an OpenAI-compatible server whose tokens stream at simulated times.

An aiohttp application over a ``ClockedEngine`` (``emulator_engine.py``): each completion
request joins the simulated engine when it arrives, and its tokens are sent when the engine's
clock reaches the iteration that produced them. Endpoints:

- ``GET /v1/models`` (the readiness signal), ``GET /health``, ``GET /metrics`` (Prometheus
  text, ``emulator_metrics.py``);
- ``POST /v1/completions`` and ``POST /v1/chat/completions``, streaming (SSE, one chunk per
  token, a usage chunk with ``stream_options.include_usage``, then ``[DONE]``) or not (one JSON
  object with ``usage``);
- ``POST /tokenize`` (``{"prompt": ...}`` or ``{"messages": [...]}`` -> ``count``, ``tokens``,
  ``max_model_len``, as vLLM's).

Prompt tokens are counted by ``real/text.py``'s convention (whitespace-separated words; a chat's
message contents joined, no template). The output has exactly ``max_tokens`` tokens (as with
``ignore_eos``; ``min_tokens`` and ``ignore_eos`` are accepted), finish reason "length";
without ``max_tokens`` its length is drawn from the scenario's workload, finish reason "stop".
A request the engine can never hold (KV cache, ``max_model_len``) gets a 400. The model name is
checked only when one was given to ``start_emulator`` (``--model``); any name is served
otherwise. A client that disconnects (streaming or not) has its request aborted in the engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from aiohttp import web

from servesim.real import openai_format as fmt
from servesim.real.emulator_engine import ClockedEngine, EmulatedRequest
from servesim.real.emulator_metrics import render_metrics

__all__ = ["DEFAULT_MODEL", "EmulatorHandle", "run_emulator_in_thread", "start_emulator"]

DEFAULT_MODEL = "servesim"


def _scenario(scenario: Any) -> Any:
    if isinstance(scenario, str | Path):
        from servesim.scenario import load_scenario

        return load_scenario(scenario)
    return scenario


def _default_model(scenario: Any) -> str:
    """The scenario's model preset (``engine.kv.model``) when it names one, else "servesim"."""
    kv = scenario.source.get("engine", {}).get("kv", {}) if scenario.source else {}
    name = kv.get("model") if isinstance(kv, dict) else None
    return name if isinstance(name, str) and name else DEFAULT_MODEL


def _error(message: str, status: int, kind: str = "BadRequestError",
           param: str | None = None) -> web.Response:
    return web.json_response(fmt.error_body(message, kind, status, param), status=status)


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _Server:
    """The request handlers, over one engine."""

    def __init__(self, engine: ClockedEngine, model: str, strict: bool) -> None:
        self.engine = engine
        self.model = model
        self.strict = strict
        self.closing = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        return app

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.model, "object": "model", "created": int(time.time()),
                "owned_by": "servesim", "root": self.model, "parent": None,
                "max_model_len": self.engine.max_total_tokens}
        return web.json_response({"object": "list", "data": [card]})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.engine.failure is None else 500)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=render_metrics(self.engine, self.model),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
            text = fmt.parse_tokenize(body)
        except fmt.BadRequest as e:
            return _error(e.message, e.status, e.kind, e.param)
        tokens = fmt.token_ids(text)
        return web.json_response({"count": len(tokens),
                                  "max_model_len": self.engine.max_total_tokens,
                                  "tokens": tokens})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    @staticmethod
    async def _json(request: web.Request) -> Any:
        # Whatever the Content-Type says, as vLLM's server: clients often leave it out.
        try:
            return json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise fmt.BadRequest(f"the body is not valid JSON: {e}") from None

    async def _complete(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            c = fmt.parse_completion(await self._json(request), chat)
        except fmt.BadRequest as e:
            return _error(e.message, e.status, e.kind, e.param)
        if self.strict and c.model is not None and c.model != self.model:
            return _error(f"The model `{c.model}` does not exist.", 404, "NotFoundError",
                          "model")
        if self.closing:
            return _error("the server is shutting down", 503, "ServiceUnavailableError")
        if self.engine.failure is not None:
            return _error(self.engine.failure, 500, "InternalServerError")
        output = c.max_tokens if c.max_tokens is not None else self.engine.draw_output_tokens()
        refusal = self.engine.refusal(c.prompt_tokens, output)
        if refusal is not None:
            return _error(refusal, 400, param="max_tokens")
        finish = "length" if c.max_tokens is not None else "stop"
        req = self.engine.submit(c.prompt_tokens, output)
        if c.stream:
            return await self._stream(request, req, c, finish)
        return await self._whole(req, c, finish)

    async def _whole(self, req: EmulatedRequest, c: fmt.Completion,
                     finish: str) -> web.Response:
        try:
            while not (await req.events.get()).finished:
                pass
        except asyncio.CancelledError:
            self.engine.abort(req)
            raise
        if req.sent < req.output_tokens:
            if self.engine.failure is not None:
                return _error(self.engine.failure, 500, "InternalServerError")
            return _error("the server shut down before the request finished", 503,
                          "ServiceUnavailableError")
        rid = fmt.new_id(c.chat)
        return web.json_response(fmt.final_body(rid, c.chat, self.model, c.prompt_tokens,
                                                req.sent, finish))

    async def _stream(self, request: web.Request, req: EmulatedRequest, c: fmt.Completion,
                      finish: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        rid = fmt.new_id(c.chat)
        # Every token's chunk is the same bytes but the last one's: built once per request.
        chunks = (_sse(fmt.role_chunk(rid, self.model)) if c.chat else b"",
                  _sse(fmt.chunk(rid, c.chat, self.model, None)),
                  _sse(fmt.chunk(rid, c.chat, self.model, finish)))
        sent = 0
        try:
            await resp.prepare(request)
            while True:
                event = await req.events.get()
                if event.tokens:
                    await resp.write(_token_bytes(chunks, sent, event.tokens, req.output_tokens))
                    self.engine.note_write(event.sim_s)
                sent += event.tokens
                if event.finished:
                    break
            if sent < req.output_tokens:   # shut down mid-request: no [DONE], the stream ends
                return resp
            if c.include_usage:
                await resp.write(_sse(fmt.usage_chunk(rid, c.chat, self.model,
                                                      c.prompt_tokens, sent)))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionError:   # the client went away
            self.engine.abort(req)
        except asyncio.CancelledError:
            self.engine.abort(req)
            raise
        return resp


def _token_bytes(chunks: tuple[bytes, bytes, bytes], sent: int, n: int, total: int) -> bytes:
    """The SSE bytes of ``n`` tokens after ``sent`` of ``total``: the chat role chunk before
    the first token, the finish reason on the last."""
    first, plain, last = chunks
    ends = sent + n == total
    return (first if sent == 0 else b"") + plain * (n - ends) + (last if ends else b"")


class EmulatorHandle:
    """A running emulator: ``port``, ``url`` (``http://host:port``, the API under ``/v1``),
    ``engine`` (the ``ClockedEngine``), and ``close()``."""

    def __init__(self, runner: web.AppRunner, server: _Server, task: asyncio.Task,
                 host: str, port: int) -> None:
        self._runner = runner
        self._server = server
        self._task = task
        self.engine = server.engine
        self.model = server.model
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop accepting requests, end the streams in flight, stop the engine."""
        if self._server.closing:
            return
        self._server.closing = True
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self.engine.end_all()
        await self._runner.cleanup()


async def start_emulator(scenario: Any, host: str = "127.0.0.1", port: int = 0,
                         time_scale: float = 1.0, model: str | None = None) -> EmulatorHandle:
    """Start serving ``scenario`` (a ``Scenario`` or a path to its TOML file) on ``host:port``
    (port 0: a free one) in the running event loop, with ``time_scale`` wall seconds per
    simulated second. ``model``: the only model name accepted (default: any name, served as the
    scenario's ``engine.kv.model`` or "servesim").

    Raises ConfigError for a bad scenario or time scale; OSError if the port cannot be bound.
    """
    scenario = _scenario(scenario)
    engine = ClockedEngine(scenario, time_scale)
    server = _Server(engine, model or _default_model(scenario), strict=model is not None)
    # A client that disconnects cancels its handler, which aborts its request (as vLLM).
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0,
                           handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    task = asyncio.create_task(engine.run(), name="servesim-emulator-engine")
    return EmulatorHandle(runner, server, task, host, int(bound))


@contextmanager
def run_emulator_in_thread(scenario: Any, host: str = "127.0.0.1", port: int = 0,
                           time_scale: float = 1.0, model: str | None = None,
                           timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``start_emulator`` in a thread of its own (its own event loop) for the block;
    yield the base URL (``http://host:port``). For synchronous callers and tests."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future = concurrent.futures.Future()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            handle = loop.run_until_complete(
                start_emulator(scenario, host, port, time_scale, model))
        except BaseException as e:   # handed to the caller's thread
            started.set_exception(e)
            loop.close()
            return
        started.set_result(handle)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(handle.close())
            loop.close()

    thread = threading.Thread(target=serve, name="servesim-emulator", daemon=True)
    thread.start()
    handle = started.result(timeout=timeout_s)
    try:
        yield handle.url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
