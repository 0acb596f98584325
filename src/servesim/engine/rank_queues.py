"""Rank-keyed containers of the fast ordered replica, each O(log n) per change.

Keys are tuples ending with the request id; a request's key in whichever container holds it is
``r.rkey``. The containers present the interfaces the fast replica reads of its plain ones
(a deque for the queue and the swapped requests, a dict for the prefilling requests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from sortedcontainers import SortedList


class RankedQueue:
    """The waiting queue: memory victims of a non-preemptive ordering first (the latest first,
    as the plain engine), then everyone else by key (tier, value, id)."""

    def __init__(self, keyfn: Callable[[Any], tuple], front_victims: bool) -> None:
        self.keyfn = keyfn
        self.front_victims = front_victims
        self.front: list = []   # served from the end
        self.keys = SortedList()
        self.by_id: dict[int, Any] = {}

    def append(self, r) -> None:
        r.rkey = self.keyfn(r)
        self.keys.add(r.rkey)
        self.by_id[r.id] = r

    def appendleft(self, r) -> None:
        if self.front_victims:
            r.rkey = None
            self.front.append(r)
        else:
            self.append(r)

    def popleft(self):
        if self.front:
            return self.front.pop()
        return self.by_id.pop(self.keys.pop(0)[-1])

    def remove(self, r) -> None:
        if r.rkey is None:
            self.front.remove(r)
            return
        self.keys.remove(r.rkey)
        del self.by_id[r.id]

    def head(self):
        if self.front:
            return self.front[-1]
        return self.by_id[self.keys[0][-1]] if self.keys else None

    def __iter__(self) -> Iterator:
        yield from reversed(self.front)
        by_id = self.by_id
        for key in self.keys:
            yield by_id[key[-1]]

    def __len__(self) -> int:
        return len(self.front) + len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.front) or bool(self.keys)


class SwapQueue:
    """Swapped-out requests. Memory victims wait in FIFO order and block admissions (truth value,
    ``[0]`` and ``popleft`` see only them, as the fast replica reads them); priority victims are
    parked by their queue key and block nothing. ``len`` and iteration count both."""

    def __init__(self) -> None:
        self.fifo: deque = deque()
        self.keys = SortedList()
        self.by_id: dict[int, Any] = {}

    def append(self, r) -> None:
        self.fifo.append(r)

    def popleft(self):
        return self.fifo.popleft()

    def __getitem__(self, i: int):
        return self.fifo[i]

    def __bool__(self) -> bool:
        return bool(self.fifo)

    def __len__(self) -> int:
        return len(self.fifo) + len(self.keys)

    def __iter__(self) -> Iterator:
        yield from self.fifo
        for key in self.keys:
            yield self.by_id[key[-1]]

    def park(self, r, key: tuple) -> None:
        r.rkey = key
        self.keys.add(key)
        self.by_id[r.id] = r

    def unpark(self, r) -> None:
        self.keys.remove(r.rkey)
        del self.by_id[r.id]

    def parked_head(self):
        return self.by_id[self.keys[0][-1]] if self.keys else None


class RankedPrefills:
    """Running requests with prefill owed, as the fast replica's dict of them; ``put`` and
    ``take`` (the owner's) keep them in its rank lists, and ``values()`` is a live view in rank
    order."""

    def __init__(self, keys: SortedList, put: Callable[[Any], None],
                 take: Callable[[Any], None]) -> None:
        self.keys = keys
        self.put, self.take = put, take
        self.items: dict[int, Any] = {}

    def __setitem__(self, i: int, r) -> None:
        self.put(r)
        self.items[i] = r

    def __delitem__(self, i: int) -> None:
        self.take(self.items.pop(i))

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def values(self) -> _InOrder:
        return _InOrder(self)


class _InOrder:
    def __init__(self, prefills: RankedPrefills) -> None:
        self.prefills = prefills

    def __iter__(self) -> Iterator:
        items = self.prefills.items
        for key in self.prefills.keys:
            yield items[key[-1]]
