"""Every benchmark under bench/, one after the other, then one table of every figure with its
target and PASS or MISS, also written to bench/results.md with the machine's description.

    python bench/all.py           # `make bench`: about 8 minutes on 2 cores
    python bench/all.py --full    # longer windows and the benchmarks' own full sizes

Exits 0 when every benchmark ran (whether or not its targets were met), 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from figures import Figure, load, machine, read_json

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results.md"
HELPERS = {"all.py", "figures.py"}

# script -> (arguments of the default run, arguments of --full)
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "poll.py": (
        ["--tenants", "100,1000,10000", "--window", "65", "--scrape", "15"],
        ["--tenants", "100,1000,10000", "--window", "200", "--scrape", "15"],
    ),
    "publication.py": ([], []),
    "soak.py": (["--minutes", "1"], ["--minutes", "10"]),
    "notify.py": (
        ["--rotations", "20", "--deliveries", "3000", "--rounds", "3"],
        [],
    ),
}


def check_every_script_is_run() -> None:
    scripts = {path.name for path in BENCH.glob("*.py")} - HELPERS
    missing = scripts - set(SCRIPTS)
    if missing:
        raise SystemExit(f"bench/all.py: does not run {', '.join(sorted(missing))}; add them")


def run_script(name: str, args: list[str], figures: Path) -> bool:
    command = [sys.executable, str(BENCH / name), *args, "--figures", str(figures)]
    print(f"\n=== bench/{name} {' '.join(args)}", flush=True)
    return subprocess.run(command, check=False).returncode == 0 and figures.exists()


def table(figures: list[Figure]) -> list[str]:
    lines = ["| section | figure | measured | target | |", "|---|---|---|---|---|"]
    for figure in figures:
        cells = (figure.section, figure.name, figure.measured, figure.target, figure.verdict)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--full", action="store_true", help="longer windows, full sizes")
    args = parser.parse_args(argv)
    check_every_script_is_run()
    started = time.monotonic()
    began = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {load()}"
    collected: list[Figure] = []
    broken: list[str] = []
    with tempfile.TemporaryDirectory(prefix="keywatch-bench-all-") as temporary:
        for name, (default, full) in SCRIPTS.items():
            figures = Path(temporary) / f"{name}.json"
            if run_script(name, full if args.full else default, figures):
                collected.extend(read_json(figures))
            else:
                broken.append(name)
    minutes = (time.monotonic() - started) / 60
    ended = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {load()}"
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/all.py{' --full' if args.full else ''}` (`make bench`) in "
        f"{minutes:.1f} minutes.",
        "",
        f"- machine: {machine()}",
        f"- started: {began}",
        f"- ended: {ended}",
        "- CPU figures are CPU time of the measured process (not wall time); ratios are "
        "measured side by side in the same run. Other work on the machine (the load "
        "averages above) inflates absolute figures more than ratios.",
        "",
        *table(collected),
    ]
    misses = sum(figure.verdict == "MISS" for figure in collected)
    passes = sum(figure.verdict == "PASS" for figure in collected)
    lines += ["", f"{passes} PASS, {misses} MISS; see bench/README.md for every MISS."]
    if broken:
        lines.append(f"Did not finish: {', '.join(broken)}.")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines[2:]))
    print(f"\nwritten to {RESULTS.relative_to(BENCH.parent)}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
