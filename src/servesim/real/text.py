"""The emulator's token convention and synthetic prompt text.

servesim has no tokenizer: the emulator counts a prompt's tokens as its whitespace-separated
words, and a synthetic prompt of n tokens is n distinct short words. Against a real engine the
same text tokenizes differently, so ``observe`` checks every count against the server's own
(``usage`` or its tokenize endpoint) and reports mismatches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Short lowercase words that most BPE vocabularies hold as one token each after a space.
_WORDS = ("the", "time", "day", "way", "man", "world", "life", "hand", "part", "place", "case",
          "week", "point", "home", "water", "room", "area", "money", "story", "fact", "month",
          "lot", "right", "book", "eye", "job", "word", "side", "kind", "head", "house", "friend")


def count_tokens(text: str) -> int:
    """Tokens in ``text`` under the emulator's convention: whitespace-separated words."""
    return len(text.split())


def chat_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of a chat request's messages, as the emulator counts it (contents joined)."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content", "")
        if isinstance(content, list):  # the content-parts form: keep the text parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        parts.append(str(content))
    return " ".join(parts)


def synthetic_prompt(n_tokens: int, salt: int = 0) -> str:
    """A prompt of ``n_tokens`` words under the emulator's convention, distinct per ``salt``
    (a request index) so that an engine's prefix cache cannot serve one prompt from another:
    the first word encodes the salt, the rest cycle through a fixed word list."""
    if n_tokens < 1:
        raise ValueError(f"a prompt needs at least 1 token, got {n_tokens}")
    words = [f"r{salt}"]
    words += [_WORDS[(salt + i) % len(_WORDS)] for i in range(n_tokens - 1)]
    return " ".join(words)
