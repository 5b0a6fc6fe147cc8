"""Startup time and peak memory of the training data against dataset size: LLaVA JSON vs streamed sources.

For each size (records share three images, so generating them is cheap) the records are written as JSONL and
converted with ``mmfw data convert`` to WebDataset shards and a Hugging Face directory. A fresh child process per
(source, size) then trains one step of a tiny model with length grouping (the JSON path computes every sample's
length first, :func:`mmfw.training.sampling.sample_lengths`; the streams sort windows of samples as they come):
the time from config load to the first batch of step 1, and the child's peak RSS.
``python -m benchmarks.stream_startup --sizes 20000 200000 2000000``; ``--smoke`` only checks that every source
starts (32 records, one run each, all in one child process, so its peak RSS is that of the runs so far).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SOURCES = ("json", "webdataset", "hf")
SMOKE_RECORDS = 32


def write_records(path: Path, n: int) -> None:
    from PIL import Image

    (path.parent / "images").mkdir(parents=True, exist_ok=True)
    for k, size in enumerate([(24, 12), (12, 12), (12, 20)]):
        Image.new("RGB", size, (60 * k, 0, 0)).save(path.parent / "images" / f"{k}.png")
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "image": f"images/{i % 3}.png", "conversations": [
                {"from": "human", "value": "<image>\nWhat color is the shape?" + " a" * (i % 5)},
                {"from": "gpt", "value": ["red", "green", "blue"][i % 3]}]}) + "\n")
    tmp.replace(path)


def prepare(root: Path, n: int, sources: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from mmfw.data.convert import convert_to_hf, convert_to_webdataset

    d = root.resolve() / str(n)  # absolute: the child runs in the repository root
    jsonl = d / "train.jsonl"
    if not jsonl.exists():
        write_records(jsonl, n)
    specs = {"json": {"path": str(jsonl)}}
    if "webdataset" in sources and not (d / "wds" / "index.json").exists():
        convert_to_webdataset(jsonl, d / "wds", shard_size=10_000, embed_images=False)
    if "hf" in sources and not (d / "hf").exists():
        convert_to_hf(jsonl, d / "hf.tmp")
        (d / "hf.tmp").replace(d / "hf")
    specs["webdataset"] = {"path": str(d / "wds"), "image_root": str(d)}
    specs["hf"] = {"path": str(d / "hf"), "format": "hf", "image_root": str(d)}
    return specs


def child(specs: dict[str, dict[str, Any]], tok_dir: str, work: Path) -> dict[str, dict[str, float]]:
    """Train one step of a tiny model on each of ``specs`` (source -> dataset spec), in turn: per source, the time
    from config load to the first batch of step 1 and the process's peak RSS so far."""
    import torch

    import mmfw.training.trainer as trainer_module
    from benchmarks.common import Sizes, model_dict, registries
    from mmfw.config import load_config_dict

    torch.set_num_threads(1)
    regs = registries()
    sizes = Sizes(image_size=28, vision_hidden=32, vision_layers=1, llm_hidden=32, llm_layers=1)
    first: list[float] = []
    original = trainer_module.micro_batches

    def timed(*args: Any, **kwargs: Any) -> Any:
        for batch in original(*args, **kwargs):
            if not first:
                first.append(time.perf_counter())
            yield batch

    trainer_module.micro_batches = timed  # type: ignore[assignment]
    out = {}
    for source, spec in specs.items():
        exp = {"name": "stream-startup", "seed": 0, "output_dir": str(work / source / "run"),
               "model": model_dict(Path(tok_dir), sizes), "data": {"train": [spec], "max_length": 128},
               "training": {"max_steps": 1, "batch_size": 8, "group_by_length": True, "log_every": 1,
                            "trackers": [], "policy": {"vision_encoder": "full"}}}
        first.clear()
        start = time.perf_counter()
        cfg = load_config_dict(exp, regs)
        trainer_module.Trainer(cfg, regs, progress=False, overwrite=True).train()
        out[source] = {"startup_s": first[0] - start,
                       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def run_children(specs: dict[str, dict[str, Any]], tok: Path, work: Path) -> dict[str, dict[str, float]]:
    """:func:`child` in a fresh process."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.stream_startup", "--child", json.dumps(specs),
                          "--tok", str(tok.resolve()), "--work", str(work.resolve())], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per source (JSON twice: a cold start, and one with its length cache from the first run),
    one column per size; each cell ``startup s, peak RSS MB``."""
    sizes = sorted({r["records"] for r in rows})
    cells: dict[str, dict[int, str]] = {}
    for r in rows:
        runs = r["runs"]
        if r["source"] == "json":  # the first run computes the lengths, the next ones read them from the cache
            picks = {"json (cold)": runs[:1], "json (lengths cached)": runs[1:]}
        else:
            picks = {r["source"]: runs}
        for name, got in picks.items():
            if got:
                cells.setdefault(name, {})[r["records"]] = (f"{min(g['startup_s'] for g in got):.1f} s, "
                                                            f"{min(g['peak_rss_mb'] for g in got):.0f} MB")
    lines = ["| source | " + " | ".join(f"{n:,} records" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for name, by_size in cells.items():
        lines.append(f"| {name} | " + " | ".join(by_size.get(n, "not run") for n in sizes) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_startup", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 2_000_000])
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    p.add_argument("--json-max", type=int, default=200_000, help="largest size the JSON source is run at")
    p.add_argument("--work", type=Path, default=Path("build/stream-bench"))
    p.add_argument("--repeats", type=int, default=2, help="runs per (source, size), interleaved; the minimum is kept")
    p.add_argument("--smoke", action="store_true",
                   help="check that it runs: every source at 32 records, one repeat, all in one child process")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    p.add_argument("--table", type=Path, metavar="RESULTS", help="print the table of saved results and stop")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--tok", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.tok, args.work)))
        return {}
    if args.table:
        print(table(json.loads(args.table.read_text())["rows"]))
        return {}
    if args.smoke:
        args.sizes, args.repeats = [SMOKE_RECORDS], 1
    from benchmarks.common import machine
    from mmfw.data.tokenizer_train import train_tokenizer

    tok = args.work / "tokenizer"
    if not tok.exists():
        train_tokenizer(["What color is the shape? red green blue a"] * 8, tok, vocab_size=300)
    rows = []
    for n in args.sizes:
        specs = prepare(args.work, n, tuple(args.sources))
        runs: dict[str, list[dict[str, float]]] = {}
        for r in range(args.repeats):
            order = args.sources if r % 2 == 0 else args.sources[::-1]
            order = [s for s in order if s != "json" or n <= args.json_max]
            # a fresh process per run (startup and peak memory of that source alone); the smoke run, which only
            # checks that every source starts, runs them all in one
            groups = [order] if args.smoke else [[s] for s in order]
            for group in groups:
                for source, got in run_children({s: specs[s] for s in group}, tok, args.work).items():
                    runs.setdefault(source, []).append(got)
        for source, got in runs.items():
            rows.append({"source": source, "records": n, "runs": got})
            print(json.dumps(rows[-1]), flush=True)
    result = {"command": "python -m benchmarks.stream_startup " + " ".join(argv if argv is not None else sys.argv[1:]),
              "smoke": args.smoke, "machine": machine(), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(table(rows))
    return result


if __name__ == "__main__":
    main()
