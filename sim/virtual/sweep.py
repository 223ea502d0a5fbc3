"""Where a generator's step sweep or list is: which point its output holds at a given time.

A `SweepPlan` is the sequence of (frequency, power, dwell) points a sweep or list
runs through. A `SweepRun` holds one generator's position in its plan:

* **at rest** (`index`): the output holds one point: the first before a sweep
  has run, and where a finished single sweep leaves it (`end_index`: the first
  point with retrace, the last without);
* **timed** (`started_s`): each point is held for its dwell from the start
  (`time.monotonic()`), the last followed by the first again when `repeat`;
* **stepped** (`stepping`): each trigger moves the output one point on.

With `collapse` (the virtual bench not in real time), a timed single sweep is
over the moment it starts: its output is at once where the sweep ends, as the
analyzer's sweeps complete at once in that mode. A repeating (free-running)
sweep never ends, so it always runs on the wall clock.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SweepPlan:
    """The points of a sweep or list, in the order the output visits them."""

    frequencies_hz: tuple[float, ...]
    powers_dbm: tuple[float, ...]
    dwells_s: tuple[float, ...]
    edges_s: tuple[float, ...] = field(init=False, repr=False)
    """Cumulative dwell: point i is held from edges_s[i - 1] (0 for i = 0) to edges_s[i]."""

    def __post_init__(self) -> None:
        counts = {len(self.frequencies_hz), len(self.powers_dbm), len(self.dwells_s)}
        if len(counts) != 1 or not self.frequencies_hz:
            raise ValueError("a sweep plan needs the same number (≥ 1) of each")
        object.__setattr__(self, "edges_s", tuple(itertools.accumulate(self.dwells_s)))

    @property
    def points(self) -> int:
        return len(self.frequencies_hz)

    @property
    def duration_s(self) -> float:
        """One pass through every point, s."""
        return self.edges_s[-1]

    def index_after(self, elapsed_s: float) -> int:
        """The point whose dwell covers `elapsed_s` from the start of a pass."""
        index = bisect.bisect_right(self.edges_s, elapsed_s)
        return min(index, self.points - 1)

    def point(self, index: int) -> tuple[float, float]:
        return self.frequencies_hz[index], self.powers_dbm[index]


class SweepRun:
    """One generator's position in its plan (see the module docstring)."""

    def __init__(self, plan: SweepPlan, *, end_index: int, collapse: bool) -> None:
        self.plan = plan
        self.end_index = end_index
        self.collapse = collapse
        self.index = 0
        self.started_s: float | None = None
        self.repeat = False
        self.stepping = False

    @property
    def running(self) -> bool:
        return self.started_s is not None or self.stepping

    def index_at(self, at_s: float) -> int:
        """The point the output holds at `at_s` (`time.monotonic()` scale)."""
        if self.started_s is None:
            return self.index
        elapsed_s = max(at_s - self.started_s, 0.0)
        if self.repeat:
            elapsed_s %= self.plan.duration_s
        elif elapsed_s >= self.plan.duration_s:
            return self.end_index
        return self.plan.index_after(elapsed_s)

    def settle(self, now_s: float) -> bool:
        """End a timed single sweep whose time is up; True if it ended now."""
        started_s = self.started_s
        if started_s is None or self.repeat or now_s < started_s + self.plan.duration_s:
            return False
        self.started_s = None
        self.index = self.end_index
        return True

    def start_timed(self, now_s: float, *, repeat: bool) -> None:
        self.stepping = False
        self.repeat = repeat
        if self.collapse and not repeat:
            self.started_s = None
            self.index = self.end_index
        else:
            self.started_s = now_s

    def start_stepped(self, *, repeat: bool) -> None:
        """Hold the first point; each `step()` moves on one."""
        self.started_s = None
        self.stepping = True
        self.repeat = repeat
        self.index = 0

    def step(self) -> None:
        """One point on; past the last the sweep ends (or, repeating, starts again)."""
        if self.index < self.plan.points - 1:
            self.index += 1
        elif self.repeat:
            self.index = 0
        else:
            self.stepping = False
            self.index = self.end_index

    def stop(self) -> None:
        """Abort: the output rests at the first point."""
        self.started_s = None
        self.stepping = False
        self.index = 0

    def done_at_s(self) -> float:
        """When a timed single sweep ends (`time.monotonic()`); 0.0 when none runs."""
        if self.started_s is None or self.repeat:
            return 0.0
        return self.started_s + self.plan.duration_s


def linear_points(start: float, stop: float, points: int) -> tuple[float, ...]:
    """`points` values evenly spaced from `start` to `stop` (both included)."""
    if points == 1:
        return (start,)
    step = (stop - start) / (points - 1)
    return tuple(start + i * step for i in range(points - 1)) + (stop,)


def log_points(start: float, stop: float, points: int) -> tuple[float, ...]:
    """`points` values with a constant ratio from `start` to `stop` (both > 0)."""
    if points == 1:
        return (start,)
    ratio = (stop / start) ** (1.0 / (points - 1))
    return tuple(start * ratio**i for i in range(points - 1)) + (stop,)
