"""``servesim network``: simulate a network of engines and print per-hop and per-workflow
metrics."""

from __future__ import annotations

COMMANDS: list = []
