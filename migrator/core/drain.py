"""The drain before a backend is recreated (phase4's switch, rollback): wait, bounded, until no answer is in
flight, so that the recreate cuts nobody mid-answer — and the one line that says what the users saw.

Pure: it is given an in-flight observer (a callable returning the requests in flight now, or None when
nothing can be seen), a clock, a sleep and a timeout, so the tests drive it with a fake clock and the
phases with vLLM's running-request gauge or the backend's open connections (migrator.adapters.inflight).
"Quiet" means the observer said 0 for `quiet_s` in a row: a user between two questions is not a drain.
Where nothing can be seen (Ollama has no running-request gauge, a backend behind a NAT shows no
connections) the drain is the quiet period alone, and the old backend's grace period (SIGTERM, then
SIGKILL after `deploy.stop_grace_s`; uvicorn finishes the requests in flight on SIGTERM) covers the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

Observer = Callable[[], "int | None"]


@dataclass
class DrainResult:
    waited_s: float
    in_flight: int | None  # requests in flight when the wait ended (None: nothing could be seen)
    seen_by: str  # what the count came from, in words
    timeout_s: float = 0.0
    drained: bool = False  # quiet for quiet_s before the timeout
    timed_out: bool = False
    skipped: bool = False  # --now: no wait at all

    @property
    def unseen(self) -> bool:
        return self.in_flight is None

    def describe(self) -> str:
        if self.skipped:
            if self.in_flight is None:
                return f"no drain (--now); requests in flight unknown ({self.seen_by})"
            return f"no drain (--now); {_requests(self.in_flight)} in flight ({self.seen_by})"
        if self.unseen:
            return f"nothing shows requests in flight ({self.seen_by}): waited a quiet period of {self.waited_s:g} s"
        if self.drained:
            return f"drained in {self.waited_s:g} s (no request in flight by {self.seen_by})"
        return (f"drain timed out after {self.waited_s:g} s with {_requests(self.in_flight or 0)} in flight "
                f"({self.seen_by})")

    def to_dict(self) -> dict:
        return {"waited_s": self.waited_s, "in_flight": self.in_flight, "seen_by": self.seen_by,
                "drained": self.drained, "timed_out": self.timed_out, "skipped": self.skipped}


def _requests(n: int) -> str:
    return f"{n} request{'' if n == 1 else 's'}"


def drain(observe: Observer, timeout_s: float, quiet_s: float, seen_by: str = "",
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
          poll_s: float = 0.1) -> DrainResult:
    """Wait until `observe()` said 0 for `quiet_s` in a row, or `timeout_s` ran out. An observer that sees
    nothing (None) makes it a plain quiet period (bounded by the timeout too)."""
    start = clock()
    quiet_since: float | None = None
    last: int | None = None
    seen_any = False
    while True:
        count = observe()
        now = clock()
        elapsed = now - start
        if count is None:
            if not seen_any and elapsed >= min(quiet_s, timeout_s):
                return DrainResult(round(elapsed, 2), None, seen_by, timeout_s, drained=False)
        else:
            seen_any, last = True, count
            if count == 0:
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= quiet_s:
                    return DrainResult(round(elapsed, 2), 0, seen_by, timeout_s, drained=True)
            else:
                quiet_since = None
        if elapsed >= timeout_s:
            return DrainResult(round(elapsed, 2), last, seen_by, timeout_s, timed_out=True)
        sleep(poll_s)


def settle(observe: Observer, budget_s: float, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.02) -> float | None:
    """Just before the old backend is stopped: wait (at most `budget_s`) for a moment with no request in
    flight, and return at once then — how long it took, or None when no such moment came (or nothing shows
    the requests). The drain's quiet period may lie a second or more behind the stop (the env file written,
    compose starting); users who asked meanwhile would be answered by an old backend that no longer accepts
    (uvicorn closes its socket on SIGTERM), so everyone else waits for them."""
    start = clock()
    while True:
        count = observe()
        if count is None:
            return None
        if count == 0:
            return round(clock() - start, 3)
        if clock() - start >= budget_s:
            return None
        sleep(poll_s)


def skip(observe: Observer, seen_by: str = "") -> DrainResult:
    """`--now`: no wait; what is in flight now is what the recreate cuts."""
    return DrainResult(0.0, observe(), seen_by, skipped=True)


@dataclass
class Disruption:
    """What the users saw of one recreate: answers cut mid-stream, and how long new requests were refused."""

    event: str  # "switch" | "rollback"
    cut: int | None  # answers cut (None: unknown)
    refused_s: float | None  # from the old backend stopping to the new one answering (None: nothing refused)
    why_refused: str = "backend boot"
    cut_note: str = ""

    def line(self) -> str:
        if self.cut is None:
            cut = "answers cut: unknown"
        else:
            cut = f"{self.cut} answer{'' if self.cut == 1 else 's'} cut"
        cut += f" ({self.cut_note})" if self.cut_note else ""
        if self.refused_s is None:
            return f"{self.event}: {cut}, no request refused ({self.why_refused})"
        return f"{self.event}: {cut}, requests refused for {self.refused_s:.1f} s ({self.why_refused})"

    def to_dict(self) -> dict:
        return {"event": self.event, "answers_cut": self.cut, "refused_s": self.refused_s, "line": self.line()}


@dataclass
class PortSample:
    """One look at the backend's port during its recreate: still accepting, and its open connections."""

    at: float
    listening: bool
    established: int


@dataclass
class StopSeen:
    """What the samples of a recreate show of the old backend's stop. `stopped_accepting_at`: when its
    listening socket went (new requests refused from then on); `open_at_exit`: its connections open just
    before they all went — the answers a kill cut; `exited_at`: when they had all gone. None when the
    samples never saw it stop."""

    stopped_accepting_at: float | None = None
    open_at_exit: int | None = None
    exited_at: float | None = None

    @property
    def stop_s(self) -> float | None:
        """From SIGTERM (the socket closed) to the old backend gone: the grace period it used."""
        if self.stopped_accepting_at is None or self.exited_at is None:
            return None
        return self.exited_at - self.stopped_accepting_at


def stop_seen(samples: list[PortSample]) -> StopSeen:
    """Read the old backend's stop off its port's samples (migrator.adapters.inflight.PortWatch).

    A drain's count is taken before compose even reaches the stop: answers finish, others start, in the
    second or more between. The samples narrow that to one interval: uvicorn (on SIGTERM) closes its
    listening socket first and then finishes its answers; a kill closes both at once. So the connections
    open at the last sample before none were left, from the moment it stopped accepting, are those its exit
    ended — finished or cut, which the stop time tells (answers_cut)."""
    seen_listening = False
    for i, sample in enumerate(samples):
        if sample.listening:
            seen_listening = True
            continue
        if not seen_listening:
            continue
        for j in range(i, len(samples)):
            if samples[j].established == 0:
                return StopSeen(sample.at, samples[j - 1].established if j > 0 else 0, samples[j].at)
        return StopSeen(sample.at, samples[-1].established)
    return StopSeen()


def answers_cut(result: DrainResult, stop_s: float | None, grace_s: float,
                at_exit: int | None = None) -> tuple[int | None, str]:
    """How many answers the recreate cut, from the drain and how long the old backend took to stop.

    Drained: none. `--now` (no grace): what was in flight. Timed out: the old backend had its grace period
    to finish them — cut only if its stop took the whole grace period (it was killed). `at_exit` (what the
    port showed open when the old backend went, stop_seen) is the better count where it was seen; the
    drain's count, taken before the stop began, stands in where it was not."""
    if result.drained:
        return 0, ""
    if result.skipped:
        open_then = at_exit if at_exit is not None else result.in_flight
        if open_then is None:
            return None, "--now: nothing showed what was in flight"
        return open_then, "--now: in flight when the backend was stopped" if open_then else ""
    if stop_s is not None and stop_s < grace_s:
        if result.timed_out and result.in_flight:
            return 0, f"{_requests(result.in_flight)} finished in the grace period"
        return 0, ""
    if at_exit is not None:
        return at_exit, f"killed after its {grace_s:g} s grace period"
    if result.unseen:
        return None, f"the old backend was killed after its {grace_s:g} s grace period; nothing showed what it cut"
    return result.in_flight, f"killed after its {grace_s:g} s grace period"
