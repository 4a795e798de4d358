"""Helpers shared by the benchmark scripts: machine description, timing, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def pin_one_core() -> None:
    """Keep every library on one thread so numbers are per core (call before importing them)."""
    for var in ("OMP_NUM_THREADS", "BLOSC_NTHREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1min": load_average(),
    }


def load_average() -> float | None:
    """The machine's 1-minute load average now (above its core count: other jobs shared it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (``/proc/stat``: every state but
    idle and I/O wait); with ``time.process_time`` it tells how much CPU other jobs took."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def median_time(
    fn: Callable[[], object], repeats: int = 5, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median time of ``fn()`` in seconds over ``repeats`` runs: wall time by default, or
    ``time.process_time`` for single-threaded work on a machine shared with other jobs."""
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def write_doc_section(doc: str, name: str, lines: list[str]) -> Path:
    """Replace what stands between ``<!-- name -->`` and ``<!-- /name -->`` in ``docs/<doc>``
    with ``lines``; returns the file."""
    path = DOCS / doc
    text = path.read_text()
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} markers: add them where the text goes")
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])
    return path


def write_result(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine attached; returns the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser, its module docstring as the help text."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return int(text)


def split_of_towns() -> dict[str, str]:
    """Town -> split (train, val, test) of the packaged splits file, in its order."""
    from carla_capture.split import load_splits

    return {town: name for name, towns in load_splits().splits.items() for town in towns}
