"""A quick closed-loop probe of a live OpenAI-compatible server (exploration only; the committed
runs come from ``servesim observe``). Run with the project venv's python.

Usage: python probe.py URL CLIENTS REQUESTS [PROMPT_TOKENS] [OUTPUT_TOKENS]
Prints one JSON line: throughput (requests/s, output tokens/s), mean TTFT, mean inter-token gap.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx

from servesim.real.text import synthetic_prompt


async def one(client: httpx.AsyncClient, url: str, salt: int, prompt_tokens: int,
              output_tokens: int) -> dict[str, float]:
    body = {"model": "smollm2-135m", "prompt": synthetic_prompt(prompt_tokens, salt),
            "max_tokens": output_tokens, "min_tokens": output_tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    times: list[float] = []
    usage: dict[str, int] = {}
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                times.append(time.perf_counter() - start)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {"ttft_s": times[0] if times else float("nan"), "e2e_s": time.perf_counter() - start,
            "itl_s": sum(gaps) / len(gaps) if gaps else float("nan"),
            "prompt_tokens_server": usage.get("prompt_tokens", -1),
            "output_tokens_server": usage.get("completion_tokens", -1)}


async def probe(url: str, clients: int, requests: int, prompt_tokens: int,
                output_tokens: int) -> dict[str, float]:
    counter = iter(range(requests))
    results: list[dict[str, float]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for salt in counter:
            results.append(await one(client, url, salt, prompt_tokens, output_tokens))

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    n = len(results)
    return {"clients": clients, "requests": n, "elapsed_s": elapsed,
            "throughput_rps": n / elapsed,
            "output_tok_per_s": sum(r["output_tokens_server"] for r in results) / elapsed,
            "mean_ttft_s": sum(r["ttft_s"] for r in results) / n,
            "mean_itl_s": sum(r["itl_s"] for r in results) / n,
            "mean_e2e_s": sum(r["e2e_s"] for r in results) / n,
            "prompt_tokens_server": sorted({r["prompt_tokens_server"] for r in results})}


def main(argv: list[str]) -> None:
    url, clients, requests = argv[1], int(argv[2]), int(argv[3])
    prompt_tokens = int(argv[4]) if len(argv) > 4 else 128
    output_tokens = int(argv[5]) if len(argv) > 5 else 64
    print(json.dumps(asyncio.run(probe(url, clients, requests, prompt_tokens, output_tokens))))


if __name__ == "__main__":
    main(sys.argv)
