"""``servesim observe`` against a fake OpenAI-compatible server: errors become records, never
lost results or tracebacks; prompt fitting; the bench importer's checks.

The fake server (aiohttp, in a thread, 127.0.0.1 port 0) decides what to do with a request from
its id, the first word of a synthetic prompt ("r<id>"): ``BEHAVIOURS[id % 5]``. Its tokenizer
counts a prompt's words plus one (a BOS token), and a first word of three or more characters as
two tokens, so unfitted synthetic prompts are always miscounted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiohttp import web

from servesim.cli.main import run_cli
from servesim.real.client import parse_metrics, spread_tokens

BEHAVIOURS = ("ok", "http500", "midway", "slow", "reset")
TOKEN_S = 0.005
SLOW_S = 3.0
TIMEOUT_S = "0.5"


def fake_count(text: str) -> int:
    words = text.split()
    return len(words) + 1 + (1 if words and len(words[0]) >= 3 else 0)


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


class Fake:
    """The fake server's handlers; ``mode`` "mixed" follows BEHAVIOURS, "ok" always streams."""

    def __init__(self, mode: str = "mixed") -> None:
        self.mode = mode
        self.in_flight = 0
        self.most_in_flight = 0
        self.sent = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/v1/chat/completions", self.complete)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "fake", "max_model_len": 4096}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        if self.mode == "plain":
            raise web.HTTPNotFound()
        body = await request.json()
        text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        return web.json_response({"count": fake_count(text)})

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = "messages" in body
        text = body["messages"][0]["content"] if chat else body["prompt"]
        first = text.split()[0]
        rid = int(first[1:]) if first[:1] == "r" and first[1:].isdigit() else 0
        kind = BEHAVIOURS[rid % len(BEHAVIOURS)] if self.mode == "mixed" else "ok"
        self.sent += 1
        if kind == "http500":
            return web.json_response({"error": "boom"}, status=500)
        if kind == "reset":
            request.transport.close()
            return web.Response()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._stream(request, body, chat, text, kind)
        finally:
            self.in_flight -= 1

    async def _stream(self, request: web.Request, body: dict, chat: bool, text: str,
                      kind: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if chat:   # vLLM's first chat chunk names the role and carries no token
            await resp.write(_sse({"choices": [{"delta": {"role": "assistant", "content": ""}}]}))
        n = int(body["max_tokens"])
        for i in range(n):
            if kind == "slow":
                await asyncio.sleep(SLOW_S)
            await asyncio.sleep(TOKEN_S)
            piece = f" w{i}"
            choice = {"delta": {"content": piece}} if chat else {"text": piece}
            choice["finish_reason"] = "length" if i == n - 1 else None
            await resp.write(_sse({"choices": [choice]}))
            if kind == "midway" and i == 1:
                request.transport.close()   # the stream ends after two tokens
                return resp
        await resp.write(_sse({"choices": [], "usage": {
            "prompt_tokens": fake_count(text), "completion_tokens": n}}))
        await resp.write(b"data: [DONE]\n\n")
        return resp


@contextmanager
def fake_server(mode: str = "mixed") -> Iterator[tuple[str, Fake]]:
    fake = Fake(mode)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future = concurrent.futures.Future()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(fake.app(), shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(start())
        started.set_result(runner.addresses[0][1])
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = started.result(timeout=10)
    try:
        yield f"http://127.0.0.1:{port}", fake
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def scenario_file(tmp_path: Path, requests: int = 10, arrival: str | None = None) -> Path:
    arrival = arrival or '{ kind = "poisson", rate_per_s = 40 }'
    path = tmp_path / "scenario.toml"
    path.write_text(f"""
[run]
seed = 3
requests = {requests}

[workload]
arrival = {arrival}
prompt_tokens = {{ kind = "uniform", low = 4, high = 12 }}
output_tokens = {{ kind = "deterministic", value = 4 }}

[engine]
batching = "vllm"
token_budget = 256
max_batch_size = 16

[engine.kv]
blocks = 100
block_tokens = 16

[engine.cost]
kind = "constant"
iteration_ms = 10
""")
    return path


def observe(tmp_path: Path, endpoint: str, *extra: str, requests: int = 10,
            arrival: str | None = None) -> tuple[int, Path]:
    out = tmp_path / "out"
    code = run_cli(["observe", str(scenario_file(tmp_path, requests, arrival)), "--endpoint",
                    endpoint, "--out", str(out), "--quiet", "--json", *extra])
    return code, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_is_one_line_and_exit_2(tmp_path, capsys):
    code, out = observe(tmp_path, f"http://127.0.0.1:{free_port()}")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --endpoint:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists()


def test_every_failure_is_a_record_with_its_error(tmp_path, capsys):
    with fake_server() as (url, _):
        code, out = observe(tmp_path, url, "--timeout-s", TIMEOUT_S, "--fit-prompts", "off")
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(out / "requests.parquet")
    assert sorted(df["id"]) == list(range(10))
    expected = {"ok": "finished", "http500": "failed", "midway": "failed", "slow": "timeout",
                "reset": "refused"}
    for row in df.itertuples():
        kind = BEHAVIOURS[row.id % 5]
        assert row.status == expected[kind], (row.id, row.status, row.error)
        assert (row.error == "") == (kind == "ok"), (row.id, row.error)
    by_kind = {BEHAVIOURS[i % 5]: r for i, r in zip(df["id"], df.itertuples(), strict=True)}
    assert "HTTP 500" in by_kind["http500"].error
    midway = by_kind["midway"]
    assert "stream closed after 2" in midway.error
    assert len(midway.token_times_s) == 2 and midway.first_token_s > midway.arrival_s
    assert midway.finish_s != midway.finish_s   # NaN: it never finished
    ok = by_kind["ok"]
    assert len(ok.token_times_s) == 4 and ok.generated_tokens == 4
    assert ok.finish_s == ok.token_times_s[-1] and ok.e2e_s > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["statuses"] == {"finished": 2, "failed": 4, "timeout": 2, "refused": 2,
                                   "running": 0, "waiting": 0}
    assert summary["completed"] == 2 and summary["complete"] is True
    assert summary["source"] == "observed" and summary["model"] == "fake"
    assert len(summary["load_average"]["start"]) == 3


def test_fitted_prompts_match_the_server_count(tmp_path, capsys):
    with fake_server("ok") as (url, _):
        code, out = observe(tmp_path, url, "--fit-prompts", "on")
    assert code == 0
    df = pd.read_parquet(out / "requests.parquet")
    assert (df["prompt_tokens_server"] == df["prompt_tokens_requested"]).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_token_mismatches"] == 0
    assert "fitted" in summary["prompts"]
    assert "counted differently" not in capsys.readouterr().err


def test_unfitted_prompts_report_mismatches(tmp_path, capsys):
    with fake_server("ok") as (url, _):
        code, out = observe(tmp_path, url, "--fit-prompts", "off")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_token_mismatches"] == 10
    df = pd.read_parquet(out / "requests.parquet")
    # the replayable length is what the server processed
    assert (df["prompt_tokens"] == df["prompt_tokens_server"]).all()
    assert "10 requests' prompts were counted differently" in capsys.readouterr().err


def test_chat_with_real_prompts_cycles_the_file(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"instruction": "say hi", "output_tokens": 2}, {"instruction": "tell me a story"},
            {"instruction": "what is two plus two"}]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with fake_server("ok") as (url, _):
        code, out = observe(tmp_path, url, "--api", "chat", "--prompts", str(prompts))
    assert code == 0
    df = pd.read_parquet(out / "requests.parquet").sort_values("id")
    assert (df["status"] == "finished").all()
    # the role chunk is not a token; a row's output_tokens replaces the workload's length
    assert df["generated_tokens"].tolist() == [2 if i % 3 == 0 else 4 for i in range(10)]
    counts = [fake_count(t) for t in ("say hi", "tell me a story", "what is two plus two")]
    assert df["prompt_tokens"].tolist() == [counts[i % 3] for i in range(10)]
    summary = json.loads((out / "summary.json").read_text())
    assert any("they repeat" in w for w in summary["warnings"])


def test_bad_prompt_file_is_one_line(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "fine"}\n{"other": 1}\n')
    with fake_server("ok") as (url, _):
        code, _ = observe(tmp_path, url, "--prompts", str(prompts))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{prompts}:2:" in err, err


def test_closed_loop_keeps_at_most_clients_in_flight(tmp_path):
    with fake_server("ok") as (url, fake):
        code, out = observe(tmp_path, url, requests=8,
                            arrival='{ kind = "closed", clients = 2, think_s = 0.01 }')
    assert code == 0
    df = pd.read_parquet(out / "requests.parquet")
    assert sorted(df["id"]) == list(range(8)) and (df["status"] == "finished").all()
    assert fake.most_in_flight <= 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loop"] == "closed"


def test_closed_loop_to_a_horizon(tmp_path):
    scenario = scenario_file(tmp_path, 1, '{ kind = "closed", clients = 3 }')
    text = scenario.read_text().replace("requests = 1", "horizon_s = 0.3")
    scenario.write_text(text)
    out = tmp_path / "out"
    with fake_server("ok") as (url, fake):
        code = run_cli(["observe", str(scenario), "--endpoint", url, "--out", str(out), "-q"])
    assert code == 0
    df = pd.read_parquet(out / "requests.parquet")
    assert len(df) == fake.sent >= 3 and sorted(df["id"]) == list(range(len(df)))
    assert (df["status"] == "finished").all() and (df["arrival_s"] < 0.3).all()
    assert fake.most_in_flight <= 3


def test_fit_on_without_tokenize_is_one_line(tmp_path, capsys):
    with fake_server("plain") as (url, fake):
        code, out = observe(tmp_path, url, "--fit-prompts", "on")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --fit-prompts") and err.count("\n") == 1, err
    assert fake.sent == 0


def test_concurrency_cap_holds_requests_on_the_client(tmp_path):
    with fake_server("ok") as (url, fake):
        code, out = observe(tmp_path, url, "--concurrency", "1",
                            arrival='{ kind = "poisson", rate_per_s = 1000 }')
    assert code == 0
    assert fake.most_in_flight == 1
    df = pd.read_parquet(out / "requests.parquet")
    assert (df["status"] == "finished").all()
    assert (df["sent_s"] >= df["arrival_s"]).all()
    assert df["e2e_s"].max() > df["finish_s"].min()   # queued requests' waits count


def test_sigterm_keeps_what_finished(tmp_path):
    with fake_server() as (url, _):
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            code, out = observe(tmp_path, url, "--timeout-s", "30", "--fit-prompts", "off",
                                requests=10)
        finally:
            timer.cancel()
    assert code == 128 + signal.SIGTERM
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["status"] == "interrupted"
    df = pd.read_parquet(out / "requests.parquet")
    assert len(df) == 10                                  # all had arrived by then
    slow = df[df["id"] % 5 == 3]
    assert (slow["status"] == "running").all()            # still streaming when stopped
    assert (df[df["id"] % 5 == 0]["status"] == "finished").all()


# -- vllm bench serve import -----------------------------------------------------------------------


def bench_data() -> dict[str, Any]:
    return {"date": "20260101-000000", "duration": 2.0, "request_rate": "inf",
            "max_concurrency": 2, "model_id": "m", "completed": 2, "failed": 1,
            "input_lens": [10, 12, 9], "output_lens": [3, 4, 0],
            "ttfts": [0.1, 0.2, 0.0], "itls": [[0.05, 0.05], [0.02, 0.02], []],
            "start_times": [100.5, 100.0, 100.2],
            "generated_texts": ["a b c", "d e f g", ""],
            "errors": ["", "", "aiohttp.ClientConnectorError: Cannot connect to host"]}


def test_bench_import_builds_the_schema(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(bench_data()))
    out = tmp_path / "out"
    assert run_cli(["observe", "--import-bench", str(bench), "--out", str(out), "--json"]) == 0
    df = pd.read_parquet(out / "requests.parquet")
    assert df["id"].tolist() == [1, 2, 0]                 # ordered by arrival
    assert df["arrival_s"].tolist() == pytest.approx([0.0, 0.2, 0.5])
    first = df.iloc[0]
    assert first["status"] == "finished" and first["output_tokens"] == 4
    assert list(first["token_times_s"]) == pytest.approx([0.2, 0.2, 0.22, 0.24])
    assert first["ttft_s"] == pytest.approx(0.2)
    assert df.iloc[1]["status"] == "refused" and "Cannot connect" in df.iloc[1]["error"]
    assert df.iloc[2]["e2e_s"] == pytest.approx(0.2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "vllm bench serve" and summary["completed"] == 2
    assert "start_times" in summary["arrival_times"]


@pytest.mark.parametrize("change, where", [
    ({"itls": [[0.1], [0.1]]}, "'itls': 2 entries"),
    ({"ttfts": [0.1, "x", 0.2]}, "'ttfts'[1]"),
    ({"output_lens": None}, "'output_lens'"),
])
def test_malformed_bench_file_is_one_line(tmp_path, capsys, change, where):
    data = {**bench_data(), **change}
    data = {k: v for k, v in data.items() if v is not None}
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(data))
    code = run_cli(["observe", "--import-bench", str(bench), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(bench) in err and where in err, err


def test_bench_file_that_is_not_json(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text("{not json")
    code = run_cli(["observe", "--import-bench", str(bench), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not JSON" in err


# -- pieces -------------------------------------------------------------------------------------


def test_spread_tokens():
    assert spread_tokens([1.0, 2.0], [3, 3], 2) == [1.0, 2.0]
    assert spread_tokens([1.0, 2.0], [1, 7], 5) == [1.0, 2.0, 2.0, 2.0, 2.0]
    assert spread_tokens([1.0, 2.0, 3.0], [2, 0, 2], 2) == [1.0, 3.0]
    assert spread_tokens([], [], 3) == []


def test_parse_metrics():
    text = ('# HELP x\nvllm:cache_config_info{block_size="16",num_gpu_blocks="5824"} 1.0\n'
            'vllm:num_preemptions_total{model_name="m"} 3.0\n')
    parsed = parse_metrics(text)
    assert parsed["config"] == {"block_size": "16", "num_gpu_blocks": "5824"}
    assert parsed["counters"] == {"vllm:num_preemptions_total": 3.0}


def test_fitter_adjusts_each_request_to_its_salt():
    from servesim.real.prompts import Fitter

    calls: list[str] = []

    async def count(text: str) -> int:
        calls.append(text)
        return fake_count(text)

    async def fit_all() -> list[tuple[str, int | None]]:
        fitter = Fitter(count)
        return [await fitter.fit(8, salt) for salt in (5, 123, 7)]

    results = asyncio.run(fit_all())
    assert [got for _, got in results] == [8, 8, 8]
    assert [fake_count(text) for text, _ in results] == [8, 8, 8]
    # one search for the length, then a check (and a step where the salt differs) each
    assert len(calls) < 12
