"""How long the command takes to answer: `uploader --help`, `--version` and `check VIDEO`,
whole process, against `python -c pass` (the interpreter's own start).

    python benchmarks/startup.py          # 3 rounds of 9 runs each: min-median-max of the medians
    python benchmarks/startup.py --smoke  # 1 round of 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIDEO = ROOT / "samples" / "landscape_1080p.mp4"
#: The console script pip installed beside this interpreter, as a user runs it.
SCRIPT = Path(sys.executable).parent / "uploader"
UPLOADER = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "uploader"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "uploader --help": [*UPLOADER, "--help"],
    "uploader --version": [*UPLOADER, "--version"],
    "uploader check VIDEO": [*UPLOADER, "check", str(VIDEO)],
}
TARGETS = {"uploader --help": 0.10, "uploader --version": 0.10, "uploader check VIDEO": 0.25}


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    rounds, runs = (1, 3) if args.smoke else (3, 9)
    load = os.getloadavg()
    print(f"start-up, whole process; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{os.cpu_count()} CPUs; {rounds} round(s) of {runs} runs, each round's median")
    medians: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, command in COMMANDS.items():  # interleaved: a busy moment hits them all
            seconds(command)  # warm the page cache
            medians[name].append(statistics.median(seconds(command) for _ in range(runs)))
    for name, values in medians.items():
        ordered = sorted(values)
        target = f"   (target <= {TARGETS[name]:.2f} s)" if name in TARGETS else ""
        print(f"  {name}: {ordered[0]:.3f}-{statistics.median(ordered):.3f}-{ordered[-1]:.3f} s"
              f"{target}")


if __name__ == "__main__":
    main()
