"""The emulator (``servesim serve``) over HTTP: its OpenAI-compatible endpoints, token timing
against the simulator's schedule, ``/metrics``, bad bodies, disconnects, and the command line.

Every socket is 127.0.0.1 on a free port, and everything has a timeout. Token times are bounded
only loosely, on the side no load can break (tokens are never early); the exact schedule is
checked on a fake clock in ``test_serve_engine.py``."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from serve_cases import TIMEOUT_S, small_scenario
from servesim.engine.reference import ReferenceStepper
from servesim.real.emulator import run_emulator_in_thread, start_emulator
from servesim.workload.requests import Requests


@pytest.fixture(scope="module")
def url():
    with run_emulator_in_thread(small_scenario(), time_scale=1.0) as base:
        yield base


@pytest.fixture()
def client(url):
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as c:
        yield c

# -- the endpoints --------------------------------------------------------------------------------


def _events(lines) -> list:
    out = []
    for line in lines:
        if not line:
            continue
        assert line.startswith("data: ")
        data = line[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "servesim"
    assert client.get("/health").status_code == 200


def test_completion_not_streamed(client):
    r = client.post("/v1/completions", json={"model": "any", "prompt": "a b c d e",
                                            "max_tokens": 7, "ignore_eos": True,
                                            "min_tokens": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert len(body["choices"][0]["text"].split()) == 7
    assert body["choices"][0]["finish_reason"] == "length"


def test_chat_not_streamed_draws_the_length(client):
    r = client.post("/v1/chat/completions", json={
        "messages": [{"role": "system", "content": "x y"}, {"role": "user", "content": "z"}]})
    body = r.json()
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "stop"


def test_completion_streamed_with_usage_and_timing(client):
    n = 6
    start = time.monotonic()
    arrivals = []
    with client.stream("POST", "/v1/completions", json={
            "prompt": "one two three", "max_tokens": n, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data: {") and '"text"' in line:
                arrivals.append(time.monotonic() - start)
    events = _events(lines)
    assert events[-1] == "[DONE]"
    tokens = [e for e in events[:-1] if e["choices"]]
    assert [e["choices"][0]["text"] for e in tokens] == [" tok"] * n
    assert [e["choices"][0]["finish_reason"] for e in tokens] == [None] * (n - 1) + ["length"]
    assert events[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": n,
                                   "total_tokens": 3 + n}
    # The simulator's own schedule for one request on an idle engine. Tokens are never early;
    # how late they are is the machine's load, which the emulator measures.
    scenario = small_scenario()
    ref = ReferenceStepper(Requests.from_lists([0.0], [3], [n]), scenario.engine, scenario.cost)
    ref.run()
    times = ref.reqs[0].token_times
    late_s = _late_max(client)
    assert all(got >= want - 0.002 for got, want in zip(arrivals, times, strict=True))
    assert arrivals[-1] <= times[-1] + late_s + 2.0


def _late_max(client) -> float:
    return _metrics(client)["servesim:emulator_lateness_max_seconds"]


def test_chat_streamed(client):
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hello there you"}], "max_tokens": 4,
            "stream": True}) as r:
        events = _events(r.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert content == [" tok"] * 4
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert not any("usage" in c for c in chunks)


def test_concurrent_requests_under_memory_pressure():
    # A 24-block cache: the requests preempt one another, and each still gets all its tokens.
    with run_emulator_in_thread(small_scenario(blocks=24), time_scale=0.5) as base:
        async def one(c, i):
            r = await c.post("/v1/completions", json={"prompt": " ".join(["w"] * (10 + i)),
                                                       "max_tokens": 20 + i})
            return r.json()["usage"]

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S) as c:
                return await asyncio.gather(*(one(c, i) for i in range(8)))

        usages = asyncio.run(main())
        assert [u["completion_tokens"] for u in usages] == [20 + i for i in range(8)]
        assert [u["prompt_tokens"] for u in usages] == [10 + i for i in range(8)]
        with httpx.Client(base_url=base, timeout=TIMEOUT_S) as c:
            m = _metrics(c)
    assert m["servesim:num_preemptions_total"] > 0
    assert m["servesim:request_success_total"] == 8
    assert m["servesim:num_requests_running"] == 0


def test_tokenize(client):
    body = client.post("/tokenize", json={"prompt": "a b  c"}).json()
    assert body["count"] == 3 and len(body["tokens"]) == 3
    assert client.post("/tokenize", json={"messages": [{"content": "a"}]}).json()["count"] == 1


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _metrics(client) -> dict[str, float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found: dict[str, float] = {}
    for line in r.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \S+ .+$", line)
            continue
        m = _SAMPLE.match(line)
        assert m, line
        if m.group(2) is None or not re.search(r"[{,]le=", m.group(2)):
            found[m.group(1)] = float(m.group(3))
    return found


def test_metrics_parse(client):
    client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
    m = _metrics(client)
    for name in ("servesim:num_requests_running", "servesim:num_requests_waiting",
                 "servesim:kv_cache_usage_perc", "servesim:num_preemptions_total",
                 "servesim:iteration_tokens_total_count", "servesim:iteration_tokens_total_sum",
                 "servesim:emulator_lateness_seconds", "servesim:emulator_lateness_max_seconds",
                 "servesim:engine_config_info"):
        assert name in m
    assert m["servesim:iteration_tokens_total_count"] >= 3
    assert 0 <= m["servesim:kv_cache_usage_perc"] <= 1


@pytest.mark.parametrize("path,body", [
    ("/v1/completions", b"{not json"),
    ("/v1/completions", b"[1, 2]"),
    ("/v1/completions", b'{"max_tokens": 3}'),
    ("/v1/completions", b'{"prompt": "", "max_tokens": 3}'),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": "3"}'),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": 0}'),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": 2, "min_tokens": 3}'),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": 2, "n": 2}'),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": 2, "stream": "yes"}'),
    ("/v1/completions", b'{"prompt": "a", "max_tokens": 100000}'),
    ("/v1/chat/completions", b'{"messages": [], "max_tokens": 2}'),
    ("/tokenize", b'{"text": "a"}'),
])
def test_bad_bodies_get_400_json(client, path, body):
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 400 and err["type"] == "BadRequestError" and err["message"]


def test_a_body_without_content_type_is_read(client):
    r = client.post("/v1/completions", content=b'{"prompt": "a b", "max_tokens": 1}',
                    headers={"content-type": "text/plain"})
    assert r.json()["usage"]["total_tokens"] == 3


def test_unknown_model_is_404_only_with_a_named_model():
    with run_emulator_in_thread(small_scenario(), model="m1") as base, \
            httpx.Client(base_url=base, timeout=TIMEOUT_S) as c:
        assert c.get("/v1/models").json()["data"][0]["id"] == "m1"
        r = c.post("/v1/completions", json={"model": "m2", "prompt": "a", "max_tokens": 1})
        assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"
        r = c.post("/v1/completions", json={"model": "m1", "prompt": "a", "max_tokens": 1})
        assert r.status_code == 200


def _wait_for(client, name: str, value: float) -> dict[str, float]:
    deadline = time.monotonic() + TIMEOUT_S
    while (m := _metrics(client))[name] < value:
        assert time.monotonic() < deadline, f"{name} stayed at {m[name]}, expected {value}"
        time.sleep(0.02)
    return m


def test_client_disconnect_aborts_the_request(client):
    before = _metrics(client)
    with client.stream("POST", "/v1/completions", json={
            "prompt": "a b", "max_tokens": 500, "stream": True}) as r:
        for line in r.iter_lines():
            if line:
                break   # leave after the first token
    m = _wait_for(client, "servesim:request_aborted_total",
                  before["servesim:request_aborted_total"] + 1)
    assert m["servesim:request_success_total"] == before["servesim:request_success_total"]
    with httpx.Client(base_url=client.base_url, timeout=0.1) as impatient, \
            pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/completions", json={"prompt": "a", "max_tokens": 500})
    m = _wait_for(client, "servesim:request_aborted_total",
                  before["servesim:request_aborted_total"] + 2)
    assert m["servesim:num_requests_running"] == 0 and m["servesim:kv_cache_usage_perc"] == 0
    r = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
    assert r.json()["usage"]["completion_tokens"] == 2

def test_a_broken_engine_answers_500_not_a_hang():
    async def main():
        handle = await start_emulator(small_scenario())
        try:
            def broken(t):
                raise RuntimeError("boom")

            handle.engine.engine.step = broken
            async with httpx.AsyncClient(base_url=handle.url, timeout=TIMEOUT_S) as c:
                r = await c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
                assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
                assert (await c.get("/health")).status_code == 500
                r = await c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
                assert r.status_code == 500
        finally:
            await handle.close()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))

# -- the command line -----------------------------------------------------------------------------


def _write_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text("""
[run]
requests = 10
[workload.arrival]
kind = "poisson"
rate_per_s = 1.0
[workload.prompt_tokens]
kind = "deterministic"
value = 8
[workload.output_tokens]
kind = "deterministic"
value = 5
[engine.cost]
kind = "constant"
iteration_ms = 20
""")
    return path


def _first_line(proc: subprocess.Popen) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(TIMEOUT_S)
    assert got, "the server printed nothing"
    return got[0]


def test_cli_serves_and_stops_on_sigterm(tmp_path):
    cmd = [sys.executable, "-m", "servesim", "serve", str(_write_scenario(tmp_path)),
           "--port", "0", "--time-scale", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(proc)
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as c:
            assert c.get("/v1/models").status_code == 200
            r = c.post("/v1/completions", json={"prompt": "a b", "max_tokens": 3})
            assert r.json()["usage"]["completion_tokens"] == 3
            port = int(url.rsplit(":", 1)[1])
            busy = subprocess.run([*cmd[:-4], "--port", str(port)], capture_output=True,
                                  text=True, timeout=TIMEOUT_S)
            assert busy.returncode == 2
            assert busy.stderr.startswith("error: cannot listen on") and \
                len(busy.stderr.strip().splitlines()) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Traceback" not in err and "stopped (SIGTERM)" in err
