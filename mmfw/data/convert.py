"""``mmfw data convert``: LLaVA JSON/JSONL -> WebDataset tar shards or a Hugging Face ``save_to_disk`` directory.

Records are copied as they are (one pass, one record in memory at a time for shards); a record that is not a JSON
object (``bad-json``, ``not-an-object``) is reported with its ``file:line`` and not written. WebDataset shards hold
``KEY.json`` (the record) and, with ``embed_images``, its images as ``KEY.K.EXT`` members (the record then names
them ``K.EXT``); ``index.json`` beside them lists the records per shard. The Hugging Face directory has the columns
``id``, ``image`` (list of paths, relative to the image root) and ``conversations`` (``from``/``value`` turns).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmfw.data.conversation import load_records
from mmfw.data.errors import DataError, RecordError
from mmfw.data.sources.webdataset import INDEX_FILE

__all__ = ["convert_to_hf", "convert_to_webdataset"]


def _records(path: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    for pos, rec in load_records(path):
        if isinstance(rec, RecordError):
            problems.append(rec.message)
            continue
        yield pos, rec


def _image_names(rec: dict[str, Any]) -> list[str]:
    images = rec.get("images", rec.get("image"))
    return [images] if isinstance(images, str) else [i for i in images or [] if isinstance(i, str)]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def convert_to_webdataset(source: str | Path, out: str | Path, *, shard_size: int = 10_000, embed_images: bool = True,
                          image_root: str | Path | None = None) -> dict[str, Any]:
    """Write ``out/shard-NNNNNN.tar`` (``shard_size`` records each) and ``out/index.json``; returns the index
    (``{"shards": {name: records}, "problems": [...]}``)."""
    source, out = Path(source), Path(out)
    root = Path(image_root) if image_root is not None else source.parent
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    counts: dict[str, int] = {}
    tar, n = None, 0
    for pos, rec in _records(source, problems):
        if tar is None or counts[Path(tar.name).name] >= shard_size:
            if tar is not None:
                tar.close()
            tar = tarfile.open(out / f"shard-{len(counts):06d}.tar", "w")
            counts[Path(tar.name).name] = 0
        key = f"{n:09d}"
        rec = {"id": str(rec.get("id", f"{source.name}:{pos}")), **rec}
        if embed_images:
            names = _image_names(rec)
            new = []
            for k, name in enumerate(names):
                path = root / name
                if not path.is_file():
                    problems.append(f"{source}:{pos}: image {str(path)!r} not found (not embedded)")
                    new.append(name)
                    continue
                ext = path.suffix.lstrip(".").lower() or "img"
                _add(tar, f"{key}.{k}.{ext}", path.read_bytes())
                new.append(f"{k}.{ext}")
            rec.pop("image", None)
            if names:
                rec["images"] = new
        _add(tar, f"{key}.json", json.dumps(rec, ensure_ascii=False).encode("utf-8"))
        counts[Path(tar.name).name] += 1
        n += 1
    if tar is not None:
        tar.close()
    index = {"source": str(source), "records": n, "shards": counts, "problems": problems}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return index


def convert_to_hf(source: str | Path, out: str | Path) -> dict[str, Any]:
    """Write a Hugging Face dataset directory (``datasets.Dataset.save_to_disk``); returns counts and problems."""
    import datasets

    source, problems = Path(source), []

    def rows() -> Iterator[dict[str, Any]]:
        for pos, rec in _records(source, problems):
            turns = [{"from": str(t.get("from", t.get("role"))), "value": str(t.get("value", t.get("content")))}
                     for t in rec.get("conversations") or [] if isinstance(t, dict)]
            yield {"id": str(rec.get("id", f"{source.name}:{pos}")), "image": _image_names(rec),
                   "conversations": turns}

    features = datasets.Features({"id": datasets.Value("string"), "image": [datasets.Value("string")],
                                  "conversations": [{"from": datasets.Value("string"),
                                                     "value": datasets.Value("string")}]})
    ds = datasets.Dataset.from_generator(rows, features=features)
    ds.save_to_disk(str(out))
    return {"source": str(source), "records": len(ds), "problems": problems}
