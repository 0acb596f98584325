"""Prompt text for ``observe``: synthetic prompts of a requested token count, optionally fitted to
the server's tokenizer, or real prompts read from a JSONL file.

Synthetic prompts are ``servesim.real.text.synthetic_prompt(n, salt=request id)``: n words under
the emulator's convention, distinct per request so that no prefix cache serves one from another.
A real tokenizer counts those words differently, so with fitting (the server's ``POST
/tokenize``) the word count is searched until the server counts exactly the requested tokens:
a binary search on the word count once per distinct length (cached), then a few steps of one
word for each request, whose first word (its salt) may tokenize to a different length.

A prompt file is JSONL, one object per line with the text under ``prompt``, ``instruction`` or
``text`` (``../shared/data/alpacaeval_prompts.jsonl`` has ``instruction``), and optionally
``prompt_tokens`` (a count to fall back on when the server reports none) and ``output_tokens``
(the request's output length, in place of the workload's draw). Request i takes prompt i; with
more requests than prompts they start again from the first (and a warning says so).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError, TraceError, file_error
from servesim.real.text import count_tokens, synthetic_prompt

__all__ = ["TEXT_KEYS", "Fitter", "PromptFile", "load_prompts", "server_fitter"]

TEXT_KEYS = ("prompt", "instruction", "text")
FIT_STEPS = 12
"""One-word steps a request's fit may take from its length's cached word count."""

Counter = Callable[[str], Awaitable[int | None]]


@dataclass(frozen=True)
class PromptFile:
    """Real prompts in file order.

    Attributes:
        path: the file read.
        texts: each prompt's text.
        counts: each prompt's ``prompt_tokens`` from the file (None where absent).
        outputs: each prompt's ``output_tokens`` from the file (None where absent).
    """

    path: Path
    texts: tuple[str, ...]
    counts: tuple[int | None, ...]
    outputs: tuple[int | None, ...] = ()

    def output_tokens(self, i: int) -> int | None:
        """Prompt ``i``'s (cycling) output length from the file, None where it gives none."""
        return self.outputs[i % len(self.texts)] if self.outputs else None

    def get(self, i: int) -> tuple[str, int]:
        """Prompt ``i`` (cycling) and its token count as far as known without a server: the
        file's count, else the emulator's convention."""
        k = i % len(self.texts)
        count = self.counts[k]
        return self.texts[k], count if count is not None else count_tokens(self.texts[k])


def load_prompts(path: str | Path) -> PromptFile:
    """Read a JSONL prompt file.

    Raises TraceError (path:line:column) for a line that is not a JSON object with a non-empty
    text under one of ``TEXT_KEYS``; ConfigError for a missing, unreadable or empty file.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise file_error(str(path), f"cannot read the prompt file: {e}") from None
    texts: list[str] = []
    counts: list[int | None] = []
    outputs: list[int | None] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TraceError(str(path), number, f"not JSON: {e.msg}", column=e.colno) from None
        if not isinstance(row, dict):
            raise TraceError(str(path), number, "expected a JSON object per line")
        key = next((k for k in TEXT_KEYS if isinstance(row.get(k), str) and row[k].strip()),
                   None)
        if key is None:
            raise TraceError(str(path), number, "no prompt text: expected a non-empty string "
                             f"under one of {', '.join(TEXT_KEYS)}")
        texts.append(row[key])
        count = row.get("prompt_tokens")
        counts.append(count if isinstance(count, int) and count > 0 else None)
        output = row.get("output_tokens")
        if output is not None and not (isinstance(output, int) and not isinstance(output, bool)
                                       and output >= 1):
            raise TraceError(str(path), number, f"output_tokens: got {output!r}, expected an "
                             "integer >= 1")
        outputs.append(output)
    if not texts:
        raise file_error(str(path), "the prompt file has no prompts")
    return PromptFile(path, tuple(texts), tuple(counts), tuple(outputs))


class Fitter:
    """Synthetic prompts whose token count, as the server counts it, is the requested one.

    ``count(text)`` asks the server (None: it could not say). ``fit`` returns the text and the
    server's count, which differs from the request only when no word count gives it exactly
    (the closest count at or below it is then used, or the closest above).
    """

    def __init__(self, count: Counter, parallel: int = 8) -> None:
        self._count = count
        self._words: dict[int, int] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(parallel)

    async def count(self, text: str) -> int | None:
        async with self._slots:
            return await self._count(text)

    async def fit(self, n_tokens: int, salt: int) -> tuple[str, int | None]:
        """A prompt for request ``salt`` of ``n_tokens`` server tokens, and its server count."""
        words = await self._cached_words(n_tokens, salt)
        tried: dict[int, int | None] = {}
        for _ in range(FIT_STEPS):
            if words in tried:
                break
            got = await self.count(synthetic_prompt(words, salt))
            tried[words] = got
            if got is None or got == n_tokens:
                break
            step = 1 if got < n_tokens else -1
            if words + step < 1:
                break
            words += step
        best = _closest(tried, n_tokens)
        return synthetic_prompt(best, salt), tried[best]

    async def _cached_words(self, n_tokens: int, salt: int) -> int:
        lock = self._locks.setdefault(n_tokens, asyncio.Lock())
        async with lock:   # one search per length, however many requests share it
            if n_tokens not in self._words:
                self._words[n_tokens] = await self._search(n_tokens, salt)
        return self._words[n_tokens]

    async def _search(self, n_tokens: int, salt: int) -> int:
        """The largest word count whose prompt the server counts at most ``n_tokens`` tokens
        (binary search: more words never make fewer tokens)."""
        lo, hi = 1, max(1, n_tokens)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            got = await self.count(synthetic_prompt(mid, salt))
            if got is None:
                return n_tokens
            if got <= n_tokens:
                lo = mid
            else:
                hi = mid - 1
        return lo


def _closest(tried: dict[int, int | None], n_tokens: int) -> int:
    """The word count whose server count is nearest ``n_tokens``, at or below it first."""
    known = {w: c for w, c in tried.items() if c is not None}
    if not known:
        return next(iter(tried))
    return min(known, key=lambda w: (abs(known[w] - n_tokens), known[w] > n_tokens, w))


async def server_fitter(http: Any, model: str, api: str, fit: str) -> Fitter | None:
    """A fitter asking the server at ``http`` (an ``httpx.AsyncClient``): with ``fit`` "on",
    or "auto" when the server has a tokenize endpoint; None otherwise.

    Raises ConfigError on ``--fit-prompts`` for "on" against a server without one.
    """
    from servesim.real.client import tokenize_count

    if fit == "off":
        return None

    async def count(text: str) -> int | None:
        return await tokenize_count(http, model, api, text)

    if await count("hello world") is None:
        if fit == "on":
            raise ConfigError("--fit-prompts", "on", "a server with a tokenize endpoint "
                              "(POST /tokenize, as vLLM has); use --fit-prompts off")
        return None
    return Fitter(count)
