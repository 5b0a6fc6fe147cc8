"""A Hugging Face dataset written by ``Dataset.save_to_disk``, streamed in shards of rows (memory-mapped Arrow).

The LLaVA fields come from the columns named by :class:`~mmfw.config.data.FieldMapping`. The image column may
hold a path relative to ``image_root`` (default: the dataset directory), a list of paths, or an ``Image`` feature
(embedded bytes, decoded in the loading worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from mmfw.config.data import DatasetSpec, FieldMapping
from mmfw.data.errors import DataError, RecordError
from mmfw.data.images import decode_image, load_image, to_rgb
from mmfw.data.sample import path_outside_root
from mmfw.data.sources.base import RawRecord, StreamSource

__all__ = ["HFSource"]


def _embedded(value: Any, name: str) -> Image.Image:
    if isinstance(value, Image.Image):  # an Image feature, decoded by datasets
        return to_rgb(value)
    data = value.get("bytes") if isinstance(value, dict) else None
    if not data:
        raise RecordError("bad-image", f"image {name!r}: neither a path nor image bytes")
    return decode_image(data, name)


class HFSource(StreamSource):
    def __init__(self, spec: DatasetSpec, name: str, rows_per_shard: int) -> None:
        import datasets

        self.name, self.path = name, Path(spec.path)
        if not self.path.is_dir():
            raise DataError(f"{name}.path: Hugging Face dataset directory not found: {spec.path}")
        try:
            ds = datasets.load_from_disk(str(self.path))
        except (FileNotFoundError, ValueError, OSError) as e:
            raise DataError(f"{name}.path: {spec.path} is not a dataset written by save_to_disk: {e}") from None
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{name}.path: {spec.path} holds several splits ({', '.join(ds)}); point path at one "
                            "of them")
        self.fields = spec.fields or FieldMapping()
        columns = set(ds.column_names)
        for key, column in self.fields.model_dump().items():
            explicit = spec.fields is not None and key in spec.fields.model_fields_set
            if column not in columns and (explicit or key == "conversations"):
                raise DataError(f"{name}.fields.{key}: column {column!r} is not in {spec.path} (columns: "
                                f"{', '.join(sorted(columns))})")
        self.has_id, self.has_image = self.fields.id in columns, self.fields.image in columns
        self.root = Path(spec.image_root) if spec.image_root is not None else self.path
        self.explicit_root = spec.image_root is not None
        self.rows, self.rows_per_shard = len(ds), rows_per_shard
        self._ds: Any = None

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the memory map
        return {**self.__dict__, "_ds": None}

    def _dataset(self) -> Any:
        if self._ds is None:
            import datasets

            self._ds = datasets.load_from_disk(str(self.path))
        return self._ds

    def num_records(self) -> int:
        return self.rows

    def shards(self) -> list[tuple[int, int]]:
        return [(a, min(a + self.rows_per_shard, self.rows)) for a in range(0, self.rows, self.rows_per_shard)]

    def records(self, shard: tuple[int, int], offset: int = 0, stride: int = 1) -> Iterator[RawRecord]:
        start, stop = shard
        for row in range(start + offset, stop, stride):
            yield RawRecord(row, f"{self.path}[{row}]", lambda row=row: self._read(row))

    def _read(self, row: int) -> tuple[dict[str, Any], Callable[[str], Image.Image]]:
        raw = self._dataset()[row]
        f = self.fields
        record: dict[str, Any] = {"id": raw[f.id] if self.has_id else f"{self.path.name}[{row}]",
                                  "conversations": raw.get(f.conversations)}
        value = raw.get(f.image) if self.has_image else None
        values = value if isinstance(value, list) else [] if value is None else [value]
        embedded: dict[str, Any] = {}
        names = []
        for k, v in enumerate(values):
            if isinstance(v, str):
                names.append(v)
            else:
                embedded[f"{record['id']}#{k}"] = v
                names.append(f"{record['id']}#{k}")
        if names:
            record["images"] = names
        outside = path_outside_root(self.root, [n for n in names if n not in embedded], self.explicit_root)
        if outside is not None:
            raise RecordError("image-outside-root", f"record {record['id']!r}: image path {outside!r} leaves the "
                                                    f"image root {str(self.root)!r}")
        return record, lambda n: _embedded(embedded[n], n) if n in embedded else load_image(self.root / n)
