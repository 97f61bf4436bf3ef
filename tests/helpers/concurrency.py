"""Proof that calls ran at the same time, however slow the machine.

A bound on the total time ("three 0.5 s calls in under 1.2 s") depends on the machine being
quiet; a rendezvous does not: each call waits at ``meet()`` until all ``parties`` have arrived,
which only calls in flight together can do. Calls made one after another never all arrive: the
first waits alone and fails after ``timeout_s``, a bound for that failure only (far above any
delay a busy machine causes); the calls after it fail at once.
"""

import asyncio


class Rendezvous:
    def __init__(self, parties: int, timeout_s: float = 30.0) -> None:
        self.parties, self.timeout_s = parties, timeout_s
        self.arrived = 0
        self._all_here = asyncio.Event()
        self._broken = False

    async def meet(self) -> None:
        if self._broken:
            raise AssertionError("an earlier call waited here alone: the calls run one after "
                                 "another")
        self.arrived += 1
        if self.arrived >= self.parties:
            self._all_here.set()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._all_here.wait()
        except TimeoutError:
            self._broken = True
            raise AssertionError(f"{self.arrived} of {self.parties} calls were in flight "
                                 f"together after {self.timeout_s} s: they ran one after "
                                 "another") from None
