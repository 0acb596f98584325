"""OpenAI-compatible request bodies and response JSON for the emulator.

Parsing turns a ``/v1/completions`` or ``/v1/chat/completions`` body into a ``Completion`` (the
prompt's token count under ``real/text.py``'s convention, the output length, streaming flags) or
raises ``BadRequest`` with the OpenAI error fields. The builders produce the JSON objects of the
OpenAI API as vLLM sends them: one streamed chunk per token (a chat stream opens with a chunk
carrying the assistant role), a usage chunk with ``stream_options.include_usage``, and one
object for a non-streaming answer.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from servesim.real.text import chat_text, count_tokens

__all__ = ["TOKEN_TEXT", "BadRequest", "Completion", "chunk", "error_body", "final_body",
           "new_id", "parse_completion", "parse_tokenize", "role_chunk", "token_ids", "usage",
           "usage_chunk"]

TOKEN_TEXT = " tok"
"""The text of every generated token: one whitespace-separated word, so the output counts back
to its own length under the emulator's token convention."""


class BadRequest(Exception):
    """A request the emulator refuses: HTTP ``status`` with an OpenAI error body."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.kind = kind


def error_body(message: str, kind: str, status: int, param: str | None = None) -> dict:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


@dataclass(frozen=True)
class Completion:
    """What the engine needs from a completion request, and how to answer it."""

    chat: bool
    model: str | None
    prompt_tokens: int
    max_tokens: int | None   # None: draw the length from the scenario's workload
    stream: bool
    include_usage: bool


def _integer(body: Mapping[str, Any], key: str, low: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadRequest(f"{key}: got {value!r}, expected an integer >= {low}", param=key)
    return value


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{key}: got {value!r}, expected true or false", param=key)
    return value


def _prompt_tokens(body: Mapping[str, Any], chat: bool) -> int:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or \
                not all(isinstance(m, Mapping) for m in messages):
            raise BadRequest("messages: expected a non-empty list of message objects",
                             param="messages")
        return count_tokens(chat_text(messages))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]   # a batch of one
    if isinstance(prompt, str):
        return count_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return len(prompt)   # token ids
    raise BadRequest("prompt: expected a string, a list of token ids, or a list of one of "
                     "these (batches of several prompts are not supported)", param="prompt")


def parse_completion(body: Any, chat: bool) -> Completion:
    """Read a completion body. Raises BadRequest (400) for anything the emulator cannot serve
    exactly: a non-object body, a missing or empty prompt, bad lengths or flags, ``n`` > 1."""
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(f"model: got {model!r}, expected a string", param="model")
    prompt_tokens = _prompt_tokens(body, chat)
    if prompt_tokens < 1:
        raise BadRequest("the prompt is empty (0 tokens)", param="messages" if chat else "prompt")
    key = "max_completion_tokens" if chat and body.get("max_tokens") is None else "max_tokens"
    max_tokens = _integer(body, key, 1)
    min_tokens = _integer(body, "min_tokens", 0)
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise BadRequest(f"min_tokens ({min_tokens}) must be at most {key} ({max_tokens})",
                         param="min_tokens")
    n = _integer(body, "n", 1)
    if n is not None and n > 1:
        raise BadRequest(f"n: got {n}, the emulator serves one choice per request", param="n")
    _flag(body, "ignore_eos")   # accepted; the emulator always produces the full length
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise BadRequest("stream_options: expected an object", param="stream_options")
    include_usage = bool(options and _flag(options, "include_usage"))
    return Completion(chat=chat, model=model, prompt_tokens=prompt_tokens,
                      max_tokens=max_tokens, stream=stream, include_usage=include_usage)


def parse_tokenize(body: Any) -> str:
    """The text a ``/tokenize`` body (``prompt`` or ``messages``) counts tokens of."""
    if not isinstance(body, Mapping) or ("prompt" not in body and "messages" not in body):
        raise BadRequest("the body must be a JSON object with a prompt or messages")
    if "messages" in body:
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise BadRequest("messages: expected a list of message objects", param="messages")
        return chat_text(messages)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("prompt: expected a string", param="prompt")
    return prompt


def token_ids(text: str) -> list[int]:
    """Stable ids for the words of ``text`` (a CRC of each word, below 2**17)."""
    return [zlib.crc32(w.encode()) % (1 << 17) for w in text.split()]


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _head(rid: str, chat: bool, model: str, stream: bool) -> dict:
    kind = ("chat.completion.chunk" if stream else "chat.completion") if chat \
        else "text_completion"
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model}


def role_chunk(rid: str, model: str) -> dict:
    """The chunk that opens a chat stream (the assistant's role, no content)."""
    return {**_head(rid, True, model, True), "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
         "finish_reason": None}]}


def chunk(rid: str, chat: bool, model: str, finish: str | None) -> dict:
    """One token's chunk; ``finish`` ("length" or "stop") on the last token."""
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["delta"] = {"content": TOKEN_TEXT}
    else:
        choice["text"] = TOKEN_TEXT
    choice["logprobs"] = None
    choice["finish_reason"] = finish
    return {**_head(rid, chat, model, True), "choices": [choice]}


def usage_chunk(rid: str, chat: bool, model: str, prompt_tokens: int,
                completion_tokens: int) -> dict:
    return {**_head(rid, chat, model, True), "choices": [],
            "usage": usage(prompt_tokens, completion_tokens)}


def final_body(rid: str, chat: bool, model: str, prompt_tokens: int, completion_tokens: int,
               finish: str) -> dict:
    """The whole answer of a non-streaming request."""
    text = TOKEN_TEXT * completion_tokens
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    choice["logprobs"] = None
    choice["finish_reason"] = finish
    return {**_head(rid, chat, model, False), "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens)}
