"""Progress of a long command on stderr: a tqdm bar on a terminal, one line per item elsewhere.

A log file or a CI job gets ``recording Town01: clip 3/20, 41.2 frames/s, ETA 0:12`` lines
instead of a bar's carriage returns, so a slow machine can be told from a hang there too.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


def format_duration(seconds: float) -> str:
    """``M:SS`` (or ``H:MM:SS``) of ``seconds``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts items (clips, windows, frames) of a known total as they finish.

    Args:
        total: Items in all, those already done included.
        desc: What is being done, e.g. ``recording Town01``.
        unit: One item's name, e.g. ``clip``.
        done: Items already done before this run (not counted in the rate).
        per_item: Units of the rate per item (frames per clip), 0 for a rate in items.
        rate_unit: The rate's unit, e.g. ``frames``.
        stream: Where progress goes [default: stderr].
        terminal: A bar (True) or a line per item (False) [default: whether ``stream`` is a
            terminal].
        clock: Seconds since some start (tests pass their own).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "item",
        done: int = 0,
        per_item: float = 0,
        rate_unit: str = "",
        stream: IO[str] | None = None,
        terminal: bool | None = None,
        clock: Any = time.perf_counter,
    ) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, done
        self.per_item, self.rate_unit = per_item, rate_unit
        self.stream = stream or sys.stderr
        self.clock, self.start, self.new = clock, clock(), 0
        terminal = self.stream.isatty() if terminal is None else terminal
        self.bar = None
        if terminal:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, desc=desc, unit=unit, file=self.stream,
                dynamic_ncols=True,
            )  # fmt: skip

    def rate(self) -> float:
        """Items (or ``per_item`` units) per second over the items done by this run."""
        elapsed = max(self.clock() - self.start, 1e-9)
        return self.new * (self.per_item or 1) / elapsed

    def eta(self) -> float | None:
        """Seconds left at this run's pace, None before the first item."""
        if not self.new:
            return None
        return (self.total - self.done) * (self.clock() - self.start) / self.new

    def line(self, note: str = "") -> str:
        """The one-line form: ``desc: unit n/total (note), rate, ETA``."""
        rate_unit = self.rate_unit or f"{self.unit}s"
        eta = self.eta()
        parts = [
            f"{self.desc}: {self.unit} {self.done}/{self.total}" + (f" ({note})" if note else ""),
            f"{self.rate():.1f} {rate_unit}/s",
            f"elapsed {format_duration(self.clock() - self.start)}",
            f"ETA {format_duration(eta) if eta is not None else '?'}",
        ]
        return ", ".join(parts)

    def update(self, note: str = "") -> None:
        """One more item done (``note``: which one, for the one-line form)."""
        self.done += 1
        self.new += 1
        if self.bar is not None:
            rate = f"{self.rate():.1f} {self.rate_unit}/s" if self.per_item else None
            if rate:
                self.bar.set_postfix_str(rate, refresh=False)
            self.bar.update(1)
        else:
            self.stream.write(self.line(note) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Close the bar (the one-line form has nothing to close)."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
