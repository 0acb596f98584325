"""``servesim theory``: M/G/1 results with predictions (SOAP) for a scenario."""

from __future__ import annotations

COMMANDS: list = []
