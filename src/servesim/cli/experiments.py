"""``servesim sweep``, ``servesim query`` and ``servesim report``: sweeps, the results store and
HTML reports."""

from __future__ import annotations

COMMANDS: list = []
