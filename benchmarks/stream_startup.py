"""Startup time and peak memory of the training data against dataset size: LLaVA JSON vs streamed sources.

For each size (records share three images, so generating them is cheap) the records are written as JSONL and
converted with ``mmfw data convert`` to WebDataset shards and a Hugging Face directory. A fresh child process per
(source, size) then loads the experiment's ``data`` section, builds the training data with length grouping (the
JSON path computes every sample's length first, :func:`mmfw.training.sampling.sample_lengths`; the streams sort
windows of samples as they come) and takes the first batch: the time from config load to the first batch, and the
child's peak RSS. ``python -m benchmarks.stream_startup --sizes 20000 200000 2000000``.
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


def write_records(path: Path, n: int) -> None:
    from PIL import Image

    (path.parent / "images").mkdir(parents=True, exist_ok=True)
    for k, size in enumerate([(24, 12), (12, 12), (12, 20)]):
        Image.new("RGB", size, (60 * k, 0, 0)).save(path.parent / "images" / f"{k}.png")
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "image": f"images/{i % 3}.png", "conversations": [
                {"from": "human", "value": "<image>\nWhat color is the shape?" + " a" * (i % 5)},
                {"from": "gpt", "value": ["red", "green", "blue"][i % 3]}]}) + "\n")


def prepare(root: Path, n: int, sources: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from mmfw.data.convert import convert_to_hf, convert_to_webdataset

    d = root / str(n)
    jsonl = d / "train.jsonl"
    if not jsonl.exists():
        write_records(jsonl, n)
    specs = {"json": {"path": str(jsonl)}}
    if "webdataset" in sources and not (d / "wds" / "index.json").exists():
        convert_to_webdataset(jsonl, d / "wds", shard_size=10_000, embed_images=False)
    if "hf" in sources and not (d / "hf").exists():
        convert_to_hf(jsonl, d / "hf")
    specs["webdataset"] = {"path": str(d / "wds"), "image_root": str(d)}
    specs["hf"] = {"path": str(d / "hf"), "format": "hf", "image_root": str(d)}
    return specs


def child(spec: dict[str, Any], tok_dir: str) -> dict[str, float]:
    start = time.perf_counter()
    import torch
    from transformers import AutoTokenizer

    from mmfw.config.base import ImageStrategyConfig
    from mmfw.config.experiment import DataConfig
    from mmfw.data.collator import VLMCollator
    from mmfw.data.dataset import build_dataset
    from mmfw.data.sample import SampleBuilder
    from mmfw.data.sources import open_source
    from mmfw.data.stream import StreamingDataset, StreamLoader
    from mmfw.training.sampling import LengthGroupedBatchSampler, sample_lengths
    from tests.data.test_dataset_collator import GEOMETRY, TileStrategy

    d = DataConfig(train=[spec], max_length=256)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    strategy = TileStrategy(ImageStrategyConfig(type="tiles"), GEOMETRY, 8)
    if d.train[0].streamed:
        builder = SampleBuilder(tok, strategy, image_token="<image>", max_length=256)
        ds = StreamingDataset([open_source(d.train[0], "data.train[0]", d.stream)], builder, batch_size=8, seed=0,
                              cfg=d.stream, mode="length")
        batch = next(iter(StreamLoader(ds, VLMCollator(0), num_workers=0, batches_per_epoch=10)))
    else:
        ds = build_dataset(d.train, d, tok, strategy, image_token="<image>")
        sampler = LengthGroupedBatchSampler(sample_lengths(ds), 8, 0)
        batch = VLMCollator(0)([ds[i] for i in next(iter(sampler))])
    assert isinstance(batch["input_ids"], torch.Tensor)
    return {"startup_s": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_startup", description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 2_000_000])
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    p.add_argument("--json-max", type=int, default=2_000_000, help="largest size the JSON source is run at")
    p.add_argument("--work", type=Path, default=Path("build/stream-bench"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--tok", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.tok)))
        return {}
    from mmfw.data.tokenizer_train import train_tokenizer

    tok = args.work / "tokenizer"
    if not tok.exists():
        train_tokenizer(["What color is the shape? red green blue a"] * 8, tok, vocab_size=300)
    rows = []
    for n in args.sizes:
        specs = prepare(args.work, n, tuple(args.sources))
        for source in args.sources:
            if source == "json" and n > args.json_max:
                continue
            out = subprocess.run([sys.executable, "-m", "benchmarks.stream_startup", "--child",
                                  json.dumps(specs[source]), "--tok", str(tok)], capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(out.stderr[-2000:])
            rows.append({"source": source, "records": n, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


if __name__ == "__main__":
    main()
