"""Priority preemption and the return of its swapped victims, shared by both ordered engines.

Semantics (``ordered.py`` states them in full): before planning, if the best waiting request
ranks strictly ahead of some preemptible running request and is blocked on a resource a
running request holds (a batch slot, or KV blocks for its whole prefill beside the decoders'
next blocks and the watermark), the fewest victims, worst rank first, whose preemption unblocks
it are preempted at the engine's price; if even all would not, nobody is. A victim swapped out
is parked by rank and blocks no admission; it swaps back in once it ranks ahead of every
waiting request and fits.

An engine supplies the victim search and four primitives: its plain preemption and swap-in, the
blocks its decoders need for their next token, and (for rising ranks) crossing events.
"""

from __future__ import annotations

from typing import Any

from servesim.engine.state import Status


class PriorityPreemption:
    """Mixin over an engine with ``queue`` (``rank_queues.RankedQueue``), ``swapped``
    (``rank_queues.SwapQueue``), ``running``, ``_pcheck`` and ``_now``."""

    preemptive: bool

    # -- what the engine supplies ---------------------------------------------------------------
    def _plain_preempt(self, r: Any) -> None:
        raise NotImplementedError

    def _plain_swap_in(self) -> None:
        raise NotImplementedError

    def _decode_blocks_now(self) -> int:
        raise NotImplementedError

    def _unblocking_victims(self, head: Any, rank: tuple) -> list | None:
        raise NotImplementedError

    def _plan_crossings(self, rank: tuple) -> None:
        """Ranks that rise may cross the head's later; engines with such ranks plan events."""

    def _wait_key(self, r: Any) -> tuple:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _blocked(self, head: Any, freed_blocks: int, freed_need: int, freed_slots: int) -> bool:
        """Whether ``head`` is blocked once victims free these blocks, next-token blocks and
        batch slots."""
        if len(self.running) - freed_slots >= self.max_batch:
            return True
        need = -(-(head.need + head.computed) // self.block_tokens) - head.blocks
        avail = (self.free_blocks + freed_blocks - (self._decode_blocks_now() - freed_need)
                 - self.watermark_blocks)
        return avail < need

    def _priority_preempt(self) -> None:
        if not (self.preemptive and self._pcheck):
            return
        head = self.queue.head()
        if head is None:
            self._pcheck = False
            return
        if not self._blocked(head, 0, 0, 0):
            return   # keep the flag: the head may block later
        self._pcheck = False
        self.priority_scans += 1
        # A preemptive ordering queues memory victims by rank too, so the head has its key.
        rank = head.rkey[:2]
        chosen = self._unblocking_victims(head, rank)
        if chosen is None:
            self._plan_crossings(rank)
            return
        for v in chosen:
            self._preempt_for_priority(v)
        self.waiting = self.queue

    def _preempt_for_priority(self, v: Any) -> None:
        before = v.recomputed
        v.prio += 1
        v.enq_t = self._now
        self._plain_preempt(v)
        v.prio_recomputed += v.recomputed - before
        if v.status == Status.SWAPPED:
            self.swapped.fifo.pop()   # just appended by the plain preemption
            self.swapped.park(v, self._wait_key(v))

    def _swap_in_parked(self) -> None:
        """Bring priority victims back, best rank first, once they rank ahead of every waiting
        request; the plain swap-in does the transfer (its FIFO is empty here)."""
        sw = self.swapped
        while sw.keys and len(self.running) < self.max_batch:
            r = sw.parked_head()
            head = self.queue.head()
            if head is not None and head.rkey < r.rkey:
                return
            key = r.rkey
            sw.unpark(r)
            sw.fifo.append(r)
            self._plain_swap_in()
            if sw.fifo:   # it does not fit yet
                sw.fifo.popleft()
                sw.park(r, key)
                return
