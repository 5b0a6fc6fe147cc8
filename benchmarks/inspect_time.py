"""Benchmark: wall time, CPU time and peak memory of ``mmfw inspect`` on every preset.

    python benchmarks/inspect_time.py [--repeats 3] [--reference] [--out table.md] [PRESET.yaml ...]

Each measurement is a fresh interpreter running ``python -m mmfw -q inspect PRESET`` (the command as a user runs it,
imports included), with this checkout first on ``PYTHONPATH``. Wall time is ``time.perf_counter`` around the child;
user + sys CPU time and max RSS come from the child's own resource usage (``os.wait4``). Runs are interleaved over the
presets and the minimum of ``--repeats`` is kept for each column (the machine may be shared). ``--reference`` adds a
row for ``import torch`` plus transformers' model classes alone, the floor of any command that builds a
transformers model. Prints a markdown table (and writes it to ``--out``).

Only public tools: ``subprocess``, ``os.wait4``, ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs" / "presets").glob("*.yaml"))
REFERENCE = "import torch; from transformers import CLIPVisionModel, LlamaForCausalLM"
"""The imports every preset's ``inspect`` needs at the least (torch and transformers' model code)."""


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall s, user + sys CPU s, max RSS bytes) of one run of ``cmd``; raises if it fails."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", type=Path, default=PRESETS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also time the torch + transformers imports alone")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()

    runs: dict[str, list[str]] = {}
    if args.reference:
        runs["(reference: torch + transformers model imports)"] = [sys.executable, "-c", REFERENCE]
    for preset in args.presets:
        runs[f"`{preset.stem}`"] = [sys.executable, "-m", "mmfw", "-q", "inspect", str(preset)]
    best: dict[str, tuple[float, float, float]] = {}
    for i in range(args.repeats):
        for name, cmd in runs.items():
            wall, cpu, rss = measure(cmd)
            print(f"[{i + 1}/{args.repeats}] {name}: wall {wall:.2f} s, cpu {cpu:.2f} s, max RSS {rss / 1e9:.2f} GB",
                  file=sys.stderr)
            prev = best.get(name, (wall, cpu, rss))
            best[name] = (min(prev[0], wall), min(prev[1], cpu), min(prev[2], rss))

    lines = [f"`mmfw inspect`, min of {args.repeats} interleaved runs ({os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}):", "",
             "| preset | wall | user + sys CPU | max RSS |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {wall:.1f} s | {cpu:.1f} s | {rss / 1e9:.2f} GB |" for name, (wall, cpu, rss) in best.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
