"""``ImportReport``: what one import kept, dropped and wrote, the same for every importer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImportReport:
    """What one import did, as every ``capture import`` command prints it.

    ``kept`` and ``dropped`` count what the source held, by what it is (``"rgb/semantic
    pairs"``) or why it was left out (``"pairs in segments shorter than a clip"``), in the order
    first counted; ``warnings`` are lines about data imported incompletely (each with its fix),
    ``next_steps`` the commands to run next.
    """

    clips: int = 0
    frames: int = 0
    shards: list[Path] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def keep(self, what: str, count: int = 1) -> None:
        """Count ``count`` more of ``what`` kept (0 makes the entry appear)."""
        self.kept[what] = self.kept.get(what, 0) + count

    def drop(self, why: str, count: int = 1) -> None:
        """Count ``count`` more left out for reason ``why`` (0 makes the entry appear)."""
        self.dropped[why] = self.dropped.get(why, 0) + count

    def summary(self) -> str:
        """One line: clips and frames written, then what was kept and dropped."""
        parts = [f"{self.clips} clips, {self.frames} frames imported"]
        if self.kept:
            parts.append(", ".join(f"{n} {what}" for what, n in self.kept.items()))
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{n} {why}" for why, n in self.dropped.items()))
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """What the command prints on stdout: the summary, each shard written, the next steps."""
        return [
            self.summary(),
            *(f"wrote {path}" for path in self.shards),
            *(f"next: {step}" for step in self.next_steps),
        ]
