"""The figures of the benchmarks: each script prints them as it measures and, with
``--figures PATH``, writes them as JSON for ``bench/all.py``, which prints one table of all of
them and writes ``bench/results.md``. Not a benchmark itself."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    section: str
    name: str
    measured: str
    target: str = ""
    verdict: str = ""  # PASS, MISS, "" (information), or why it is not judged


def verdict(met: bool, *, judged: bool = True) -> str:
    if not judged:
        return "n/a (quick or profiled run)"
    return "PASS" if met else "MISS"


class Report:
    """Figures in the order they were measured; printed as they come."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self._section = ""

    def section(self, title: str) -> None:
        self._section = title
        print(f"\n{title}")

    def add(self, name: str, measured: str, target: str = "", result: str = "") -> None:
        figure = Figure(self._section, name, measured, target, result)
        self.figures.append(figure)
        print(f"  {name:<58} {measured:>14}   {target:<12} {result}".rstrip())

    def note(self, text: str) -> None:
        print(f"  {text}")

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps([asdict(figure) for figure in self.figures], indent=1))


def read_json(path: Path) -> list[Figure]:
    return [Figure(**item) for item in json.loads(path.read_text())]


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    cpus = len(os.sched_getaffinity(0))
    return f"{cpus} CPU(s), {model}, Python {platform.python_version()}, {platform.system()}"


def load() -> str:
    """The load averages (1, 5, 15 min) and the CPU count: other work on the machine."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"
