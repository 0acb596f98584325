"""Named random streams, all spawned from one seed; there is no global random state."""

from __future__ import annotations

import zlib

import numpy as np


class Streams:
    """Independent ``numpy.random.Generator`` streams keyed by name.

    A stream depends only on the seed and its name, so adding a new stream (say, predictor noise)
    never shifts the draws of an existing one (say, arrivals).
    """

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            from servesim.core.errors import ConfigError

            raise ConfigError("run.seed", seed, "a non-negative integer")
        self.seed = seed

    def get(self, name: str) -> np.random.Generator:
        """Return a fresh generator for stream ``name``; equal names give equal streams."""
        key = zlib.crc32(name.encode("utf-8"))
        seq = np.random.SeedSequence(self.seed, spawn_key=(key,))
        return np.random.Generator(np.random.PCG64(seq))
