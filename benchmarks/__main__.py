"""``python -m benchmarks``: run the suite, write JSON results, optionally render them into docs/performance.md."""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCHMARKS = ("fusion", "step", "generation", "preprocessing", "loader", "end_to_end", "end_to_end_skewed")
SMOKE_DEFAULT = BENCHMARKS[:-1]  # the skewed end-to-end run is the same code on other data: not in the smoke run
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks that everything runs")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help=f"any of {', '.join(BENCHMARKS)}")
    p.add_argument("--repeats", type=int, help="interleaved timed repeats (default 1 with --smoke, else 5)")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP / MKL threads (default 1)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--merge", type=Path, metavar="RESULTS",
                   help="start from these saved results: benchmarks run now replace theirs, the others are kept")
    p.add_argument("--render", action="store_true", help=f"write the tables into {DOCS.relative_to(DOCS.parents[1])}")
    p.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    from benchmarks.common import Sizes, Workspace, machine, pin_threads, registries, write_json

    pin_threads(args.threads)
    repeats = args.repeats or (1 if args.smoke else 5)
    if args.smoke:
        sizes = Sizes(image_size=28, vision_hidden=32, vision_layers=2, llm_hidden=64, llm_layers=2, batch_size=4)
        num_train, synth_px, vocab = 24, 32, 300
    else:
        sizes, num_train, synth_px, vocab = Sizes(), 256, 64, 512
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results: dict[str, Any] = {"command": command.strip(), "smoke": args.smoke, "repeats": repeats,
                               "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                               "sizes": vars(sizes), "benchmarks": {}}
    if args.merge:
        saved = json.loads(args.merge.read_text())
        for entry in saved["benchmarks"].values():  # each kept benchmark remembers the run that measured it
            entry.setdefault("measured", {k: saved[k] for k in ("command", "started", "machine")})
        results["benchmarks"] = saved["benchmarks"]
    regs = registries()
    with tempfile.TemporaryDirectory(prefix="mmfw-bench-") as tmp:
        ws = Workspace.create(Path(tmp), num_train, synth_px, vocab)
        for name in args.only or (SMOKE_DEFAULT if args.smoke else BENCHMARKS):
            start = time.perf_counter()
            module = importlib.import_module(f"benchmarks.{name}")
            out = module.run(smoke=args.smoke, repeats=repeats, ws=ws, regs=regs, sizes=sizes, threads=args.threads)
            out["wall_s"] = time.perf_counter() - start
            if args.merge:
                out["measured"] = {k: results[k] for k in ("command", "started", "machine")}
            results["benchmarks"][name] = out
            print(f"{name}: done in {out['wall_s']:.1f} s", file=sys.stderr)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if args.out:
        write_json(args.out, results)
    from benchmarks.render import render_markdown, update_docs

    text = render_markdown(results)
    print(text)
    if args.render:
        update_docs(args.docs, text)
    return results


if __name__ == "__main__":
    main()
