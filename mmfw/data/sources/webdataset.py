"""WebDataset tar shards: each sample is the tar members sharing a key (``KEY.json`` + ``KEY.0.png`` ...).

``KEY.json`` holds the LLaVA record. An image name in it that is a member of the sample (``0.png`` or
``KEY.0.png``) is read from the tar; any other name is a path under ``image_root`` (default: the shard's
directory), so shards may also point at images stored beside them. Members are read in tar order; a tar that cannot
be read stops with a :class:`~mmfw.data.errors.DataError` naming the shard and the member; a sample without a
``.json`` member, or with invalid JSON, is an unusable record (``missing-member`` / ``bad-json``).
"""

from __future__ import annotations

import glob
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from mmfw.config.data import DatasetSpec
from mmfw.data.errors import DataError, RecordError
from mmfw.data.images import decode_image, load_image
from mmfw.data.sample import path_outside_root
from mmfw.data.sources.base import RawRecord, StreamSource

__all__ = ["INDEX_FILE", "WebDatasetSource", "split_key"]

INDEX_FILE = "index.json"
"""Written beside the shards by ``mmfw data convert``: ``{"shards": {"NAME.tar": records}}`` (the epoch length)."""


def split_key(name: str) -> tuple[str, str]:
    """``"dir/000001.0.png"`` -> ``("dir/000001", "0.png")`` (WebDataset's key / extension split)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def _shard_paths(spec: DatasetSpec, name: str) -> list[Path]:
    p = Path(spec.path)
    if p.is_dir():
        paths = sorted(p.glob("*.tar"))
    elif any(c in spec.path for c in "*?["):
        paths = sorted(Path(x) for x in glob.glob(spec.path))
    else:
        if not p.is_file():
            raise DataError(f"{name}.path: shard not found: {spec.path}")
        paths = [p]
    if not paths:
        raise DataError(f"{name}.path: no .tar shards in {spec.path}")
    return paths


class WebDatasetSource(StreamSource):
    def __init__(self, spec: DatasetSpec, name: str) -> None:
        self.name, self.paths = name, _shard_paths(spec, name)
        self.explicit_root = spec.image_root is not None
        self.image_root = Path(spec.image_root) if spec.image_root is not None else None
        self.counts: dict[str, int] | None = None
        index = self.paths[0].parent / INDEX_FILE
        if index.is_file():
            known = json.loads(index.read_text(encoding="utf-8")).get("shards", {})
            if all(p.name in known for p in self.paths):
                self.counts = {str(p): int(known[p.name]) for p in self.paths}
        self.offsets = {str(p): 0 for p in self.paths}
        if self.counts is not None:
            total = 0
            for p in self.paths:
                self.offsets[str(p)], total = total, total + self.counts[str(p)]

    def num_records(self) -> int | None:
        return sum(self.counts.values()) if self.counts is not None else None

    def shards(self) -> list[str]:
        return [str(p) for p in self.paths]

    def _samples(self, shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
        """``(key, {extension: bytes})`` per sample, in tar order."""
        if not Path(shard).is_file():
            raise DataError(f"{self.name}: shard not found: {shard}")
        key, members, last = None, {}, "the start"
        try:
            with tarfile.open(shard, "r:*") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    k, ext = split_key(info.name)
                    if k != key and key is not None:
                        yield key, members
                        members = {}
                    key, last = k, info.name
                    members[ext] = tar.extractfile(info).read()
                tar.fileobj.seek(tar.offset)
                rest = tar.fileobj.read()
                if len(rest) < 1024 or rest.strip(b"\0"):  # tarfile ends quietly at a cut or corrupt header
                    raise tarfile.ReadError(f"truncated or corrupt at byte {tar.offset}")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{shard}: unreadable tar after member {last!r}: {e}") from None
        if key is not None:
            yield key, members

    def records(self, shard: str, offset: int = 0, stride: int = 1) -> Iterator[RawRecord]:
        base = self.offsets[shard]
        for n, (key, members) in enumerate(self._samples(shard)):
            if n >= offset and (n - offset) % stride == 0:
                yield RawRecord(base + n, f"{shard}:{key}", lambda key=key, m=members: self._read(shard, key, m))

    def _read(self, shard: str, key: str, members: dict[str, bytes]
              ) -> tuple[dict[str, Any], Callable[[str], Image.Image]]:
        where = f"{shard}:{key}"
        if "json" not in members:
            raise RecordError("missing-member", f"{where}: sample {key!r} has no .json member (members: "
                                                f"{', '.join(sorted(members)) or 'none'})")
        try:
            record = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordError("bad-json", f"{where}.json: invalid JSON ({e})") from None
        if isinstance(record, dict):
            record.setdefault("id", key.rpartition("/")[2])
        root = self.image_root or Path(shard).parent
        base = key.rpartition("/")[2]

        def member(name: str) -> bytes | None:
            ext = name.removeprefix(f"{base}.")
            return members.get(ext) if ext != "json" else None

        names = record.get("images") or ([record["image"]] if isinstance(record.get("image"), str) else []) \
            if isinstance(record, dict) else []
        outside = path_outside_root(root, [n for n in names if isinstance(n, str) and member(n) is None],
                                    self.explicit_root)
        if outside is not None:
            raise RecordError("image-outside-root", f"record {record.get('id')!r}: image path {outside!r} leaves "
                                                    f"the image root {str(root)!r}")

        def open_image(name: str) -> Image.Image:
            data = member(name)
            return decode_image(data, f"{where}/{name}") if data is not None else load_image(root / name)

        return record, open_image
